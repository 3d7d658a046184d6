"""What a run records: versions and the git commit, the training-loss curve (results, metrics.jsonl,
TensorBoard, across a resume), and TensorBoard HParams with the strategy options, read back with
TensorBoard's own reader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from lifelong_kd import Finetune, LwF, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.cli import main
from lifelong_kd.loggers.tensorboard import TensorBoardLogger
from lifelong_kd.logs import LossCurve, loss_window
from tests.helpers import CrashAfter

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--benchmark", "split-digits", "--train-size", "120", "--test-size", "40", "--model", "mlp:16", "--batch-size", "16", "--shifts", "none", "--quiet"]


@pytest.fixture(scope="module")
def lwf_run(tmp_path_factory) -> Path:
    """A finished CLI run: LwF with one option given (temperature) and the others at their defaults."""
    out = tmp_path_factory.mktemp("records") / "run"
    assert main(["run", *QUICK, "--epochs", "3", "--strategy", "lwf", "--temperature", "3", "--out", str(out)]) == 0
    return out


def _results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


# ---------------------------------------------------------------------- versions


def _git_head() -> str | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_results_record_python_torch_library_versions_and_the_git_commit(lwf_run):
    versions = _results(lwf_run)["setup"]["versions"]
    assert versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert versions["torch"] and versions["lifelong_kd"]
    head = _git_head()
    if head is None:
        pytest.skip("the tests do not run from a git checkout")
    assert versions["git"] == head


def _revision_in_subprocess(package_parent: Path, path_variable: str) -> str:
    code = "import lifelong_kd.version as v; from pathlib import Path; assert Path(v.__file__).parent.parent == Path.cwd(); print(v.git_revision())"
    environment = {**os.environ, "PYTHONPATH": str(package_parent), "PATH": path_variable}
    done = subprocess.run([sys.executable, "-c", code], cwd=package_parent, env=environment, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_git_revision_is_none_without_git_and_outside_a_checkout(tmp_path):
    # git not on PATH: None, no error
    assert _revision_in_subprocess(REPO, str(tmp_path)) == "None"
    # a copy of the package that no git work tree tracks: None
    copy = tmp_path / "copy" / "lifelong_kd"
    copy.mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    shutil.copy(REPO / "lifelong_kd" / "version.py", copy / "version.py")
    assert _revision_in_subprocess(copy.parent, os.environ.get("PATH", "")) == "None"


# ---------------------------------------------------------------------- the loss curve


def test_loss_curve_points_average_windows_of_the_experience():
    curve = LossCurve(23)
    for value in range(23):
        curve.add(float(value))
    window = loss_window(23)
    assert window == 3  # at least 10 points for a short experience
    points = curve.points()
    assert [point[0] for point in points] == [3, 6, 9, 12, 15, 18, 21, 23]
    assert points[0][1] == pytest.approx(1.0) and points[-1][1] == pytest.approx(21.5)
    assert loss_window(10_000) == 50


def test_each_report_holds_its_loss_curve_at_global_iterations(lwf_run):
    results = _results(lwf_run)
    timing = results["timing"]["per_experience"]
    iterations = [row["iterations"] for row in timing]
    assert iterations == [3 * -(-120 // 16)] * 5  # 3 epochs of ceil(120 / 16) minibatches
    start = 1
    for report, row in zip(results["reports"], timing):
        training = report["training"]
        assert training["first_iteration"] == start and training["iterations"] == row["iterations"]
        steps = [point[0] for point in training["loss_curve"]]
        assert steps[0] >= start and steps[-1] == start + row["iterations"] - 1 and steps == sorted(steps)
        assert training["mean_loss"] == pytest.approx(row["mean_loss"])
        assert "loss_curve" not in row  # kept once, in the report
        start += row["iterations"]
    lines = [json.loads(line) for line in (lwf_run / "metrics.jsonl").read_text().splitlines()[1:]]
    assert [line["training"] for line in lines] == [report["training"] for report in results["reports"]]


def test_tensorboard_train_loss_equals_the_recorded_curve(lwf_run):
    recorded = [point for report in _results(lwf_run)["reports"] for point in report["training"]["loss_curve"]]
    logged = _scalars(lwf_run / "tensorboard" / "train", "train/loss")
    assert [step for step, _ in logged] == [step for step, _ in recorded]
    assert [value for _, value in logged] == pytest.approx([value for _, value in recorded], rel=1e-6)


def _api_run(folder: Path, loggers: list, resume: bool = False) -> dict:
    stream = build_stream("split-digits", StreamOptions(scenario="task", train_size=100, test_size=30))
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False)
    return run(stream, model, Finetune(), loggers=[TensorBoardLogger(folder, figures=False), *loggers], config=config, out=folder, resume=resume)


def test_an_interrupted_and_resumed_run_logs_each_loss_point_once_with_the_same_values(tmp_path):
    whole = _api_run(tmp_path / "whole", [])
    with pytest.raises(KeyboardInterrupt):
        _api_run(tmp_path / "cut", [CrashAfter(2)])
    resumed = _api_run(tmp_path / "cut", [], resume=True)
    assert [r["training"] for r in resumed["reports"]] == [r["training"] for r in whole["reports"]]
    expected = _scalars(tmp_path / "whole" / "tensorboard" / "train", "train/loss")
    assert _scalars(tmp_path / "cut" / "tensorboard" / "train", "train/loss") == expected
    assert len(expected) == len({step for step, _ in expected}) > 5


# ---------------------------------------------------------------------- HParams


def _hparams(log_dir: Path) -> dict:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in values.items()}


def test_hparams_hold_the_strategy_options_with_defaults_and_only_settings_that_change_numbers(lwf_run):
    hparams = _hparams(lwf_run / "tensorboard")
    assert hparams["temperature"] == 3.0  # given on the command line
    assert hparams["alpha"] == 1.0 and hparams["scale_t2"] == 0.0  # LwF's defaults, filled in (PyTorch stores booleans as numbers)
    assert hparams["strategy"] == "lwf" and hparams["lr"] == 0.01 and hparams["epochs"] == 3 and hparams["model"] == "mlp:16"
    assert hparams["severities"] == "1,2,3,4,5"  # lists as text
    for volatile in ("out", "quiet", "resume", "overwrite", "config_file", "tensorboard", "download", "strategy_options"):
        assert volatile not in hparams
    config = _results(lwf_run)["config"]
    assert config["strategy_options"]["temperature"] == 3.0 and config["strategy_options"]["alpha"] == 1.0


def test_hparams_of_an_api_run_flatten_the_record_it_was_given(tmp_path):
    stream = build_stream("split-digits", StreamOptions(train_size=40, test_size=20, n_experiences=2))
    model = build_model("mlp:8", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    record = {"lr": 0.05, "out": str(tmp_path), "quiet": True, "strategy_options": {"temperature": 2.0, "alpha": [0.5, 1.0]}}
    logger = TensorBoardLogger(tmp_path, figures=False)
    run(stream, model, LwF(alpha=[0.5, 1.0]), loggers=[logger], config=TrainConfig(epochs=1, progress=False), record=record)
    assert _hparams(tmp_path / "tensorboard") == {"lr": 0.05, "temperature": 2.0, "alpha": "0.5,1.0"}
