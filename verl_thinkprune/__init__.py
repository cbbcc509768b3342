"""ThinkPrune for verl 0.9: length-limited RL rewards, iterative pruning and its analysis."""

__version__ = "0.1.0"

SUPPORTED_VERL = "0.9."
"""verl releases the parts built on verl's internals (the CPU backend, the trainer) were written and tested for."""


def require_supported_verl(part: str, way_out: str) -> None:
    """Fail at start-up, naming the versions, rather than break obscurely (or hang) inside verl later. Each part asks
    on its own when it is used, so an unused one never stops the others."""
    import verl

    if not verl.__version__.startswith(SUPPORTED_VERL):
        raise RuntimeError(
            f"verl-thinkprune's {part} supports verl {SUPPORTED_VERL}x, found verl {verl.__version__}: "
            f"install verl==0.9.1, or {way_out}"
        )
