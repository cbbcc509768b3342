"""The tiny long-thinking task: two-number arithmetic solved with necessary steps plus droppable re-checks.

A response is ``<think> core steps. re-checks x k </think> The answer is \\boxed{r}.``: the tens/ones split is the
core a right answer needs; every re-check repeats the sum and can be dropped. Warm-start data draws k uniformly from
0..max_checks, so response lengths spread from well under to well over a first ThinkPrune limit.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

DATA_SOURCE = "tiny_arith"
"""verl's ``data_source``: names the task in validation metrics (the ThinkPrune reward ignores it)."""

CHECK_PHRASES = ("Check: {q}={r}.", "Wait, let me verify: {q}={r}.")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str  # "+" or "-"

    @property
    def question(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def answer(self) -> int:
        return self.a + self.b if self.op == "+" else self.a - self.b

    @property
    def prompt(self) -> str:
        return f"What is {self.question}?"


def random_problem(rng: random.Random) -> Problem:
    return Problem(rng.randint(1, 99), rng.randint(1, 99), rng.choice("+-"))


def core_steps(problem: Problem) -> str:
    """Tens, ones, then their sum: the steps a right answer needs."""
    (a_tens, a_ones), (b_tens, b_ones) = divmod(problem.a, 10), divmod(problem.b, 10)
    if problem.op == "+":
        tens, ones = (a_tens + b_tens) * 10, a_ones + b_ones
    else:
        tens, ones = (a_tens - b_tens) * 10, a_ones - b_ones
    combine = f"{tens}+{ones}" if ones >= 0 else f"{tens}-{-ones}"
    return f"{a_tens}0{problem.op}{b_tens}0={tens}, {a_ones}{problem.op}{b_ones}={ones}, {combine}={problem.answer}."


def response(problem: Problem, num_checks: int, rng: random.Random) -> str:
    """A solution with num_checks redundant re-checks (each a random phrasing) before the final answer."""
    checks = [rng.choice(CHECK_PHRASES).format(q=problem.question, r=problem.answer) for _ in range(num_checks)]
    thinking = " ".join([core_steps(problem), *checks])
    return f"<think> {thinking} </think> The answer is \\boxed{{{problem.answer}}}."


def messages(problem: Problem) -> list[dict[str, str]]:
    return [{"role": "user", "content": problem.prompt}]


def write_dataset(out_dir: Path, num_train: int, num_val: int, num_test: int = 0, seed: int = 0) -> dict[str, Path]:
    """train.parquet, val.parquet and (when num_test > 0) test.parquet in out_dir, with no problem in two of them."""
    import pandas as pd

    from verl_thinkprune.data import verl_row

    rng = random.Random(seed)
    problems: dict[Problem, None] = {}
    while len(problems) < num_train + num_val + num_test:
        problems[random_problem(rng)] = None
    ordered = list(problems)
    splits = {"train": ordered[:num_train], "val": ordered[num_train : num_train + num_val]}
    if num_test:
        splits["test"] = ordered[num_train + num_val :]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, chunk in splits.items():
        rows = [verl_row(p.prompt, str(p.answer), DATA_SOURCE, split, i, messages(p)) for i, p in enumerate(chunk)]
        paths[split] = out_dir / f"{split}.parquet"
        pd.DataFrame(rows).to_parquet(paths[split])
    return paths
