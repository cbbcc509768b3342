"""verl.plugins entry point, imported by `import verl` in every verl process (driver, trainer and Ray workers).

verl logs a failing plugin only at DEBUG; each part here is loaded on its own and a failure is logged at WARNING,
so a broken part is visible and never takes the others (or verl) down with it.
"""

import importlib
import logging

logger = logging.getLogger(__name__)

PARTS = (
    "verl_thinkprune.reward_manager",
    "verl_thinkprune.cpu",  # before any part whose import resolves verl's platform
    "verl_thinkprune.agent_loop",
)


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


load_parts()
