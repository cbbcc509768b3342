# Copyright 2026 The verl-thinkprune Authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""ThinkPrune reward manager for verl 0.9 (arXiv 2504.01296).

A response that does not finish within its token limit earns 0, whatever it contains; a finished one earns 1 when
its final answer is equivalent to the ground truth by math-verify, else 0.

- Limit: ``token_limit`` (L), or the sample's own limit when the rollout hook recorded one (``LIMIT_FIELD``).
- Truncated (``is_truncated``, the rule the rollout hook applies too): longer than the limit, or the limit used up
  (or the server's stop reason says cut off) without ending on an EOS id.
- Final answer (``answer_boxes: final``): every ``\\boxed{}`` of the last sentence that holds one, after ``</think>``
  when present, graded as one answer: ``\\boxed{(1,2)}, \\boxed{(2,1)}`` is both pairs, ``\\boxed{k=45} and
  \\boxed{n=2}`` both equations. Boxes in the thinking or in earlier sentences do not count. ``answer_boxes: last``
  grades the last box alone (the official ThinkPrune code's rule). A ground truth is read as a final answer.

Self-contained (verl, torch and math-verify only): copy this file into a verl 0.9.x setup and select it with
``reward.reward_manager.source=importlib reward.reward_manager.module.path=/path/to/reward_manager.py
reward.reward_manager.name=ThinkPruneRewardManager``. Knobs, under ``reward.reward_kwargs`` (null or absent: the
default): ``token_limit`` (default ``actor_rollout_ref.rollout.response_length``), ``grading_timeout`` (seconds,
default ``GRADING_TIMEOUT``) and ``answer_boxes`` (``final``, the default, or ``last``).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
from collections.abc import Callable, Collection, Iterator, Sequence
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
LIMIT_FIELD = "token_limit"
"""Keys the rollout hook sets in the agent loop's extra_fields: whether generation was cut off, at which limit."""

CUT_OFF_STOP_REASONS = frozenset({"length", "aborted", "abort"})
"""Server stop reasons that mean cut off (vLLM reports EOS and length stops alike as "completed": tokens decide)."""

GRADING_TIMEOUT = 10.0
"""Seconds one final answer may take in math-verify before it scores 0."""
POOL_START_TIMEOUT = 300.0
"""Seconds a process's first math-verify answer may wait while verl's grading pool starts."""

ANSWER_BOXES = ("final", "last")
"""reward_kwargs.answer_boxes: every box of the final answer, or the last box alone (the official code's rule)."""
DEFAULT_ANSWER_BOXES = "final"
MAX_ANSWER_CHARS = 1000
"""Longer final answers are not graded: no legitimate math answer needs more, and grading cost grows with it."""

ANSWER_TAIL_TOKENS = 64
"""The final answer sits at the end: decode this many tokens first, and the whole response only if it may reach
further back."""

SENTENCE_BREAK = re.compile(r"\n|[.!?]\s")
"""Parts two boxes into different sentences: the final answer's boxes share the last sentence that holds one."""


def final_answer(text: str, boxes: str = DEFAULT_ANSWER_BOXES) -> str | None:
    """The final answer's boxed contents, joined by ", " (see the module docstring); None without a closed box."""
    if boxes == "final":
        text = text.rpartition("</think>")[2]
    contents: list[str] = []
    later_box = len(text)
    while (start := text.rfind("\\boxed{", 0, later_box)) >= 0:
        close = _closing_brace(text, start + len("\\boxed"))
        if close is None or close > later_box or (contents and SENTENCE_BREAK.search(text, close, later_box)):
            break  # unclosed, enclosing the later box, or in an earlier sentence
        contents.insert(0, text[start + len("\\boxed{") : close].strip())
        later_box = start
        if boxes == "last":
            break
    answer = ", ".join(dict.fromkeys(contents))
    return answer if contents and len(answer) <= MAX_ANSWER_CHARS else None


def _tail_holds_final_answer(tail: str, boxes: str) -> bool:
    """Whether a response's end holds its whole final answer, so that the rest needs no decoding."""
    if boxes == "final" and "</think>" in tail:
        return True  # the final answer lies after it
    last_box = tail.rfind("\\boxed{")
    if boxes == "last" or last_box < 0:
        return last_box >= 0
    breaks = [match.end() for match in SENTENCE_BREAK.finditer(tail, 0, last_box)]
    # The answer's sentence starts in the tail, unless a box opened before the tail ends after that break.
    return bool(breaks) and min(_brace_depths(tail[breaks[-1] : last_box]), default=0) >= 0


def _closing_brace(text: str, opening: int) -> int | None:
    window = text[opening : opening + MAX_ANSWER_CHARS + 2]
    return next((opening + index for index, depth in enumerate(_brace_depths(window)) if depth == 0), None)


def _brace_depths(text: str) -> Iterator[int]:
    return itertools.accumulate({"{": 1, "}": -1}.get(char, 0) for char in text)


def ground_truth_answer(ground_truth: Any) -> str | None:
    """The ground truth as answer text: numbers and strings, with or without ``\\boxed{}`` (several boxes: all)."""
    if ground_truth is None or isinstance(ground_truth, bool):
        return None
    text = str(ground_truth).strip()
    return (final_answer(text) if "\\boxed{" in text else text) or None


def answer_score(answer: str | None, ground_truth: str, timeout: float = GRADING_TIMEOUT) -> float:
    """1.0 if a final answer equals the ground truth as text or by math-verify (in worker processes: bounded)."""
    if not answer:
        return 0.0
    if answer == ground_truth:
        return 1.0
    _start_math_verify()
    return float(math_verify.compute_score(f"\\boxed{{{answer}}}", ground_truth, 0.0, timeout))


@functools.cache
def _start_math_verify() -> None:
    """verl's math-verify pool starts its processes on first use (seconds: each imports verl), and an answer's
    timeout counts from submission: one first answer, given time to start the pool, keeps that off every answer."""
    math_verify.compute_score("\\boxed{0}", "0", 0.0, POOL_START_TIMEOUT)


def response_score(
    text: str, ground_truth: Any, timeout: float = GRADING_TIMEOUT, boxes: str = DEFAULT_ANSWER_BOXES
) -> float:
    """Score of a finished response's text: its final answer against the ground truth (0 without either)."""
    truth = ground_truth_answer(ground_truth)
    return 0.0 if truth is None else answer_score(final_answer(text, boxes), truth, timeout)


def is_truncated(
    token_ids: Sequence[int] | torch.Tensor,
    limit: int,
    eos_ids: Collection[int],
    stop_reason: str | None = None,
    flag: bool | None = None,
) -> bool:
    """Whether a response was cut off rather than finished: the one rule of the reward and the rollout hook.

    Longer than its limit: cut off, whatever it holds. Else the rollout's flag decides when it recorded one. Else
    finished when the last token is an EOS id (servers keep the stop token); cut off when the server's stop reason
    says so or the limit is used up. A response that stops early without EOS (a stop string) counts as finished.
    """
    if len(token_ids) > limit:
        return True
    if flag is not None:
        return bool(flag)
    if len(token_ids) and int(token_ids[-1]) in eos_ids:
        return False
    return stop_reason in CUT_OFF_STOP_REASONS or len(token_ids) >= limit


def _reward_setting(config, key: str, default: Any, valid: Callable[[Any], bool], meaning: str) -> Any:
    """``reward.reward_kwargs.<key>``: null or absent is the default; anything else must be valid (0 is refused)."""
    value = (config.reward.get("reward_kwargs") or {}).get(key)
    if value is None:
        return default
    if not valid(value):
        raise ValueError(f"reward.reward_kwargs.{key}={value!r} must be {meaning} (null: {default})")
    return value


def _positive(value: Any) -> bool:
    return type(value) in (int, float) and value > 0


def token_limit(config) -> int:
    """The limit L: reward.reward_kwargs.token_limit, else the rollout's response length, which it cannot exceed."""
    length = int(config.actor_rollout_ref.rollout.response_length)
    meaning = f"a whole number of tokens in 1..{length}: actor_rollout_ref.rollout.response_length caps generation"
    return _reward_setting(config, "token_limit", length, lambda v: type(v) is int and 0 < v <= length, meaning)


def limit_and_eos_ids(config, tokenizer) -> tuple[int, frozenset[int]]:
    """L and the EOS ids that mark a finished response: the one set-up of the reward manager and the rollout hook."""
    eos_ids = eos_token_ids(tokenizer, config.actor_rollout_ref.model.get("path"))
    if not eos_ids:
        raise ValueError("ThinkPrune needs an EOS token id to tell finished responses from truncated ones")
    return token_limit(config), eos_ids


def eos_token_ids(tokenizer: Any, model_path: str | None) -> frozenset[int]:
    """EOS ids of the tokenizer and of the model's generation config: generation may stop on either."""
    generation_ids = _generation_config_eos_ids(model_path) if model_path else frozenset()
    return generation_ids | frozenset({tokenizer.eos_token_id} - {None})


@functools.cache
def _generation_config_eos_ids(model_path: str) -> frozenset[int]:
    """Read once per process and model path: the rollout hook sets up once per sample."""
    eos = getattr(get_generation_config(copy_to_local(model_path)), "eos_token_id", None)
    return frozenset(eos if isinstance(eos, list) else [] if eos is None else [eos])


class ThinkPruneRewardManager(RewardManagerBase):
    """Length-limited correctness reward: truncated 0; finished 1 if the final answer is right, else 0."""

    def __init__(self, config, tokenizer, compute_score=None, **kwargs):
        super().__init__(config, tokenizer, compute_score)
        self.limit, self.eos_ids = limit_and_eos_ids(config, tokenizer)
        seconds = "a positive number of seconds"
        self.grading_timeout = float(_reward_setting(config, "grading_timeout", GRADING_TIMEOUT, _positive, seconds))
        self.answer_boxes = _reward_setting(
            config, "answer_boxes", DEFAULT_ANSWER_BOXES, ANSWER_BOXES.__contains__, f"one of {ANSWER_BOXES}"
        )

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1]  # multi-sequence outputs: the last sequence carries the answer
        responses = item.batch["responses"]
        response_length = int(item.batch["attention_mask"][-responses.shape[-1] :].sum())
        response_ids = responses[:response_length]
        rollout_fields = item.non_tensor_batch.get("tool_extra_fields") or {}
        limit = int(rollout_fields.get(LIMIT_FIELD, self.limit))
        truncated = is_truncated(response_ids, limit, self.eos_ids, flag=rollout_fields.get(TRUNCATED_FIELD))

        score = 0.0 if truncated else await self._grade(item, response_ids)
        return {
            "reward_score": score,
            "reward_extra_info": {
                "acc": score,
                "truncated": int(truncated),
                "response_length": response_length,
                "token_limit": limit,
            },
        }

    async def _grade(self, item, response_ids: torch.Tensor) -> float:
        """Decoding and grading run in executor threads: the event loop keeps every other sample moving."""
        ground_truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        if ground_truth_answer(ground_truth) is None:
            logger.warning("ThinkPrune: no ground truth for sample %s: scored 0", _sample_id(item))
            return 0.0
        loop = asyncio.get_running_loop()
        text = await loop.run_in_executor(None, self._decode, response_ids[-ANSWER_TAIL_TOKENS:])
        if len(response_ids) > ANSWER_TAIL_TOKENS and not _tail_holds_final_answer(text, self.answer_boxes):
            text = await loop.run_in_executor(None, self._decode, response_ids)
        return await loop.run_in_executor(
            None, response_score, text, ground_truth, self.grading_timeout, self.answer_boxes
        )

    def _decode(self, token_ids: torch.Tensor) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)


def _sample_id(item) -> str:
    extra_info = item.non_tensor_batch.get("extra_info") or {}
    return str(item.non_tensor_batch.get("uid", extra_info.get("index", "?")))


# Registered once whichever way the file arrives (package plugin, copied file, or both): never re-registered.
if "thinkprune" not in REWARD_MANAGER:
    register("thinkprune")(ThinkPruneRewardManager)
