"""Data preparation: each hub format read from a local file through the real datasets.load_dataset path."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_AIME

from verl_thinkprune import data
from verl_thinkprune.prompts import USER_PROMPT_SUFFIXES, length_system_prompt

SUFFIX = USER_PROMPT_SUFFIXES["deepseek"]


def eurus_row(problem: str, answer: str, source: str = "numina_amc_aime") -> dict:
    """A row of PRIME-RL/Eurus-2-RL-Data as published (verl format, PRIME's system prompt, the LaTeX suffix)."""
    return {
        "data_source": source,
        "prompt": [
            {"role": "system", "content": "When tackling complex reasoning tasks, you have access to ..."},
            {"role": "user", "content": problem + data.EURUS_SUFFIX},
        ],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": answer},
        "extra_info": {"split": "train", "index": 0},
    }


def write_table(rows: list[dict], path: Path) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


def rows_of(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


HUB_FORMATS = {
    "eurus": (
        "eurus.parquet",
        [
            eurus_row("What is $1+1$?", "2"),
            eurus_row("Find $x$ if $2x=6$.", "3"),
            eurus_row("An olympiad problem.", "7", source="numina_olympiads"),
            eurus_row("What is $1+1$?", "2"),  # duplicate
            eurus_row("No answer here.", ""),
        ],
        {"other data_source": 1, "duplicate": 1, "no answer": 1},
    ),
    "deepscaler": (
        "deepscaler.jsonl",
        [
            {"problem": "What is $2+2$?", "answer": "4", "solution": "It is 4."},
            {"problem": "  ", "answer": "1", "solution": ""},
            {"problem": "Compute $3 \\cdot 3$.", "answer": "9", "solution": "9"},
        ],
        {"empty problem": 1},
    ),
    "aime": (
        "aime.parquet",  # AI-MO/aimo-validation-aime
        [
            {"id": 0, "problem": "AIME 2022 problem.", "solution": "...", "answer": "116",
             "url": "https://artofproblemsolving.com/wiki/index.php/2022_AIME_I_Problems/Problem_1"},
            {"id": 1, "problem": "AIME 2024 problem.", "solution": "...", "answer": "33",
             "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_II_Problems/Problem_4"},
        ],
        {},
    ),
    "amc23": (
        "amc23.parquet",  # math-ai/amc23: answers are floats
        [
            {"id": 0, "question": "AMC problem one.", "answer": 27.0, "url": "https://..."},
            {"id": 1, "question": "AMC problem two.", "answer": 0.5, "url": "https://..."},
        ],
        {},
    ),
    "math500": (
        "math500.jsonl",
        [
            {"problem": "Simplify $\\frac{2}{4}$.", "solution": "...", "answer": "\\frac{1}{2}", "subject": "Algebra",
             "level": 1, "unique_id": "test/algebra/1.json"},
            {"problem": "Blank answer.", "solution": "...", "answer": "", "subject": "Algebra", "level": 1,
             "unique_id": "test/algebra/2.json"},
        ],
        {"no answer": 1},
    ),
    "olympiadbench": (
        "olympiadbench.parquet",  # Hothan/OlympiadBench OE_TO_maths_en_COMP: final_answer is a list of LaTeX strings
        [
            {"id": 1606, "question": "Olympiad problem.", "solution": ["..."], "final_answer": ["$\\frac{1}{2}$"],
             "context": None, "is_multiple_answer": False, "unit": None, "answer_type": "Numerical",
             "subfield": "Algebra", "language": "English"},
            {"id": 1607, "question": "Unanswered.", "solution": ["..."], "final_answer": [], "context": None,
             "is_multiple_answer": False, "unit": None, "answer_type": "Numerical", "subfield": "Algebra",
             "language": "English"},
        ],
        {"no answer": 1},
    ),
}  # fmt: skip

EXPECTED = {
    "eurus": [("numina_amc_aime", "What is $1+1$?", "2"), ("numina_amc_aime", "Find $x$ if $2x=6$.", "3")],
    "deepscaler": [("deepscaler", "What is $2+2$?", "4"), ("deepscaler", "Compute $3 \\cdot 3$.", "9")],
    "aime": [("AIME22", "AIME 2022 problem.", "116"), ("AIME24", "AIME 2024 problem.", "33")],
    "amc23": [("AMC23", "AMC problem one.", "27"), ("AMC23", "AMC problem two.", "0.5")],
    "math500": [("MATH500", "Simplify $\\frac{2}{4}$.", "\\frac{1}{2}")],
    "olympiadbench": [("OlympiadBench", "Olympiad problem.", "\\frac{1}{2}")],
}


@pytest.mark.parametrize("name", sorted(HUB_FORMATS))
def test_each_hub_format_converts_from_a_local_file(name, tmp_path):
    filename, rows, skipped = HUB_FORMATS[name]
    local = write_table(rows, tmp_path / filename)

    path, summary = data.prepare(name, tmp_path / "out", local)

    frame = pd.read_parquet(path)
    got = [(r["data_source"], r["extra_info"]["problem"], r["reward_model"]["ground_truth"]) for r in rows_of(frame)]
    assert got == EXPECTED[name]
    assert dict(summary.skipped) == skipped and summary.kept == len(EXPECTED[name])
    first = frame.iloc[0]
    assert [dict(m) for m in first["prompt"]] == [{"role": "user", "content": EXPECTED[name][0][1] + SUFFIX}]
    assert first["ability"] == "math" and first["reward_model"]["style"] == "rule"
    assert list(frame["extra_info"].map(lambda e: e["index"])) == list(range(len(frame)))


def test_token_limit_adds_the_length_system_prompt_and_family_suffix(tmp_path):
    local = write_table([eurus_row("What is $1+1$?", "2")], tmp_path / "eurus.parquet")

    path, _ = data.prepare("eurus", tmp_path, local, token_limit=3000, model_family="qwq")

    prompt = [dict(m) for m in pd.read_parquet(path).iloc[0]["prompt"]]
    assert prompt == [
        {"role": "system", "content": length_system_prompt(3000)},
        {"role": "user", "content": "What is $1+1$?" + USER_PROMPT_SUFFIXES["qwq"]},
    ]
    assert pd.read_parquet(path).iloc[0]["extra_info"]["split"] == "train"


def test_hub_loading_asks_datasets_for_the_published_names(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: calls.append((args, kwargs)) or [])
    data.load_records(data.SOURCES["olympiadbench"])
    data.load_records(data.SOURCES["eurus"])
    assert calls == [
        (("Hothan/OlympiadBench", "OE_TO_maths_en_COMP"), {"split": "train"}),
        (("PRIME-RL/Eurus-2-RL-Data", None), {"split": "train"}),
    ]


def test_command_prints_the_summary_and_writes_one_file_per_source(tmp_path, capsys):
    write_table(HUB_FORMATS["eurus"][1], tmp_path / "eurus.parquet")
    write_table(HUB_FORMATS["math500"][1], tmp_path / "math.jsonl")

    data.main(
        ["eurus", "math500", "--out-dir", str(tmp_path / "out"), "--token-limit", "4000", "--input"]
        + [f"eurus={tmp_path / 'eurus.parquet'}", f"math500={tmp_path / 'math.jsonl'}"]
    )

    printed = capsys.readouterr().out
    assert "eurus: kept 2, skipped 3 (1 duplicate, 1 no answer, 1 other data_source)" in printed
    assert "math500: kept 1, skipped 1 (1 no answer)" in printed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eurus.parquet", "math500.parquet"]


def test_command_rejects_a_malformed_input(tmp_path):
    with pytest.raises(SystemExit):
        data.main(["aime", "--out-dir", str(tmp_path), "--input", "nonsense"])


def test_a_source_without_usable_rows_fails_loudly(tmp_path):
    local = write_table([{"problem": "", "answer": "1"}], tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match="no usable rows"):
        data.prepare("deepscaler", tmp_path, local)


@pytest.mark.skipif(not SHARED_AIME.exists(), reason="needs ../shared/data/aime22_23_24.parquet")
def test_shared_aime_file_gives_the_official_validation_set(tmp_path):
    keep = ("AIME22", "AIME23")
    path, summary = data.prepare("aime", tmp_path, SHARED_AIME, token_limit=4000, keep_data_sources=keep)

    frame = pd.read_parquet(path)
    assert summary.kept == 60 and dict(summary.skipped) == {"other data_source": 30}
    assert frame["data_source"].value_counts().to_dict() == {"AIME22": 30, "AIME23": 30}
    assert frame.iloc[0]["prompt"][0]["content"] == length_system_prompt(4000)
    assert frame.iloc[0]["prompt"][1]["content"].endswith(SUFFIX)


@pytest.mark.parametrize(
    ("rows", "message"),
    [([{"problem": "", "answer": "1"}], "deepscaler: no usable rows (deepscaler: kept 0, skipped 1 (1 empty problem))"),
     (None, "Unable to find")],
    ids=["no-usable-rows", "missing-file"],
)  # fmt: skip
def test_the_command_answers_bad_input_with_one_line_and_a_non_zero_exit(tmp_path, capsys, rows, message):
    local = tmp_path / "d.jsonl"
    if rows is not None:
        write_table(rows, local)
    with pytest.raises(SystemExit) as exit_info:
        data.main(["deepscaler", "--out-dir", str(tmp_path / "out"), "--input", f"deepscaler={local}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and message in err.strip().splitlines()[-1] and "Traceback" not in err
