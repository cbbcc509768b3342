"""Checkpoint selection for iterative pruning, computed from verl's per-sample validation dumps.

The dumps (`trainer.validation_data_dir/<step>.jsonl`) survive restarts, unlike verl's file logger, so anyone can
recompute a round's choice from them. The rule (ThinkPrune, section 3): among saved checkpoints whose validation
pass@1 is at least (1 - max_drop) x the round's starting pass@1, take the shortest mean response length; ties go to
the higher pass@1, then the earlier step. If none qualifies, the round's start model carries forward.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StepValidation:
    step: int
    pass_at_1: float
    mean_length: float
    truncation_rate: float
    num_samples: int


@dataclass(frozen=True)
class Selection:
    step: int | None
    """The chosen checkpoint's step; None when the start model carries forward."""
    reason: str


def read_step_validation(dump: Path) -> StepValidation | None:
    """Aggregates one dump; None if it is unreadable or cut short (a run killed while writing it)."""
    try:
        rows = [json.loads(line) for line in dump.read_text().splitlines() if line.strip()]
        scores = [float(row["acc"] if "acc" in row else row["score"]) for row in rows]
        lengths = [float(row["response_length"]) for row in rows]
        truncated = [float(row.get("truncated", 0)) for row in rows]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not rows:
        return None
    return StepValidation(
        step=int(dump.stem),
        pass_at_1=sum(scores) / len(rows),
        mean_length=sum(lengths) / len(rows),
        truncation_rate=sum(truncated) / len(rows),
        num_samples=len(rows),
    )


def read_validations(validation_dir: Path) -> dict[int, StepValidation]:
    """Every complete dump by step: a dump with fewer samples than the step-0 baseline is incomplete and left out."""
    found = {}
    for dump in validation_dir.glob("*.jsonl"):
        if dump.stem.isdigit() and (validation := read_step_validation(dump)) is not None:
            found[validation.step] = validation
    expected = found[0].num_samples if 0 in found else max((v.num_samples for v in found.values()), default=0)
    return {step: v for step, v in sorted(found.items()) if v.num_samples >= expected}


def select_checkpoint(
    baseline: StepValidation, candidates: list[StepValidation], max_relative_drop: float = 0.10
) -> Selection:
    """The shortest candidate whose pass@1 stayed within max_relative_drop of the baseline's."""
    floor = (1 - max_relative_drop) * baseline.pass_at_1
    qualifying = [c for c in candidates if c.pass_at_1 >= floor - 1e-12]  # exactly at the floor qualifies
    if not qualifying:
        return Selection(
            step=None,
            reason=f"no checkpoint kept pass@1 >= {floor:.4f} ({1 - max_relative_drop:.0%} of the baseline "
            f"{baseline.pass_at_1:.4f}); the start model carries forward",
        )
    best = min(qualifying, key=lambda c: (c.mean_length, -c.pass_at_1, c.step))
    return Selection(
        step=best.step,
        reason=f"shortest mean length {best.mean_length:.1f} (baseline {baseline.mean_length:.1f}) among "
        f"{len(qualifying)} of {len(candidates)} checkpoints with pass@1 >= {floor:.4f}; "
        f"its pass@1 {best.pass_at_1:.4f} (baseline {baseline.pass_at_1:.4f})",
    )
