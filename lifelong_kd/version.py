"""The library version and, for a git checkout, its revision (a leaf module: the loop records both in every run folder)."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

__version__ = "0.1.0"

# Seconds git may take to answer (a hung network file system must not stall a run).
GIT_TIMEOUT = 10.0


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """The commit (``git rev-parse HEAD``) of the checkout this package is imported from, or None.

    None when git is not installed, fails or times out, or when the package is not a file
    tracked in a git work tree (an installed copy inside some other repository, e.g. a
    virtual environment under a project's folder, does not report that project's commit).
    Uncommitted changes are not flagged. Asked once per process.
    """
    package = Path(__file__).resolve().parent
    tracked = _git(package, "ls-files", "--error-unmatch", Path(__file__).name)
    return _git(package, "rev-parse", "HEAD") if tracked is not None else None


def _git(folder: Path, *arguments: str) -> str | None:
    """The output of ``git -C folder ARGUMENTS`` (stripped), or None if it fails in any way."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *arguments], capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
