"""Faster steps that keep the numbers: the fused optimiser step, and bfloat16 weight copies of float32 masters (issue 18)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from lifelong_kd import Finetune, LwF, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.cli import main
from lifelong_kd.config import RunConfig
from lifelong_kd.train import (
    LowPrecisionWeights,
    TrainingSet,
    autocast,
    load_optimizer_state,
    make_optimizer,
    train_experience,
    train_step,
    weight_copies_for,
)
from tests.conftest import SHARED_DATA, requires_mnist
from tests.helpers import fails_cleanly as _fails_cleanly

QUICK = ["--epochs", "1", "--train-size", "40", "--quiet", "--shifts", "none", "--no-tensorboard"]


@pytest.fixture(scope="module")
def digits():
    return build_stream("split-digits", StreamOptions(scenario="task", train_size=200))


def _twins(stream, spec: str = "mlp:64,64"):
    torch.manual_seed(0)
    model = build_model(spec, stream.input_shape, stream.n_heads, stream.n_outputs)
    return model, copy.deepcopy(model)


def _largest_difference(model, twin) -> float:
    return max((mine - theirs).abs().max().item() for mine, theirs in zip(model.parameters(), twin.parameters(), strict=True))


@pytest.mark.parametrize(("optimizer", "weight_decay"), [("sgd", 0.0), ("sgd", 1e-3), ("adam", 0.0), ("adam", 1e-3)])
def test_the_fused_step_gives_the_default_steps_numbers_to_float_rounding(digits, optimizer, weight_decay):
    model, twin = _twins(digits)
    lr = 0.001 if optimizer == "adam" else 0.05
    fused = make_optimizer(model, TrainConfig(optimizer=optimizer, lr=lr, weight_decay=weight_decay, progress=False))
    plain = make_optimizer(twin, TrainConfig(optimizer=optimizer, lr=lr, weight_decay=weight_decay, progress=False, fused_optimizer=False))
    assert fused.param_groups[0]["fused"] is True and plain.param_groups[0]["fused"] is None
    data = TrainingSet([digits[0]], False, torch.Generator().manual_seed(0))
    start = copy.deepcopy(model)
    for batch in data.batches(32, 12):
        train_step(model, Finetune(), fused, batch)
        train_step(twin, Finetune(), plain, batch)
    assert _largest_difference(model, start) > 1e-3  # the steps moved the weights
    assert _largest_difference(model, twin) < 1e-5  # ... and both kernels moved them alike


def test_a_loaded_optimizer_state_keeps_the_runs_kernel_and_its_momentum(digits):
    model, twin = _twins(digits)
    data = TrainingSet([digits[0]], False, torch.Generator().manual_seed(0))
    plain = make_optimizer(model, TrainConfig(progress=False, fused_optimizer=False))
    batches = list(data.batches(32, 6))
    for batch in batches[:3]:
        train_step(model, Finetune(), plain, batch)
    twin.load_state_dict(model.state_dict())
    fused = make_optimizer(twin, TrainConfig(progress=False))
    load_optimizer_state(fused, copy.deepcopy(plain.state_dict()))  # as from a checkpoint: no buffer shared with `plain`
    assert fused.param_groups[0]["fused"] is True
    for batch in batches[3:]:
        train_step(model, Finetune(), plain, batch)
        train_step(twin, Finetune(), fused, batch)
    assert _largest_difference(model, twin) < 1e-5


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_kept_fused_optimizer_steps_a_new_tasks_head_like_the_default_one(digits, optimizer):
    """Task 1's head gets its first gradient in experience 1, after the other parameters' (torch's fused SGD needs a buffer for it)."""
    model, twin = _twins(digits)
    runs = []
    for network, fused in ((model, True), (twin, False)):
        config = TrainConfig(iterations=5, batch_size=32, lr=0.01 if optimizer == "adam" else 0.05, optimizer=optimizer,
                             keep_optimizer=True, progress=False, fused_optimizer=fused)
        first = train_experience(network, Finetune(), digits, digits[0], config)
        runs.append(train_experience(network, Finetune(), digits, digits[1], config, optimizer_state=first["optimizer_state"]))
    assert runs[0]["loss_curve"] != [] and abs(runs[0]["mean_loss"] - runs[1]["mean_loss"]) < 1e-5
    assert _largest_difference(model, twin) < 1e-5


def test_bf16_master_steps_give_the_numbers_of_bf16_autocast(digits):
    model, twin = _twins(digits)
    config = TrainConfig(lr=0.05, progress=False)
    optimizers = make_optimizer(model, config), make_optimizer(twin, config)
    copies = LowPrecisionWeights(twin)
    data = TrainingSet([digits[0]], False, torch.Generator().manual_seed(0))
    start = copy.deepcopy(model)
    with autocast("bf16-master"):
        for batch in data.batches(32, 10):
            value = train_step(model, Finetune(), optimizers[0], batch)
            twin_value = train_step(twin, Finetune(), optimizers[1], batch, weight_copies=copies)
            assert abs(value - twin_value) <= 1e-6 * abs(value)
    assert _largest_difference(model, start) > 1e-3
    assert _largest_difference(model, twin) < 1e-6


def test_bf16_master_copies_follow_float32_masters(digits):
    model, _ = _twins(digits)
    copies = LowPrecisionWeights(model)
    linear = [p for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()]
    assert len(copies.copies) == len(linear) > 0
    optimizer = make_optimizer(model, TrainConfig(lr=0.05, progress=False))
    data = TrainingSet([digits[0]], False, torch.Generator().manual_seed(0))
    with autocast("bf16-master"):
        for batch in data.batches(32, 3):
            train_step(model, Finetune(), optimizer, batch, weight_copies=copies)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, weights in copies.copies.items():
        master = copies.masters[name]
        assert any(master is p for p in linear) and weights.dtype == torch.bfloat16
        assert torch.equal(weights, master.detach().to(torch.bfloat16)) and weights.grad is None
        assert not torch.equal(weights.float(), master.detach())  # the masters keep the bits the copies round away


@requires_mnist
def test_bf16_master_training_keeps_float32_weights_and_lowers_the_loss_on_mnist():
    stream = build_stream("split-mnist", StreamOptions(scenario="class", train_size=2000, test_size=200, data_root=str(SHARED_DATA)))
    torch.manual_seed(0)
    model = build_model("mlp:256", stream.input_shape, stream.n_heads, stream.n_outputs)
    config = TrainConfig(iterations=60, batch_size=64, lr=0.05, precision="bf16-master", progress=False)
    strategy = LwF()
    strategy.check_stream(stream)
    with autocast(config.precision):
        strategy.before_experience(model, stream[0])
        stats = train_experience(model, strategy, stream, stream[0], config)
    assert all(p.dtype == torch.float32 for p in model.state_dict().values() if p.is_floating_point())
    losses = [loss for _, loss in stats["loss_curve"]]
    assert len(losses) >= 4 and losses[-1] < 0.5 * losses[0], losses


def test_bf16_master_refuses_several_processes(digits):
    model, _ = _twins(digits)
    assert weight_copies_for(model, TrainConfig(progress=False)) is None
    with pytest.raises(ValueError, match="use --precision bf16 under torchrun"):
        weight_copies_for(model, TrainConfig(precision="bf16-master", progress=False), world_size=2)


def test_an_unknown_precision_is_a_one_paragraph_error(capsys):
    err = _fails_cleanly(capsys, ["run", "--precision", "bf16-masters", *QUICK])
    assert "bf16-master" in err and "--precision" in err


def test_bf16_master_with_avalanches_engine_is_a_one_paragraph_error(tmp_path, capsys):
    pytest.importorskip("avalanche")
    err = _fails_cleanly(capsys, ["run", "--precision", "bf16-master", "--engine", "avalanche", *QUICK, "--out", str(tmp_path / "r")])
    assert "use --precision bf16" in err


def test_a_cli_run_with_bf16_master_and_without_the_fused_step_finishes(tmp_path):
    assert main(["run", "--precision", "bf16-master", "--no-fused-optimizer", *QUICK, "--out", str(tmp_path / "r")]) == 0
    assert RunConfig(fused_optimizer=False, precision="bf16-master").train_config().fused_optimizer is False


def test_the_options_are_in_the_help_and_the_docs(capsys):
    assert main(["run", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "bf16-master" in help_text and "--fused-optimizer" in help_text and "--compile" in help_text
    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "`--fused-optimizer`" in docs and "bf16-master" in docs and "`--compile`" in docs


def test_compiled_training_steps_give_the_eager_numbers_to_float_rounding_and_report_their_compile_time(digits):
    model, twin = _twins(digits, "mlp:32")
    runs = []
    for network, compiled in ((model, True), (twin, False)):
        config = TrainConfig(iterations=6, batch_size=25, lr=0.05, progress=False, compile=compiled)  # 200 samples: one minibatch size
        runs.append(train_experience(network, Finetune(), digits, digits[0], config))
    assert runs[0]["compile_seconds"] > 0 and runs[1]["compile_seconds"] is None
    assert abs(runs[0]["mean_loss"] - runs[1]["mean_loss"]) < 1e-4 * runs[1]["mean_loss"]
    assert _largest_difference(model, twin) < 1e-4


def test_a_compiled_cli_run_records_the_compile_time(tmp_path):
    out = tmp_path / "r"
    assert main(["run", "--compile", "--model", "mlp:32", "--n-experiences", "2", *QUICK, "--out", str(out)]) == 0
    timing = json.loads((out / "results.json").read_text())["timing"]["per_experience"]
    assert len(timing) == 2 and timing[0]["compile_seconds"] > 0 and "compile_seconds" in timing[1]
