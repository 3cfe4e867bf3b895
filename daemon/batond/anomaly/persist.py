"""Learned anomaly state on disk: ``STATE_DIR/anomaly.state``, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from batond.anomaly.modelset import ModelSet
from batond.errors import StateError

__all__ = ["STATE_FILE", "load_state", "save_state"]

STATE_FILE = "anomaly.state"


def save_state(model_set: ModelSet, state_dir: Path) -> None:
    """Write the state next to its final name, fsync, then rename over it."""
    data = model_set.export_state()
    path = Path(state_dir) / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StateError(f"{path}: cannot write anomaly state: {exc}") from exc


def load_state(model_set: ModelSet, state_dir: Path) -> None:
    """Adopt the saved state if there is one; a missing file is a fresh start."""
    path = Path(state_dir) / STATE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"{path}: cannot read anomaly state: {exc}") from exc
    try:
        model_set.import_state(data)
    except StateError as exc:
        raise StateError(f"{path}: {exc}") from exc
