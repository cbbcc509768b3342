"""The prompts of ThinkPrune's official code: the length system prompt and the user-prompt suffixes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

LENGTH_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think></think> and <answer></answer> tags, "
    "respectively, i.e., <think> reasoning process here</think><answer> answer here</answer>. "
    "The output of the assistant should be within {max_length} tokens."
)
_ANY_LENGTH_PROMPT = re.compile(re.escape(LENGTH_SYSTEM_PROMPT).replace(re.escape("{max_length}"), r"\d+"))

USER_PROMPT_SUFFIXES: dict[str, str] = {
    "deepseek": " Let's think step by step and output the final answer within \\boxed{}.",
    "qwq": " Please reason step by step, and put your final answer within \\boxed{}.",
}

LengthPromptChange = Literal["added", "restated", "unchanged", "foreign system prompt"]
"""What stating a limit did to a prompt: the last one means another system prompt was left as it was."""


def length_system_prompt(max_length: int) -> str:
    """The system prompt that tells the model its token limit."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    return LENGTH_SYSTEM_PROMPT.format(max_length=max_length)


def user_prompt(problem: str, model_family: str = "deepseek") -> str:
    """The problem followed by the answer-format instruction the model family was trained with."""
    try:
        suffix = USER_PROMPT_SUFFIXES[model_family]
    except KeyError:
        raise ValueError(f"unknown model family {model_family!r}; choose from {sorted(USER_PROMPT_SUFFIXES)}") from None
    return problem.strip() + suffix


def thinkprune_messages(problem: str, max_length: int | None, model_family: str = "deepseek") -> list[dict[str, str]]:
    """Chat messages for one problem: the length system prompt (unless max_length is None), then the user prompt."""
    messages = [{"role": "user", "content": user_prompt(problem, model_family)}]
    return messages if max_length is None else state_limit(messages, max_length)[0]


def state_limit(messages: Sequence[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], LengthPromptChange]:
    """The messages with a length system prompt that states ``limit``, and what had to change.

    A length prompt for another limit (data prepared for another round) is restated; messages without a system
    message get one. Another system prompt is the user's choice and is left as it is.
    """
    messages = [dict(message) for message in messages]
    system = next((m for m in messages if m.get("role") == "system"), None)
    wanted = length_system_prompt(limit)
    if system is None:
        return [{"role": "system", "content": wanted}, *messages], "added"
    if system.get("content") == wanted:
        return messages, "unchanged"
    if _ANY_LENGTH_PROMPT.fullmatch(str(system.get("content", ""))):
        system["content"] = wanted
        return messages, "restated"
    return messages, "foreign system prompt"
