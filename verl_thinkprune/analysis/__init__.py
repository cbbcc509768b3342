"""What ThinkPrune did to a model's reasoning, from evaluation run directories (``python -m verl_thinkprune.analysis``).

keywords: hesitation and self-correction words per 1,000 tokens; plots: length histograms and accuracy against mean
length; perplexity: readability of the reasoning under a reference model; judge: reasoning-behaviour breakdown by an
LLM judge behind any OpenAI-compatible endpoint.
"""

from __future__ import annotations


class AnalysisError(ValueError):
    """Bad input to an analysis (a path that is not a run, a model that does not load, a judge that never answers):
    the command line says it in one line and exits non-zero, where a traceback would hide the cause."""


def one_line(error: BaseException) -> str:
    """An error's type and message on one line: library messages (transformers, openai) span several."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
