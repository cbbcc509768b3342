"""Run directories that are only ever continued with the settings that made them (the driver's and evaluation's)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SETTINGS_FILE = "run_settings.json"


class RunDirectoryConflict(ValueError):
    """The directory holds work done with other settings: continuing would mix two experiments."""


def claim(run_dir: Path, settings: dict[str, Any], what: str, *, create: bool = True) -> None:
    """Creates run_dir with its settings recorded, or accepts it when an earlier run recorded the same settings.

    create=False only checks (a dry run): a missing directory is fine, one of other settings is refused.
    """
    run_dir = Path(run_dir)
    wanted = json.loads(json.dumps(settings))  # as it reads back: tuples become lists, keys strings
    recorded = run_dir / SETTINGS_FILE
    try:
        if not recorded.exists():
            if create:
                run_dir.mkdir(parents=True, exist_ok=True)
                write_json_atomically(recorded, wanted)
            return
        previous = json.loads(recorded.read_text())
    except (OSError, ValueError) as error:
        raise RunDirectoryConflict(f"{what} directory {run_dir} is not usable: {error}") from None
    if previous != wanted:
        changed = sorted(k for k in wanted.keys() | previous.keys() if wanted.get(k) != previous.get(k))
        raise RunDirectoryConflict(
            f"{run_dir} holds a {what} made with other settings ({', '.join(changed)} differ): "
            "choose another directory, or repeat the original command to continue it"
        )


def write_json_atomically(path: Path, data: Any) -> None:
    """A reader, or a kill -9, sees either the old file or the new one, never half of one (a temporary file of this
    process, then os.replace); the directory is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
