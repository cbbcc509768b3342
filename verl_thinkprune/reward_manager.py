"""ThinkPrune reward manager for verl 0.9 (arXiv 2504.01296).

A response that does not finish within the token limit L earns 0, whatever it contains; a finished one earns 1
when its last ``\\boxed{}`` answer is equivalent to the ground truth by math-verify, else 0.

Self-contained (verl, torch and math-verify only): copy this file into a verl 0.9.x setup and select it with
``reward.reward_manager.source=importlib reward.reward_manager.module.path=/path/to/reward_manager.py
reward.reward_manager.name=ThinkPruneRewardManager``. Knobs, under ``reward.reward_kwargs``:
``token_limit`` (L; default ``actor_rollout_ref.rollout.response_length``) and ``grading_timeout`` (seconds).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER, register
from verl.utils.fs import copy_to_local
from verl.utils.model import get_generation_config
from verl.utils.reward_score import math_verify

logger = logging.getLogger(__name__)

TRUNCATED_FIELD = "truncated"
"""Key a rollout hook sets in the agent loop's extra_fields when it knows how generation ended."""

ANSWER_TAIL_TOKENS = 64
"""The final answer sits at the end: decode this many tokens first, and the whole response only if no box is there."""

MAX_ANSWER_CHARS = 1000
"""Longer final answers are not graded: no legitimate math answer needs more, and grading cost grows with it."""


def last_boxed_answer(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in text; None if there is none or its braces do not close."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    body = start + len("\\boxed")
    for end in range(body, min(len(text), body + MAX_ANSWER_CHARS + 2)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[body + 1 : end].strip()
    return None


def ground_truth_answer(ground_truth: Any) -> str | None:
    """The ground truth as answer text: numbers and strings, with or without ``\\boxed{}``."""
    if ground_truth is None or isinstance(ground_truth, bool):
        return None
    text = str(ground_truth).strip()
    if "\\boxed{" in text:
        text = last_boxed_answer(text) or ""
    return text or None


def answer_score(answer: str | None, ground_truth: str, timeout: float = 10.0) -> float:
    """1.0 if a final answer equals the ground truth as text or by math-verify (in worker processes: bounded)."""
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        return 0.0
    if answer == ground_truth:
        return 1.0
    return float(math_verify.compute_score(f"\\boxed{{{answer}}}", ground_truth, 0.0, timeout))


def response_score(text: str, ground_truth: Any, timeout: float = 10.0) -> float:
    """Score of a finished response's text: its last boxed answer against the ground truth (0 without one)."""
    truth = ground_truth_answer(ground_truth)
    return 0.0 if truth is None else answer_score(last_boxed_answer(text), truth, timeout)


def is_truncated(response_ids: torch.Tensor, limit: int, eos_ids: set[int], flag: Any = None) -> bool:
    """Unfinished: the rollout said so, or the response reached the limit without ending on an EOS token."""
    if flag is not None:
        return bool(flag)
    return len(response_ids) >= limit and int(response_ids[-1]) not in eos_ids


def token_limit(config) -> int:
    """The limit L: reward.reward_kwargs.token_limit, else the rollout's response length, which it cannot exceed."""
    response_length = int(config.actor_rollout_ref.rollout.response_length)
    limit = int((config.reward.get("reward_kwargs") or {}).get("token_limit") or response_length)
    if not 0 < limit <= response_length:
        raise ValueError(
            f"reward.reward_kwargs.token_limit={limit} must be in 1..{response_length} "
            "(actor_rollout_ref.rollout.response_length): longer responses are never generated"
        )
    return limit


def eos_token_ids(tokenizer: Any, model_path: str | None) -> set[int]:
    """EOS ids of the tokenizer and of the model's generation config: generation may stop on either."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    generation_config = get_generation_config(copy_to_local(model_path)) if model_path else None
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    return ids


class ThinkPruneRewardManager(RewardManagerBase):
    """Length-limited correctness reward: truncated 0; finished 1 if the final answer is right, else 0."""

    def __init__(self, config, tokenizer, compute_score=None, **kwargs):
        super().__init__(config, tokenizer, compute_score)
        reward_kwargs = config.reward.get("reward_kwargs") or {}
        self.limit = token_limit(config)
        self.grading_timeout = float(reward_kwargs.get("grading_timeout") or 10)
        self.eos_ids = eos_token_ids(tokenizer, config.actor_rollout_ref.model.get("path"))
        if not self.eos_ids:
            raise ValueError("ThinkPrune needs an EOS token id to tell finished responses from truncated ones")

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1]  # multi-sequence outputs: the last sequence carries the answer
        responses = item.batch["responses"]
        valid_length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        response_ids = responses[:valid_length]
        rollout_fields = item.non_tensor_batch.get("tool_extra_fields") or {}
        truncated = is_truncated(response_ids, self.limit, self.eos_ids, rollout_fields.get(TRUNCATED_FIELD))

        score = 0.0
        if not truncated:
            score = await self._grade(item, response_ids)
        return {
            "reward_score": score,
            "reward_extra_info": {"acc": score, "truncated": int(truncated), "response_length": valid_length},
        }

    async def _grade(self, item, response_ids: torch.Tensor) -> float:
        """1.0 if the last boxed answer matches the ground truth; only that answer goes through math-verify."""
        ground_truth = ground_truth_answer((item.non_tensor_batch.get("reward_model") or {}).get("ground_truth"))
        if ground_truth is None:
            logger.warning("ThinkPrune: no ground truth for sample %s: scored 0", _sample_id(item))
            return 0.0
        loop = asyncio.get_running_loop()
        answer = last_boxed_answer(await loop.run_in_executor(None, self._decode, response_ids[-ANSWER_TAIL_TOKENS:]))
        if answer is None and len(response_ids) > ANSWER_TAIL_TOKENS:
            answer = last_boxed_answer(await loop.run_in_executor(None, self._decode, response_ids))
        return await loop.run_in_executor(None, answer_score, answer, ground_truth, self.grading_timeout)

    def _decode(self, token_ids: torch.Tensor) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def _sample_id(item) -> str:
    extra_info = item.non_tensor_batch.get("extra_info") or {}
    return str(item.non_tensor_batch.get("uid", extra_info.get("index", "?")))


# Registered once whichever way the file arrives (package plugin, copied file, or both): never re-registered.
if "thinkprune" not in REWARD_MANAGER:
    register("thinkprune")(ThinkPruneRewardManager)
