"""verl's sync replay buffer, polling for finished rollouts every 50 ms instead of every 2 s.

verl's trainer waits for a step's rollouts by polling TransferQueue (``ReplayBuffer.sample``), every ``poll_interval``
seconds, 2 by default and not a config key. On a GPU a step takes minutes and the wait is noise; on the CPU backend
generation takes about a second, so every step and every validation waited up to 2 s more than it generated.
``+platform=cpu`` selects this class through verl's own extension point,
``trainer.v1.sampler.custom_sampler.{path,name}``.
"""

from __future__ import annotations

from typing import Any

from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer

POLL_INTERVAL_S = 0.05
"""A poll is one TransferQueue listing: cheap next to the ~1 s a CPU step generates."""


class FastPollingReplayBuffer(ReplayBuffer):
    """verl's sync sampling, unchanged but for the poll interval."""

    def __init__(self, *, trainer_mode: str, **kwargs: Any) -> None:
        if trainer_mode != "sync":
            raise ValueError(
                f"the CPU backend's replay buffer samples synchronously, but trainer.v1.trainer_mode={trainer_mode}: "
                "set trainer.v1.sampler.custom_sampler.path=null to use verl's"
            )
        super().__init__(trainer_mode=trainer_mode, poll_interval=POLL_INTERVAL_S, **kwargs)
