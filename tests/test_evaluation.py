"""Evaluation and budget forcing: the metrics, the resumable run directory, and real sampling with the tiny model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import SHARED_AIME

from verl_thinkprune import data, evaluation
from verl_thinkprune.budget_forcing import FORCED_ANSWER, budget_forced
from verl_thinkprune.evaluation import EvalSettings, TransformersBackend, cut_completion, summarize
from verl_thinkprune.tiny import tiny_model_dir, write_dataset


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two torch threads on a busy 2-core machine make generation 100x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_model_dir()


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    _, val = write_dataset(tmp_path_factory.mktemp("tiny_data"), num_train=1, num_val=6)
    return val


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TransformersBackend(tiny_model, EvalSettings(temperature=1.0, top_p=1.0), batch_size=16)


def settings(**overrides) -> EvalSettings:
    """The tiny model is validated at T=1 (greedy-ish sampling always writes the maximum number of checks)."""
    return EvalSettings(**{"temperature": 1.0, "top_p": 1.0, "samples": 2, "max_new_tokens": 200, **overrides})


def test_paper_protocol_defaults():
    protocol = EvalSettings()
    assert (protocol.temperature, protocol.top_p, protocol.max_new_tokens) == (0.6, 0.95, 32000)
    assert [protocol.samples_for(s) for s in ("AIME24", "AMC23", "MATH500", "OlympiadBench", "AIME22")] == [
        64,
        64,
        16,
        16,
        16,
    ]
    assert EvalSettings(samples=4).samples_for("AIME24") == 4


def test_summary_per_benchmark_and_overall_mean_of_benchmarks():
    records = [
        {"data_source": "A", "scores": [1.0, 0.0], "lengths": [10, 30], "truncated": [0, 1]},
        {"data_source": "A", "scores": [1.0, 1.0], "lengths": [20, 20], "truncated": [0, 0]},
        {"data_source": "B", "scores": [0.0], "lengths": [100], "truncated": [0]},
    ]
    table = summarize(records)
    assert table["A"] == {"problems": 2, "samples": 4, "pass@1": 0.75, "mean_length": 20.0, "truncation_rate": 0.25}
    assert table["overall"] == {
        "problems": 3,
        "samples": 5,
        "pass@1": 0.375,
        "mean_length": 60.0,
        "truncation_rate": 0.125,
    }
    markdown = evaluation.markdown_table(table)
    assert "| A | 2 | 4 | 75.0% | 20 | 25.0% |" in markdown and "| overall | 3 | 5 | 37.5% | 60 | 12.5% |" in markdown


def test_cut_completion_stops_at_eos_or_after_the_stop_string(tokenizer):
    eos = {tokenizer.eos_token_id}
    ids = tokenizer.encode("Let me compute 12 + 30 = 42. </think> The answer")
    padded = ids + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert cut_completion(padded, eos, None, tokenizer) == ids + [tokenizer.eos_token_id]
    cut = cut_completion(padded, eos, "</think>", tokenizer)
    assert tokenizer.decode(cut).endswith("</think>") and cut == ids[: len(cut)]
    assert cut_completion(ids, eos, "never", tokenizer) == ids


class ScriptedGenerate:
    """A backend's generate that replays canned completions, recording what it was asked."""

    def __init__(self, tokenizer, *completions: list[str]):
        self.tokenizer, self.completions, self.calls = tokenizer, list(completions), []

    def __call__(self, prompts, max_new_tokens, stop=None):
        self.calls.append((prompts, max_new_tokens, stop))
        texts = self.completions.pop(0)
        return [self.tokenizer.encode(t) + ([self.tokenizer.eos_token_id] if t.endswith("!") else []) for t in texts]


def test_budget_forcing_appends_the_final_answer_prompt_only_to_unfinished_thinking(tokenizer):
    eos = {tokenizer.eos_token_id}
    generate = ScriptedGenerate(
        tokenizer,
        ["Let me compute 12 + 30", "Let me verify: 42 </think>", "No thinking at all!"],
        ["\\boxed{42}!", " The answer is \\boxed{42}!"],
    )
    prompt = tokenizer.encode("What is 12 + 30?")

    results = budget_forced(generate, tokenizer, [prompt] * 3, budget=7, answer_tokens=5, eos_ids=eos)

    assert [call[1:] for call in generate.calls] == [(7, "</think>"), (5, None)]
    forced_context = generate.calls[1][0][0]
    assert tokenizer.decode(forced_context).endswith("12 + 30\n" + FORCED_ANSWER)
    texts = [tokenizer.decode(r.token_ids, skip_special_tokens=True) for r in results]
    assert texts[0] == "Let me compute 12 + 30\n" + FORCED_ANSWER + "\\boxed{42}!"
    assert texts[1] == "Let me verify: 42 </think> The answer is \\boxed{42}!"
    assert texts[2] == "No thinking at all!" and results[2].answer_ids == []
    forced_tokens = len(tokenizer.encode("\n" + FORCED_ANSWER))
    assert results[0].generated == len(results[0].token_ids) - forced_tokens
    assert results[1].generated == len(results[1].token_ids)


def test_tiny_model_evaluation_resumes_without_regenerating(tiny_model, tiny_val, backend, tmp_path):
    run, model = tmp_path / "run", str(tiny_model)
    table = evaluation.evaluate(tiny_val, run, backend, settings(), model, max_problems=4, problems_per_step=2)

    assert table["tiny_arith"]["problems"] == 4 and table["tiny_arith"]["samples"] == 8
    assert table["tiny_arith"]["pass@1"] >= 0.5 and table["tiny_arith"]["truncation_rate"] == 0
    assert 30 < table["tiny_arith"]["mean_length"] < 150
    records = evaluation.read_samples(run)
    assert all(len(r["responses"]) == len(r["lengths"]) == len(r["scores"]) == 2 for r in records)
    assert json.loads((run / "results.json").read_text())["results"] == table
    assert "| tiny_arith | 4 | 8 |" in (run / "results.md").read_text()

    class Counting:
        tokenizer, eos_ids, prompts = backend.tokenizer, backend.eos_ids, 0

        def generate(self, prompts, max_new_tokens, stop=None):
            Counting.prompts += len(prompts)
            return backend.generate(prompts, max_new_tokens, stop)

    with (run / "samples.jsonl").open("a") as samples:
        samples.write('{"key": "tiny_arith/4", "respon')  # an interrupted write
    table = evaluation.evaluate(tiny_val, run, Counting(), settings(), model, max_problems=5)
    assert Counting.prompts == 2, "only the fifth problem is new"
    assert table["tiny_arith"]["problems"] == 5
    with pytest.raises(ValueError, match="other settings"):
        evaluation.evaluate(tiny_val, run, Counting(), settings(samples=3), model)


def test_tiny_model_truncated_responses_score_zero(tiny_val, backend, tmp_path):
    table = evaluation.evaluate(tiny_val, tmp_path, backend, settings(max_new_tokens=12), max_problems=2)
    assert table["overall"]["truncation_rate"] == 1.0 and table["overall"]["pass@1"] == 0.0
    assert table["overall"]["mean_length"] == 12


def test_budget_forcing_command_on_the_tiny_model(tiny_model, tiny_val, tmp_path, capsys):
    out = tmp_path / "bf"
    evaluation.main(
        ["--model", str(tiny_model), "--data", str(tiny_val), "--out-dir", str(out), "--backend", "transformers"]
        + ["--samples", "2", "--temperature", "1", "--top-p", "1", "--max-problems", "3", "--answer-tokens", "24"]
        + ["--budgets", "8", "200", "--threads", "1"]
    )
    short, long = (json.loads((out / f"budget-{b}" / "results.json").read_text()) for b in (8, 200))
    assert short["settings"]["budget"] == 8 and short["results"]["overall"]["samples"] == 6
    assert all(FORCED_ANSWER in r for rec in evaluation.read_samples(out / "budget-8") for r in rec["responses"])
    assert short["results"]["overall"]["mean_length"] <= 8 + 24
    assert long["results"]["overall"]["pass@1"] >= 0.5
    assert "| B=8 |" in (out / "budget_forcing.md").read_text() and "| B=200 |" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_AIME.exists(), reason="needs ../shared/data/aime22_23_24.parquet")
def test_prepared_aime_file_runs_through_the_evaluation(tiny_model, backend, tmp_path):
    path, _ = data.prepare("aime", tmp_path, SHARED_AIME, keep_data_sources=("AIME24",))
    assert len(pd.read_parquet(path)) == 30

    table = evaluation.evaluate(
        path, tmp_path / "run", backend, settings(samples=None, max_new_tokens=8), max_problems=1
    )

    assert table["AIME24"]["samples"] == 64, "the paper samples AIME24 64 times"
    assert table["AIME24"]["pass@1"] == 0.0 and table["AIME24"]["truncation_rate"] == 1.0
