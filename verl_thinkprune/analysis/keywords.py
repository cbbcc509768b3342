"""Hesitation and self-correction words per 1,000 response tokens: the paper reports fewer after pruning."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from verl_thinkprune.presentation import markdown_table

HESITATION_KEYWORDS = (
    "Wait",
    "But wait",
    "Alternatively",
    "Hmm",
    "Let me check",
    "Let me verify",
    "double-check",
    "verify",
)


def keyword_pattern(keyword: str) -> re.Pattern:
    """Whole words, any case: "wait" counts in "Wait," but not in "waiter"."""
    return re.compile(rf"(?<![A-Za-z]){re.escape(keyword)}(?![A-Za-z])", re.IGNORECASE)


def keyword_rates(records: Iterable[dict[str, Any]], keywords: Sequence[str] = HESITATION_KEYWORDS) -> dict[str, float]:
    """Occurrences of each keyword per 1,000 tokens over all responses of an evaluation run."""
    patterns = {keyword: keyword_pattern(keyword) for keyword in keywords}
    counts = dict.fromkeys(keywords, 0)
    tokens = 0
    for record in records:
        tokens += sum(record["lengths"])
        for response in record["responses"]:
            for keyword, pattern in patterns.items():
                counts[keyword] += len(pattern.findall(response))
    return {keyword: 1000 * count / tokens if tokens else 0.0 for keyword, count in counts.items()}


def keyword_table(rates: dict[str, dict[str, float]]) -> str:
    """A markdown table: one row per keyword, one column per run (e.g. before and after pruning)."""
    labels = list(rates)
    keywords = next(iter(rates.values()), {})
    rows = [[keyword, *(f"{rates[label][keyword]:.2f}" for label in labels)] for keyword in keywords]
    return markdown_table(["per 1,000 tokens", *labels], rows)
