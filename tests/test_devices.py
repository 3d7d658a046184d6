"""Devices on a machine without a GPU: `--device cpu` is the default's run, absent devices are clear errors.

The GPU paths (CUDA runs, float16 with its scaler, bf16 on CUDA, a GPU checkpoint resumed on
the CPU and the reverse, deterministic CUDA kernels, NCCL) are exercised by
``python benchmarks/device_check.py`` on a CUDA machine; here the same code runs on the CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from lifelong_kd import distributed, pipeline
from lifelong_kd.cli import main
from lifelong_kd.data.benchmarks import StreamOptions, build_stream
from lifelong_kd.models import build_model
from lifelong_kd.run_folder import RunFolder
from lifelong_kd.strategies.ewc import EWC
from lifelong_kd.strategies.lwf import LwF
from lifelong_kd.train import TrainConfig, TrainingSet, gradient_scaler, make_optimizer, train_step

TINY = ["--n-experiences", "2", "--train-size", "60", "--test-size", "40", "--epochs", "2", "--batch-size", "32", "--model", "mlp:16", "--shifts", "none", "--quiet"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: benchmarks/device_check.py covers it")
no_mps = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has an MPS device")


def _numbers(folder) -> tuple:
    document = json.loads((folder / "results.json").read_text())
    return document["accuracy_matrix"], document["metrics"], [row["mean_loss"] for row in document["timing"]["per_experience"]]


@no_cuda
def test_device_cpu_gives_the_default_runs_numbers(tmp_path):
    assert main(["run", *TINY, "--strategy", "lwf", "--out", str(tmp_path / "default")]) == 0
    assert main(["run", *TINY, "--strategy", "lwf", "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 0
    assert _numbers(tmp_path / "cpu") == _numbers(tmp_path / "default")
    hardware = json.loads((tmp_path / "cpu" / "results.json").read_text())["setup"]["hardware"]
    assert hardware == {"device": "cpu", "processes": 1, "backend": None}


@no_cuda
def test_auto_is_the_cpu_without_cuda():
    assert distributed.resolve_device("auto") == torch.device("cpu")
    assert distributed.resolve_device("cpu", local_rank=1, world_size=2) == torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        pytest.param(["--device", "cuda"], "has no CUDA device", marks=no_cuda),
        pytest.param(["--device", "cuda:1"], "has no CUDA device", marks=no_cuda),
        pytest.param(["--device", "mps"], "has no Apple MPS device", marks=no_mps),
        (["--device", "tpu"], "device must be one of auto, cpu, cuda, cuda:N, mps"),
        (["--device", "cpu", "--precision", "fp16"], "fp16 needs a CUDA device"),
    ],
)
def test_a_device_that_is_not_there_is_a_clear_error(flags, message, tmp_path, capsys):
    code = main(["run", *TINY, *flags, "--out", str(tmp_path / "run")])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_precision_per_device():
    distributed.check_precision("bf16", torch.device("cpu"))
    distributed.check_precision("fp16", torch.device("cuda", 0))  # a type check: no GPU needed
    for precision, device in (("fp16", "cpu"), ("bf16", "mps"), ("fp16", "mps")):
        with pytest.raises(distributed.DeviceError, match=f"--precision {precision}"):
            distributed.check_precision(precision, torch.device(device))


def test_one_gpu_for_several_processes_is_refused():
    with pytest.raises(distributed.DeviceError):
        distributed.resolve_device("cuda:0", local_rank=1, world_size=2)
    with pytest.raises(distributed.DeviceError):
        distributed.resolve_device("mps", world_size=2)


def test_deterministic_runs_equal_and_the_switch_is_restored(tmp_path):
    stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=40, n_experiences=2))
    documents = []
    for deterministic in (False, True):
        pipeline.seed_everything(0)
        model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
        config = TrainConfig(epochs=2, batch_size=32, progress=False, deterministic=deterministic, data_on_device=deterministic)
        documents.append(pipeline.run(stream, model, LwF(), config=config))
        assert not torch.are_deterministic_algorithms_enabled()
    assert documents[0]["accuracy_matrix"] == documents[1]["accuracy_matrix"]
    assert [t["mean_loss"] for t in documents[0]["timing"]["per_experience"]] == [t["mean_loss"] for t in documents[1]["timing"]["per_experience"]]


def test_checkpoints_hold_cpu_tensors_and_resume_onto_the_model_device(tmp_path):
    """A checkpoint loads on any machine; EWC's restored Fisher moves to wherever the model is."""
    stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=40, n_experiences=2))
    config = TrainConfig(epochs=1, batch_size=32, progress=False, device="cpu")
    pipeline.seed_everything(0)
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
    pipeline.run(stream, model, EWC(fisher_samples=20), config=config, out=tmp_path / "run")
    checkpoint = RunFolder(tmp_path / "run").load_checkpoint()
    tensors = []

    def collect(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                collect(item)

    collect(checkpoint["members"])
    assert tensors and all(tensor.device.type == "cpu" for tensor in tensors)
    restored, strategy = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs), EWC(fisher_samples=20)
    device = distributed.resolve_device("auto")
    restored.to(device).load_state_dict(checkpoint["members"]["model"]["model"])
    strategy.load_state_dict(checkpoint["members"]["model"]["strategy"])
    strategy.before_experience(restored, stream[1])
    assert all(value.device == device for fisher in strategy.fishers_ for value in fisher.values())
    assert torch.equal(restored.head.weight.cpu(), checkpoint["members"]["model"]["model"]["head.weight"])


def test_the_gradient_scaler_path_takes_the_same_step():
    """float16 training's scaled backward, unscale and step, on the CPU with float32 maths: the update is unchanged."""
    assert gradient_scaler("fp32", torch.device("cpu")) is None
    stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=10))
    batch = next(TrainingSet([stream[0]], False, torch.Generator().manual_seed(0)).batches(32, 1))
    models = []
    torch.manual_seed(0)
    initial = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
    for scaler in (None, gradient_scaler("fp16", torch.device("cpu"))):
        torch.manual_seed(0)
        model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
        strategy = LwF()
        strategy.check_stream(stream)
        strategy.before_experience(model, stream[0])
        train_step(model, strategy, make_optimizer(model, TrainConfig()), batch, scaler=scaler)
        models.append(model)
    for plain, scaled in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(plain, scaled)
    assert any(not torch.equal(trained, start) for trained, start in zip(models[0].parameters(), initial.parameters(), strict=True))


@no_cuda
def test_device_check_says_it_skipped_without_cuda():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "no CUDA device: skipped" in done.stdout


def test_the_scaling_model_counts_a_ring_all_reduce():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("device_check", Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py")
    device_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device_check)
    link = (1e9, 1e-5)
    assert device_check.allreduce_seconds(4e6, 1, link) == 0.0
    assert device_check.allreduce_seconds(4e6, 2, link) == pytest.approx(4e6 / 1e9 + 2 * 1e-5)  # 2 (p-1)/p = 1 of the bytes, 2 steps
    assert device_check.allreduce_seconds(4e6, 8, link) == pytest.approx(1.75 * 4e6 / 1e9 + 14 * 1e-5)
    rows = device_check.scaling_model()
    assert sorted({row["gradient_megabytes"] for row in rows}) == pytest.approx([4 * 1_094_750 / 1e6, 4 * 1_796_010 / 1e6])
