"""Analyses of evaluation runs: keywords, plots (opened and checked), perplexity with the tiny model, the LLM judge
against a local OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import re
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import matplotlib.image
import pytest
from test_evaluation import one_torch_thread  # noqa: F401 - the fixture, used by this module too

from verl_thinkprune import evaluation
from verl_thinkprune.analysis import judge, keywords, plots
from verl_thinkprune.analysis.__main__ import analyze
from verl_thinkprune.analysis.perplexity import ReferenceModel, reasoning_part, reasoning_perplexity
from verl_thinkprune.evaluation import EvalSettings, TransformersBackend
from verl_thinkprune.tiny import tiny_model_dir, write_dataset

VERBOSE = "<think> 10+20=30. Wait, let me verify: 30. Hmm. But wait, let me double-check. </think> \\boxed{30}"
CONCISE = "<think> 10+20=30. </think> \\boxed{30}"


def record(data_source: str, responses: list[str], lengths: list[int], scores: list[float]) -> dict:
    return {
        "key": f"{data_source}/0",
        "data_source": data_source,
        "ground_truth": "30",
        "prompt": [{"role": "user", "content": "What is 10+20?"}],
        "responses": responses,
        "lengths": lengths,
        "truncated": [0] * len(responses),
        "scores": scores,
    }


def write_run(path, records: list[dict], budget: int | None = None):
    """A run directory as the evaluation writes it."""
    path.mkdir(parents=True)
    (path / evaluation.SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    results = {"settings": {"budget": budget}, "results": evaluation.summarize(records)}
    (path / evaluation.RESULTS_JSON).write_text(json.dumps(results))
    return path


def test_keyword_rates_per_thousand_tokens():
    rates = keywords.keyword_rates([record("A", [VERBOSE, CONCISE], [30, 10], [1, 1])], ("Wait", "But wait", "Hmm"))
    assert rates == {"Wait": 2 * 1000 / 40, "But wait": 1000 / 40, "Hmm": 1000 / 40}
    assert keywords.keyword_rates([record("A", ["Waiter, awaits"], [5], [0])], ("Wait",)) == {"Wait": 0.0}


def test_keywords_command_compares_runs(tmp_path, capsys):
    before = write_run(tmp_path / "before", [record("A", [VERBOSE], [30], [1])])
    after = write_run(tmp_path / "after", [record("A", [CONCISE], [10], [1])])

    report = analyze(["--json", str(tmp_path / "k.json"), "keywords", f"original={before}", f"pruned={after}"])

    assert report["original"]["Wait"] > 0 and report["pruned"]["Wait"] == 0
    assert "| Wait | 66.67 | 0.00 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "k.json").read_text()) == report


def assert_png(path, figure, xlabel: str, ylabel: str):
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0, "not a blank image"
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == (xlabel, ylabel)


def test_plot_functions_write_labelled_pngs(tmp_path):
    figure = plots.length_histograms({"original": [90, 100, 120], "round 1": [40, 45, 60]}, tmp_path / "h.png")
    assert_png(tmp_path / "h.png", figure, "response length (tokens)", "responses")
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "original (mean 103)",
        "round 1 (mean 48)",
    ]

    series = {"ThinkPrune": [("original", 100, 0.9), ("L=78", 50, 0.95)], "budget forcing": [("B=8", 20, 0.1)]}
    figure = plots.accuracy_vs_length(series, tmp_path / "a.png")
    assert_png(tmp_path / "a.png", figure, "mean response length (tokens)", "pass@1 (%)")
    assert len(figure.axes[0].get_lines()) == 2


def test_plots_command_draws_models_and_budget_forcing(tmp_path, capsys):
    base = write_run(tmp_path / "base", [record("A", [VERBOSE] * 2, [90, 110], [1, 0])])
    pruned = write_run(tmp_path / "pruned", [record("A", [CONCISE] * 2, [40, 50], [1, 1])])
    for budget, score in ((8, 0.0), (32, 0.5)):
        write_run(tmp_path / "bf" / f"budget-{budget}", [record("A", [CONCISE], [budget], [score])], budget)

    report = analyze(
        ["plots", "--out-dir", str(tmp_path / "figs"), str(base), str(pruned), f"forced={tmp_path / 'bf'}"]
    )

    assert report == {
        "lengths": str(tmp_path / "figs/lengths.png"),
        "accuracy_vs_length": str(tmp_path / "figs/accuracy_vs_length.png"),
    }
    for path in report.values():
        assert matplotlib.image.imread(path).size > 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real evaluation run of the tiny model: 3 problems x 2 samples."""
    root = tmp_path_factory.mktemp("tiny_run")
    _, val = write_dataset(root / "data", num_train=1, num_val=3)
    settings = EvalSettings(temperature=1.0, top_p=1.0, samples=2, max_new_tokens=200)
    backend = TransformersBackend(tiny_model_dir(), settings)
    evaluation.evaluate(val, root / "run", backend, settings)
    return root / "run"


def test_reasoning_perplexity_under_the_tiny_model(tiny_run, tmp_path):
    reference = ReferenceModel(tiny_model_dir())
    records = evaluation.read_samples(tiny_run)

    own = reasoning_perplexity(reference, records)
    assert own["responses"] == 6 and own["tokens"] > 6 * 20
    assert 1.0 < own["perplexity"] < 3.0, "the model finds its own reasoning predictable"
    scrambled = [dict(r, responses=[" ".join(reversed(x.split())) for x in r["responses"]]) for r in records]
    assert reasoning_perplexity(reference, scrambled)["perplexity"] > 3 * own["perplexity"]
    assert reasoning_part("a </think> b") == "a " and reasoning_part("cut off") == "cut off"

    report = analyze(
        ["perplexity", "--reference-model", str(tiny_model_dir()), "--max-responses", "2", f"tiny={tiny_run}"]
    )
    assert report["tiny"]["responses"] == 2


def test_tiny_run_feeds_keywords_and_plots(tiny_run, tmp_path):
    report = analyze(["keywords", str(tiny_run)])
    assert set(report["run"]) == set(keywords.HESITATION_KEYWORDS)
    assert analyze(["plots", "--out-dir", str(tmp_path), str(tiny_run)])["lengths"].endswith("lengths.png")


class FakeOpenAI(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions like an OpenAI server: a phase per step of the quoted solution.

    The first request, and any outside /v1/, gets a 503 (the client must retry); a problem containing "REJECT" gets a
    400 (not retried).
    """

    requests: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(body)
        prompt = body["messages"][0]["content"]
        if len(FakeOpenAI.requests) == 1 or not self.path.startswith("/v1/"):
            return self.send_error(503)
        if "REJECT" in prompt:
            return self.send_error(400)
        steps = [s for s in prompt.split("Solution:\n", 1)[1].split("\n\n") if s.strip()]
        names = ["Understanding the Problem", "**Computing or Simplifying Expressions**", "Reassess the whole solution"]
        reply = "\n\n".join(
            f"[Phase {i + 1}]: {names[min(i, 2)]}\n[Start]: {step[:15]}\n[End]: {step}" for i, step in enumerate(steps)
        )
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def openai_server():
    FakeOpenAI.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_parse_phases_reads_the_judge_format():
    reply = "[Phase 1]: Understanding the Problem\n[Start]: a\n[End]: b\n\n[Phase 2]: 9. Something else\n[Start]: c"
    assert judge.parse_phases(reply) == [("Understanding the Problem", "a", "b")]
    assert judge.canonical_behaviour("reassess and verify local steps") == "Reassess and Verify Local Steps"
    assert judge.canonical_behaviour("Daydreaming") == judge.OTHER
    assert judge.behaviour_steps(
        "[Phase 1]: Understanding the Problem\n[Start]: two\n[End]: thre", "one\n\ntwo\n\nthree"
    ) == {"Understanding the Problem": 2}


def test_judge_breakdown_against_a_local_openai_server(openai_server, tmp_path, capsys):
    reasoning = (
        "<think>Let us read the problem.\n\nCompute 10+20=30.\n\nCheck the whole thing again.</think> \\boxed{30}"
    )
    records = [
        record("A", ["no closing tag", reasoning], [10, 20], [0, 1]),
        dict(record("A", [reasoning], [20], [1]), prompt=[{"role": "user", "content": "REJECT this one"}]),
        record("A", ["never finished"], [10], [0]),
    ]
    run = write_run(tmp_path / "run", records)

    report = analyze(
        ["judge", "--base-url", openai_server, "--model", "judge", "--retries", "2", "--concurrency", "2", str(run)]
    )

    assert report["run"]["judged"] == 1 and report["run"]["failed"] == 1
    assert report["run"]["steps"] == {
        "Understanding the Problem": 1,
        "Computing or Simplifying Expressions": 1,
        "Reassess the Whole Solution": 1,
    }
    assert sum(report["run"]["fractions"].values()) == pytest.approx(1.0)
    first = FakeOpenAI.requests[0]
    assert first["model"] == "judge" and first["temperature"] == 0.0
    assert "Applying Known Theorems/Properties" in first["messages"][0]["content"]
    assert len(FakeOpenAI.requests) == 3, "one retry after the 503, no retry after the 400"
    assert re.search(r"\| Computing or Simplifying Expressions \| 33\.3% \|", capsys.readouterr().out)


def test_judge_client_gives_up_after_bounded_retries(openai_server):
    client = judge.JudgeClient(openai_server.replace("/v1", "/missing"), "judge", retries=1, backoff=0.01, timeout=5)
    with pytest.raises(urllib.error.HTTPError, match="503"):
        client.complete("anything")
    assert len(FakeOpenAI.requests) == 2
