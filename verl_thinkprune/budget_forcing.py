"""The budget-forcing baseline of the paper (s1-style): stop thinking at B tokens, then make the model answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from verl_thinkprune.generation import Completion, Finish

THINK_END = "</think>"
FORCED_ANSWER = "</think>\n\n**Final Answer:**\n\n"
"""Appended when the thinking reaches the budget unfinished (the official text for DeepSeek-R1-distilled models)."""

Generate = Callable[[list[list[int]], int, "str | None"], list[Completion]]
"""A backend's generate(prompts, max_new_tokens, stop): completions cut after the first EOS or stop string."""


class ForcedResponse(NamedTuple):
    token_ids: list[int]
    """The whole response: thinking, the forced text if any, the answer."""
    generated: int
    """Tokens the model generated (the forced text excluded, as in the official code)."""
    answer_ids: list[int]
    """The part generated after thinking (empty when thinking ended with EOS): truncation is judged on it."""
    finish: Finish
    """How the last generated part ended."""


def forced_text(thinking: str) -> str:
    """FORCED_ANSWER, after a newline unless the thinking ends with one (as the official code does)."""
    return FORCED_ANSWER if thinking.endswith("\n") else "\n" + FORCED_ANSWER


def max_response_tokens(tokenizer: Any, budget: int, answer_tokens: int) -> int:
    """The most tokens a budget-forced response can hold: the budget, the forced text, the answer."""
    return budget + len(tokenizer.encode(forced_text(""), add_special_tokens=False)) + answer_tokens


def budget_forced(
    generate: Generate, tokenizer: Any, prompts: Sequence[list[int]], budget: int, answer_tokens: int
) -> list[ForcedResponse]:
    """Responses under a thinking budget: thinking stops at ``</think>``, at EOS, or after ``budget`` tokens.

    Thinking that used up the budget gets FORCED_ANSWER appended; every response that has not ended with EOS then
    continues for up to ``answer_tokens``.
    """
    thinking = generate([list(p) for p in prompts], budget, THINK_END)
    results = [ForcedResponse(t.token_ids, len(t.token_ids), [], t.finish) for t in thinking]
    continuing, contexts = [], []
    for index, completion in enumerate(thinking):
        if completion.finish == "eos":
            continue
        ids = completion.token_ids
        if completion.finish == "length":
            ids = ids + tokenizer.encode(forced_text(tokenizer.decode(ids)), add_special_tokens=False)
        continuing.append(index)
        contexts.append(list(prompts[index]) + ids)
    answers = generate(contexts, answer_tokens, None) if contexts else []
    for index, context, answer in zip(continuing, contexts, answers, strict=True):
        response = context[len(prompts[index]) :] + answer.token_ids
        generated = len(thinking[index].token_ids) + len(answer.token_ids)
        results[index] = ForcedResponse(response, generated, answer.token_ids, answer.finish)
    return results
