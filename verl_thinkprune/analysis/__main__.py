"""Command line: ``python -m verl_thinkprune.analysis {keywords,plots,perplexity,judge} RUN ...``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from verl_thinkprune.analysis.runs import Run, budget_runs, parse_run

RUN_HELP = "evaluation run directories, as LABEL=DIR or DIR (e.g. original=eval/base pruned=eval/round3)"


def keywords(args: argparse.Namespace) -> dict:
    from verl_thinkprune.analysis.keywords import keyword_rates, keyword_table

    rates = {run.label: keyword_rates(run.records) for run in args.runs}
    print(keyword_table(rates))
    return rates


def plots(args: argparse.Namespace) -> dict:
    """Length histograms of the plain runs; accuracy against length for them and for any budget-forcing sweep."""
    from verl_thinkprune.analysis.plots import accuracy_vs_length, length_histograms

    plain = [run for run in args.runs if not budget_runs(run)]
    series: dict[str, list[tuple[str, float, float]]] = {}
    if plain:
        series["models"] = [overall_point(run) for run in plain]
    for run in args.runs:
        if budget_runs(run):
            series[f"{run.label}: budget forcing"] = [overall_point(b) for b in budget_runs(run)]
    paths = {}
    if plain:
        paths["lengths"] = args.out_dir / "lengths.png"
        length_histograms({run.label: run.lengths for run in plain}, paths["lengths"])
    paths["accuracy_vs_length"] = args.out_dir / "accuracy_vs_length.png"
    accuracy_vs_length(series, paths["accuracy_vs_length"])
    for path in paths.values():
        print(path)
    return {name: str(path) for name, path in paths.items()}


def overall_point(run: Run) -> tuple[str, float, float]:
    overall = run.results["results"]["overall"]
    return run.label, overall["mean_length"], overall["pass@1"]


def perplexity(args: argparse.Namespace) -> dict:
    from verl_thinkprune.analysis.perplexity import ReferenceModel, reasoning_perplexity

    reference = ReferenceModel(args.reference_model, args.device)
    report = {run.label: reasoning_perplexity(reference, run.records, args.max_responses) for run in args.runs}
    print("| run | reasoning perplexity | tokens | responses |\n| --- | ---: | ---: | ---: |")
    for label, row in report.items():
        print(f"| {label} | {row['perplexity']:.3f} | {row['tokens']} | {row['responses']} |")
    return report


def judge(args: argparse.Namespace) -> dict:
    from verl_thinkprune.analysis.judge import BEHAVIOURS, OTHER, JudgeClient, behaviour_breakdown

    client = JudgeClient(args.base_url, args.model, os.environ.get(args.api_key_env), args.timeout, args.retries)
    report = {
        run.label: behaviour_breakdown(client, run.records, args.max_problems, args.concurrency) for run in args.runs
    }
    labels = list(report)
    print("| behaviour (share of steps) | " + " | ".join(labels) + " |\n| --- |" + " ---: |" * len(labels))
    for behaviour in (*BEHAVIOURS, OTHER):
        shares = [report[label]["fractions"].get(behaviour, 0.0) for label in labels]
        print(f"| {behaviour} | " + " | ".join(f"{100 * share:.1f}%" for share in shares) + " |")
    print("judged/failed: " + ", ".join(f"{k} {v['judged']}/{v['failed']}" for k, v in report.items()))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m verl_thinkprune.analysis",
        description="What ThinkPrune did to the reasoning, from directories written by verl_thinkprune.evaluation.",
    )
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    commands = parser.add_subparsers(dest="command", required=True)

    sub = commands.add_parser("keywords", help="hesitation / self-correction words per 1,000 tokens")
    sub.set_defaults(handler=keywords)

    sub = commands.add_parser("plots", help="length histograms and accuracy against mean length (PNG)")
    sub.add_argument("--out-dir", type=Path, required=True)
    sub.set_defaults(handler=plots)

    sub = commands.add_parser("perplexity", help="perplexity of the reasoning under a reference model")
    sub.add_argument("--reference-model", type=Path, required=True, help="a Hugging Face model directory")
    sub.add_argument("--max-responses", type=int, help="score at most this many responses per run")
    sub.add_argument("--device", default="cpu")
    sub.set_defaults(handler=perplexity)

    sub = commands.add_parser("judge", help="reasoning-behaviour breakdown by an LLM judge (OpenAI-compatible API)")
    sub.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1 (a vLLM server)")
    sub.add_argument("--model", required=True, help="the judge model's name on that server")
    sub.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    sub.add_argument("--max-problems", type=int, default=100, help="problems judged per run (one reasoning each)")
    sub.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    sub.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    sub.add_argument("--retries", type=int, default=3)
    sub.set_defaults(handler=judge)

    for sub in commands.choices.values():
        sub.add_argument("runs", nargs="+", type=parse_run, help=RUN_HELP)
    return parser


def analyze(argv: list[str] | None = None) -> dict:
    """Run one analysis from command-line arguments; returns its report (also written with --json)."""
    args = build_parser().parse_args(argv)
    report = args.handler(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    analyze(argv)


if __name__ == "__main__":
    main()
