"""Evaluation run directories as the analyses read them: a label, the per-problem samples and the aggregate."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_thinkprune.evaluation import RESULTS_JSON, read_samples


@dataclass(frozen=True)
class Run:
    label: str
    path: Path

    @property
    def records(self) -> list[dict[str, Any]]:
        return read_samples(self.path)

    @property
    def results(self) -> dict[str, Any]:
        return json.loads((self.path / RESULTS_JSON).read_text())

    @property
    def lengths(self) -> list[int]:
        return [length for record in self.records for length in record["lengths"]]


def parse_run(spec: str) -> Run:
    """``LABEL=DIR`` or ``DIR`` (labelled by its name): a directory written by verl_thinkprune.evaluation."""
    label, sep, path = spec.partition("=")
    run = Run(label, Path(path)) if sep else Run(Path(spec).name, Path(spec))
    if not run.path.is_dir():
        raise FileNotFoundError(f"no evaluation run directory at {run.path}")
    return run


def budget_runs(run: Run) -> list[Run]:
    """The budget-forcing runs under a directory written with ``--budgets``, by increasing budget."""
    found = [(int(d.name.removeprefix("budget-")), d) for d in run.path.glob("budget-*") if (d / RESULTS_JSON).exists()]
    return [Run(f"{run.label} B={budget}", path) for budget, path in sorted(found)]
