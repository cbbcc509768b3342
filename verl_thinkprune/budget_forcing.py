"""The budget-forcing baseline of the paper (s1-style): stop thinking at B tokens, then make the model answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

THINK_END = "</think>"
FORCED_ANSWER = "</think>\n\n**Final Answer:**\n\n"
"""Appended when the thinking reaches the budget unfinished (the official text for DeepSeek-R1-distilled models)."""

Generate = Callable[[list[list[int]], int, "str | None"], list[list[int]]]
"""A backend's generate(prompts, max_new_tokens, stop): completions cut after the first EOS or stop string."""


class ForcedResponse(NamedTuple):
    token_ids: list[int]
    """The whole response: thinking, the forced text if any, the answer."""
    generated: int
    """Tokens the model generated (the forced text excluded, as in the official code)."""
    answer_ids: list[int]
    """The part generated after thinking (empty when thinking ended with EOS): truncation is judged on it."""


def budget_forced(
    generate: Generate,
    tokenizer,
    prompts: Sequence[list[int]],
    budget: int,
    answer_tokens: int,
    eos_ids: set[int],
) -> list[ForcedResponse]:
    """Responses under a thinking budget: thinking stops at ``</think>`` or after ``budget`` tokens.

    Unfinished thinking gets FORCED_ANSWER appended (after a newline unless it ends with one, as the official code
    does); every response that has not ended then continues for up to ``answer_tokens``.
    """
    thinking = generate([list(p) for p in prompts], budget, THINK_END)
    results = [ForcedResponse(ids, len(ids), []) for ids in thinking]
    continuing, contexts = [], []
    for index, ids in enumerate(thinking):
        if ids and ids[-1] in eos_ids:
            continue
        text = tokenizer.decode(ids, skip_special_tokens=False)
        if THINK_END not in text:
            forced = FORCED_ANSWER if text.endswith("\n") else "\n" + FORCED_ANSWER
            ids = ids + tokenizer.encode(forced, add_special_tokens=False)
        continuing.append(index)
        contexts.append(list(prompts[index]) + ids)
    answers = generate(contexts, answer_tokens, None) if contexts else []
    for index, context, answer in zip(continuing, contexts, answers, strict=True):
        response = context[len(prompts[index]) :] + answer
        results[index] = ForcedResponse(response, len(thinking[index]) + len(answer), answer)
    return results
