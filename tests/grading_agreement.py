"""Agreement with labelled grading cases: ThinkPrune's reward path beside verl's own scorers on the same responses.

Shared by tests/test_grading_corpus.py (our corpus) and benchmarks/grading_agreement.py (Math-Verify's own cases).
Each case is a finished response, a ground truth and a label (is the final answer right). ThinkPrune is scored as
training scores it (verl's RewardLoopWorker -> load_reward_manager -> our manager, every response ending on EOS);
verl's scorers get the same decoded text and ground truth.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from conftest import build_model_dir, make_batch
from transformers import AutoTokenizer
from verl.experimental.reward_loop import RewardLoopWorker
from verl.utils.reward_score import default_compute_score, math_verify

from verl_thinkprune.iterative import compose_verl_config

THINKPRUNE = "thinkprune"
VERL_DEFAULT_SOURCES = {
    "verl default, MATH-500 (math_reward)": "HuggingFaceH4/MATH-500",
    "verl default, AIME (math_dapo)": "aime",
    "verl default, NuminaMath (prime_math)": "numina_olympiads",
}
"""verl's default_compute_score picks its scorer by data_source: one source per scorer the paper's data would use."""
VERL_MATH_VERIFY = "verl math_verify"


@dataclass(frozen=True)
class Case:
    name: str
    ground_truth: str
    response: str
    right: bool


def thinkprune_scores(cases: Sequence[Case], *overrides: str) -> list[float]:
    """Scores through verl's reward loop with the ThinkPrune manager, all cases in one batch (verl's v0 shape)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        responses = [tokenizer.encode(case.response) + [tokenizer.eos_token_id] for case in cases]
        width = max(len(r) for r in responses)
        config = compose_verl_config(
            [
                "+reward_manager=thinkprune",
                f"actor_rollout_ref.model.path={model_dir}",
                f"data.max_response_length={width}",
                *overrides,
            ]
        )
        batch = make_batch(tokenizer, responses, [case.ground_truth for case in cases], padded_to=width)

        async def run() -> list[dict]:
            return await RewardLoopWorker(config).compute_score_batch(batch)

        return [output["reward_score"] for output in asyncio.run(run())]


def _verl_score(scorer: Callable[..., object], *args: str) -> float:
    """verl's scorers return a float, a bool, a (correct, ...) tuple or a {"acc": ...} dict, or raise on odd input."""
    try:
        result = scorer(*args)
    except Exception:
        return 0.0
    if isinstance(result, dict):
        return float(result["acc"])
    return float(result[0] if isinstance(result, tuple) else result)


def verl_scores(cases: Sequence[Case]) -> dict[str, list[float]]:
    """verl's default scorer per data source, and verl's math-verify scorer, on each whole response."""
    scores = {
        name: [_verl_score(default_compute_score, source, case.response, case.ground_truth) for case in cases]
        for name, source in VERL_DEFAULT_SOURCES.items()
    }
    scores[VERL_MATH_VERIFY] = [_verl_score(math_verify.compute_score, c.response, c.ground_truth) for c in cases]
    return scores


def agreement(cases: Sequence[Case], scores: Sequence[float]) -> float:
    """The share of cases whose score (above 0: right) matches the label."""
    return sum((score > 0) == case.right for case, score in zip(cases, scores, strict=True)) / len(cases)


def all_scores(cases: Sequence[Case], *overrides: str) -> dict[str, list[float]]:
    return {THINKPRUNE: thinkprune_scores(cases, *overrides), **verl_scores(cases)}
