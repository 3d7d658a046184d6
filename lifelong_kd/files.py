"""Atomic file writes (a leaf module: every layer may use it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _write_through_temporary(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    A crash leaves either the old file or the new one, never a torn file; an error in ``write``
    removes the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    A crash leaves either the old file or the new one, never a torn file.
    """
    _write_through_temporary(path, lambda handle: handle.write(data))


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` into a temporary file and an atomic rename (no copy of the bytes in memory first)."""
    import torch

    _write_through_temporary(path, lambda handle: torch.save(obj, handle))
