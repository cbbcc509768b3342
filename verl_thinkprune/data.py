"""ThinkPrune's training and evaluation sets as verl parquet files (``python -m verl_thinkprune.data --help``).

Each source is read with ``datasets.load_dataset``: from the Hugging Face hub by default, or from a local parquet or
jsonl file given with ``--input`` (same columns as published on the hub, or a verl parquet). Rows become verl RL rows:
``data_source``, ``prompt`` (chat messages: the length system prompt when a token limit is given, then the problem
with the model family's answer-format suffix), ``ability``, ``reward_model`` and ``extra_info``.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verl_thinkprune.presentation import one_line
from verl_thinkprune.prompts import USER_PROMPT_SUFFIXES, thinkprune_messages

EURUS_SUFFIX = "\n\nPresent the answer in LaTex format: \\boxed{Your answer}"
"""Appended to every Eurus-2-RL-Data problem; the official ThinkPrune preprocessing strips it."""


@dataclass(frozen=True)
class Source:
    """Where a data set lives on the hub and how its rows are named in verl's metrics."""

    hub_path: str
    split: str
    data_source: str
    hub_config: str | None = None
    keep_data_sources: tuple[str, ...] = ()
    """Only rows whose own data_source column is one of these (empty: all rows)."""
    verl_split: str = "test"
    """extra_info.split of the written rows."""


SOURCES: dict[str, Source] = {
    # Training: the AIME/AMC part of PRIME's RL data (about 2.5k problems), as in the official code.
    "eurus": Source(
        "PRIME-RL/Eurus-2-RL-Data", "train", "numina_amc_aime", None, ("numina_amc_aime",), verl_split="train"
    ),
    "deepscaler": Source("agentica-org/DeepScaleR-Preview-Dataset", "train", "deepscaler", verl_split="train"),
    # Evaluation. AIME 2022-2024 (90 problems, the official aux_data/test_aime.parquet); data_source AIME22/23/24.
    "aime": Source("AI-MO/aimo-validation-aime", "train", "AIME"),
    # AMC 2023, 40 problems: the AMC23 of the official evaluation (Qwen2.5-Math's amc23 set, not the 83-problem
    # AI-MO/aimo-validation-amc that DeepScaleR reports).
    "amc23": Source("math-ai/amc23", "test", "AMC23"),
    "math500": Source("HuggingFaceH4/MATH-500", "test", "MATH500"),
    # OlympiadBench's English text-only competition maths (674 problems), the subset DeepScaleR and ThinkPrune use.
    "olympiadbench": Source("Hothan/OlympiadBench", "train", "OlympiadBench", hub_config="OE_TO_maths_en_COMP"),
}


@dataclass
class Summary:
    """Rows kept and skipped, by reason: printed so a user sees what a conversion dropped."""

    name: str
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{self.name}: kept {self.kept}, skipped {sum(self.skipped.values())} ({reasons})"


def load_records(source: Source, local_file: Path | None = None) -> Iterable[dict[str, Any]]:
    """The source's rows: from the hub, or from a local parquet/jsonl file with the same columns."""
    import datasets

    if local_file is None:
        return datasets.load_dataset(source.hub_path, source.hub_config, split=source.split)
    builder = "parquet" if Path(local_file).suffix == ".parquet" else "json"
    return datasets.load_dataset(builder, data_files=str(local_file), split="train")


def problem_text(record: dict[str, Any]) -> str:
    """The problem statement: a problem/question column, else the last user message of a chat prompt."""
    text = record.get("problem") or record.get("question")
    if not text:
        users = [m["content"] for m in record.get("prompt") or [] if m.get("role") == "user"]
        text = users[-1] if users else ""
    return str(text).removesuffix(EURUS_SUFFIX).strip()


def answer_text(record: dict[str, Any]) -> str | None:
    """The ground truth as text: reward_model.ground_truth (verl), answer, or OlympiadBench's final_answer list."""
    answer = (record.get("reward_model") or {}).get("ground_truth")
    for column in ("answer", "final_answer"):
        answer = record.get(column) if answer is None else answer
    if isinstance(answer, list | tuple):
        answer = answer[0] if answer else None
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    text = "" if answer is None else str(answer).strip()
    if len(text) > 1 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text or None


def row_data_source(record: dict[str, Any], source: Source) -> str:
    """The row's own data_source if it has one (verl files), the AIME year from its URL, else the source's name."""
    if record.get("data_source"):
        return str(record["data_source"])
    year = re.search(r"(20\d\d)_AIME", str(record.get("url") or ""))
    return f"AIME{year.group(1)[2:]}" if year and source.data_source == "AIME" else source.data_source


def verl_row(problem: str, answer: str, data_source: str, split: str, index: int, messages: list[dict]) -> dict:
    """One row in verl's RL dataset format."""
    return {
        "data_source": data_source,
        "prompt": messages,
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": split, "index": index, "problem": problem},
    }


def convert(
    records: Iterable[dict[str, Any]],
    source: Source,
    token_limit: int | None = None,
    model_family: str = "deepseek",
    summary: Summary | None = None,
) -> Iterator[dict]:
    """verl rows for the usable records; skipped ones (filtered, empty problem, no answer, duplicate) are counted."""
    summary = summary if summary is not None else Summary(source.data_source)
    seen: set[str] = set()
    for record in records:
        problem, answer = problem_text(record), answer_text(record)
        data_source = row_data_source(record, source)
        key = " ".join(problem.split())
        if source.keep_data_sources and data_source not in source.keep_data_sources:
            reason = "other data_source"
        elif not problem:
            reason = "empty problem"
        elif answer is None:
            reason = "no answer"
        elif key in seen:
            reason = "duplicate"
        else:
            seen.add(key)
            messages = thinkprune_messages(problem, token_limit, model_family)
            yield verl_row(problem, answer, data_source, source.verl_split, summary.kept, messages)
            summary.kept += 1
            continue
        summary.skipped[reason] += 1


def write_parquet(rows: Iterable[dict], path: Path) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(list(rows)).to_parquet(path)
    return path


def prepare(
    name: str,
    out_dir: Path,
    local_file: Path | None = None,
    token_limit: int | None = None,
    model_family: str = "deepseek",
    keep_data_sources: tuple[str, ...] = (),
) -> tuple[Path, Summary]:
    """Convert one named source into out_dir/<name>.parquet; returns the path and the kept/skipped summary."""
    source = SOURCES[name]
    if keep_data_sources:
        source = dataclasses.replace(source, keep_data_sources=keep_data_sources)
    summary = Summary(name)
    rows = list(convert(load_records(source, local_file), source, token_limit, model_family, summary))
    if not rows:
        raise ValueError(f"{name}: no usable rows ({summary})")
    return write_parquet(rows, Path(out_dir) / f"{name}.parquet"), summary


def parse_inputs(pairs: list[str]) -> dict[str, Path]:
    inputs = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or name not in SOURCES:
            raise argparse.ArgumentTypeError(f"--input wants NAME=PATH with NAME in {sorted(SOURCES)}, got {pair!r}")
        inputs[name] = Path(path)
    return inputs


def source_list() -> str:
    return "; ".join(
        f"{name} = {s.hub_path}" + (f" ({s.hub_config})" if s.hub_config else "") for name, s in SOURCES.items()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m verl_thinkprune.data",
        description="Write ThinkPrune's training and evaluation sets as verl parquet files, one per source.",
        epilog=f"Sources: {source_list()}. Example: python -m verl_thinkprune.data eurus aime --token-limit 4000 "
        "--out-dir data/thinkprune --input aime=/path/to/aime22_23_24.parquet --keep aime=AIME22,AIME23 "
        "(recipes/prepare_thinkprune_data.sh writes the paper's training, selection and test sets).",
    )
    parser.add_argument("sources", nargs="+", choices=sorted(SOURCES), help="what to convert")
    parser.add_argument("--out-dir", type=Path, required=True, help="writes <source>.parquet here")
    parser.add_argument("--input", nargs="*", default=[], metavar="NAME=PATH", help="read NAME from a local file")
    parser.add_argument(
        "--keep", nargs="*", default=[], metavar="NAME=DS1,DS2", help="keep only these data_source values"
    )
    parser.add_argument("--token-limit", type=int, help="L: adds the length system prompt (omit for evaluation sets)")
    parser.add_argument("--model-family", default="deepseek", choices=sorted(USER_PROMPT_SUFFIXES))
    args = parser.parse_args(argv)
    if args.token_limit is not None and args.token_limit <= 0:
        parser.error(f"--token-limit must be a positive number of tokens, got {args.token_limit}")
    try:
        inputs = parse_inputs(args.input)
        keeps = {name: tuple(values.split(",")) for name, values in (k.split("=", 1) for k in args.keep)}
    except (argparse.ArgumentTypeError, ValueError) as error:
        parser.error(str(error))
    for name in args.sources:
        try:
            path, summary = prepare(
                name, args.out_dir, inputs.get(name), args.token_limit, args.model_family, keeps.get(name, ())
            )
        except Exception as error:  # no usable rows, an unreadable file, a hub dataset that cannot be had
            parser.exit(1, f"{parser.prog}: {name}: {one_line(error)}\n")
        print(f"{summary} -> {path}")


if __name__ == "__main__":
    main()
