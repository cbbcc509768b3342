"""A round of iterative pruning on disk, and the one place that reads how far it got.

A round's directory holds what verl writes (checkpoints, validation dumps, train.log, metrics.jsonl) and what the
ThinkPrune trainer writes beside verl's checkpoints (``thinkprune_progress.json``: total and completed steps), plus
the driver's record of the finished round (``round.json``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verl_thinkprune.selection import StepValidation, read_step_validation, read_validations

PROGRESS_FILE = "thinkprune_progress.json"
"""Written by verl_thinkprune.trainer into trainer.default_local_dir."""


@dataclass(frozen=True)
class Round:
    index: int
    limit: int
    directory: Path

    @classmethod
    def of(cls, run_dir: Path, index: int, limit: int) -> Round:
        return cls(index, limit, run_dir / f"round_{index}_L{limit}")

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def checkpoints(self) -> Path:
        return self.directory / "checkpoints"

    @property
    def validations(self) -> Path:
        return self.directory / "validation"

    @property
    def merged_model(self) -> Path:
        return self.directory / "merged_model"

    @property
    def log(self) -> Path:
        return self.directory / "train.log"

    def metrics_files(self) -> list[Path]:
        """verl's file-logger records (VERL_FILE_LOGGER_PATH), one file per attempt: verl truncates the file it is
        given, so a resumed attempt gets a new one; in attempt order."""
        return sorted(self.directory.glob("metrics_attempt*.jsonl"))

    def next_metrics_file(self) -> Path:
        return self.directory / f"metrics_attempt{len(self.metrics_files()) + 1:02d}.jsonl"

    @property
    def record(self) -> Path:
        return self.directory / "round.json"

    def state(self) -> RoundState:
        """How far the round got, read from disk now."""
        progress = self.progress()
        marker = self.checkpoints / "latest_checkpointed_iteration.txt"
        latest = int(marker.read_text().strip()) if marker.exists() else 0
        saved = sorted(int(p.name.removeprefix("global_step_")) for p in self.checkpoints.glob("global_step_*"))
        return RoundState(
            total_steps=progress.total_steps,
            completed_step=progress.completed_step,
            latest_checkpoint=latest,
            saved_steps=saved,
            validations=read_validations(self.validations, self.limit),
        )

    def progress(self) -> Progress:
        """Steps so far and the newest validation: cheap enough to poll while the round trains."""
        recorded = _read_json(self.checkpoints / PROGRESS_FILE) or {}
        dumps = sorted((int(p.stem), p) for p in self.validations.glob("*.jsonl") if p.stem.isdigit())
        complete = [v for _, dump in dumps[-1:] + dumps[-2:-1] if (v := read_step_validation(dump, self.limit))]
        baseline = read_step_validation(dumps[0][1], self.limit) if dumps and dumps[0][0] == 0 else None
        expected = baseline.num_samples if baseline else 0  # the newest dump may still be being written
        newest = next((v for v in complete if v.num_samples >= expected), None)
        return Progress(recorded.get("total_steps"), int(recorded.get("step", 0)), newest)


@dataclass(frozen=True)
class Progress:
    total_steps: int | None
    completed_step: int
    newest_validation: StepValidation | None


def plan_rounds(run_dir: Path, schedule: Sequence[int]) -> list[Round]:
    return [Round.of(run_dir, t, limit) for t, limit in enumerate(schedule, start=1)]


@dataclass(frozen=True)
class RoundState:
    total_steps: int | None
    """Known once the trainer has started (None before)."""
    completed_step: int
    latest_checkpoint: int
    """The step verl resumes from (0: none saved)."""
    saved_steps: list[int]
    validations: dict[int, StepValidation]
    """Complete validation dumps by step; step 0 is the round's baseline."""

    @property
    def finished(self) -> bool:
        """Training ran to its last step, which was checkpointed and validated (verl always does both there)."""
        return (
            self.total_steps is not None
            and self.latest_checkpoint >= self.total_steps
            and self.latest_checkpoint in self.validations
        )

    def unfinished_reason(self) -> str:
        if self.total_steps is None:
            return "its training never started (no progress file from the ThinkPrune trainer)"
        if self.latest_checkpoint < self.total_steps:
            return f"its last checkpoint is step {self.latest_checkpoint} of {self.total_steps}"
        return f"step {self.latest_checkpoint} has no complete validation dump"

    @property
    def last_validation(self) -> StepValidation | None:
        return self.validations[max(self.validations)] if self.validations else None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
