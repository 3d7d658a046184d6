"""`lifelong-kd sweep`: planning and the mean ± std table on hand-made values, then real sweeps in real processes (killed and resumed)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifelong_kd.cli import main
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.cli.sweep import (
    Sweep,
    aggregate,
    available_cores,
    check_record,
    check_runs,
    format_csv,
    format_markdown,
    mean_std,
    parse_grid,
    parse_seeds,
    plan,
)

REPO = Path(__file__).resolve().parents[1]
# Small runs on the embedded stream: a few seconds each, most of it the process start.
RUN = ["--scenario", "class", "--train-size", "40", "--test-size", "20", "--epochs", "1", "--model", "mlp:8", "--shifts", "none"]


# --- planning -----------------------------------------------------------------------------------


def test_grid_items_and_seeds_are_parsed():
    grid, per_strategy = parse_grid(["lr=0.01,0.1", "--batch-size=16", "lwf.temperature=1,2", "alpha=[0,1],[1,2]"])
    assert grid == {"lr": ["0.01", "0.1"], "batch_size": ["16"], "alpha": ["0,1", "1,2"]}
    assert per_strategy == {"lwf": {"temperature": ["1", "2"]}}
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]
    for bad in ("lr", "lr=", "lr=0.1,"):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            parse_grid([bad])
    for bad in ("a", "1,1"):
        with pytest.raises(UsageError, match="--seeds"):
            parse_seeds(bad)


def test_plan_is_every_combination_and_seed_with_strategy_grids_in_their_strategy_only():
    sweep = Sweep(base=["--epochs", "2"], grid={"strategy": ["finetune", "lwf"], "augment": ["true", "false"]},
                  strategy_grids={"lwf": {"temperature": ["1", "2"]}}, seeds=[0, 1])
    runs = plan(sweep)
    # finetune: 2 augment values; lwf: 2 augment x 2 temperatures; each x 2 seeds
    assert len(runs) == (2 + 4) * 2
    names = [run.name for run in runs]
    assert names[:2] == ["strategy=finetune_augment=true_seed=0", "strategy=finetune_augment=true_seed=1"]
    assert "strategy=lwf_augment=false_temperature=2_seed=1" in names and len(set(names)) == len(names)
    lwf = next(run for run in runs if run.name == "strategy=lwf_augment=false_temperature=2_seed=1")
    assert lwf.arguments == ("--epochs", "2", "--strategy", "lwf", "--no-augment", "--temperature", "2", "--seed", "1", "--quiet")
    assert lwf.configuration == "strategy=lwf_augment=false_temperature=2"
    with pytest.raises(UsageError, match="strategy ewc, which no run of the sweep uses"):
        plan(Sweep(grid={"strategy": ["lwf"]}, strategy_grids={"ewc": {"ewc_lambda": ["1"]}}))


def test_bad_run_options_stop_the_sweep_before_any_run(tmp_path):
    with pytest.raises(UsageError, match=r"sweep run strategy=nosuch_seed=0: .*Unknown strategy 'nosuch'"):
        check_runs(plan(Sweep(grid={"strategy": ["nosuch"]})), tmp_path)
    with pytest.raises(UsageError, match="option.*temperature|temperature"):
        check_runs(plan(Sweep(base=["--temperature", "2"], grid={"strategy": ["finetune"]})), tmp_path)
    with pytest.raises(UsageError, match="are the sweep's to set"):
        check_runs(plan(Sweep(base=["--out", "elsewhere"])), tmp_path)


def test_a_sweep_folder_refuses_other_shared_options_and_accepts_more_seeds(tmp_path):
    check_record(tmp_path, Sweep(base=["--epochs", "2"], seeds=[0]))
    check_record(tmp_path, Sweep(base=["--epochs", "2"], seeds=[1, 2]))
    assert json.loads((tmp_path / "sweep.json").read_text())["seeds"] == [0, 1, 2]
    with pytest.raises(UsageError, match="other shared run options"):
        check_record(tmp_path, Sweep(base=["--epochs", "3"]))


# --- the table ----------------------------------------------------------------------------------


def _document(accuracy: float, forgetting: float, seconds: float, min_accuracy: float | None = None) -> dict:
    document = {"metrics": {"average_accuracy": accuracy, "forgetting": forgetting, "backward_transfer": -forgetting},
                "timing": {"train_seconds": seconds, "eval_seconds": 1.0}}
    if min_accuracy is not None:
        document["stability"] = {"min_accuracy": min_accuracy, "worst_case_accuracy": None}
    return document


def test_mean_and_sample_standard_deviation_per_configuration():
    assert mean_std([0.5, 0.7]) == (pytest.approx(0.6), pytest.approx(math.sqrt(0.02)), 2)  # ((0.1)^2 + (0.1)^2) / (2 - 1)
    assert mean_std([0.5, None, float("nan")]) == (0.5, None, 1)
    assert mean_std([None]) == (None, None, 0)
    rows = aggregate({"a": [_document(0.5, 0.2, 9.0, 0.1), _document(0.7, 0.4, 11.0, 0.3)], "b": [_document(0.9, 0.0, 4.0)]})
    assert rows[0]["runs"] == 2 and rows[0]["average_accuracy_mean"] == pytest.approx(0.6)
    assert rows[0]["wall_seconds_mean"] == pytest.approx(11.0) and rows[0]["wall_seconds_std"] == pytest.approx(math.sqrt(2.0))
    assert rows[1]["min_accuracy_mean"] is None and rows[1]["average_accuracy_std"] is None
    table = format_markdown(rows)
    assert "| a | 2 | 60.00 ± 14.14 | 30.00 ± 14.14 | -30.00 ± 14.14 | 20.00 ± 14.14 | 11.0 ± 1.4 |" in table
    assert "| b | 1 | 90.00 | 0.00 | 0.00 | - | 5.0 |" in table  # one run: no deviation; no min-ACC measured
    assert "WC-ACC" not in table and "corrupted" not in table  # columns without any value are left out
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert float(parsed[0]["average_accuracy_std"]) == pytest.approx(math.sqrt(0.02)) and parsed[1]["min_accuracy_mean"] == ""


# --- real sweeps --------------------------------------------------------------------------------


def _sweep_process(arguments: list[str]) -> subprocess.Popen:
    code = "import sys; from lifelong_kd.cli import main; sys.exit(main(sys.argv[1:]))"
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, "sweep", *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)


def test_workers_get_their_share_of_the_cores_and_the_table_is_written(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--seeds", "0,1", "--jobs", "2", "--", *RUN, "--eval-every", "1", "--probe-samples", "10"]) == 0
    printed = capsys.readouterr().out
    documents = [json.loads((out / "runs" / f"base_seed={seed}" / "results.json").read_text()) for seed in (0, 1)]
    assert {d["timing"]["machine"]["cpu_threads"] for d in documents} == {max(1, available_cores() // 2)}
    accuracies = [d["metrics"]["average_accuracy"] for d in documents]
    mean = sum(accuracies) / 2
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(rows) == 1 and rows[0]["configuration"] == "base" and rows[0]["runs"] == "2"
    assert float(rows[0]["average_accuracy_mean"]) == pytest.approx(mean)
    assert float(rows[0]["min_accuracy_mean"]) == pytest.approx(sum(d["stability"]["min_accuracy"] for d in documents) / 2)
    assert (out / "summary.png").stat().st_size > 1000 and "| base | 2 |" in printed
    assert (out / "summary.md").read_text().strip() in printed


@pytest.mark.slow
def test_a_killed_sweep_of_two_strategies_and_three_seeds_resumes_and_skips_finished_runs(tmp_path):
    out = tmp_path / "sweep"
    arguments = ["--out", str(out), "--seeds", "0,1,2", "--grid", "strategy=finetune,lwf", "--jobs", "2", "--", *RUN, "--epochs", "3"]
    first = _sweep_process(arguments)
    deadline = time.time() + 600
    while not any((folder / "results.json").is_file() and json.loads((folder / "results.json").read_text())["finished_experiences"] == 5
                  for folder in (out / "runs").glob("*")):
        assert time.time() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)  # the sweep dies at once; its workers die with it
    first.communicate()
    finished = {folder.name: (folder / "results.json").read_text() for folder in (out / "runs").glob("*")
                if (folder / "results.json").is_file() and json.loads((folder / "results.json").read_text())["finished_experiences"] == 5}
    assert 1 <= len(finished) < 6
    second = _sweep_process(arguments)
    stdout, stderr = second.communicate(timeout=900)
    assert second.returncode == 0, stderr[-3000:]
    assert f"{len(finished)} finished already" in stdout
    for name, text in finished.items():
        assert (out / "runs" / name / "results.json").read_text() == text  # not run again
    rows = {row["configuration"]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert set(rows) == {"strategy=finetune", "strategy=lwf"} and {row["runs"] for row in rows.values()} == {"3"}
    assert "| strategy=lwf | 3 |" in stdout
    assert not list(out.rglob(".*.tmp*")) and not list(out.rglob(".lock.*"))


def test_sweep_needs_a_folder_and_names_bad_grids(capsys):
    assert main(["sweep", "--seeds", "0"]) == 2
    assert "needs a folder: --out SWEEP_DIR" in capsys.readouterr().err
    assert main(["sweep", "--out", "x", "--grid", "lr"]) == 2
    assert "write KEY=VALUE,VALUE" in capsys.readouterr().err
