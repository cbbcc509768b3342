"""The paper's evaluation protocol and an evaluation's run directory: what every reader of results shares.

Kept apart from the sampling (verl_thinkprune.evaluation), which loads inference engines and verl: the iterative
driver, its report and the analyses read settings and results without them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl_thinkprune.presentation import markdown_table
from verl_thinkprune.rundir import claim

PAPER_SAMPLES = {"AIME24": 64, "AMC23": 64}
"""Samples per problem in the paper's evaluation; every other benchmark gets DEFAULT_SAMPLES."""
DEFAULT_SAMPLES = 16
SAMPLES_FILE, RESULTS_JSON, RESULTS_MD = "samples.jsonl", "results.json", "results.md"


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the samples: a rerun must use the same settings to resume a run directory."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32000
    samples: int | None = None
    """Samples per problem; None: the paper's count per benchmark (PAPER_SAMPLES)."""
    budget: int | None = None
    """Budget forcing: thinking stops at this many tokens (None: plain sampling)."""
    answer_tokens: int = 2048
    """Budget forcing: tokens the answer may take after the thinking."""
    seed: int = 0

    def samples_for(self, data_source: str) -> int:
        return self.samples or PAPER_SAMPLES.get(data_source, DEFAULT_SAMPLES)

    def describe(self) -> str:
        """The protocol in words, for every table that reports its numbers."""
        samples = f"{self.samples} samples" if self.samples else "the paper's samples per benchmark"
        return (
            f"T={self.temperature:g}, top_p={self.top_p:g}, {samples} per problem, "
            f"up to {self.max_new_tokens} new tokens"
        )


def open_run(run_dir: Path, settings: EvalSettings, model: str, data: list[str]) -> None:
    """Create the run directory, or accept one sampled with the same settings, model and data (resume)."""
    claim(run_dir, {"settings": dataclasses.asdict(settings), "model": model, "data": data}, "evaluation")
    drop_partial_line(Path(run_dir) / SAMPLES_FILE)


def drop_partial_line(path: Path) -> None:
    """Remove a last line cut short by an interrupted run, so appended records start on a line of their own."""
    if path.exists():
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            path.write_bytes(content[: content.rfind(b"\n") + 1])


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The per-problem records of a run directory."""
    path = Path(run_dir) / SAMPLES_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Metrics per benchmark and "overall" (the mean of the benchmarks' figures, as the paper averages them)."""
    by_source: dict[str, list[dict]] = {}
    for record in records:
        by_source.setdefault(record["data_source"], []).append(record)
    table = {}
    for source, group in sorted(by_source.items()):
        lengths = [length for r in group for length in r["lengths"]]
        table[source] = {
            "problems": len(group),
            "samples": len(lengths),
            "pass@1": sum(sum(r["scores"]) / len(r["scores"]) for r in group) / len(group),
            "mean_length": sum(lengths) / len(lengths),
            "truncation_rate": sum(t for r in group for t in r["truncated"]) / len(lengths),
        }
    if table:
        rows = list(table.values())
        table["overall"] = {
            "problems": sum(r["problems"] for r in rows),
            "samples": sum(r["samples"] for r in rows),
            **{key: sum(r[key] for r in rows) / len(rows) for key in ("pass@1", "mean_length", "truncation_rate")},
        }
    return table


def results_table(table: dict[str, dict[str, float]], title: str = "benchmark") -> str:
    """A summarize() table as markdown."""
    rows = [
        [name, row["problems"], row["samples"], f"{100 * row['pass@1']:.1f}%", f"{row['mean_length']:.0f}",
         f"{100 * row['truncation_rate']:.1f}%"]
        for name, row in table.items()
    ]  # fmt: skip
    return markdown_table([title, "problems", "samples", "pass@1", "mean length", "truncated"], rows)


def write_results(run_dir: Path, settings: EvalSettings, model: str) -> dict[str, dict[str, float]]:
    """results.json and results.md from the run directory's samples; returns the table."""
    table = summarize(read_samples(run_dir))
    summary = {"settings": dataclasses.asdict(settings), "model": model, "results": table}
    (Path(run_dir) / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
    (Path(run_dir) / RESULTS_MD).write_text(results_table(table))
    return table
