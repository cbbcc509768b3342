"""Command line: ``python -m verl_thinkprune.analysis {keywords,plots,perplexity,judge} RUN ...``.

Bad input (a path that is not an evaluation run, a reference model that does not load, a judge that answers nothing,
the judge's optional client missing) ends with one ``error:`` line and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from verl_thinkprune.analysis import AnalysisError, one_line
from verl_thinkprune.analysis.runs import Run, budget_runs, parse_run

RUN_HELP = "evaluation run directories, as LABEL=DIR or DIR (e.g. original=eval/base pruned=eval/round3)"
JUDGE_EXTRA = "verl-thinkprune[judge]"


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
    overall = run.overall
    return run.label, overall["mean_length"], overall["pass@1"]


def perplexity(args: argparse.Namespace) -> dict:
    from verl_thinkprune.analysis.perplexity import ReferenceModel, perplexity_table, reasoning_perplexity

    reference = ReferenceModel(args.reference_model, args.device)
    report = {run.label: reasoning_perplexity(reference, run.records, args.max_responses) for run in args.runs}
    print(perplexity_table(report))
    return report


def judge(args: argparse.Namespace) -> dict:
    """The breakdown per run; a run whose every request failed stops the command (a wrong URL, model or key)."""
    try:
        from verl_thinkprune.analysis.judge import JudgeClient, behaviour_breakdown, behaviour_table
    except ModuleNotFoundError as error:
        if error.name != "openai":
            raise
        raise AnalysisError(f"the judge needs the openai client: pip install '{JUDGE_EXTRA}'") from None
    if args.retries < 0 or args.timeout <= 0 or args.concurrency < 1:
        raise AnalysisError("--retries must be at least 0, --timeout above 0 and --concurrency at least 1")

    client = JudgeClient(args.base_url, args.model, os.environ.get(args.api_key_env), args.timeout, args.retries)
    report = {}
    for run in args.runs:
        row = report[run.label] = behaviour_breakdown(client, run.records, args.max_problems, args.concurrency)
        if row["failed"] and not row["judged"]:
            raise AnalysisError(
                f"the judge at {args.base_url} answered none of the {row['failed']} requests for {run.label}: "
                f"{row['first_failure']}"
            )
        if row["failed"]:
            print(
                f"warning: {row['failed']} of {row['judged'] + row['failed']} judge requests for {run.label} failed "
                f"(first: {row['first_failure']})",
                file=sys.stderr,
            )
    print(behaviour_table(report))
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
    sub.add_argument("--reference-model", required=True, help="a Hugging Face model directory or hub model id")
    sub.add_argument("--max-responses", type=int, help="score at most this many responses per run")
    sub.add_argument("--device", default="cpu")
    sub.set_defaults(handler=perplexity)

    sub = commands.add_parser(
        "judge", help=f"reasoning-behaviour breakdown by an LLM judge (OpenAI-compatible API; needs {JUDGE_EXTRA})"
    )
    sub.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1 (a vLLM server)")
    sub.add_argument("--model", required=True, help="the judge model's name on that server")
    sub.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    sub.add_argument("--max-problems", type=int, default=100, help="problems judged per run (one reasoning each)")
    sub.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    sub.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    sub.add_argument("--retries", type=int, default=3, help="retries per request (connection errors, 429, 5xx)")
    sub.set_defaults(handler=judge)

    for sub in commands.choices.values():
        # Strings here, Runs in analyze: argparse would turn a bad path into a usage dump without the reason.
        sub.add_argument("runs", nargs="+", metavar="RUN", help=RUN_HELP)
    return parser


def analyze(argv: list[str] | None = None) -> dict:
    """Run one analysis from command-line arguments; returns its report (also written with --json).

    Bad input raises SystemExit with one ``error:`` line (printed by the interpreter, exit status 1).
    """
    args = build_parser().parse_args(argv)
    try:
        args.runs = [parse_run(spec) for spec in args.runs]
        report = args.handler(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))
    except AnalysisError as error:
        raise SystemExit(f"error: {error}") from None
    except OSError as error:  # an output path that cannot be written, a file that cannot be read
        raise SystemExit(f"error: {one_line(error)}") from None
    return report


def main(argv: list[str] | None = None) -> None:
    analyze(argv)


if __name__ == "__main__":
    main()
