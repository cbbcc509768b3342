"""verl's platform interface for a machine without an accelerator: devices are the CPU, collectives use gloo."""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

from verl_thinkprune import require_supported_verl


def check_verl_version() -> None:
    """The backend relies on a few of verl's internals (engine registry, rollout adapters, process groups)."""
    require_supported_verl("CPU backend", "unset VERL_PLATFORM=cpu to run on GPUs")


class CPUDeviceModule(ModuleType):
    """What verl calls through ``get_torch_device()`` (torch.cuda on GPUs), answered for the CPU.

    Everything torch.cpu has is forwarded to it; the rest are memory and RNG calls with a CPU meaning.
    """

    def __init__(self) -> None:
        super().__init__("verl_thinkprune.cpu.device")

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(torch.cpu, name)

    @staticmethod
    def mem_get_info(device=None) -> tuple[int, int]:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page

    @staticmethod
    def get_device_name(device=None) -> str:
        return "CPU"

    @staticmethod
    def get_rng_state(device=None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device=None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    @staticmethod
    def memory_allocated(device=None) -> int:
        """No device memory: verl's GPU-memory metrics read 0."""
        return 0

    memory_reserved = max_memory_allocated = max_memory_reserved = memory_allocated

    @staticmethod
    def empty_cache() -> None:
        """No allocator cache to release."""

    ipc_collect = reset_peak_memory_stats = empty_cache

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device=None) -> None:
        """No device memory to divide."""


class CPUPlatform(PlatformBase):
    """Selected only with ``VERL_PLATFORM=cpu``: never auto-detected, so a GPU run is unchanged."""

    def __init__(self) -> None:
        check_verl_version()
        self._device_module = CPUDeviceModule()

    device_name = property(lambda self: "cpu")
    vendor_name = property(lambda self: "cpu")
    device_module = property(lambda self: self._device_module)

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False

    def current_device(self) -> torch.device:
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        """One device: nothing to select."""

    def synchronize(self, device_index: int | None = None) -> None:
        """CPU work is synchronous."""

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    manual_seed_all = manual_seed

    def set_allocator_settings(self, settings: str) -> None:
        """No device allocator to configure."""

    def empty_cache(self) -> None:
        """No allocator cache to release."""

    def get_device_capability(self, device_index: int = 0) -> tuple[None, None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "VERL_THINKPRUNE_VISIBLE_CPUS"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        """No device profiler."""

    profiler_stop = profiler_start

    def ray_resource_name(self) -> str:
        """verl's resource pools count only GPU/NPU resources: workers take a logical Ray "GPU" (ray_init.num_gpus)."""
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None


def register_platform() -> None:
    """Add "cpu" to verl's platforms unless a platform of that name exists already (verl's own, in a later release)."""
    if PlatformRegistry.get("cpu") is None:
        PlatformRegistry.register(platform="cpu")(CPUPlatform)
