"""A tiny built-in default for trying ThinkPrune on a laptop: a long-thinking arithmetic task and a tiny model.

``python -m verl_thinkprune.tiny OUT_DIR`` builds (or reuses from the cache) the warm-started model, links it as
OUT_DIR/model and writes the task's verl parquet files under OUT_DIR/data; ``prepare(out_dir)`` does the same from
Python. The CPU recipes call it as their preparation step.
"""

from __future__ import annotations

from pathlib import Path

from verl_thinkprune.tiny.model import TinySettings, tiny_model_dir
from verl_thinkprune.tiny.task import DATA_SOURCE, write_dataset

__all__ = ["DATA_SOURCE", "TinySettings", "prepare", "tiny_model_dir", "write_dataset"]


def prepare(
    out_dir: Path, num_train: int = 512, num_val: int = 64, num_test: int = 128, settings: TinySettings | None = None
) -> dict[str, str]:
    """OUT_DIR/model (a link to the cached model) and fresh train/val/test parquet files under OUT_DIR/data."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    link = out_dir / "model"
    cached = tiny_model_dir(settings)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(cached, target_is_directory=True)
    paths = write_dataset(out_dir / "data", num_train, num_val, num_test)
    return {"model": str(link), **{f"{split}_files": str(path) for split, path in paths.items()}}
