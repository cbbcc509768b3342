"""verl on a machine without a GPU: a CPU platform, verl's FSDP2 engine for it, and an HF-transformers rollout.

Importing this package (verl-thinkprune's plugin does, in every verl process) adds names to verl's registries:
the platform "cpu" and the rollout "hf", and under ``VERL_PLATFORM=cpu`` the FSDP engines for device "cpu"; a GPU
run never selects them. The one change of verl's behaviour, the process-group backend below, is applied only when
``VERL_PLATFORM=cpu``.
Select it all with ``VERL_PLATFORM=cpu`` and ``+platform=cpu`` (the Hydra group in this package's config).
"""

from __future__ import annotations

import functools
import os

from verl.workers.rollout import base as rollout_base
from verl.workers.rollout.replica import RolloutReplicaRegistry

from verl_thinkprune.cpu.platform import CPUPlatform, check_verl_version, register_platform
from verl_thinkprune.cpu.rollout import ROLLOUT_NAME, HFGenerator, HFReplica, HFServerAdapter

__all__ = ["CPUPlatform", "HFGenerator", "HFReplica", "HFServerAdapter", "cpu_requested"]


def cpu_requested() -> bool:
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"


def register_engines() -> None:
    """verl registers its FSDP engines for cuda and npu only; FSDP2 runs on CPU tensors with gloo as well.

    Only under ``VERL_PLATFORM=cpu``: importing verl's engines resolves the platform, too early elsewhere."""
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine in (("language_model", FSDPEngineWithLMHead), ("value_model", FSDPEngineWithValueHead)):
        for backend in ("fsdp", "fsdp2"):
            if "cpu" not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                EngineRegistry.register(model_type=model_type, backend=backend, device="cpu")(engine)


def register_rollout() -> None:
    """The replica goes through verl's public registry; the adapter has none in 0.9.1, so the entry is added to
    ``verl.workers.rollout.base._ROLLOUT_REGISTRY`` (a private dict of names: adding a key changes nothing else)."""
    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HFServerAdapter.__module__}.HFServerAdapter"


def use_gloo_process_group() -> None:
    """Patch: verl builds the backend string "cpu:gloo,{device}:{backend}", which torch rejects when the device is
    the CPU ("Duplicate device type cpu"). Trainer workers get plain "gloo" instead; an explicit backend is kept.
    Patched where verl defines the function and where its trainer workers imported it."""
    from verl.utils import distributed
    from verl.workers import engine_workers

    original = distributed.initialize_global_process_group_ray
    if getattr(original, "verl_thinkprune_gloo", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray.verl_thinkprune_gloo = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    engine_workers.initialize_global_process_group_ray = initialize_global_process_group_ray


register_platform()
register_rollout()
if cpu_requested():
    check_verl_version()
    register_engines()
    use_gloo_process_group()
