"""Evaluate a model the way the paper does (``python -m verl_thinkprune.evaluation --help``).

Per benchmark (a verl parquet's ``data_source``) and overall: pass@1 over n samples per problem, mean length over all
samples, truncation rate. Defaults are the paper's protocol: T=0.6, top_p=0.95, up to 32,000 new tokens, n=64 for
AIME24 and AMC23 and 16 otherwise. A truncated response scores 0; a finished one is graded by the ThinkPrune reward's
rule (``response_score``). Samples go to ``samples.jsonl`` one problem per line as they finish, so a rerun into the same
directory skips problems already done; ``results.json`` and ``results.md`` hold the aggregate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from verl_thinkprune.budget_forcing import budget_forced
from verl_thinkprune.reward_manager import eos_token_ids, is_truncated, response_score

PAPER_SAMPLES = {"AIME24": 64, "AMC23": 64}
"""Samples per problem in the paper's evaluation; every other benchmark gets DEFAULT_SAMPLES."""
DEFAULT_SAMPLES = 16
SAMPLES_FILE, SETTINGS_FILE, RESULTS_JSON, RESULTS_MD = "samples.jsonl", "settings.json", "results.json", "results.md"


@dataclass(frozen=True)
class EvalSettings:
    """Everything that changes the samples: a rerun must use the same settings to resume a run directory."""

    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 32000
    samples: int | None = None
    """Samples per problem; None: the paper's count per benchmark (PAPER_SAMPLES)."""
    budget: int | None = None
    """Budget forcing: thinking stops at this many tokens (None: plain sampling)."""
    answer_tokens: int = 2048
    """Budget forcing: tokens the answer may take after the thinking."""
    seed: int = 0

    def samples_for(self, data_source: str) -> int:
        return self.samples or PAPER_SAMPLES.get(data_source, DEFAULT_SAMPLES)


@dataclass(frozen=True)
class Problem:
    key: str
    """Stable across reruns: the data source and the row number in the parquet file."""
    data_source: str
    messages: list[dict[str, str]]
    ground_truth: str


def load_problems(parquet: Path) -> list[Problem]:
    """The problems of a verl parquet file (data_source, prompt messages, reward_model.ground_truth)."""
    import pandas as pd

    frame = pd.read_parquet(parquet)
    return [
        Problem(
            key=f"{row['data_source']}/{number}",
            data_source=str(row["data_source"]),
            messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"]],
            ground_truth=str(row["reward_model"]["ground_truth"]),
        )
        for number, row in enumerate(frame.to_dict("records"))
    ]


def cut_completion(ids: Sequence[int], eos_ids: set[int], stop: str | None, tokenizer) -> list[int]:
    """A generated row up to its first EOS (kept) or the end of the first stop string: padding and overrun dropped."""
    end = next((i + 1 for i, token in enumerate(ids) if token in eos_ids), len(ids))
    ids = list(ids[:end])
    if stop and stop in tokenizer.decode(ids, skip_special_tokens=False):
        low, high = 1, len(ids)  # the shortest prefix that contains the stop string
        while low < high:
            middle = (low + high) // 2
            if stop in tokenizer.decode(ids[:middle], skip_special_tokens=False):
                high = middle
            else:
                low = middle + 1
        ids = ids[:low]
    return ids


class Backend(Protocol):
    """What the evaluation needs from an inference engine."""

    tokenizer: Any
    eos_ids: set[int]

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[list[int]]:
        """Sampled completions, each cut after its first EOS or the end of the stop string."""
        ...


class TransformersBackend:
    """Sampling with Hugging Face transformers (CPU or one GPU): left-padded batches of ``batch_size`` sequences."""

    def __init__(self, model_dir: Path, settings: EvalSettings, batch_size: int = 16, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings, self.batch_size, self.device = settings, batch_size, device
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto").to(device).eval()
        self.eos_ids = eos_token_ids(self.tokenizer, str(model_dir))
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        torch.manual_seed(settings.seed)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[list[int]]:
        completions = []
        for start in range(0, len(prompts), self.batch_size):
            completions += self._generate_batch(prompts[start : start + self.batch_size], max_new_tokens, stop)
        return completions

    def _generate_batch(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None) -> list[list[int]]:
        import torch

        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        extra = {"stop_strings": [stop], "tokenizer": self.tokenizer} if stop else {}
        with torch.no_grad():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=self.settings.temperature,
                top_p=self.settings.top_p,
                top_k=0,  # vLLM's default, and the paper's protocol: nucleus sampling only
                max_new_tokens=max_new_tokens,
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad_id,
                **extra,
            )
        return [cut_completion(row, self.eos_ids, stop, self.tokenizer) for row in output[:, width:].tolist()]


class VLLMBackend:
    """Sampling with vLLM on GPUs. Thin on purpose: this project's CI has no GPU, so it is not tested there."""

    def __init__(self, model_dir: Path, settings: EvalSettings, tensor_parallel_size: int = 1):
        from vllm import LLM

        self.settings = settings
        self.llm = LLM(model=str(model_dir), seed=settings.seed, tensor_parallel_size=tensor_parallel_size)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_ids = eos_token_ids(self.tokenizer, str(model_dir))

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[list[int]]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_tokens=max_new_tokens,
            stop=[stop] if stop else None,
            include_stop_str_in_output=True,
        )
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [cut_completion(o.outputs[0].token_ids, self.eos_ids, stop, self.tokenizer) for o in outputs]


def sample_problems(
    backend: Backend, problems: Sequence[Problem], settings: EvalSettings, grading_timeout: float = 10.0
) -> list[dict[str, Any]]:
    """One record per problem: its responses with their lengths, truncation flags and scores."""
    tokenizer, eos_ids = backend.tokenizer, backend.eos_ids
    owners, prompts = [], []
    for problem in problems:
        encoded = tokenizer.apply_chat_template(
            problem.messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        ids = list(encoded["input_ids"])
        for _ in range(settings.samples_for(problem.data_source)):
            owners.append(problem)
            prompts.append(ids)
    if settings.budget is None:
        completions = backend.generate(prompts, settings.max_new_tokens)
        generated = [(ids, len(ids), is_truncated(ids, settings.max_new_tokens, eos_ids)) for ids in completions]
    else:
        forced = budget_forced(backend.generate, tokenizer, prompts, settings.budget, settings.answer_tokens, eos_ids)
        limit = settings.answer_tokens
        generated = [(f.token_ids, f.generated, is_truncated(f.answer_ids, limit, eos_ids)) for f in forced]
    records = {problem.key: _empty_record(problem) for problem in problems}
    for problem, (ids, length, truncated) in zip(owners, generated, strict=True):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        record = records[problem.key]
        record["responses"].append(text)
        record["lengths"].append(length)
        record["truncated"].append(int(truncated))
        record["scores"].append(0.0 if truncated else response_score(text, problem.ground_truth, grading_timeout))
    return list(records.values())


def _empty_record(problem: Problem) -> dict[str, Any]:
    return {
        "key": problem.key,
        "data_source": problem.data_source,
        "ground_truth": problem.ground_truth,
        "prompt": problem.messages,
        "responses": [],
        "lengths": [],
        "truncated": [],
        "scores": [],
    }


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The per-problem records of a run directory."""
    path = Path(run_dir) / SAMPLES_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Metrics per benchmark and "overall" (the mean of the benchmarks' figures, as the paper averages them)."""
    by_source: dict[str, list[dict]] = {}
    for record in records:
        by_source.setdefault(record["data_source"], []).append(record)
    table = {}
    for source, group in sorted(by_source.items()):
        lengths = [length for r in group for length in r["lengths"]]
        table[source] = {
            "problems": len(group),
            "samples": len(lengths),
            "pass@1": sum(sum(r["scores"]) / len(r["scores"]) for r in group) / len(group),
            "mean_length": sum(lengths) / len(lengths),
            "truncation_rate": sum(t for r in group for t in r["truncated"]) / len(lengths),
        }
    if table:
        rows = list(table.values())
        table["overall"] = {
            "problems": sum(r["problems"] for r in rows),
            "samples": sum(r["samples"] for r in rows),
            **{key: sum(r[key] for r in rows) / len(rows) for key in ("pass@1", "mean_length", "truncation_rate")},
        }
    return table


def markdown_table(table: dict[str, dict[str, float]], title: str = "benchmark") -> str:
    lines = [
        f"| {title} | problems | samples | pass@1 | mean length | truncated |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['problems']} | {row['samples']} | {100 * row['pass@1']:.1f}% "
            f"| {row['mean_length']:.0f} | {100 * row['truncation_rate']:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def open_run(run_dir: Path, settings: EvalSettings, model: str, dataset: str) -> None:
    """Create the run directory, or check that an existing one was sampled with the same settings."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SETTINGS_FILE
    wanted = {"settings": dataclasses.asdict(settings), "model": model, "dataset": dataset}
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != wanted:
            raise ValueError(f"{run_dir} holds samples taken with other settings, model or data: {existing}")
    else:
        path.write_text(json.dumps(wanted, indent=2))
    drop_partial_line(run_dir / SAMPLES_FILE)


def drop_partial_line(path: Path) -> None:
    """Remove a last line cut short by an interrupted run, so appended records start on a line of their own."""
    if path.exists():
        content = path.read_bytes()
        if content and not content.endswith(b"\n"):
            path.write_bytes(content[: content.rfind(b"\n") + 1])


def evaluate(
    dataset: Path,
    run_dir: Path,
    backend: Backend,
    settings: EvalSettings,
    model: str = "",
    max_problems: int | None = None,
    problems_per_step: int = 1,
) -> dict[str, dict[str, float]]:
    """Sample every problem not yet in run_dir, then write and return the aggregate metrics."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    open_run(run_dir, settings, model, str(dataset))
    done = {record["key"] for record in read_samples(run_dir)}
    todo = [p for p in load_problems(dataset)[:max_problems] if p.key not in done]
    with (run_dir / SAMPLES_FILE).open("a") as out, tqdm(total=len(todo), desc=f"evaluating {run_dir.name}") as bar:
        for start in range(0, len(todo), problems_per_step):
            for record in sample_problems(backend, todo[start : start + problems_per_step], settings):
                out.write(json.dumps(record) + "\n")
                out.flush()
                bar.update(1)
    table = summarize(read_samples(run_dir))
    summary = {"settings": dataclasses.asdict(settings), "model": model, "results": table}
    (run_dir / RESULTS_JSON).write_text(json.dumps(summary, indent=2))
    (run_dir / RESULTS_MD).write_text(markdown_table(table))
    return table


def budget_run_dir(out_dir: Path, budget: int) -> Path:
    return Path(out_dir) / f"budget-{budget}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m verl_thinkprune.evaluation",
        description="pass@1, mean length and truncation rate per benchmark, with the paper's sampling protocol; "
        "with --budgets, the budget-forcing baseline (one run directory per budget).",
        epilog="Example: python -m verl_thinkprune.evaluation --model ckpt/merged --data data/test/aime.parquet "
        "--out-dir eval/round1 --backend vllm",
    )
    parser.add_argument("--model", type=Path, required=True, help="a Hugging Face model directory (or hub name)")
    parser.add_argument("--data", type=Path, required=True, help="a verl parquet file (python -m verl_thinkprune.data)")
    parser.add_argument("--out-dir", type=Path, required=True, help="run directory; rerunning resumes it")
    parser.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    parser.add_argument("--samples", type=int, help="samples per problem (default: 64 for AIME24 and AMC23, else 16)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--max-new-tokens", type=int, default=32000)
    parser.add_argument("--budgets", type=int, nargs="*", help="budget forcing: thinking budgets, e.g. 500 1000 2000")
    parser.add_argument("--answer-tokens", type=int, default=2048, help="budget forcing: tokens for the answer")
    parser.add_argument("--max-problems", type=int, help="only the first N problems (a quick look)")
    parser.add_argument("--batch-size", type=int, default=16, help="transformers: sequences per generate call")
    parser.add_argument("--problems-per-step", type=int, default=8, help="problems sampled between two saves")
    parser.add_argument("--device", default="cpu", help="transformers: torch device")
    parser.add_argument("--threads", type=int, help="transformers: torch CPU threads (1 on a busy machine)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    base = EvalSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        samples=args.samples,
        answer_tokens=args.answer_tokens,
        seed=args.seed,
    )
    if args.backend == "vllm":
        backend = VLLMBackend(args.model, base, args.tensor_parallel_size)
    else:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        backend = TransformersBackend(args.model, base, args.batch_size, args.device)
    runs = [(args.out_dir, base)]
    if args.budgets:
        runs = [(budget_run_dir(args.out_dir, b), dataclasses.replace(base, budget=b)) for b in args.budgets]
    for run_dir, settings in runs:
        try:
            table = evaluate(
                args.data, run_dir, backend, settings, str(args.model), args.max_problems, args.problems_per_step
            )
        except ValueError as error:  # a run directory of another evaluation: say so without a traceback
            raise SystemExit(f"error: {error}") from None
        label = f"budget {settings.budget}" if settings.budget else "benchmark"
        print(f"{run_dir}:\n{markdown_table(table, label)}")
    if args.budgets:
        print(budget_table(args.out_dir, args.budgets))


def budget_table(out_dir: Path, budgets: Sequence[int]) -> str:
    """Overall figures per budget, written to out_dir/budget_forcing.md as well."""
    table = {
        f"B={budget}": json.loads((budget_run_dir(out_dir, budget) / RESULTS_JSON).read_text())["results"]["overall"]
        for budget in budgets
    }
    text = markdown_table(table, "budget (overall)")
    (Path(out_dir) / "budget_forcing.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
