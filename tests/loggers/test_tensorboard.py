"""TensorBoard output read back with TensorBoard's own reader and its real HTTP server."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lifelong_kd.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tb") / "run"
    args = ["run", "--out", str(out), "--epochs", "2", "--train-size", "80", "--quiet", "--shifts", "gaussian_noise,contrast"]
    assert main([*args, "--severities", "1,5", "--robustness-samples", "40", "--robustness-every", "1"]) == 0  # every experience: corrupted forgetting
    return out


def _accumulator(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_event_files_hold_metric_scalars_stepped_by_experience(run_dir):
    accumulator = _accumulator(run_dir)
    tags = set(accumulator.Tags()["scalars"])
    expected = {
        "metrics/average_accuracy",
        "metrics/forgetting",
        "metrics/backward_transfer",
        "accuracy/experience_0",
        "robustness/mean_corrupted_accuracy",
        "robustness/relative_robustness",
        "robustness/corrupted_forgetting",
    }
    assert expected <= tags
    assert not any(tag.startswith("compression/") for tag in tags)  # no reference model: every ratio would be 1
    steps = [event.step for event in accumulator.Scalars("metrics/average_accuracy")]
    assert steps == [0, 1, 2, 3, 4]


def test_scalars_equal_the_numbers_in_results_json(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    accumulator = _accumulator(run_dir)
    last = accumulator.Scalars("metrics/average_accuracy")[-1].value
    assert last == pytest.approx(results["metrics"]["average_accuracy"], abs=1e-6)
    column0 = [event.value for event in accumulator.Scalars("accuracy/experience_0")]
    assert column0 == pytest.approx([row[0] for row in results["accuracy_matrix"]], abs=1e-6)


def test_heatmaps_and_config_text_are_logged(run_dir):
    accumulator = _accumulator(run_dir)
    assert {"accuracy_matrix", "robustness_grid"} <= set(accumulator.Tags()["images"])
    assert "config" in " ".join(accumulator.Tags()["tensors"])
    assert (run_dir / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "forgetting_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_each_heatmap_is_drawn_once_for_the_png_file_and_tensorboard(run_dir):
    accumulator = _accumulator(run_dir)
    for tag, file in (("accuracy_matrix", "accuracy_matrix.png"), ("robustness_grid", "robustness.png")):
        last = accumulator.Images(tag)[-1]
        assert last.step == 4
        png = (run_dir / file).read_bytes()
        assert last.encoded_image_string == png  # the final drawing, shared by both loggers
        width, height = struct.unpack(">II", png[16:24])
        assert (last.width, last.height) == (width, height)
    first, final = accumulator.Images("accuracy_matrix")[0], accumulator.Images("accuracy_matrix")[-1]
    assert first.encoded_image_string != final.encoded_image_string  # each report drawn anew


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_real_tensorboard_server_serves_our_scalars(run_dir):
    executable = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    port = _free_port()
    server = subprocess.Popen(
        [executable, "--logdir", str(run_dir / "tensorboard"), "--host", "127.0.0.1", "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, points = time.time() + 60, None
        while time.time() < deadline and not points:
            try:
                query = "run=.&tag=metrics/average_accuracy"
                points = _get_json(f"{base}/data/plugin/scalars/scalars?{query}")
            except OSError:
                time.sleep(0.5)
        assert points, "TensorBoard did not serve the scalar within 60 s"
        results = json.loads((run_dir / "results.json").read_text())
        assert [p[1] for p in points] == [0, 1, 2, 3, 4]
        assert points[-1][2] == pytest.approx(results["metrics"]["average_accuracy"], abs=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=10)
