"""verl's V1 agent-loop manager, telling ThinkPrune's rollout hook which samples are for validation.

verl knows per batch whether it generates for validation but does not pass that on to ``AgentLoopBase.run``; the
hook needs it for the "unlimited validation" selection protocol. This manager copies verl's flag into a field of the
batch that verl's workers hand to every agent loop with the sample's other fields. The ``+reward_manager=thinkprune``
group selects it through verl's own extension point, ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``;
nothing else of verl's manager or workers changes. Kept out of the plugin's parts: only the process that resolves
the manager class imports it.
"""

from __future__ import annotations

from tensordict import TensorDict
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ
from verl.utils import tensordict_utils

from verl_thinkprune.agent_loop import VALIDATION_FIELD


class ThinkPruneAgentLoopManager(AgentLoopManagerTQ):
    """verl's manager; a validation batch's samples reach the agent loop with ``VALIDATION_FIELD`` set."""

    def generate_sequences(self, prompts: TensorDict) -> None:
        # verl's workers read and drop "validate" before building each sample's arguments.
        validating = bool(tensordict_utils.get_non_tensor_data(prompts, "validate", default=False))
        tensordict_utils.assign_non_tensor_data(prompts, VALIDATION_FIELD, validating)
        super().generate_sequences(prompts)
