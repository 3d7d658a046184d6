"""The Weights & Biases logger in W&B's offline mode, read back from the run files W&B wrote
(``<run>/wandb/offline-run-*/run-<id>.wandb``: W&B's record log of protobuf records)."""

from __future__ import annotations

import json
import struct
import subprocess
import time
import sys
from pathlib import Path

import pytest

pytest.importorskip("wandb", reason="the [wandb] extra is not installed")

from wandb.proto import wandb_internal_pb2  # noqa: E402

from lifelong_kd import LwF, StreamOptions, TrainConfig, build_model, build_stream, run  # noqa: E402
from lifelong_kd.cli import main  # noqa: E402
from lifelong_kd.loggers.wandb import WandbLogger  # noqa: E402
from tests.helpers import CrashAfter  # noqa: E402
from tests.strategies.helpers import one_thread  # noqa: E402

QUICK = ["--benchmark", "split-digits", "--train-size", "60", "--test-size", "30", "--model", "mlp:8", "--batch-size", "16", "--shifts", "none", "--quiet", "--no-instruments"]
BLOCK = 32768  # W&B's record log: LevelDB's log format, 32 KiB blocks of chunks with 7-byte headers


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with one_thread():
        yield


def _records(path: Path) -> list:
    """Every protobuf record of a ``.wandb`` file (header ``:W&B`` + magic + version, then LevelDB log chunks)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending, records = 7, b"", []
    while position + 7 <= len(data):
        if BLOCK - position % BLOCK < 7:  # a block's trailer: too short for a header
            position += BLOCK - position % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        payload = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == 1:  # a whole record
            records.append(payload)
        elif kind in (2, 3):  # first, middle
            pending = (pending if kind == 3 else b"") + payload
        elif kind == 4:  # last
            records.append(pending + payload)
    return [wandb_internal_pb2.Record.FromString(record) for record in records]


def _finished_records(path: Path, timeout: float = 60.0) -> list:
    """The records of ``path`` once W&B's service has written the run's exit record.

    ``run.finish()`` returns when the service has the run's data; on a busy machine the service
    process can still be writing the file then, so the test waits for the exit record.
    """
    deadline = time.monotonic() + timeout
    while True:
        records = _records(path)
        if any(record.WhichOneof("record_type") == "exit" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _read_runs(folder: Path) -> dict:
    """What the offline runs under ``folder/wandb`` hold: run records, history rows and summary values."""
    found = {"runs": [], "history": [], "summary": {}, "config": {}}
    for path in sorted((folder / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in _finished_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found["runs"].append(record.run)
                found["config"].update({item.key: json.loads(item.value_json) for item in record.run.config.update})
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                found["history"].append({key: value for key, value in row.items() if not key.startswith("_")})
            elif kind == "summary":
                found["summary"].update({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.summary.update})
    return found


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wandb") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        assert main(["run", *QUICK, "--epochs", "2", "--strategy", "lwf", "--temperature", "3", "--seed", "1", "--wandb", "lkd-tests", "--out", str(out)]) == 0
    return out


def test_the_offline_run_is_named_grouped_and_configured_from_the_run(cli_run):
    found = _read_runs(cli_run)
    run_record = found["runs"][0]
    assert run_record.project == "lkd-tests" and run_record.display_name == "split-digits (task scenario), lwf, seed 1"
    assert run_record.run_group == "split-digits, task, lwf"
    config = found["config"]
    assert config["temperature"] == 3.0 and config["alpha"] == 1.0 and config["strategy"] == "lwf" and config["seed"] == 1
    assert "out" not in config and "quiet" not in config  # only settings that change the numbers


def test_each_experience_and_loss_point_is_logged_with_the_numbers_of_results_json(cli_run):
    results = json.loads((cli_run / "results.json").read_text())
    history = _read_runs(cli_run)["history"]
    experiences = [row for row in history if "experience" in row]
    assert [row["experience"] for row in experiences] == [0, 1, 2, 3, 4]
    for row, report in zip(experiences, results["reports"]):
        step = report["step"]
        assert [row[f"accuracy/experience_{j}"] for j in range(step + 1)] == pytest.approx(report["accuracy_matrix"][step][: step + 1])
        assert f"accuracy/experience_{step + 1}" not in row  # not trained yet
        assert row["metrics/average_accuracy"] == pytest.approx(report["metrics"]["average_accuracy"])
        assert {name: row[f"loss/{name}"] for name in report["training"]["loss_terms"]} == pytest.approx(report["training"]["loss_terms"])
    points = [row for row in history if "iteration" in row]
    recorded = [point for report in results["reports"] for point in report["training"]["loss_curve"]]
    assert [(row["iteration"], row["train/loss"]) for row in points] == [(int(i), pytest.approx(v)) for i, v in recorded]
    distilled = [row["train/distillation"] for row in points if "train/distillation" in row]
    assert len(distilled) == sum(len(report["training"]["loss_terms_curve"].get("distillation", [])) for report in results["reports"]) > 0
    assert _read_runs(cli_run)["summary"]["final/average_accuracy"] == pytest.approx(results["metrics"]["average_accuracy"])


def _api_run(folder: Path, loggers: list, resume: bool = False) -> dict:
    stream = build_stream("split-digits", StreamOptions(scenario="task", train_size=60, test_size=30))
    model = build_model("mlp:8", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    config = TrainConfig(epochs=1, batch_size=16, lr=0.05, progress=False)
    logger = WandbLogger(folder, "lkd-tests", mode="offline")
    return run(stream, model, LwF(), loggers=[logger, *loggers], config=config, out=folder, resume=resume, record={"benchmark": "split-digits", "seed": 0})


def test_a_resumed_run_continues_the_same_wandb_run_and_logs_each_experience_once(tmp_path):
    folder = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        _api_run(folder, [CrashAfter(2)])
    _api_run(folder, [], resume=True)
    found = _read_runs(folder)
    assert len({record.run_id for record in found["runs"]}) == 1 and len(found["runs"]) == 2  # one W&B run, two sessions
    assert [row["experience"] for row in found["history"] if "experience" in row] == [0, 1, 2, 3, 4]
    iterations = [row["iteration"] for row in found["history"] if "iteration" in row]
    assert iterations == sorted(set(iterations))


def test_wandb_without_the_package_is_a_clear_error(tmp_path):
    code = (
        "import sys; sys.modules['wandb'] = None\n"  # as if wandb were not installed
        "from lifelong_kd.cli import main\n"
        f"sys.exit(main({['run', *QUICK, '--wandb', 'p', '--out', str(tmp_path / 'run')]!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert 'pip install "lifelong-kd[wandb]"' in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "results.json").exists()
