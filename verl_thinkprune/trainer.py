"""ThinkPrune's trainer: verl 0.9's sync PPO trainer plus ThinkPrune's training metrics and a round progress file.

verl 0.9 logs a reward manager's ``reward_extra_info`` only for validation, and its ``response_length/clip_ratio``
compares lengths with the padded batch width, not with the limit L: a user watching a training run cannot see
the numbers that drive ThinkPrune (how many rollouts hit L, how accuracy among the finished ones moves). This
trainer adds them, every training step, under ``thinkprune/`` in every logger the run configured
(``trainer.logger``: console, file, wandb, tensorboard, ...), and keeps
``<trainer.default_local_dir>/thinkprune_progress.json`` up to date for the iterative driver.

Why a registered trainer and not a fork: verl's V1 TaskRunner picks the trainer class by name from a registry
(``get_trainer_cls(trainer.v1.trainer_mode)``), so a subclass of verl's own sync trainer registered as
"thinkprune" changes nothing else: rollout, reward, advantages, updates, checkpoints and validation are verl's
code. It overrides three hooks (``on_init_end``, ``on_validate_end``, ``_compute_metrics``), each calling verl's
first, to add the metrics and write the progress file; and it answers "sync" for its mode (see ``trainer_mode``).
verl-thinkprune's plugin imports this module when verl imports its trainer registry (``verl.trainer.ppo.v1``).

It applies only when selected: ``+reward_manager=thinkprune`` sets ``trainer.v1.trainer_mode=thinkprune``;
``trainer.v1.trainer_mode=sync`` turns it off (verl's own trainer, without the ``thinkprune/`` metrics).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import transfer_queue as tq
from omegaconf import DictConfig
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1 import PPOTrainerSync, register_trainer

from verl_thinkprune import require_supported_verl
from verl_thinkprune.reward_manager import token_limit
from verl_thinkprune.rounds import PROGRESS_FILE
from verl_thinkprune.rundir import write_json_atomically

logger = logging.getLogger(__name__)

TRAINER_NAME = "thinkprune"

METRIC_PREFIX = "thinkprune/"
REQUIRED_KEYS = ("acc", "truncated", "response_length")
"""reward_extra_info keys ThinkPrune's reward manager gives every sample; ``token_limit`` is optional (below)."""


def check_verl_version() -> None:
    """It overrides hooks of verl's V1 trainer and reads the rollouts' fields from TransferQueue as verl's own
    metrics code does."""
    require_supported_verl(
        f"trainer (trainer.v1.trainer_mode={TRAINER_NAME})",
        "set trainer.v1.trainer_mode=sync to train without the thinkprune/ metrics",
    )


def rollout_metrics(infos: Sequence[Mapping[str, Any]], rewards: Sequence[float], default_limit: int) -> dict:
    """The ``thinkprune/`` metrics of one training step, from its rollouts' reward_extra_info and rewards.

    - ``token_limit``: L, the limit the responses were scored at (each sample's ``token_limit``, else
      ``default_limit``; the largest, should they differ).
    - ``truncation_rate``: the share of responses that did not finish within L (``truncated``).
    - ``reward_mean``: the mean reward (what GRPO optimised: 0 truncated, 1 finished and right, else 0).
    - ``finished_accuracy``: the share of right answers (``acc`` = 1) among the finished responses.
    - ``response_length/mean``, ``/finished_mean``, ``/correct_mean``: mean length in tokens (``response_length``,
      the EOS token included) of all responses, of the finished ones, of the right ones.

    A metric over an empty set (no finished response, no right one) is left out of that step rather than logged as
    NaN: verl's file logger writes NaN as null, and a tracker shows a gap for a step without the key.
    An empty step gives no metrics.
    """
    if not infos:
        return {}
    truncated = np.array([bool(info["truncated"]) for info in infos])
    acc = np.array([float(info["acc"]) for info in infos])
    lengths = np.array([float(info["response_length"]) for info in infos])
    finished = ~truncated
    correct = finished & (acc == 1.0)
    metrics = {
        "token_limit": max(int(info.get("token_limit") or default_limit) for info in infos),
        "truncation_rate": float(truncated.mean()),
        "reward_mean": float(np.mean(rewards)),
        "response_length/mean": float(lengths.mean()),
    }
    if finished.any():
        metrics["finished_accuracy"] = float(acc[finished].mean())
        metrics["response_length/finished_mean"] = float(lengths[finished].mean())
    if correct.any():
        metrics["response_length/correct_mean"] = float(lengths[correct].mean())
    return {METRIC_PREFIX + name: value for name, value in metrics.items()}


def earlier_validated_steps(path: str, up_to: int) -> list[int]:
    """Validated steps a previous attempt of this round recorded, up to the step it resumes from."""
    try:
        with open(path) as file:
            steps = json.load(file).get("validated_steps", [])
        return [int(step) for step in steps if int(step) <= up_to]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, AttributeError) as error:
        logger.warning("ThinkPrune: unreadable progress file %s (%s): its validated steps are not carried", path, error)
        return []


@register_trainer(TRAINER_NAME)
class ThinkPruneTrainer(PPOTrainerSync):
    """verl's sync trainer, logging the ``thinkprune/`` metrics every training step and writing the progress file."""

    def __init__(self, config: DictConfig) -> None:
        check_verl_version()
        self.default_limit = token_limit(config)
        self.progress_path = os.path.join(config.trainer.default_local_dir, PROGRESS_FILE)
        self.validated_steps: set[int] = set()
        self.completed_step = 0
        self.warned_missing_info = False
        super().__init__(config)

    @property
    def trainer_mode(self) -> str:
        """verl branches on the mode name (replay buffer, refill, checkpoint, submission): this is its sync trainer."""
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, configured: str) -> None:
        """verl's __init__ stores the configured name ("thinkprune"); the answer above stays "sync"."""

    def on_init_end(self) -> None:
        super().on_init_end()
        # verl knows the step count and the step it resumes from (0 when starting) only now.
        self.completed_step = self.global_steps
        self.validated_steps.update(earlier_validated_steps(self.progress_path, up_to=self.completed_step))
        self.write_progress()

    def on_validate_end(self) -> None:
        super().on_validate_end()
        self.validated_steps.add(self.global_steps)
        self.write_progress()

    def _compute_metrics(
        self, batch: KVBatchMeta, metrics: dict, timing_raw: dict, global_steps: int, epoch: int
    ) -> None:
        super()._compute_metrics(batch, metrics, timing_raw, global_steps=global_steps, epoch=epoch)
        metrics.update(self.thinkprune_metrics(batch, global_steps))
        # The last hook verl calls in a step, after its checkpoint and validation: the step is done.
        self.completed_step = global_steps
        self.write_progress()

    def thinkprune_metrics(self, batch: KVBatchMeta, step: int) -> dict:
        """Read the step's rollouts' reward_extra_info and rewards from TransferQueue (verl's padding rows left out)."""
        keys = [key for key, tag in zip(batch.keys, batch.tags, strict=True) if not tag.get("is_padding", False)]
        if not keys:
            return {}
        data = tq.kv_batch_get(keys=keys, partition_id=batch.partition_id, select_fields=["extra_fields", "rm_scores"])
        rewards = data["rm_scores"].sum(dim=1).tolist()
        infos, kept_rewards = [], []
        # list(): TransferQueue returns a non-tensor field as a list, a NonTensorStack or an array, by backend.
        for extra_fields, reward in zip(list(data["extra_fields"]), rewards, strict=True):
            info = extra_fields.get("reward_extra_info", {}) if isinstance(extra_fields, dict) else {}
            if all(key in info for key in REQUIRED_KEYS):
                infos.append(info)
                kept_rewards.append(reward)
        if len(infos) < len(keys) and not self.warned_missing_info:
            self.warned_missing_info = True
            logger.warning(
                "ThinkPrune metrics: %d of %d rollouts of step %d carry no %s in reward_extra_info (is the reward "
                "manager thinkprune?): they are left out of the thinkprune/ metrics (warned once)",
                len(keys) - len(infos),
                len(keys),
                step,
                "/".join(REQUIRED_KEYS),
            )
        return rollout_metrics(infos, kept_rewards, self.default_limit)

    def write_progress(self) -> None:
        write_json_atomically(
            self.progress_path,
            {
                "total_steps": int(self.total_training_steps),
                "step": int(self.completed_step),
                "validated_steps": sorted(self.validated_steps),
            },
        )
