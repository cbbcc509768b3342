"""Evaluation run directories as the analyses read them: a label, the per-problem samples and the aggregate.

A path is checked when it is named, so a typo or a directory of something else is one line of error before any model
loads or any judge request goes out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_thinkprune.analysis import AnalysisError
from verl_thinkprune.protocol import RESULTS_JSON, SAMPLES_FILE, read_samples


@dataclass(frozen=True)
class Run:
    label: str
    path: Path

    @property
    def is_evaluation(self) -> bool:
        """A finished evaluation: samples and their aggregate (a budget-forcing directory holds such runs instead)."""
        return (self.path / SAMPLES_FILE).is_file() and (self.path / RESULTS_JSON).is_file()

    @property
    def records(self) -> list[dict[str, Any]]:
        if not self.is_evaluation:
            raise AnalysisError(f"{self.path} holds budget-forcing runs, not samples: name one of its budget-B/ runs")
        try:
            return read_samples(self.path)
        except json.JSONDecodeError as error:
            raise AnalysisError(
                f"{self.path / SAMPLES_FILE} is not JSON lines ({error}): is it still being written?"
            ) from error

    @property
    def results(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / RESULTS_JSON).read_text())
        except json.JSONDecodeError as error:
            raise AnalysisError(f"{self.path / RESULTS_JSON} is not JSON ({error})") from error

    @property
    def overall(self) -> dict[str, float]:
        """The run's figures over all its benchmarks."""
        overall = self.results["results"].get("overall")
        if overall is None:
            raise AnalysisError(f"{self.path / RESULTS_JSON} has no results: its evaluation sampled no problem")
        return overall

    @property
    def lengths(self) -> list[int]:
        return [length for record in self.records for length in record["lengths"]]


def parse_run(spec: str) -> Run:
    """``LABEL=DIR`` or ``DIR`` (labelled by its name): a directory written by verl_thinkprune.evaluation."""
    label, sep, path = spec.partition("=")
    run = Run(label, Path(path)) if sep else Run(Path(spec).name, Path(spec))
    if not run.path.is_dir():
        raise AnalysisError(f"no evaluation run directory at {run.path}")
    if not run.is_evaluation and not budget_runs(run):
        raise AnalysisError(
            f"{run.path} is not an evaluation run: it has no {SAMPLES_FILE} and {RESULTS_JSON} "
            "(python -m verl_thinkprune.evaluation writes them)"
        )
    return run


def budget_runs(run: Run) -> list[Run]:
    """The budget-forcing runs under a directory written with ``--budgets``, by increasing budget."""
    found = []
    for directory in run.path.glob("budget-*"):
        budget = directory.name.removeprefix("budget-")
        if budget.isdigit() and (directory / RESULTS_JSON).exists():
            found.append((int(budget), directory))
    return [Run(f"{run.label} B={budget}", path) for budget, path in sorted(found)]
