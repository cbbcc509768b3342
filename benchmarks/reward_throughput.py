"""Reward throughput: ThinkPrune's manager against verl's naive manager with verl's math-verify scorer.

Both run in this process through verl's own RewardLoopWorker on the same ThinkPrune-like batch (a share of
responses truncated at the limit, ~3k-token responses, every sample in flight at once as verl's reward loop
sends them). Prints samples/s for each and the ratio. Run: `python benchmarks/reward_throughput.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer
from verl.experimental.reward_loop import RewardLoopWorker
from verl.utils.reward_score import math_verify

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import build_model_dir, make_batch  # noqa: E402

from verl_thinkprune.iterative import compose_verl_config  # noqa: E402


def naive_math_verify_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """verl's naive manager as a math-verify user configures it: the whole decoded response is graded."""
    return math_verify.compute_score(solution_str, str(ground_truth))


def thought(rng: random.Random, tokenizer, num_tokens: int) -> list[int]:
    """Long-thinking text with the formulas and hesitations real reasoning traces are full of."""
    steps = []
    while sum(len(s) for s in steps) < num_tokens:
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        step = rng.choice(
            [
                f"Wait, let me verify: ${a} + {b} = {a + b}$. ",
                f"So $x = \\frac{{{a}}}{{{b}}}$, hence $2x = \\dfrac{{{2 * a}}}{{{b}}}$. ",
                f"But wait, maybe $\\sqrt{{{a}}} \\approx {a**0.5:.3f}$? Let me double-check. ",
                f"Hmm, if $y^2 = {a * a}$ then $y = \\pm {a}$, and $\\boxed{{{a}}}$ might be it. ",
            ]
        )
        steps.append(tokenizer.encode(step))
    return [t for s in steps for t in s][:num_tokens]


def thinkprune_like_batch(tokenizer, num_samples: int, limit: int, truncated_share: float, seed: int = 0):
    """Finished responses end their thinking, then give a boxed answer and EOS; truncated ones fill the limit
    mid-thought."""
    rng = random.Random(seed)
    responses, truths = [], []
    for i in range(num_samples):
        truth = rng.randint(0, 999)
        if i < truncated_share * num_samples:
            responses.append(thought(rng, tokenizer, limit))
        else:
            answer = tokenizer.encode(
                f"\n</think>\n\nThe answer is $\\boxed{{{truth if rng.random() < 0.6 else truth + 1}}}$."
            )
            body = thought(rng, tokenizer, rng.randint(limit * 2 // 3, limit - 1 - len(answer)))
            responses.append(body + answer + [tokenizer.eos_token_id])
        truths.append(truth)
    return make_batch(tokenizer, responses, truths, padded_to=limit)


def samples_per_second(config, batch, repeats: int) -> tuple[float, list[float]]:
    async def run() -> tuple[float, list[float]]:
        worker = RewardLoopWorker(config)
        await worker.compute_score_batch(batch[-8:])  # warm: finished samples start the math-verify process pool
        start = time.perf_counter()
        for _ in range(repeats):
            outputs = await worker.compute_score_batch(batch)
        return repeats * len(batch) / (time.perf_counter() - start), [o["reward_score"] for o in outputs]

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--limit", type=int, default=3000)
    parser.add_argument("--truncated-share", type=float, default=0.4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(Path(tmp))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        batch = thinkprune_like_batch(tokenizer, args.samples, args.limit, args.truncated_share)
        common = [f"actor_rollout_ref.model.path={model_dir}", f"data.max_response_length={args.limit}"]
        naive = compose_verl_config(
            common
            + [
                "reward.reward_manager.name=naive",
                f"reward.custom_reward_function.path={Path(__file__).resolve()}",
                "reward.custom_reward_function.name=naive_math_verify_score",
            ]
        )
        thinkprune = compose_verl_config(common + ["+reward_manager=thinkprune"])
        naive_rate, naive_scores = samples_per_second(naive, batch, args.repeats)
        thinkprune_rate, thinkprune_scores = samples_per_second(thinkprune, batch, args.repeats)

    print(f"batch: {args.samples} samples, limit {args.limit}, {args.truncated_share:.0%} truncated")
    for name, rate, scores in [
        ("naive + verl math_verify", naive_rate, naive_scores),
        ("thinkprune", thinkprune_rate, thinkprune_scores),
    ]:
        print(f"{name:<25}: {rate:8.1f} samples/s  (mean score {sum(scores) / len(scores):.3f})")
    print(f"{'ratio thinkprune / naive':<25}: {thinkprune_rate / naive_rate:8.2f}x  (target >= 3x)")


if __name__ == "__main__":
    main()
