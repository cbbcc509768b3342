"""ThinkPrune for verl 0.9: length-limited RL rewards, iterative pruning and its analysis."""

__version__ = "0.1.0"
