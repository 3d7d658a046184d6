"""Atomic file writes (a leaf module: every layer may use it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def _write_through_temporary(path: str | Path, write: Callable[[IO[bytes]], Any], sync: bool = True) -> None:
    """Call ``write`` on a temporary file next to ``path``, flush it to disk, then rename it to ``path``.

    A crash leaves either the old file or the new one, never a torn file; an error in ``write``
    removes the temporary file. ``sync=False`` skips the ``fsync``: a killed process still
    leaves a whole file (the operating system holds the written bytes), but a power loss right
    after may leave the old file or an empty one, so use it only for files that can be rebuilt.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_atomic(path: str | Path, data: bytes, sync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename.

    A crash leaves either the old file or the new one, never a torn file; ``sync`` as in
    :func:`_write_through_temporary`.
    """
    _write_through_temporary(path, lambda handle: handle.write(data), sync)


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` into a temporary file and an atomic rename (no copy of the bytes in memory first)."""
    import torch

    _write_through_temporary(path, lambda handle: torch.save(obj, handle))
