"""Lifelong compression: the composed run, resume, pruning, quantisation, distillation's benefit, CLI."""

from __future__ import annotations

import functools
import json

import pytest
import torch

from lifelong_kd import Evaluator, LwF, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.cli import main
from lifelong_kd.compression_run import member_names, run_compression
from lifelong_kd.evaluation import compression, posthoc
from lifelong_kd.evaluation.evaluator import accuracy
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.strategies.compress import Compress
from tests.strategies.helpers import one_thread
from tests.helpers import CrashAfter

CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, progress=False)


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _stream(train_size: int | None = 60):
    return build_stream("split-digits", StreamOptions(scenario="task", train_size=train_size))


def _models(stream, seed: int = 0, teacher: str = "mlp:64,64", student: str = "mlp:8"):
    seed_everything(seed)
    return (
        build_model(teacher, stream.input_shape, stream.n_heads, stream.n_outputs),
        build_model(student, stream.input_shape, stream.n_heads, stream.n_outputs),
    )


FAST_EVALUATOR = functools.partial(Evaluator, shifts=("gaussian_noise",), severities=(2,), robustness_samples=32)


def _run(stream, out=None, resume=False, make_loggers=None, evaluator=FAST_EVALUATOR, **kwargs):
    teacher, student = _models(stream)
    return run_compression(
        stream, teacher, student, Compress(hint_weight=0.5), LwF(), CONFIG, evaluator,
        sparsities=(0.9,), alone=True, out=out, resume=resume, record={"test": 1}, make_loggers=make_loggers, **kwargs,
    )


def test_results_hold_the_student_on_top_and_one_section_per_model(tmp_path):
    stream = _stream()
    document = _run(stream, out=tmp_path)
    names = ["teacher", "student", "student_alone", "pruned_0.9", "quantized"]
    assert member_names((0.9,), True, True) == names
    assert list(document["models"]) == names and [row["model"] for row in document["summary"]] == names
    assert document["accuracy_matrix"] == document["models"]["student"]["accuracy_matrix"]
    assert document["metrics"] == document["models"]["student"]["metrics"]
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == document["summary"]
    rows = {row["model"]: row for row in document["summary"]}
    teacher_params = sum(p.numel() for p in _models(stream)[0].parameters())
    student_params = sum(p.numel() for p in _models(stream)[1].parameters())
    assert rows["student"]["parameter_ratio"] == pytest.approx(teacher_params / student_params)
    assert rows["teacher"]["accuracy_kept"] == pytest.approx(1.0)
    teacher_accuracy = rows["teacher"]["average_accuracy"]
    assert rows["student"]["accuracy_kept"] == pytest.approx(rows["student"]["average_accuracy"] / teacher_accuracy)
    assert rows["pruned_0.9"]["sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert rows["pruned_0.9"]["nonzero_parameter_ratio"] > 5
    assert rows["quantized"]["bytes_ratio"] > 2 and rows["quantized"]["parameter_ratio"] == 1.0
    for name in names:
        section = document["models"][name]
        assert len(section["accuracy_matrix"]) == len(stream)
        assert section["robustness"]["relative_robustness"] is not None


def test_resume_after_a_crash_ends_with_the_same_numbers(tmp_path):
    stream = _stream(40)
    evaluator = functools.partial(Evaluator, compression=False)
    uninterrupted = _run(stream, evaluator=evaluator)
    with pytest.raises(KeyboardInterrupt):
        _run(stream, out=tmp_path, make_loggers=lambda name: [CrashAfter(1)] if name == "quantized" else [], evaluator=evaluator)
    assert json.loads((tmp_path / "results.json").read_text())["finished_experiences"] == 2  # saved before the loggers ran
    resumed = _run(stream, out=tmp_path, resume=True, evaluator=evaluator)
    for name, section in uninterrupted["models"].items():
        assert resumed["models"][name]["accuracy_matrix"] == section["accuracy_matrix"], name


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_pruning_yields_the_stated_fraction_of_zeros_permanently(sparsity):
    stream = _stream()
    teacher, _ = _models(stream)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    pruned = posthoc.pruned_copy(teacher, sparsity)
    weights = [m.weight for m in pruned.modules() if isinstance(m, torch.nn.Linear)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == round(sparsity * total)
    assert posthoc.weight_sparsity(pruned) == pytest.approx(sparsity, abs=1 / total)
    assert all(not name.endswith(("_orig", "_mask")) for name in pruned.state_dict())
    assert all(not m._forward_pre_hooks for m in pruned.modules())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert posthoc.weight_sparsity(teacher) == 0.0


def test_pruning_rejects_a_sparsity_outside_zero_one():
    with pytest.raises(ValueError, match="sparsity"):
        posthoc.pruned_copy(torch.nn.Linear(2, 2), 1.0)


@pytest.mark.parametrize(("spec", "input_shape", "outputs"), [("mlp:64,64", (1, 8, 8), 2), ("convnet:4", (3, 32, 32), 2)])
def test_quantized_model_runs_under_the_evaluator_and_is_smaller(spec, input_shape, outputs):
    torch.manual_seed(0)
    model = build_model(spec, input_shape, 5, outputs).eval()
    quantized = posthoc.quantized_copy(model)
    assert posthoc.quantized_runs(quantized, input_shape, task_id=3)
    x = torch.randn(16, *input_shape)
    with torch.inference_mode():
        assert torch.allclose(quantized(x, 3), model(x, 3), atol=0.05)
    stats = posthoc.quantized_stats(model, quantized, input_shape, {"task_id": 0}, time_latency=False)
    assert stats.state_bytes < compression.state_bytes(model)
    assert stats.parameters == compression.count_parameters(model)
    assert stats.flops_per_sample == compression.flops_per_sample(model, input_shape, {"task_id": 0})
    if spec.startswith("mlp"):  # every layer is Linear: int8 weights (4x smaller), plus container overhead
        assert stats.state_bytes < compression.state_bytes(model) / 2.5
    else:  # dynamic quantisation covers Linear layers only: convolutions stay float32
        assert any(isinstance(m, torch.nn.Conv2d) for m in quantized.modules())


def test_quantized_model_is_evaluated_like_any_model():
    stream = _stream()
    teacher, _ = _models(stream)
    quantized = posthoc.quantized_copy(teacher)
    assert 0.0 <= accuracy(quantized, stream[0]) <= 1.0


def test_distillation_from_a_teacher_lowers_the_students_error_over_seeds():
    """Same student, same initialisation and budget, with and without the large teacher.

    The budget is short (5 epochs at lr 0.01 on split-digits): the teacher's soft targets
    speed up the small student's learning. Measured margins (points): 8.7, 0.9, 3.2.
    """
    stream = _stream(None)
    config = TrainConfig(epochs=5, batch_size=128, lr=0.01, progress=False)
    margins = []
    for seed in (0, 1, 2):
        teacher, student = _models(stream, seed, "mlp:200,200", "mlp:16")
        document = run_compression(
            stream, teacher, student, Compress(), LwF(), TrainConfig(**{**config.__dict__, "seed": seed}),
            functools.partial(Evaluator, compression=False), sparsities=(), quantize=False, alone=True,
        )
        rows = {row["model"]: row["average_accuracy"] for row in document["summary"]}
        margins.append(rows["student"] - rows["student_alone"])
    assert all(margin > 0 for margin in margins), margins
    assert sum(margins) / len(margins) > 0.02, margins


def test_cli_student_run_then_reuse_its_teacher_and_report(tmp_path, capsys):
    common = ["--benchmark", "split-digits", "--epochs", "1", "--train-size", "40", "--shifts", "none", "--quiet", "--no-tensorboard"]
    first = tmp_path / "first"
    assert main(["run", *common, "--strategy", "lwf", "--model", "mlp:32", "--student", "mlp:8", "--prune", "0.7",
                 "--teacher-weight", "2", "--temperature", "3", "--out", str(first)]) == 0
    document = json.loads((first / "results.json").read_text())
    assert list(document["models"]) == ["teacher", "student", "pruned_0.7", "quantized"]
    assert document["config"]["strategy_options"] == {"teacher_weight": 2, "temperature": 3}
    assert (first / "models" / "student" / "metrics.jsonl").is_file()
    second = tmp_path / "second"
    assert main(["run", *common, "--teacher", str(first), "--student", "mlp:4", "--prune", "", "--out", str(second)]) == 0
    reused = json.loads((second / "results.json").read_text())
    assert list(reused["models"]) == ["teacher", "student", "quantized"]
    assert reused["models"]["teacher"]["accuracy_matrix"][-1] == document["models"]["teacher"]["accuracy_matrix"][-1]
    capsys.readouterr()
    assert main(["report", str(first), str(second)]) == 0
    assert "| first |" in capsys.readouterr().out


def test_cli_rejects_an_option_neither_strategy_takes(tmp_path, capsys):
    code = main(["run", "--strategy", "finetune", "--student", "mlp:8", "--alpha", "2", "--quiet", "--out", str(tmp_path)])
    assert code == 2 and "neither" in capsys.readouterr().err
