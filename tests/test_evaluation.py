"""Evaluation and budget forcing: the metrics, the resumable run directory, and real sampling with the tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest import SHARED_AIME

from verl_thinkprune import data, evaluation
from verl_thinkprune.budget_forcing import FORCED_ANSWER, budget_forced
from verl_thinkprune.evaluation import TransformersBackend
from verl_thinkprune.generation import Completion
from verl_thinkprune.protocol import EvalSettings, read_samples, results_table, summarize
from verl_thinkprune.tiny import tiny_model_dir, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_model_dir()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("tiny_data"), num_train=1, num_val=6, num_test=3)


@pytest.fixture(scope="module")
def tiny_val(tiny_data):
    return tiny_data["val"]


@pytest.fixture(scope="module")
def backend(tiny_model):
    return TransformersBackend(tiny_model, EvalSettings(temperature=1.0, top_p=1.0), batch_size=16)


def settings(**overrides) -> EvalSettings:
    """The tiny model is validated at T=1 (greedy-ish sampling always writes the maximum number of checks)."""
    return EvalSettings(**{"temperature": 1.0, "top_p": 1.0, "samples": 2, "max_new_tokens": 200, **overrides})


class Counting:
    """A backend that counts the prompts it is asked to sample, then samples them with another backend."""

    def __init__(self, backend) -> None:
        self.backend, self.prompts = backend, 0
        self.tokenizer, self.eos_ids, self.context_length = backend.tokenizer, backend.eos_ids, backend.context_length

    def generate(self, prompts, max_new_tokens, stop=None):
        self.prompts += len(prompts)
        return self.backend.generate(prompts, max_new_tokens, stop)


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


def test_command_defaults_are_the_protocols():
    args = evaluation.build_parser().parse_args(["--model", "m", "--data", "d.parquet", "--out-dir", "o"])
    protocol = EvalSettings()
    assert (args.temperature, args.top_p, args.max_new_tokens) == (protocol.temperature, protocol.top_p, 32000)
    assert (args.answer_tokens, args.seed, args.samples) == (protocol.answer_tokens, protocol.seed, None)


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
    markdown = results_table(table)
    assert "| A | 2 | 4 | 75.0% | 20 | 25.0% |" in markdown and "| overall | 3 | 5 | 37.5% | 60 | 12.5% |" in markdown


class ScriptedGenerate:
    """A backend's generate that replays canned completions, recording what it was asked."""

    def __init__(self, tokenizer, *completions: list[str]):
        self.tokenizer, self.completions, self.calls = tokenizer, list(completions), []

    def __call__(self, prompts, max_new_tokens, stop=None):
        self.calls.append((prompts, max_new_tokens, stop))
        return [self.completion(text, stop) for text in self.completions.pop(0)]

    def completion(self, text: str, stop: str | None) -> Completion:
        """Ends with "!": an EOS; holds the stop string: stopped there; else the budget ran out."""
        if text.endswith("!"):
            return Completion(self.tokenizer.encode(text) + [self.tokenizer.eos_token_id], "eos")
        return Completion(self.tokenizer.encode(text), "stop" if stop and stop in text else "length")


def test_budget_forcing_appends_the_final_answer_prompt_only_to_unfinished_thinking(tokenizer):
    generate = ScriptedGenerate(
        tokenizer,
        ["Let me compute 12 + 30", "Let me verify: 42 </think>", "No thinking at all!"],
        ["\\boxed{42}!", " The answer is \\boxed{42}!"],
    )
    prompt = tokenizer.encode("What is 12 + 30?")

    results = budget_forced(generate, tokenizer, [prompt] * 3, budget=7, answer_tokens=5)

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
    assert [r.finish for r in results] == ["eos", "eos", "eos"]


def test_tiny_model_evaluation_resumes_without_regenerating(tiny_model, tiny_val, backend, tmp_path):
    run, model = tmp_path / "run", str(tiny_model)
    table = evaluation.evaluate(tiny_val, run, backend, settings(), model, max_problems=4, problems_per_step=2)

    assert table["tiny_arith"]["problems"] == 4 and table["tiny_arith"]["samples"] == 8
    assert table["tiny_arith"]["pass@1"] >= 0.5 and table["tiny_arith"]["truncation_rate"] == 0
    assert 30 < table["tiny_arith"]["mean_length"] < 150
    records = read_samples(run)
    assert all(len(r["responses"]) == len(r["lengths"]) == len(r["scores"]) == 2 for r in records)
    assert json.loads((run / "results.json").read_text())["results"] == table
    assert "| tiny_arith | 4 | 8 |" in (run / "results.md").read_text()

    with (run / "samples.jsonl").open("a") as samples:
        samples.write('{"key": "val/tiny_arith/4", "respon')  # an interrupted write
    counting = Counting(backend)
    table = evaluation.evaluate(tiny_val, run, counting, settings(), model, max_problems=5)
    assert counting.prompts == 2, "only the fifth problem is new"
    assert table["tiny_arith"]["problems"] == 5
    with pytest.raises(ValueError, match="other settings"):
        evaluation.evaluate(tiny_val, run, counting, settings(samples=3), model)


def test_several_data_files_keep_their_problems_apart_and_resume(tiny_data, backend, tmp_path):
    files = [tiny_data["val"], tiny_data["test"]]
    table = evaluation.evaluate(files, tmp_path, backend, settings(samples=1), max_problems=None)

    keys = [record["key"] for record in read_samples(tmp_path)]
    assert table["tiny_arith"]["problems"] == 6 + 3 == len(set(keys))
    assert {key.split("/")[0] for key in keys} == {"val", "test"}
    counting = Counting(backend)
    evaluation.evaluate(files, tmp_path, counting, settings(samples=1))
    assert counting.prompts == 0, "a rerun resumes: every problem of both files is done"


def test_data_files_of_the_same_name_are_refused(tiny_val, backend, tmp_path):
    twin = tmp_path / "copy" / tiny_val.name
    twin.parent.mkdir()
    twin.write_bytes(tiny_val.read_bytes())
    with pytest.raises(ValueError, match="share a name"):
        evaluation.evaluate([tiny_val, twin], tmp_path / "run", backend, settings())


class Replayed:
    """A backend that answers every prompt with one fixed completion, as an engine reported it."""

    def __init__(self, tokenizer, completion: Completion) -> None:
        self.tokenizer, self.completion = tokenizer, completion
        self.eos_ids, self.context_length = frozenset({tokenizer.eos_token_id}), None

    def generate(self, prompts, max_new_tokens, stop=None):
        return [self.completion] * len(prompts)


@pytest.mark.parametrize(
    "text, eos, finish, truncated",
    [
        ("<think> 42 </think> \\boxed{42}", True, "eos", False),
        ("<think> 42 </think> \\boxed{42}", False, "length", True),  # the engine ran out of context: cut off
        ("<think> 42 </think> \\boxed{42}", False, "stop", False),  # a stop string ended it
    ],
)
def test_truncation_follows_the_engines_finish_reason(backend, text, eos, finish, truncated):
    tokenizer = backend.tokenizer
    ids = tokenizer.encode(text) + ([tokenizer.eos_token_id] if eos else [])
    problem = evaluation.Problem("p/tiny/0", "tiny", [{"role": "user", "content": "What is 40+2?"}], "42")

    [record] = evaluation.sample_problems(Replayed(tokenizer, Completion(ids, finish)), [problem], settings(samples=1))

    assert len(ids) < settings().max_new_tokens
    assert record["truncated"] == [int(truncated)] and record["scores"] == [0.0 if truncated else 1.0]


@pytest.mark.parametrize(
    "finish_reason, stop_reason, eos, finish",
    [
        ("stop", None, True, "eos"),
        ("stop", 151643, True, "eos"),  # a generation-config EOS id vLLM treats as a stop token
        ("stop", "</think>", False, "stop"),
        ("length", None, False, "length"),
        ("abort", None, False, "length"),
    ],
)
def test_vllm_finish_reasons(tokenizer, finish_reason, stop_reason, eos, finish):
    ids = tokenizer.encode("Let me verify: 42 </think>") + ([tokenizer.eos_token_id] if eos else [])
    output = SimpleNamespace(token_ids=ids, finish_reason=finish_reason, stop_reason=stop_reason)
    stop = stop_reason if isinstance(stop_reason, str) else None
    completion = evaluation.vllm_completion(output, frozenset({tokenizer.eos_token_id}), stop, tokenizer)
    assert completion.finish == finish and completion.token_ids == ids


def test_a_response_budget_beyond_the_context_is_refused_before_generating(tiny_val, backend, tmp_path):
    counting = Counting(backend)
    assert backend.context_length == 256
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        evaluation.evaluate(tiny_val, tmp_path / "plain", counting, settings(max_new_tokens=250))
    with pytest.raises(ValueError, match="exceeds the model's context of 256"):
        evaluation.evaluate(tiny_val, tmp_path / "forced", counting, settings(budget=150, answer_tokens=100))
    assert counting.prompts == 0


def test_tiny_model_truncated_responses_score_zero(tiny_val, backend, tmp_path):
    table = evaluation.evaluate(tiny_val, tmp_path, backend, settings(max_new_tokens=12), max_problems=2)
    assert table["overall"]["truncation_rate"] == 1.0 and table["overall"]["pass@1"] == 0.0
    assert table["overall"]["mean_length"] == 12


def test_budget_forcing_command_on_the_tiny_model(tiny_model, tiny_val, tmp_path, capsys):
    out = tmp_path / "bf"
    evaluation.main(
        ["--model", str(tiny_model), "--data", str(tiny_val), "--out-dir", str(out), "--backend", "transformers"]
        + ["--samples", "2", "--temperature", "1", "--top-p", "1", "--max-problems", "3", "--answer-tokens", "24"]
        + ["--budgets", "8", "150", "--threads", "1"]
    )
    short, long = (json.loads((out / f"budget-{b}" / "results.json").read_text()) for b in (8, 150))
    assert short["settings"]["budget"] == 8 and short["results"]["overall"]["samples"] == 6
    assert all(FORCED_ANSWER in r for rec in read_samples(out / "budget-8") for r in rec["responses"])
    assert short["results"]["overall"]["mean_length"] <= 8 + 24
    assert long["results"]["overall"]["pass@1"] >= 0.5
    assert "| B=8 |" in (out / "budget_forcing.md").read_text() and "| B=150 |" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_AIME.exists(), reason="needs ../shared/data/aime22_23_24.parquet")
def test_prepared_aime_file_runs_through_the_evaluation(tiny_model, backend, tmp_path):
    path, _ = data.prepare("aime", tmp_path, SHARED_AIME, keep_data_sources=("AIME24",))
    frame = pd.read_parquet(path)
    assert len(frame) == 30
    with pytest.raises(ValueError, match="context"):  # the tiny model's 256 positions: most AIME prompts overflow
        evaluation.evaluate(path, tmp_path / "all", backend, settings(samples=None, max_new_tokens=8))
    shortest = frame.iloc[[frame["prompt"].map(lambda p: len(p[-1]["content"])).argmin()]]
    shortest.to_parquet(path)

    table = evaluation.evaluate(path, tmp_path / "run", backend, settings(samples=None, max_new_tokens=8))

    assert table["AIME24"]["samples"] == 64, "the paper samples AIME24 64 times"
    assert table["AIME24"]["pass@1"] == 0.0 and table["AIME24"]["truncation_rate"] == 1.0


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing data", 2, "no data file"),
        ("missing model", 2, "no model directory"),
        ("not a model", 2, "is not a model directory"),
        ("not parquet", 1, "not a verl parquet file"),
        ("context", 1, "exceeds the model's context"),
    ],
)
def test_command_errors_are_one_line_and_a_nonzero_exit(tiny_model, tiny_val, tmp_path, capsys, case, code, message):
    model, data_file, max_new_tokens = str(tiny_model), str(tiny_val), "100"
    if case == "missing data":
        data_file = str(tmp_path / "absent.parquet")
    elif case == "missing model":
        model = str(tmp_path / "runs" / "round_1" / "merged")
    elif case == "not a model":
        model = str(tmp_path)
    elif case == "not parquet":
        data_file = str(tmp_path / "notes.parquet")
        (tmp_path / "notes.parquet").write_text("not a table")
    else:
        max_new_tokens = "300"
    argv = ["--model", model, "--data", data_file, "--out-dir", str(tmp_path / "out"), "--backend", "transformers"]

    with pytest.raises(SystemExit) as exit_info:
        evaluation.main(argv + ["--max-new-tokens", max_new_tokens, "--samples", "1"])

    stderr = capsys.readouterr().err
    last_line = stderr.splitlines()[-1]  # after transformers' own progress bars
    assert exit_info.value.code == code and "Traceback" not in stderr
    assert last_line.startswith("error: ") and message in last_line
