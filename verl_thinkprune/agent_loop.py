"""ThinkPrune's rollout hook: verl's single-turn agent loop, generating within the round's token limit L.

Registered in verl's agent-loop registry as "thinkprune"; ``+reward_manager=thinkprune`` makes it the default
(``actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent`` turns it off). Per sample it
- asks the rollout server for at most L new tokens (``max_tokens``; vLLM, SGLang and the CPU server honour it),
- records in the agent loop's extra_fields whether generation was cut off at L (``truncated``, which the reward
  manager reads instead of guessing from the padded response),
- with ``reward.reward_kwargs.add_length_prompt=true``, adds ThinkPrune's length system prompt to rows without a
  system message.
L is ``reward.reward_kwargs.token_limit`` (default ``actor_rollout_ref.rollout.response_length``): the reward and the
rollout share one limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

from verl_thinkprune import reward_manager  # the module, not its names: verl's plugin may load this file first
from verl_thinkprune.prompts import length_system_prompt

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "thinkprune"
UNFINISHED_STOP_REASONS = frozenset({"length", "aborted", "abort"})
"""Stop reasons that mean generation was cut off (SGLang and verl's resuming client say "length"; vLLM's server
reports both an EOS and a length stop as "completed", so the tokens decide there)."""


def generation_truncated(
    token_ids: Sequence[int], max_tokens: int, eos_ids: Iterable[int], stop_reason: str | None
) -> bool:
    """Whether generation was cut off rather than finished.

    Finished: the last token is an EOS token (servers keep the stop token). Otherwise cut off when the server says
    so or when the budget is used up. A response that stops early without EOS (a stop string) counts as finished.
    """
    if token_ids and token_ids[-1] in set(eos_ids):
        return False
    return stop_reason in UNFINISHED_STOP_REASONS or len(token_ids) >= max_tokens


def with_length_prompt(messages: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The messages, led by ThinkPrune's length system prompt unless they have a system message already."""
    if any(message.get("role") == "system" for message in messages):
        return list(messages)
    return [{"role": "system", "content": length_system_prompt(limit)}, *messages]


class _GenerationRecorder:
    """verl's LLM client, keeping the last generation: its stop reason does not reach ``AgentLoopOutput``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.last: TokenOutput | None = None

    async def generate(self, *args, **kwargs) -> TokenOutput:
        self.last = await self.client.generate(*args, **kwargs)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


_EOS_IDS: dict[str | None, frozenset[int]] = {}
"""EOS ids per model path: an agent loop is built per sample, the generation config is read once per process."""


@register(AGENT_LOOP_NAME)
class ThinkPruneAgentLoop(SingleTurnAgentLoop):
    """Single-turn generation capped at L, with each sample's truncation marked explicitly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.token_limit = reward_manager.token_limit(self.config)
        reward_kwargs = self.config.reward.get("reward_kwargs") or {}
        self.add_length_prompt = bool(reward_kwargs.get("add_length_prompt", False))
        model_path = self.config.actor_rollout_ref.model.get("path")
        if model_path not in _EOS_IDS:
            _EOS_IDS[model_path] = frozenset(reward_manager.eos_token_ids(self.tokenizer, model_path))
        self.eos_ids = _EOS_IDS[model_path]
        if not self.eos_ids:
            raise ValueError("ThinkPrune needs an EOS token id to tell finished responses from truncated ones")
        self.server_manager = _GenerationRecorder(self.server_manager)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        sampling_params = {**sampling_params, "max_tokens": self.token_limit}
        if self.add_length_prompt:
            kwargs["raw_prompt"] = with_length_prompt(kwargs["raw_prompt"], self.token_limit)
        output = await super().run(sampling_params, **kwargs)
        generated = self.server_manager.last
        output.extra_fields[reward_manager.TRUNCATED_FIELD] = generation_truncated(
            generated.token_ids, self.token_limit, self.eos_ids, generated.stop_reason
        )
        return output
