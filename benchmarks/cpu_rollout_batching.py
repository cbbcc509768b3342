"""Batched vs one-at-a-time generation in the CPU backend's rollout server, measured side by side in one run.

One GRPO step's rollout of the tiny task (8 prompts x 8 samples at T=1, up to 96 new tokens) is sent as concurrent
requests, as verl's agent loops send them, to the same generator allowed batches of up to 256 or of 1.
    python benchmarks/cpu_rollout_batching.py [--prompts 8] [--samples 8] [--max-tokens 96] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from transformers import AutoTokenizer

from verl_thinkprune.cpu.rollout import HFGenerator
from verl_thinkprune.tiny import tiny_model_dir
from verl_thinkprune.tiny.task import messages, random_problem


async def rollout(generator: HFGenerator, prompts: list[list[int]], max_tokens: int) -> tuple[float, int]:
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}
    start = time.perf_counter()
    outputs = await asyncio.gather(*(generator.generate(p, max_tokens, sampling) for p in prompts))
    return time.perf_counter() - start, sum(len(o.token_ids) for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = tiny_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model)
    rng = random.Random(0)
    prompts = [
        tokenizer.apply_chat_template(
            messages(random_problem(rng)), add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for _ in range(args.prompts)
    ]
    requests = [p for p in prompts for _ in range(args.samples)]
    generators = {
        "batched": HFGenerator(str(model), max_batch_size=256),
        "one at a time": HFGenerator(str(model), max_batch_size=1),
    }
    asyncio.run(rollout(generators["batched"], requests[:4], 8))  # warm-up

    seconds: dict[str, list[float]] = {name: [] for name in generators}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for name, generator in generators.items():
            elapsed, tokens = asyncio.run(rollout(generator, requests, args.max_tokens))
            seconds[name].append(elapsed)
            print(
                f"{name:>14}: {len(requests)} requests, {tokens} tokens, {elapsed:.2f} s, {tokens / elapsed:.0f} tok/s"
            )
    batched, serial = (statistics.median(seconds[name]) for name in generators)
    print(f"median: batched {batched:.2f} s, one at a time {serial:.2f} s -> batched is {serial / batched:.1f}x faster")


if __name__ == "__main__":
    main()
