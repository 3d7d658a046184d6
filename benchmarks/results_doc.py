"""Shared helpers of the benchmark suites: mean ± std cells, run logs, docs/results.md sections."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "docs" / "results.md"
OUTPUT = ROOT / "benchmarks" / "output"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
# How the docs spell the data folder in commands: relative to the repository root (the layout of the
# reference machines), whatever folder a run actually read; elsewhere pass --data-root DIR or set
# $LIFELONG_KD_DATA (README, "Real benchmarks").
DOCUMENTED_DATA_ROOT = "../shared/data"


def mean_std(values: Sequence[float], scale: float = 100.0, digits: int = 2) -> str:
    """``"m ± s"`` of ``values * scale`` (``"m"`` alone for one value, ``"-"`` for none)."""
    values = [scale * v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def append_jsonl(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON record (one line) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (empty when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def hardware() -> str:
    """One line describing the machine the numbers come from."""
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def write_section(heading: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace the ``## heading`` section of ``docs/results.md`` (or append it), keeping the rest."""
    text = path.read_text() if path.exists() else "# Results\n"
    start = text.find(heading + "\n")
    block = f"{heading}\n\n{body.strip()}\n"
    if start < 0:
        text = text.rstrip() + "\n\n" + block
    else:
        following = text.find("\n## ", start + len(heading))
        end = len(text) if following < 0 else following + 1
        text = text[:start] + block + ("\n" + text[end:] if following >= 0 else "")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
