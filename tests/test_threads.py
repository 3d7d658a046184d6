"""Threads and the OpenMP wait policy (lifelong_kd.threads), and a light ``import lifelong_kd``.

Every check that depends on what libgomp read at ``import torch`` runs in a fresh interpreter
(``subprocess``): this test process imported torch long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifelong_kd import threads
from lifelong_kd.cli import main
from tests.conftest import requires_mnist

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = ("torchvision", "matplotlib", "tensorboard", "avalanche", "sklearn")
QUICK_RUN = ["--epochs", "1", "--train-size", "60", "--test-size", "30", "--n-experiences", "2", "--quiet", "--shifts", "none", "--no-tensorboard"]

# Runs in a fresh interpreter: a matrix product on 2 threads (a parallel region), then a 5 ms
# sleep, 40 times; prints the CPU seconds the process used while sleeping over the seconds slept.
# Threads that spin at the end of a parallel region burn CPU during the sleeps; sleeping ones do not.
IDLE_CPU_PROBE = """
import os, sys, time
if sys.argv[1] == "prepared":
    from lifelong_kd.threads import prepare_environment
    prepare_environment(busy=1.0)  # as on a busy machine: the passive policy
import torch
if sys.argv[1] == "after_import":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
torch.set_num_threads(2)
matrix = torch.randn(384, 384)
slept = busy = 0.0
for _ in range(40):
    matrix @ matrix
    wall, cpu = time.perf_counter(), time.process_time()
    time.sleep(0.005)
    slept += time.perf_counter() - wall
    busy += time.process_time() - cpu
print(busy / slept)
"""


def fresh_python(arguments: list[str], environment: dict[str, str] | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``python ARGUMENTS`` in a fresh interpreter whose environment has no OpenMP wait policy."""
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env = {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(environment or {})}
    return subprocess.run([sys.executable, *arguments], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def idle_cpu_share(mode: str) -> float:
    """CPU share of the idle OpenMP threads between parallel regions (see :data:`IDLE_CPU_PROBE`)."""
    done = fresh_python(["-c", IDLE_CPU_PROBE, mode], {"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


# ---------------------------------------------------------------- start-up


def test_import_loads_no_optional_module():
    code = f"import lifelong_kd, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in {set(OPTIONAL)!r}))"
    done = fresh_python(["-c", code])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_import_does_not_load_torch_and_the_names_resolve_on_use():
    code = "import sys, lifelong_kd; before = 'torch' in sys.modules; from lifelong_kd import run, LwF; print(before, run.__module__, LwF.__name__)"
    done = fresh_python(["-W", "default", "-c", code])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.split() == ["False", "lifelong_kd.pipeline", "LwF"]


def test_every_public_name_resolves_and_unknown_names_raise():
    import lifelong_kd

    for name in lifelong_kd.__all__:
        assert getattr(lifelong_kd, name) is not None
    assert lifelong_kd.pipeline.run is lifelong_kd.run  # a submodule, as before the import became lazy
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        lifelong_kd.not_a_name  # noqa: B018


# ---------------------------------------------------------------- the wait policy


def test_wait_policy_prepared_before_torch_stops_idle_threads_spinning():
    control = idle_cpu_share("unset")
    if control < 0.1:
        pytest.skip(f"idle OpenMP threads did not spin with the default policy here ({control:.2f} of a core); nothing to compare")
    assert idle_cpu_share("prepared") < min(0.05, control / 4)


def test_wait_policy_set_after_torch_import_is_ignored():
    # Why the command line sets the policy at its entry: libgomp reads it when torch loads it.
    prepared, late = idle_cpu_share("prepared"), idle_cpu_share("after_import")
    if late < 0.1:
        pytest.skip(f"idle OpenMP threads did not spin with the default policy here ({late:.2f} of a core); nothing to compare")
    assert late > 4 * prepared


def test_prepare_environment_keeps_a_policy_the_user_set_and_sets_passive_only_on_a_busy_machine():
    environment = {"OMP_WAIT_POLICY": "ACTIVE"}
    threads.prepare_environment(environment, busy=2.0)
    assert environment == {"OMP_WAIT_POLICY": "ACTIVE"}
    busy: dict[str, str] = {}
    threads.prepare_environment(busy, busy=threads.BUSY_THRESHOLD)
    assert busy == {"OMP_WAIT_POLICY": threads.DEFAULT_WAIT_POLICY}
    idle: dict[str, str] = {}
    threads.prepare_environment(idle, busy=0.1)
    assert idle == {}  # libgomp's default: fastest on an idle machine


def test_busy_cores_sees_a_process_that_keeps_a_core_busy():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        measured = threads.busy_cores(0.3)
    finally:
        spinner.kill()
        spinner.wait()
    if measured is None:
        pytest.skip("no /proc/stat on this platform")
    assert measured >= threads.BUSY_THRESHOLD


def test_worker_environment_gives_the_share_and_the_policy():
    environment = threads.worker_environment(3, base={"PATH": "/bin"})
    assert environment == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    assert threads.worker_environment(1, base={"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert threads.share_of_cores(10**6) == 1 and threads.share_of_cores(1) == threads.available_cores()


# ---------------------------------------------------------------- --threads


def test_run_next_to_a_busy_process_uses_and_records_threads_and_the_passive_policy_without_warnings(tmp_path):
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another job keeps a core busy
    try:
        time.sleep(0.3)
        done = fresh_python(["-W", "default", "-m", "lifelong_kd", "run", "--out", str(tmp_path / "run"), "--threads", "2", *QUICK_RUN], cwd=tmp_path)
    finally:
        spinner.kill()
        spinner.wait()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no CUDA (or any other) warning on a CPU machine
    setup = json.loads((tmp_path / "run" / "results.json").read_text())["setup"]
    assert setup["threads"] == {"threads": 2, "wait_policy": "PASSIVE", "cores": threads.available_cores()}


def test_a_wait_policy_in_the_environment_wins_and_is_recorded(tmp_path):
    done = fresh_python(["-m", "lifelong_kd", "run", "--out", str(tmp_path / "run"), *QUICK_RUN], {"OMP_WAIT_POLICY": "ACTIVE"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    setup = json.loads((tmp_path / "run" / "results.json").read_text())["setup"]
    assert setup["threads"] == {"threads": 1, "wait_policy": "ACTIVE", "cores": threads.available_cores()}  # OMP_NUM_THREADS=1


@pytest.fixture
def keep_torch_threads():
    """Restore this process's torch thread count after a test that runs the command line in-process."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_resume_with_other_threads_continues(tmp_path, keep_torch_threads):
    out = str(tmp_path / "run")
    assert main(["run", "--out", out, "--threads", "1", *QUICK_RUN]) == 0
    assert main(["run", "--out", out, "--resume", "--threads", "2"]) == 0  # threads do not change the numbers' setup


@pytest.mark.parametrize("value", ["0", "-2"])
def test_threads_must_be_positive(value, tmp_path, capsys, keep_torch_threads):
    assert main(["run", "--out", str(tmp_path / "run"), "--threads", value, *QUICK_RUN]) == 2
    error = capsys.readouterr().err
    assert "--threads must be a positive integer" in error and "Traceback" not in error


# ---------------------------------------------------------------- benchmarks/shared_machine.py


def load_benchmark():
    """``benchmarks/shared_machine.py`` as a module, without running it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark_shared_machine", REPO / "benchmarks" / "shared_machine.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_shared_machine_summary_divides_loaded_by_idle_and_compares_idle_with_the_old_default():
    benchmark = load_benchmark()
    cell = lambda *speeds: [{"samples_per_second": s, "threads": 2, "wait_policy": "PASSIVE"} for s in speeds]  # noqa: E731
    raw = {"mlp": {"old": {"idle": cell(100.0, 80.0, 90.0), "loaded": cell(3.0, 2.0, 1.0)}, "new": {"idle": cell(85.5, 99.0, 86.0), "loaded": cell(40.0, 43.0, 19.0)}}}
    summary = benchmark.summarise(raw)["mlp"]
    assert summary["old"]["loaded_over_idle"] == pytest.approx(2.0 / 90.0) and summary["old"]["idle_change"] == pytest.approx(0.0)
    assert summary["new"]["idle_samples_per_second"] == 86.0 and summary["new"]["loaded_samples_per_second"] == 40.0  # medians
    assert summary["new"]["loaded_over_idle"] == pytest.approx(40.0 / 86.0)
    assert summary["new"]["idle_change"] == pytest.approx(86.0 / 90.0 - 1)


def test_shared_machine_workers_start_without_the_callers_thread_variables(monkeypatch):
    benchmark = load_benchmark()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    environment = benchmark.clean_environment(benchmark.POLICIES["short-spin"].environment)
    assert "OMP_NUM_THREADS" not in environment and "OMP_WAIT_POLICY" not in environment and environment["GOMP_SPINCOUNT"] == "10000"


@pytest.mark.slow
@requires_mnist
def test_shared_machine_quick_run_appends_a_record(data_root, tmp_path):
    record = tmp_path / "shared_machine.jsonl"
    arguments = ["benchmarks/shared_machine.py", "--quick", "--models", "mlp", "--data-root", data_root, "--record", str(record)]
    done = fresh_python(arguments)
    assert done.returncode == 0, done.stderr
    assert "loaded_over_idle" in done.stdout and "idle_change" in done.stdout
    (line,) = record.read_text().splitlines()
    summary = json.loads(line)["summary"]["mlp"]
    assert summary["old"]["wait_policy"].startswith("unset") and summary["old"]["loaded_wait_policy"].startswith("unset")
    assert summary["new"]["loaded_wait_policy"] == "PASSIVE"  # next to the competitor, the default turns passive
    assert summary["new"]["loaded_over_idle"] > 0 and summary["new"]["idle_change"] is not None
