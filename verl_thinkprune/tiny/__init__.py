"""A tiny built-in default for trying ThinkPrune on a laptop: a long-thinking arithmetic task and a tiny model.

``python -m verl_thinkprune.tiny OUT_DIR`` builds (or reuses from the cache) the warm-started model and writes the
task's verl parquet files; ``prepare(out_dir)`` does the same from Python.
"""

from __future__ import annotations

from pathlib import Path

from verl_thinkprune.tiny.model import TinySettings, evaluate, tiny_model_dir
from verl_thinkprune.tiny.task import DATA_SOURCE, write_dataset

__all__ = ["DATA_SOURCE", "TinySettings", "evaluate", "prepare", "tiny_model_dir", "write_dataset"]


def prepare(out_dir: Path, num_train: int = 512, num_val: int = 64, settings: TinySettings | None = None) -> dict:
    """The cached model's path and freshly written train/val parquet files under out_dir/data."""
    model = tiny_model_dir(settings)
    train, val = write_dataset(Path(out_dir) / "data", num_train, num_val)
    return {"model": str(model), "train_files": str(train), "val_files": str(val)}
