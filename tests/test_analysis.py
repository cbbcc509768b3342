"""Analyses of evaluation runs: keywords, plots (opened and checked), perplexity with the tiny model, the LLM judge
against a local OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import matplotlib.image
import openai
import pytest

from verl_thinkprune import evaluation, protocol
from verl_thinkprune.analysis import judge, keywords, plots
from verl_thinkprune.analysis.__main__ import analyze, main
from verl_thinkprune.analysis.perplexity import ReferenceModel, reasoning_part, reasoning_perplexity
from verl_thinkprune.evaluation import TransformersBackend
from verl_thinkprune.protocol import EvalSettings
from verl_thinkprune.tiny import tiny_model_dir, write_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

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
    (path / protocol.SAMPLES_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    results = {"settings": {"budget": budget}, "results": protocol.summarize(records)}
    (path / protocol.RESULTS_JSON).write_text(json.dumps(results))
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
    val = write_dataset(root / "data", num_train=1, num_val=3)["val"]
    settings = EvalSettings(temperature=1.0, top_p=1.0, samples=2, max_new_tokens=200)
    backend = TransformersBackend(tiny_model_dir(), settings)
    evaluation.evaluate(val, root / "run", backend, settings)
    return root / "run"


def test_reasoning_perplexity_under_the_tiny_model(tiny_run, tmp_path):
    reference = ReferenceModel(tiny_model_dir())
    records = protocol.read_samples(tiny_run)

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

    The first request gets a 429 with Retry-After (rate limited: the client must wait and retry); any request outside
    /v1/ gets a 503 (retried too); a problem containing "REJECT" gets a 400 (not retried).
    """

    requests: list[dict] = []
    authorizations: list[str] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAI.requests.append(body)
        FakeOpenAI.authorizations.append(self.headers["Authorization"])
        prompt = body["messages"][0]["content"]
        if len(FakeOpenAI.requests) == 1:
            return self.reply(429, {"error": {"message": "rate limited"}}, {"Retry-After-Ms": "10"})
        if not self.path.startswith("/v1/"):
            return self.reply(503, {"error": {"message": "unavailable"}})
        if "REJECT" in prompt:
            return self.reply(400, {"error": {"message": "bad request"}})
        steps = [s for s in prompt.split("Solution:\n", 1)[1].split("\n\n") if s.strip()]
        names = ["Understanding the Problem", "**Computing or Simplifying Expressions**", "Reassess the whole solution"]
        reply = "\n\n".join(
            f"[Phase {i + 1}]: {names[min(i, 2)]}\n[Start]: {step[:15]}\n[End]: {step}" for i, step in enumerate(steps)
        )
        self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})

    def reply(self, status: int, payload: dict, headers: dict[str, str] | None = None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def openai_server():
    FakeOpenAI.requests, FakeOpenAI.authorizations = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server():
    """Accepts connections and never answers (a hung server); yields its URL and the connections it accepted."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", accepted
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


REASONING = "<think>Let us read the problem.\n\nCompute 10+20=30.\n\nCheck the whole thing again.</think> \\boxed{30}"


def test_parse_phases_reads_the_judge_format():
    reply = "[Phase 1]: Understanding the Problem\n[Start]: a\n[End]: b\n\n[Phase 2]: 9. Something else\n[Start]: c"
    assert judge.parse_phases(reply) == [("Understanding the Problem", "a", "b")]
    assert judge.canonical_behaviour("reassess and verify local steps") == "Reassess and Verify Local Steps"
    assert judge.canonical_behaviour("Daydreaming") == judge.OTHER
    assert judge.behaviour_steps(
        "[Phase 1]: Understanding the Problem\n[Start]: two\n[End]: thre", "one\n\ntwo\n\nthree"
    ) == {"Understanding the Problem": 2}


def test_judge_breakdown_against_a_local_openai_server(openai_server, tmp_path, capsys, monkeypatch):
    records = [
        record("A", ["no closing tag", REASONING], [10, 20], [0, 1]),
        dict(record("A", [REASONING], [20], [1]), prompt=[{"role": "user", "content": "REJECT this one"}]),
        record("A", ["never finished"], [10], [0]),
    ]
    run = write_run(tmp_path / "run", records)
    monkeypatch.setenv("JUDGE_API_KEY", "secret-key")

    report = analyze(
        ["judge", "--base-url", openai_server, "--model", "judge", "--api-key-env", "JUDGE_API_KEY"]
        + ["--retries", "2", "--concurrency", "2", str(run)]
    )

    assert report["run"]["judged"] == 1 and report["run"]["failed"] == 1
    assert report["run"]["first_failure"].startswith("BadRequestError: Error code: 400")
    assert report["run"]["steps"] == {
        "Understanding the Problem": 1,
        "Computing or Simplifying Expressions": 1,
        "Reassess the Whole Solution": 1,
    }
    assert sum(report["run"]["fractions"].values()) == pytest.approx(1.0)
    first = FakeOpenAI.requests[0]
    assert first["model"] == "judge" and first["temperature"] == 0.0
    assert "Applying Known Theorems/Properties" in first["messages"][0]["content"]
    assert len(FakeOpenAI.requests) == 3, "one retry after the 429, no retry after the 400"
    assert set(FakeOpenAI.authorizations) == {"Bearer secret-key"}
    output = capsys.readouterr()
    assert re.search(r"\| Computing or Simplifying Expressions \| 33\.3% \|", output.out)
    assert "judged/failed: run 1/1" in output.out
    assert output.err.startswith(
        "warning: 1 of 2 judge requests for run failed (first: BadRequestError: Error code: 400"
    )
    assert output.err.count("\n") == 1


def test_judge_client_gives_up_after_bounded_retries(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "a key for another service")
    client = judge.JudgeClient(openai_server.replace("/v1", "/missing"), "judge", None, timeout=5, retries=1)
    FakeOpenAI.requests.append({})  # past the first request's 429: this endpoint answers 503 only
    with pytest.raises(openai.InternalServerError, match="503"):
        client.complete("anything")
    assert len(FakeOpenAI.requests) == 1 + 2, "the request and its one retry"
    assert set(FakeOpenAI.authorizations) == {f"Bearer {judge.NO_API_KEY}"}, "no key sent where none was given"


def test_judge_stops_at_a_server_that_never_answers(silent_server, tmp_path):
    url, accepted = silent_server
    run = write_run(tmp_path / "run", [record("A", [REASONING], [20], [1])] * 3)

    with pytest.raises(SystemExit) as exit:
        main(
            ["judge", "--base-url", url, "--model", "judge", "--timeout", "0.5", "--retries", "1"]
            + ["--concurrency", "1", str(run)]
        )

    assert_one_line(
        exit, rf"error: the judge at {re.escape(url)} answered none of the 3 requests for run: APITimeout.*"
    )
    assert len(accepted) == 2, "the first request timed out twice (one retry); the other two were not sent"


def test_judge_at_a_closed_port_fails_in_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    run = write_run(tmp_path / "run", [record("A", [REASONING], [20], [1])])

    with pytest.raises(SystemExit) as exit:
        main(["judge", "--base-url", url, "--model", "judge", "--retries", "1", str(run)])

    assert_one_line(exit, rf"error: the judge at {re.escape(url)} answered none of the 1 requests for run: .*refused.*")


def test_judge_without_the_openai_extra_names_it(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run", [record("A", [REASONING], [20], [1])])
    monkeypatch.setitem(sys.modules, "openai", None)  # what importing it does where the extra is not installed
    monkeypatch.delitem(sys.modules, "verl_thinkprune.analysis.judge")

    with pytest.raises(SystemExit) as exit:
        main(["judge", "--base-url", "http://127.0.0.1:9/v1", "--model", "judge", str(run)])

    assert_one_line(exit, re.escape("error: the judge needs the openai client: pip install 'verl-thinkprune[judge]'"))


def assert_one_line(exit: pytest.ExceptionInfo, pattern: str):
    """The command ended as the interpreter shows a SystemExit message: that one line on stderr, exit status 1."""
    message = exit.value.code
    assert isinstance(message, str) and "\n" not in message
    assert re.fullmatch(pattern, message), message


BAD_INPUTS = {
    "missing run": (["keywords", "/no/such/dir"], "error: no evaluation run directory at /no/such/dir"),
    "not a run": (
        ["keywords", "{tmp}/notes"],
        "error: {tmp}/notes is not an evaluation run: it has no samples.jsonl and results.json "
        "(python -m verl_thinkprune.evaluation writes them)",
    ),
    "budget-forcing directory": (
        ["keywords", "{tmp}/bf"],
        "error: {tmp}/bf holds budget-forcing runs, not samples: name one of its budget-B/ runs",
    ),
    "run without results": (
        ["plots", "--out-dir", "{tmp}/figs", "{tmp}/empty"],
        "error: {tmp}/empty/results.json has no results: its evaluation sampled no problem",
    ),
    "unwritable output": (
        ["plots", "--out-dir", "{tmp}/a-file/figs", "{tmp}/run"],
        "error: NotADirectoryError: [Errno 20] Not a directory: '{tmp}/a-file/figs'",
    ),
    "missing reference model": (
        ["perplexity", "--reference-model", "/no/such/model", "{tmp}/run"],
        "error: no reference model directory at /no/such/model",
    ),
    "not a model directory": (
        ["perplexity", "--reference-model", "{tmp}/notes", "{tmp}/run"],
        "error: cannot load the reference model {tmp}/notes: ",
    ),
    "negative retries": (
        ["judge", "--base-url", "http://127.0.0.1:9/v1", "--model", "judge", "--retries", "-1", "{tmp}/run"],
        "error: --retries must be at least 0, --timeout above 0 and --concurrency at least 1",
    ),
}
"""Command lines with bad input ({tmp}: a directory of runs and non-runs), and the start of the line each ends with."""


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_ends_in_one_line(case, tmp_path):
    write_run(tmp_path / "run", [record("A", [CONCISE], [10], [1])])
    write_run(tmp_path / "empty", [])
    write_run(tmp_path / "bf" / "budget-8", [record("A", [CONCISE], [8], [1])], 8)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a run")
    (tmp_path / "a-file").write_text("")
    argv, expected = BAD_INPUTS[case]

    with pytest.raises(SystemExit) as exit:
        main([arg.format(tmp=tmp_path) for arg in argv])

    assert_one_line(exit, re.escape(expected.format(tmp=tmp_path)) + ".*")


def test_command_line_reports_a_missing_run_without_a_traceback():
    """The real entry point, as a person runs it: the reason on the last line, exit status 1."""
    result = subprocess.run(
        [sys.executable, "-m", "verl_thinkprune.analysis", "keywords", "/no/such/dir"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "error: no evaluation run directory at /no/such/dir"
    assert "Traceback" not in result.stderr
