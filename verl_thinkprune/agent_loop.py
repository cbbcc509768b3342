"""ThinkPrune's rollout hook: verl's single-turn agent loop, generating within the round's token limit L.

Registered in verl's agent-loop registry as "thinkprune"; ``+reward_manager=thinkprune`` makes it the default
(``actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent`` turns it off). Per sample it
- asks the rollout server for at most L new tokens (``max_tokens``; vLLM, SGLang and the CPU server honour it),
- records in the agent loop's extra_fields how generation ended (``truncated``) and the limit the sample must be
  scored at (``token_limit``), which the reward manager reads instead of guessing from the tokens,
- makes the prompt state L: ThinkPrune's length system prompt is added to rows without a system message, and a
  length prompt written for another limit (data prepared for another round) is restated for L.
L is ``reward.reward_kwargs.token_limit`` (default ``actor_rollout_ref.rollout.response_length``): the reward and the
rollout share one limit. The hook's own settings live under ``actor_rollout_ref.rollout.custom.thinkprune``
(``HookSettings``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

from verl_thinkprune import reward_manager  # the module, not its names: verl's plugin may load this file first
from verl_thinkprune.prompts import state_limit

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "thinkprune"
DEPRECATED_LENGTH_PROMPT_KEY = "add_length_prompt"
"""Under reward.reward_kwargs until 0.1: read with a deprecation warning."""

VALIDATION_FIELD = "thinkprune_validation"
"""A sample's field set by ThinkPrune's agent-loop manager (verl_thinkprune.rollout_manager): verl does not tell
AgentLoopBase.run whether it generates for validation."""


@dataclass(frozen=True)
class HookSettings:
    """The rollout hook's knobs, ``actor_rollout_ref.rollout.custom.thinkprune.<name>`` (null: the default here)."""

    length_prompt: bool = True
    """Every prompt states L in ThinkPrune's length system prompt; false leaves prompts exactly as the data has them."""
    unlimited_validation: bool = False
    """Validation generates up to rollout.response_length and is scored there, so that checkpoint selection sees
    accuracy that a limit would hide (training is still generated and scored at L)."""

    @classmethod
    def from_config(cls, config: DictConfig) -> HookSettings:
        custom = dict((config.actor_rollout_ref.rollout.get("custom") or {}).get("thinkprune") or {})
        known = {field.name for field in fields(cls)}
        if unknown := sorted(set(custom) - known):
            raise ValueError(f"actor_rollout_ref.rollout.custom.thinkprune has no {unknown}; known: {sorted(known)}")
        deprecated = (config.reward.get("reward_kwargs") or {}).get(DEPRECATED_LENGTH_PROMPT_KEY)
        if deprecated is not None and custom.get("length_prompt") is None:
            _warn_once(
                f"reward.reward_kwargs.{DEPRECATED_LENGTH_PROMPT_KEY} is deprecated: "
                "use actor_rollout_ref.rollout.custom.thinkprune.length_prompt"
            )
            custom["length_prompt"] = deprecated
        return cls(**{name: bool(value) for name, value in custom.items() if value is not None})


_warned: set[str] = set()
_foreign_system_prompts = 0


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning("verl-thinkprune: %s", message)


def _count_foreign_system_prompt() -> None:
    """Logged at 1, 10, 100, ... prompts: a system prompt of the user's own is kept, so L is not stated there."""
    global _foreign_system_prompts
    _foreign_system_prompts += 1
    if str(_foreign_system_prompts).strip("0") == "1":
        logger.warning(
            "verl-thinkprune: %d prompt(s) so far have a system message that is not ThinkPrune's length prompt; "
            "left unchanged, so they do not state the limit",
            _foreign_system_prompts,
        )


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


@register(AGENT_LOOP_NAME)
class ThinkPruneAgentLoop(SingleTurnAgentLoop):
    """Single-turn generation capped at L, with each sample's truncation and scoring limit marked explicitly."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.token_limit, self.eos_ids = reward_manager.limit_and_eos_ids(self.config, self.tokenizer)
        self.settings = HookSettings.from_config(self.config)
        self.server_manager = _GenerationRecorder(self.server_manager)

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        unlimited = self.settings.unlimited_validation and bool(kwargs.pop(VALIDATION_FIELD, False))
        limit = self.response_length if unlimited else self.token_limit
        if self.settings.length_prompt:
            kwargs["raw_prompt"], change = state_limit(kwargs["raw_prompt"], self.token_limit)
            if change == "foreign system prompt":
                _count_foreign_system_prompt()
        output = await super().run({**sampling_params, "max_tokens": limit}, **kwargs)
        generated = self.server_manager.last
        output.extra_fields[reward_manager.TRUNCATED_FIELD] = reward_manager.is_truncated(
            generated.token_ids, limit, self.eos_ids, stop_reason=generated.stop_reason
        )
        output.extra_fields[reward_manager.LIMIT_FIELD] = limit
        return output
