"""Checkpoint selection for iterative pruning, computed from verl's per-sample validation dumps.

The dumps (`trainer.validation_data_dir/<step>.jsonl`) survive restarts, unlike verl's file logger, so anyone can
recompute a round's choice from them. The rule (ThinkPrune, section 3): among saved checkpoints whose validation
pass@1 is at least (1 - max_drop) x the round's starting pass@1, take the shortest mean response length; ties go to
the higher pass@1, then the earlier step. If none qualifies, the round's start model carries forward.

Two selection protocols feed the rule:
- "paper": pass@1 and length measured under the round's limit L (the paper's). Truncation zeroes many of the start
  model's answers there, so a checkpoint that lost real accuracy can still clear a floor set by a truncated baseline.
- "unlimited": validation generated up to the rollout's response length and scored there (the rollout hook's
  ``unlimited_validation``), so the floor is set by the start model's real accuracy.
An unlimited dump also yields the under-limit figures (a sample longer than L would have been cut at L and scored
0), so such a round reports both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DEFAULT_MAX_DROP = 0.10
"""The paper's threshold: at most 10% relative pass@1 drop from the round's start."""

Protocol = Literal["paper", "unlimited"]
PROTOCOLS: tuple[Protocol, ...] = ("paper", "unlimited")


@dataclass(frozen=True)
class Measurement:
    pass_at_1: float
    mean_length: float
    truncation_rate: float


@dataclass(frozen=True)
class StepValidation:
    step: int
    num_samples: int
    under_limit: Measurement
    """Scored at the round's limit L (lengths counted up to L)."""
    unlimited: Measurement | None
    """Scored at the larger limit the samples were generated with; None when they were generated at L."""

    def measured(self, protocol: Protocol) -> Measurement:
        if protocol == "paper":
            return self.under_limit
        if self.unlimited is None:
            raise ValueError(f"step {self.step} was validated under the limit only: no unlimited measurement")
        return self.unlimited


@dataclass(frozen=True)
class Selection:
    step: int | None
    """The chosen checkpoint's step; None when the start model carries forward."""
    protocol: Protocol
    reason: str


def read_step_validation(dump: Path, limit: int) -> StepValidation | None:
    """Aggregates one dump at the round's limit; None if it is unreadable or cut short (a run killed mid-write)."""
    try:
        rows = [json.loads(line) for line in dump.read_text().splitlines() if line.strip()]
        samples = [
            (
                float(row["acc"] if "acc" in row else row["score"]),
                int(row["response_length"]),
                bool(row.get("truncated", 0)),
                int(row.get("token_limit") or limit),
            )
            for row in rows
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not samples:
        return None
    count = len(samples)
    # Under L: a sample longer than L would have been cut there (scored 0, its length counted up to L).
    under_limit = Measurement(
        pass_at_1=sum(score for score, length, _, _ in samples if length <= limit) / count,
        mean_length=sum(min(length, limit) for _, length, _, _ in samples) / count,
        truncation_rate=sum(truncated or length > limit for _, length, truncated, _ in samples) / count,
    )
    unlimited = None
    if any(sample_limit > limit for *_, sample_limit in samples):
        unlimited = Measurement(
            pass_at_1=sum(score for score, *_ in samples) / count,
            mean_length=sum(length for _, length, _, _ in samples) / count,
            truncation_rate=sum(truncated for _, _, truncated, _ in samples) / count,
        )
    return StepValidation(int(dump.stem), count, under_limit, unlimited)


def read_validations(validation_dir: Path, limit: int) -> dict[int, StepValidation]:
    """Every complete dump by step: a dump with fewer samples than the step-0 baseline is incomplete and left out."""
    found = {}
    for dump in validation_dir.glob("*.jsonl"):
        if dump.stem.isdigit() and (validation := read_step_validation(dump, limit)) is not None:
            found[validation.step] = validation
    expected = found[0].num_samples if 0 in found else max((v.num_samples for v in found.values()), default=0)
    return {step: v for step, v in sorted(found.items()) if v.num_samples >= expected}


def select_checkpoint(
    baseline: StepValidation,
    candidates: list[StepValidation],
    max_relative_drop: float = DEFAULT_MAX_DROP,
    protocol: Protocol = "paper",
) -> Selection:
    """The shortest candidate whose pass@1 stayed within max_relative_drop of the baseline's, under protocol."""
    start = baseline.measured(protocol)
    floor = (1 - max_relative_drop) * start.pass_at_1
    measured = [(c, c.measured(protocol)) for c in candidates]
    qualifying = [(c, m) for c, m in measured if m.pass_at_1 >= floor - 1e-12]  # exactly at the floor qualifies
    scope = "under the limit" if protocol == "paper" else "without the limit"
    if not qualifying:
        return Selection(
            step=None,
            protocol=protocol,
            reason=f"no checkpoint kept pass@1 {scope} >= {floor:.4f} ({1 - max_relative_drop:.0%} of the baseline "
            f"{start.pass_at_1:.4f}); the start model carries forward",
        )
    best, best_measured = min(qualifying, key=lambda cm: (cm[1].mean_length, -cm[1].pass_at_1, cm[0].step))
    return Selection(
        step=best.step,
        protocol=protocol,
        reason=f"shortest mean length {best_measured.mean_length:.1f} (baseline {start.mean_length:.1f}) among "
        f"{len(qualifying)} of {len(candidates)} checkpoints with pass@1 {scope} >= {floor:.4f}; its pass@1 "
        f"{best_measured.pass_at_1:.4f} (baseline {start.pass_at_1:.4f})",
    )
