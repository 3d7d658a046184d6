"""benchmarks/vandeven2019.py survives SIGKILL: the same command continues the killed run and skips finished ones.

Real subprocesses on real MNIST at --quick size: one queue is killed with SIGKILL once its run
folder holds two finished experiences, then restarted with the same command; its accuracy
matrix must equal that of an uninterrupted queue, the JSONL log must hold one record, and a
third start must run nothing. The cell keeps Adam's state across experiences and uses LwF's
convex weighting, so the optimiser state and the teacher both have to come back from the
checkpoint for the numbers to match.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA, requires_mnist

REPO = Path(__file__).resolve().parents[1]
CELL = "split/class/lwf/1/keep-adam+convex"
FOLDER = "split-class-lwf-s1-i60-keep-adam+convex"


def command(out: Path) -> list[str]:
    return [sys.executable, str(REPO / "benchmarks" / "vandeven2019.py"), "--quick", "--iterations", "60", "--order", CELL,
            "--data-root", str(SHARED_DATA), "--out-dir", str(out / "runs"), "--log", str(out / "runs.jsonl"), "--progress-log", str(out / "progress.log")]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def finished_experiences(folder: Path) -> int:
    try:
        return int(json.loads((folder / "results.json").read_text())["finished_experiences"])
    except (OSError, ValueError, KeyError):
        return 0


def records(out: Path) -> list[dict]:
    path = out / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


@pytest.mark.slow
@requires_mnist
def test_killed_queue_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(command(whole), env=environment(), check=True, capture_output=True, timeout=600)
    process = subprocess.Popen(command(killed), env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while finished_experiences(killed / "runs" / FOLDER) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = finished_experiences(killed / "runs" / FOLDER)
    assert process.returncode == -signal.SIGKILL and 2 <= finished < 5, "the queue must be killed in the middle of its run"
    assert records(killed) == []

    subprocess.run(command(killed), env=environment(), check=True, capture_output=True, timeout=600)
    expected, resumed = records(whole), records(killed)
    assert len(resumed) == 1 and resumed[0]["accuracy_matrix"] == expected[0]["accuracy_matrix"]
    assert resumed[0]["command"] == expected[0]["command"] and "--keep-optimizer" in resumed[0]["command"]
    progress = (killed / "progress.log").read_text()
    assert progress.count(f"resuming {FOLDER}") == 1 and progress.count(f"starting {FOLDER}") == 1

    again = subprocess.run(command(killed), env=environment(), check=True, capture_output=True, text=True, timeout=600)
    assert len(records(killed)) == 1  # finished cells are skipped
    assert f"cell 1/1: {FOLDER}" not in again.stdout
