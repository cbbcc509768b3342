"""The iterative run's report: report.json, report.md and report.png in the run directory, after every round."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def final_validation(record: dict) -> dict:
    """The validation of the model a round hands on: its selected step, or its baseline if none was selected."""
    step = record["selection"]["step"]
    return next((s for s in record["steps"] if s["step"] == step), record["baseline"])


def overall(records: list[dict]) -> dict:
    first, last = records[0]["baseline"], final_validation(records[-1])
    return {
        "mean_length": {"first": first["mean_length"], "last": last["mean_length"]},
        "pass_at_1": {"first": first["pass_at_1"], "last": last["pass_at_1"]},
        "mean_length_change": relative_change(first["mean_length"], last["mean_length"]),
        "pass_at_1_change": relative_change(first["pass_at_1"], last["pass_at_1"]),
    }


def relative_change(before: float, after: float) -> float | None:
    return None if before == 0 else (after - before) / before


def markdown(records: list[dict], summary: dict) -> str:
    def percent(change: float | None) -> str:
        return "n/a" if change is None else f"{change:+.1%}"

    lines = [
        "# ThinkPrune iterative pruning report",
        "",
        f"Mean validation length {summary['mean_length']['first']:.1f} -> {summary['mean_length']['last']:.1f} "
        f"({percent(summary['mean_length_change'])}); pass@1 {summary['pass_at_1']['first']:.4f} -> "
        f"{summary['pass_at_1']['last']:.4f} ({percent(summary['pass_at_1_change'])}). Lengths are measured under "
        "each round's limit.",
    ]
    for record in records:
        selected = record["selection"]["step"]
        lines += [
            "",
            f"## Round {record['round']}: L = {record['limit']}",
            "",
            f"- start model: `{record['start_model']}`",
            f"- selected: {'none' if selected is None else f'step {selected}'}: {record['selection']['reason']}",
            f"- output model: `{record['output_model']}`",
            "",
            "| step | pass@1 | mean length | truncated | checkpoint |",
            "| ---: | ---: | ---: | ---: | :--- |",
        ]
        for s in record["steps"]:
            mark = "selected" if s["step"] == selected else "saved" if s["step"] in record["saved_steps"] else ""
            lines.append(
                f"| {s['step']} | {s['pass_at_1']:.4f} | {s['mean_length']:.1f} | {s['truncation_rate']:.3f} | {mark} |"
            )
    return "\n".join(lines) + "\n"


def plot(records: list[dict], path: Path) -> plt.Figure:
    """pass@1 and mean length over training, round after round, with each round's selection starred."""
    figure, (accuracy, length) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    offset = 0
    for record in records:
        steps = record["steps"]
        x = [offset + s["step"] for s in steps]
        label = f"round {record['round']} (L={record['limit']})"
        accuracy.plot(x, [s["pass_at_1"] for s in steps], marker="o", label=label)
        length.plot(x, [s["mean_length"] for s in steps], marker="o", label=label)
        chosen = final_validation(record)
        if record["selection"]["step"] is not None:
            accuracy.plot(offset + chosen["step"], chosen["pass_at_1"], "k*", markersize=14)
            length.plot(offset + chosen["step"], chosen["mean_length"], "k*", markersize=14)
        offset = max(x)
        length.axvline(offset, color="grey", linewidth=0.5)
        accuracy.axvline(offset, color="grey", linewidth=0.5)
    accuracy.set_ylabel("validation pass@1")
    accuracy.set_title("ThinkPrune iterative pruning (* = selected checkpoint)")
    accuracy.legend(fontsize="small")
    length.set_ylabel("mean response length (tokens)")
    length.set_xlabel("training step (cumulative over rounds)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return figure


def write(run_dir: Path, records: list[dict]) -> dict:
    summary = overall(records)
    (run_dir / "report.json").write_text(json.dumps({"rounds": records, "overall": summary}, indent=2) + "\n")
    (run_dir / "report.md").write_text(markdown(records, summary))
    plot(records, run_dir / "report.png")
    return summary
