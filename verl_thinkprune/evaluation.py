"""Evaluate a model the way the paper does (``python -m verl_thinkprune.evaluation --help``).

Per benchmark (a verl parquet's ``data_source``, over one or several files) and overall: pass@1 over n samples per
problem, mean length over all samples, truncation rate. Defaults are the paper's protocol (``EvalSettings``): T=0.6,
top_p=0.95, up to 32,000 new tokens, n=64 for AIME24 and AMC23 and 16 otherwise. A response is truncated when the
engine says it ran out of tokens or it used them all without an EOS (the reward's rule, ``is_truncated``); it scores
0. A finished one is graded by the ThinkPrune reward's rule (``response_score``). Samples go to ``samples.jsonl`` one
problem per line as they finish, so a rerun into the same directory skips problems already done; ``results.json`` and
``results.md`` hold the aggregate. An evaluation whose prompts plus responses would not fit the model's context is
refused before anything is generated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from verl_thinkprune.budget_forcing import budget_forced, max_response_tokens
from verl_thinkprune.generation import Completion, Sampling, TransformersGenerator, cut_completion, special_ids
from verl_thinkprune.protocol import (
    DEFAULT_SAMPLES,
    PAPER_SAMPLES,
    RESULTS_JSON,
    SAMPLES_FILE,
    EvalSettings,
    open_run,
    read_samples,
    results_table,
    write_results,
)
from verl_thinkprune.reward_manager import GRADING_TIMEOUT, is_truncated, response_score

BATCH_SIZE = 16
"""transformers backend: sequences per generate call."""
HUB_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")
"""What --model may be when it is no local directory: a hub name, "org/name" (which transformers or vLLM fetch)."""
PROBLEMS_PER_SAVE = 8
"""Problems sampled together between two appends to samples.jsonl (what an interruption can lose)."""


@dataclass(frozen=True)
class Problem:
    key: str
    """Stable across reruns and unique across files: the file's name, the data source and the row number."""
    data_source: str
    messages: list[dict[str, str]]
    ground_truth: str


def load_problems(parquets: Sequence[Path]) -> list[Problem]:
    """The problems of verl parquet files (data_source, prompt messages, reward_model.ground_truth), in order."""
    import pandas as pd

    names = [Path(parquet).stem for parquet in parquets]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"data files share a name ({', '.join(duplicates)}): their problem keys would collide")
    problems = []
    for parquet, name in zip(parquets, names, strict=True):
        try:
            rows = pd.read_parquet(parquet).to_dict("records")
            problems += [
                Problem(
                    key=f"{name}/{row['data_source']}/{number}",
                    data_source=str(row["data_source"]),
                    messages=[{"role": str(m["role"]), "content": str(m["content"])} for m in row["prompt"]],
                    ground_truth=str(row["reward_model"]["ground_truth"]),
                )
                for number, row in enumerate(rows)
            ]
        except (OSError, ValueError, KeyError, TypeError) as error:  # pyarrow's errors are ValueErrors or OSErrors
            raise ValueError(f"{parquet}: not a verl parquet file ({type(error).__name__}: {error})") from None
    return problems


class Backend(Protocol):
    """What the evaluation needs from an inference engine."""

    tokenizer: Any
    eos_ids: frozenset[int]
    context_length: int | None
    """Prompt plus new tokens the model takes (None: unknown, not checked)."""

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[Completion]:
        """Sampled completions: token ids cut after the first EOS or the end of the stop string, and how each ended."""
        ...


class TransformersBackend:
    """Sampling with Hugging Face transformers (CPU or one GPU) through verl_thinkprune.generation, in batches of
    ``batch_size`` sequences."""

    def __init__(self, model_dir: Path, settings: EvalSettings, batch_size: int = BATCH_SIZE, device: str = "cpu"):
        import torch

        self.generator = TransformersGenerator(model_dir, device)
        self.tokenizer, self.eos_ids = self.generator.tokenizer, self.generator.eos_ids
        self.context_length = getattr(self.generator.model.config, "max_position_embeddings", None)
        self.sampling = Sampling(settings.temperature, settings.top_p, top_k=0)  # nucleus only, as vLLM by default
        self.batch_size = batch_size
        torch.manual_seed(settings.seed)

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[Completion]:
        completions = []
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start : start + self.batch_size]
            completions += self.generator.generate(batch, max_new_tokens, self.sampling, stop)
        return completions


class VLLMBackend:
    """Sampling with vLLM on GPUs. Thin on purpose: this project's CI has no GPU, so it is not tested there."""

    def __init__(self, model_dir: Path, settings: EvalSettings, tensor_parallel_size: int = 1):
        from vllm import LLM

        self.settings = settings
        self.llm = LLM(model=str(model_dir), seed=settings.seed, tensor_parallel_size=tensor_parallel_size)
        self.tokenizer = self.llm.get_tokenizer()
        _, self.eos_ids = special_ids(self.tokenizer, model_dir)
        self.context_length = self.llm.llm_engine.model_config.max_model_len

    def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: str | None = None) -> list[Completion]:
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=self.settings.temperature,
            top_p=self.settings.top_p,
            max_tokens=max_new_tokens,
            stop=[stop] if stop else None,
            include_stop_str_in_output=True,
        )
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        return [vllm_completion(o.outputs[0], self.eos_ids, stop, self.tokenizer) for o in outputs]


def vllm_completion(output: Any, eos_ids: frozenset[int], stop: str | None, tokenizer: Any) -> Completion:
    """A vLLM ``CompletionOutput`` as a Completion. vLLM's ``finish_reason`` is "stop" for an EOS or stop token
    (``stop_reason`` None or the token id, the token kept in ``token_ids``) and for a stop string (``stop_reason`` the
    string); "length" when ``max_tokens`` or the context ran out; "abort", "error" or "repetition" when vLLM cut the
    request short: all but "stop" are unfinished."""
    token_ids, ending = cut_completion(output.token_ids, eos_ids, stop, tokenizer)
    if output.finish_reason != "stop":
        return Completion(token_ids, "length")
    return Completion(token_ids, ending or ("stop" if isinstance(output.stop_reason, str) else "eos"))


def prompt_ids(tokenizer: Any, problem: Problem) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        problem.messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def check_context(backend: Backend, problems: Sequence[Problem], settings: EvalSettings) -> None:
    """Refuse, before anything is generated, an evaluation whose longest prompt plus response exceeds the model's
    context: the engine would cut those responses short of the budget (vLLM) or run past the positions the model
    was trained on (transformers), and they would be scored as if the protocol had been followed."""
    if backend.context_length is None or not problems:
        return
    longest = max(len(prompt_ids(backend.tokenizer, problem)) for problem in problems)
    response = settings.max_new_tokens
    if settings.budget is not None:
        response = max_response_tokens(backend.tokenizer, settings.budget, settings.answer_tokens)
    if longest + response > backend.context_length:
        raise ValueError(
            f"the longest prompt ({longest} tokens) plus {response} response tokens exceeds the model's context of "
            f"{backend.context_length}: at most {backend.context_length - longest} response tokens fit "
            "(--max-new-tokens; with budget forcing, the budget plus --answer-tokens and the forced text)"
        )


def sample_problems(
    backend: Backend, problems: Sequence[Problem], settings: EvalSettings, grading_timeout: float = GRADING_TIMEOUT
) -> list[dict[str, Any]]:
    """One record per problem: its responses with their lengths, truncation flags and scores."""
    tokenizer, eos_ids = backend.tokenizer, backend.eos_ids
    owners, prompts = [], []
    for problem in problems:
        ids = prompt_ids(tokenizer, problem)
        for _ in range(settings.samples_for(problem.data_source)):
            owners.append(problem)
            prompts.append(ids)
    if settings.budget is None:
        limit = settings.max_new_tokens
        generated = [
            (c.token_ids, len(c.token_ids), is_truncated(c.token_ids, limit, eos_ids, stop_reason=c.finish))
            for c in backend.generate(prompts, limit)
        ]
    else:
        forced = budget_forced(backend.generate, tokenizer, prompts, settings.budget, settings.answer_tokens)
        limit = settings.answer_tokens
        generated = [
            (f.token_ids, f.generated, is_truncated(f.answer_ids, limit, eos_ids, stop_reason=f.finish)) for f in forced
        ]
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


def evaluate(
    data: Path | Sequence[Path],
    run_dir: Path,
    backend: Backend,
    settings: EvalSettings,
    model: str = "",
    max_problems: int | None = None,
    problems_per_step: int = PROBLEMS_PER_SAVE,
) -> dict[str, dict[str, float]]:
    """Sample every problem of the data file(s) not yet in run_dir, then write and return the aggregate metrics."""
    from tqdm import tqdm

    files = [Path(data)] if isinstance(data, str | Path) else [Path(path) for path in data]
    run_dir = Path(run_dir)
    problems = load_problems(files)[:max_problems]
    open_run(run_dir, settings, model, [str(path) for path in files])
    done = {record["key"] for record in read_samples(run_dir)}
    todo = [p for p in problems if p.key not in done]
    check_context(backend, todo, settings)
    with (run_dir / SAMPLES_FILE).open("a") as out, tqdm(total=len(todo), desc=f"evaluating {run_dir.name}") as bar:
        for start in range(0, len(todo), problems_per_step):
            for record in sample_problems(backend, todo[start : start + problems_per_step], settings):
                out.write(json.dumps(record) + "\n")
                out.flush()
                bar.update(1)
    return write_results(run_dir, settings, model)


def budget_run_dir(out_dir: Path, budget: int) -> Path:
    return Path(out_dir) / f"budget-{budget}"


def build_parser() -> argparse.ArgumentParser:
    """The command line; sampling defaults are EvalSettings' (the paper's protocol)."""
    protocol = EvalSettings()
    parser = argparse.ArgumentParser(
        prog="python -m verl_thinkprune.evaluation",
        description="pass@1, mean length and truncation rate per benchmark, with the paper's sampling protocol; "
        "with --budgets, the budget-forcing baseline (one run directory per budget).",
        epilog="Example: python -m verl_thinkprune.evaluation --model ckpt/merged --data data/test/aime.parquet "
        "data/test/amc23.parquet --out-dir eval/round1 --backend vllm",
    )
    parser.add_argument("--model", required=True, help="a Hugging Face model directory or hub name")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="verl parquet files (verl_thinkprune.data)")
    parser.add_argument("--out-dir", type=Path, required=True, help="run directory; rerunning resumes it")
    parser.add_argument("--backend", choices=["vllm", "transformers"], default="vllm")
    samples = ", ".join(f"{n} for {source}" for source, n in PAPER_SAMPLES.items())
    parser.add_argument("--samples", type=int, help=f"samples per problem (default: {samples}, else {DEFAULT_SAMPLES})")
    parser.add_argument("--temperature", type=float, default=protocol.temperature)
    parser.add_argument("--top-p", type=float, default=protocol.top_p)
    parser.add_argument("--max-new-tokens", type=int, default=protocol.max_new_tokens)
    parser.add_argument("--budgets", type=int, nargs="*", help="budget forcing: thinking budgets, e.g. 500 1000 2000")
    parser.add_argument(
        "--answer-tokens", type=int, default=protocol.answer_tokens, help="budget forcing: tokens for the answer"
    )
    parser.add_argument("--max-problems", type=int, help="only the first N problems (a quick look)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="transformers: sequences per generate call")
    parser.add_argument(
        "--problems-per-step", type=int, default=PROBLEMS_PER_SAVE, help="problems sampled between two saves"
    )
    parser.add_argument("--device", default="cpu", help="transformers: torch device")
    parser.add_argument("--threads", type=int, help="transformers: torch CPU threads (1 on a busy machine)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm")
    parser.add_argument("--seed", type=int, default=protocol.seed)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if missing := [str(path) for path in args.data if not path.is_file()]:
        parser.exit(2, f"error: no data file {', '.join(missing)}\n")
    if Path(args.model).exists() and not (Path(args.model) / "config.json").is_file():
        parser.exit(2, f"error: {args.model} is not a model directory (no config.json)\n")
    if not Path(args.model).exists() and not HUB_NAME.fullmatch(args.model):
        parser.exit(2, f"error: no model directory {args.model}\n")

    base = EvalSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        samples=args.samples,
        answer_tokens=args.answer_tokens,
        seed=args.seed,
    )
    runs = [(args.out_dir, base)]
    if args.budgets:
        runs = [(budget_run_dir(args.out_dir, b), dataclasses.replace(base, budget=b)) for b in args.budgets]
    try:
        backend = load_backend(args, base)
        for run_dir, settings in runs:
            table = evaluate(
                args.data, run_dir, backend, settings, str(args.model), args.max_problems, args.problems_per_step
            )
            label = f"budget {settings.budget}" if settings.budget else "benchmark"
            print(f"{run_dir}:\n{results_table(table, label)}")
    except (OSError, ValueError) as error:  # unloadable model or data, another evaluation's run directory, context
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        parser.exit(1, f"error: {message}\n")
    if args.budgets:
        print(budget_table(args.out_dir, args.budgets))


def load_backend(args: argparse.Namespace, settings: EvalSettings) -> Backend:
    if args.backend == "vllm":
        return VLLMBackend(args.model, settings, args.tensor_parallel_size)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return TransformersBackend(args.model, settings, args.batch_size, args.device)


def budget_table(out_dir: Path, budgets: Sequence[int]) -> str:
    """Overall figures per budget, written to out_dir/budget_forcing.md as well."""
    table = {
        f"B={budget}": json.loads((budget_run_dir(out_dir, budget) / RESULTS_JSON).read_text())["results"]["overall"]
        for budget in budgets
    }
    text = results_table(table, "budget (overall)")
    (Path(out_dir) / "budget_forcing.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
