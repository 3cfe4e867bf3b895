"""Learned anomaly state on disk: ``STATE_DIR/anomaly.state``, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from batond.anomaly.modelset import ModelSet
from batond.errors import StateError

__all__ = ["STATE_FILE", "load_state", "save_state", "write_state"]

STATE_FILE = "anomaly.state"


def save_state(model_set: ModelSet, state_dir: Path) -> None:
    """Export and write the state (call on the thread that feeds the model set)."""
    write_state(model_set.export_state(), state_dir)


def write_state(data: bytes, state_dir: Path) -> None:
    """Write exported state next to its final name, fsync, then rename over it.

    Safe in a worker thread: export on the event loop (``export_state`` reads
    live per-series state), then ``await asyncio.to_thread(write_state, ...)``.
    """
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
