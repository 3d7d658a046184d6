"""Fault injection with real processes: a `lifelong-kd run` SIGKILLed at chosen points, then resumed.

Each killed run is a real subprocess that runs the real CLI; a small wrapper (``KILLER``)
counts calls of one function of the library and sends the process SIGKILL at the n-th call:
during training, during evaluation, between the checkpoint write and the derived files, or
halfway through writing ``metrics.jsonl``'s temporary file. The run is then resumed by a
plain `lifelong-kd run --resume` process and compared with an uninterrupted run: identical
``results.json`` numbers, exactly one ``metrics.jsonl`` row and one TensorBoard scalar per
experience and tag (read with TensorBoard's own reader), no temporary files.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

KILLER = r"""
import os, signal, sys
from pathlib import Path

point, nth = sys.argv[1], int(sys.argv[2])
calls = [0]

def reached():
    calls[0] += 1
    return calls[0] == nth

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def counting(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if reached():
            die()
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)

if point == "train":
    from lifelong_kd import train
    counting(train, "train_step")
elif point == "train-avalanche":
    from lifelong_kd.integrations import avalanche
    counting(avalanche.LifelongKDPlugin, "before_backward")
elif point == "evaluate":
    from lifelong_kd.evaluation import evaluator
    counting(evaluator.Evaluator, "evaluate")
elif point == "after-checkpoint":
    from lifelong_kd import run_folder
    counting(run_folder.RunFolder, "write_derived")
elif point == "inside-metrics":
    from lifelong_kd import run_folder
    original = run_folder.write_atomic
    def torn(path, data, **options):
        if Path(path).name == "metrics.jsonl" and reached():
            Path(path).with_name(f".{Path(path).name}.tmp{os.getpid()}").write_bytes(data[: len(data) // 2])
            die()
        return original(path, data, **options)
    run_folder.write_atomic = torn
from lifelong_kd.cli import main
sys.exit(main(sys.argv[3:]))
"""

COMMON = ["--benchmark", "split-digits", "--scenario", "class", "--train-size", "60", "--test-size", "40",
          "--epochs", "2", "--batch-size", "32", "--model", "mlp:16", "--shifts", "none", "--quiet"]
PLAIN = [*COMMON, "--strategy", "lwf"]
COMPRESSION = [*COMMON, "--strategy", "lwf", "--student", "mlp:8", "--prune", "0.5", "--student-alone"]
AVALANCHE = [*COMMON, "--strategy", "lwf", "--engine", "avalanche"]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _cli(arguments: list[str], killer: tuple[str, int] | None = None, **kwargs) -> subprocess.CompletedProcess:
    import os

    prefix = ["-c", KILLER, *map(str, killer)] if killer else ["-c", "import sys; from lifelong_kd.cli import main; sys.exit(main(sys.argv[1:]))"]
    return subprocess.run([sys.executable, *prefix, "run", *arguments], capture_output=True, text=True, env={**os.environ, **ENV}, check=False, **kwargs)


def _scalar_steps(log_dir: Path) -> dict[str, list[int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def _numbers(document: dict) -> dict:
    sections = document.get("models", {"": document})
    return {name: (part["accuracy_matrix"], part["metrics"], part.get("robustness")) for name, part in sections.items()}


def _check_folder(folder: Path, reference: dict, metrics_files: list[str], log_dirs: list[str]) -> None:
    document = json.loads((folder / "results.json").read_text())
    assert _numbers(document) == _numbers(reference)
    for relative in metrics_files:
        steps = [json.loads(line).get("step") for line in (folder / relative).read_text().splitlines()]
        assert steps == [None, 0, 1, 2, 3, 4], relative
    for relative in log_dirs:
        for tag, steps in _scalar_steps(folder / relative).items():
            if tag.startswith(("accuracy/", "metrics/average_accuracy")):
                assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 4, (relative, tag, steps)
    assert not list(folder.rglob(".*.tmp*"))


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("reference")
    documents = {}
    for name, arguments in (("plain", PLAIN), ("compression", COMPRESSION), ("avalanche", AVALANCHE)):
        done = _cli([*arguments, "--out", str(root / name)])
        assert done.returncode == 0, done.stderr
        documents[name] = json.loads((root / name / "results.json").read_text())
    return documents


def _kill_and_resume(tmp_path: Path, arguments: list[str], killer: tuple[str, int]) -> Path:
    folder = tmp_path / "run"
    killed = _cli([*arguments, "--out", str(folder)], killer)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    resumed = _cli([*arguments, "--out", str(folder), "--resume"])
    if resumed.returncode != 0 and "nothing to resume" in resumed.stderr:  # killed before the first checkpoint
        resumed = _cli([*arguments, "--out", str(folder), "--overwrite"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return folder


PLAIN_POINTS = [("train", 7), ("evaluate", 3), ("after-checkpoint", 2), ("inside-metrics", 3)]


@pytest.mark.slow
@pytest.mark.parametrize("killer", PLAIN_POINTS, ids=[p for p, _ in PLAIN_POINTS])
def test_plain_run_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, reference_runs, killer):
    folder = _kill_and_resume(tmp_path, PLAIN, killer)
    _check_folder(folder, reference_runs["plain"], ["metrics.jsonl"], ["tensorboard"])


COMPRESSION_POINTS = [("train", 20), ("evaluate", 9), ("after-checkpoint", 3), ("inside-metrics", 10)]


@pytest.mark.slow
@pytest.mark.parametrize("killer", COMPRESSION_POINTS, ids=[p for p, _ in COMPRESSION_POINTS])
def test_compression_run_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, reference_runs, killer):
    folder = _kill_and_resume(tmp_path, COMPRESSION, killer)
    names = ["teacher", "student", "student_alone", "pruned_0.5", "quantized"]
    _check_folder(folder, reference_runs["compression"], [f"models/{n}/metrics.jsonl" for n in names], [f"models/{n}/tensorboard" for n in names])


AVALANCHE_POINTS = [("train-avalanche", 7), ("after-checkpoint", 2), ("inside-metrics", 4)]


@pytest.mark.slow
@pytest.mark.parametrize("killer", AVALANCHE_POINTS, ids=[p for p, _ in AVALANCHE_POINTS])
def test_avalanche_engine_run_killed_and_resumed_equals_an_uninterrupted_run(tmp_path, reference_runs, killer):
    folder = _kill_and_resume(tmp_path, AVALANCHE, killer)
    _check_folder(folder, reference_runs["avalanche"], ["metrics.jsonl"], ["tensorboard"])


def test_run_killed_between_checkpoint_and_results_resumes_to_the_same_numbers(tmp_path):
    """The quick representative of the slow matrix above (default test run)."""
    reference = _cli([*PLAIN, "--out", str(tmp_path / "reference")])
    assert reference.returncode == 0, reference.stderr
    folder = _kill_and_resume(tmp_path, PLAIN, ("after-checkpoint", 2))
    _check_folder(folder, json.loads((tmp_path / "reference" / "results.json").read_text()), ["metrics.jsonl"], ["tensorboard"])


def test_a_second_run_into_a_folder_being_written_is_refused_while_the_first_finishes(tmp_path):
    import os

    folder = tmp_path / "run"
    slow = [*COMMON, "--strategy", "finetune", "--epochs", "40", "--train-size", "250", "--out", str(folder)]
    code = "import sys; from lifelong_kd.cli import main; sys.exit(main(sys.argv[1:]))"
    first = subprocess.Popen([sys.executable, "-c", code, "run", *slow], env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / ".lock").is_file() or "pid" not in (folder / ".lock").read_text():
        assert time.time() < deadline and first.poll() is None, "the first run did not start"
        time.sleep(0.05)
    second = _cli([*COMMON, "--strategy", "lwf", "--out", str(folder)])
    assert first.poll() is None, "the first run finished before the second one was tried: make it longer"
    assert second.returncode == 2 and "being written by another process" in second.stderr and "Traceback" not in second.stderr
    _, errors = first.communicate(timeout=300)
    assert first.returncode == 0, errors
    document = json.loads((folder / "results.json").read_text())
    assert document["config"]["strategy"] == "finetune" and document["finished_experiences"] == 5
    assert len((folder / "metrics.jsonl").read_text().splitlines()) == 6
