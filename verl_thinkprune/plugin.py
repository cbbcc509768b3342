"""verl.plugins entry point, imported by `import verl` in every verl process (driver, trainer and Ray workers).

verl logs a failing plugin only at DEBUG; each part here is loaded on its own and a failure is logged at WARNING,
so a broken part is visible and never takes the others (or verl) down with it.
"""

import importlib
import importlib.abc
import importlib.util
import logging
import sys

logger = logging.getLogger(__name__)

PARTS = (
    "verl_thinkprune.reward_manager",
    "verl_thinkprune.cpu",  # before any part whose import resolves verl's platform
    "verl_thinkprune.agent_loop",
)
PARTS_AFTER = {"verl.trainer.ppo.v1": "verl_thinkprune.trainer"}
"""Parts built on a verl module, loaded right after verl imports it, only in the processes that do: importing verl's
trainer resolves the device platform and imports every training engine, which no other process should pay for."""


def load_parts(parts: tuple[str, ...] = PARTS) -> list[str]:
    """Import each part (each registers itself with verl); return the ones that failed."""
    failed = []
    for module in parts:
        try:
            importlib.import_module(module)
        except Exception:
            logger.warning("verl-thinkprune: %s failed to load; its features are unavailable", module, exc_info=True)
            failed.append(module)
    return failed


class LoadAfterImport(importlib.abc.MetaPathFinder):
    """Loads a part right after verl has imported the module it builds on (Python has no post-import hook)."""

    def __init__(self, module: str, part: str) -> None:
        self.module, self.part = module, part

    def find_spec(self, fullname, path, target=None):
        if fullname != self.module:
            return None
        sys.meta_path.remove(self)  # once: the real spec is found by the other finders
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module) -> None:
            execute(module)
            load_parts((self.part,))

        spec.loader.exec_module = exec_module
        return spec


def load_parts_after(parts_after: dict[str, str] = PARTS_AFTER) -> None:
    """Load each part now if verl's module is imported already, else right after it is."""
    for module, part in parts_after.items():
        if module in sys.modules:
            load_parts((part,))
        else:
            sys.meta_path.insert(0, LoadAfterImport(module, part))


load_parts()
load_parts_after()
