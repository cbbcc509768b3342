"""The iterative run's report: report.json, report.md and report.png in the run directory, after every step.

It leads with the measurement a careful researcher makes: the start model and each round's output on a held-out
test set, with the paper's protocol (no effective length limit). The per-round validation that selection used (under
each round's limit, where truncation zeroes many of the start model's answers) and the training curves follow,
labelled as what they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from verl_thinkprune.presentation import markdown_table, save_figure
from verl_thinkprune.protocol import EvalSettings
from verl_thinkprune.rounds import Round

TRAINING_METRICS = ("thinkprune/truncation_rate", "thinkprune/reward_mean")


def relative_change(before: float, after: float) -> float | None:
    return None if before == 0 else (after - before) / before


def final_validation(record: dict) -> dict:
    """The validation of the model a round hands on: its selected step, or its baseline if none was selected."""
    step = record["selection"]["step"]
    return next((s for s in record["steps"] if s["step"] == step), record["baseline"])


def headline(records: list[dict], evaluations: list[dict]) -> str:
    """First-to-last change: measured on the test set when it was, else validation, saying which."""
    if len(evaluations) >= 2:
        first, last = evaluations[0], evaluations[-1]
        length = relative_change(first["mean_length"], last["mean_length"])
        return (
            f"test set: mean length {first['mean_length']:.1f} -> {last['mean_length']:.1f} ({_percent(length)}), "
            f"pass@1 {first['pass@1']:.1%} -> {last['pass@1']:.1%} "
            f"({100 * (last['pass@1'] - first['pass@1']):+.1f} points)"
        )
    if not records:
        return "no round finished yet"
    first, last = records[0]["baseline"]["under_limit"], final_validation(records[-1])["under_limit"]
    return (
        f"validation under each round's limit (not the paper's measurement: truncation flatters later rounds): "
        f"mean length {first['mean_length']:.1f} -> {last['mean_length']:.1f}, "
        f"pass@1 {first['pass_at_1']:.4f} -> {last['pass_at_1']:.4f}"
    )


def _percent(change: float | None) -> str:
    return "n/a" if change is None else f"{change:+.1%}"


def training_curves(run_dir: Path, record: dict) -> dict[str, list[tuple[int, float]]]:
    """The ThinkPrune training metrics per step from the round's file-logger records (a later attempt wins)."""
    curves: dict[str, dict[int, float]] = {name: {} for name in TRAINING_METRICS}
    for path in Round.of(run_dir, record["round"], record["limit"]).metrics_files():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            for name in TRAINING_METRICS:
                if name in entry.get("data", {}):
                    curves[name][int(entry["step"])] = float(entry["data"][name])
    return {name: sorted(points.items()) for name, points in curves.items()}


def evaluation_markdown(evaluations: list[dict], settings: EvalSettings) -> list[str]:
    start = evaluations[0]
    rows = []
    for entry in evaluations:
        length = relative_change(start["mean_length"], entry["mean_length"])
        rows.append(
            [
                entry["label"],
                "-" if entry["limit"] is None else entry["limit"],
                f"{entry['pass@1']:.1%}",
                f"{100 * (entry['pass@1'] - start['pass@1']):+.1f}",
                f"{entry['mean_length']:.1f}",
                _percent(length),
                f"{entry['truncation_rate']:.1%}",
            ]
        )
    headers = ["model", "limit L", "pass@1", "vs start (points)", "mean length", "vs start", "truncated"]
    return [
        "## Held-out test set, measured the paper's way",
        "",
        f"Protocol: {settings.describe()}; pass@1 is the mean correctness over samples, the mean length is over "
        "all samples, a response that does not finish scores 0. Problems: the test files, none of them in the "
        "selection set.",
        "",
        markdown_table(headers, rows),
    ]


def round_markdown(record: dict) -> list[str]:
    selection = record["selection"]
    selected = selection["step"]
    protocol = selection["protocol"]
    unlimited = any(s["unlimited"] for s in record["steps"])
    headers = ["step", "pass@1 under L", "mean length under L", "truncated at L"]
    if unlimited:
        headers += ["pass@1 unlimited", "mean length unlimited", "truncated unlimited"]
    rows = []
    for s in record["steps"]:
        row = [s["step"], *_measurement(s["under_limit"])]
        if unlimited:
            row += _measurement(s["unlimited"]) if s["unlimited"] else ["-"] * 3
        mark = "selected" if s["step"] == selected else "saved" if s["step"] in record["saved_steps"] else ""
        rows.append([*row, mark])
    rule = "the paper's rule on validation under L" if protocol == "paper" else "validation without the limit"
    return [
        "",
        f"### Round {record['round']}: L = {record['limit']}",
        "",
        f"- start model: `{record['start_model']}`",
        f"- selected ({rule}): {'none' if selected is None else f'step {selected}'}: {selection['reason']}",
        f"- output model: `{record['output_model']}`",
        "",
        markdown_table([*headers, "checkpoint"], rows, align="r" * len(headers) + "l"),
    ]


def _measurement(measured: dict) -> list[str]:
    return [f"{measured['pass_at_1']:.4f}", f"{measured['mean_length']:.1f}", f"{measured['truncation_rate']:.3f}"]


def markdown(records: list[dict], evaluations: list[dict], settings: EvalSettings | None, summary: str) -> str:
    lines = ["# ThinkPrune iterative pruning report", "", f"**{summary}**", ""]
    if evaluations and settings is not None:
        lines += evaluation_markdown(evaluations, settings)
    else:
        lines += [
            "No held-out evaluation was run (--no-evaluation): the figures below are validation under each "
            "round's limit, which flatters the pruned model.",
            "",
        ]
    lines += [
        "## Checkpoint selection (validation during training)",
        "",
        'Each round validates before training (its baseline, step 0) and at every save. "Under L": scored at the '
        'round\'s limit, lengths counted up to L, as the paper selects. "Unlimited": generated past L (the '
        "unlimited selection protocol), scored there.",
    ]
    for record in records:
        lines += round_markdown(record)
    return "\n".join(lines) + "\n"


def plot(run_dir: Path, records: list[dict], evaluations: list[dict], path: Path) -> Figure:
    """Test-set results per model; training truncation and reward per step; validation under L per step."""
    figure = Figure(figsize=(10, 10))
    grid = figure.add_gridspec(3, 2)
    length_axes, accuracy_axes = figure.add_subplot(grid[0, 0]), figure.add_subplot(grid[0, 1])
    labels = [e["label"] for e in evaluations]
    lengths = length_axes.bar(labels, [e["mean_length"] for e in evaluations], color="tab:blue")
    length_axes.bar_label(lengths, fmt="%.1f")
    length_axes.set_ylabel("mean response length (tokens)")
    length_axes.set_title("held-out test set (the paper's protocol)")
    accuracies = accuracy_axes.bar(labels, [100 * e["pass@1"] for e in evaluations], color="tab:green")
    accuracy_axes.bar_label(accuracies, fmt="%.1f%%")
    accuracy_axes.set_ylabel("pass@1 (%)")
    accuracy_axes.set_ylim(0, 110)
    accuracy_axes.set_title("held-out test set (the paper's protocol)")
    for axes in (length_axes, accuracy_axes):
        axes.tick_params(axis="x", labelrotation=20)
    if not evaluations:
        for axes in (length_axes, accuracy_axes):
            axes.text(0.5, 0.5, "no held-out evaluation", ha="center", transform=axes.transAxes)

    training = figure.add_subplot(grid[1, :])
    validation = figure.add_subplot(grid[2, :], sharex=training)
    offset = 0
    for record in records:
        label = f"round {record['round']} (L={record['limit']})"
        curves = training_curves(run_dir, record)
        for name, style in zip(TRAINING_METRICS, ("-", "--"), strict=True):
            points = curves[name]
            if points:
                training.plot([offset + s for s, _ in points], [v for _, v in points], style, label=f"{label} {name}")
        steps = record["steps"]
        validation.plot(
            [offset + s["step"] for s in steps], [s["under_limit"]["pass_at_1"] for s in steps], "o-", label=label
        )
        chosen = final_validation(record)
        if record["selection"]["step"] is not None:
            validation.plot(offset + chosen["step"], chosen["under_limit"]["pass_at_1"], "k*", markersize=14)
        offset += max(s["step"] for s in steps)
        for axes in (training, validation):
            axes.axvline(offset, color="grey", linewidth=0.5)
    training.set_ylabel("training rollouts")
    training.set_title("training: truncation rate at L (solid) and reward mean (dashed) per step")
    validation.set_ylabel("validation pass@1 under L")
    validation.set_xlabel("training step (cumulative over rounds)")
    validation.set_title("selection: validation under each round's limit (* = selected checkpoint)")
    for axes in (training, validation):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="x-small")
    save_figure(figure, path)
    return figure


def write(run_dir: Path, records: list[dict], evaluations: list[dict], settings: EvalSettings | None) -> dict:
    summary = headline(records, evaluations)
    data = {
        "headline": summary,
        "evaluation": {
            "protocol": None if settings is None else settings.describe(),
            "models": evaluations,
        },
        "rounds": records,
    }
    (run_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (run_dir / "report.md").write_text(markdown(records, evaluations, settings, summary))
    plot(run_dir, records, evaluations, run_dir / "report.png")
    return data
