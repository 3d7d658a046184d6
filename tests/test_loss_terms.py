"""The parts of the training loss: each strategy's named terms, their window averages, and where a
run records them (reports, metrics.jsonl, TensorBoard ``train/<term>``), across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lifelong_kd import EWC, Finetune, LwF, MultiTeacher, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.cli import main
from lifelong_kd.loggers.tensorboard import TensorBoardLogger
from lifelong_kd.loss_terms import LossTermCurve
from lifelong_kd.losses import entropy, feature_distance, kd_kl
from lifelong_kd.run_folder import cpu_model
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.strategies.compress import Compress
from lifelong_kd.teacher import freeze_copy
from lifelong_kd.train import forward, loss_terms, make_optimizer, train_step
from tests.helpers import CrashAfter
from tests.strategies.helpers import digits, first_batch, one_thread, small_model, train_through

QUICK = ["--benchmark", "split-digits", "--train-size", "120", "--test-size", "40", "--model", "mlp:16", "--batch-size", "16", "--shifts", "none", "--quiet"]


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


# ---------------------------------------------------------------------- the accumulator


def test_term_windows_average_each_term_and_count_a_missing_term_as_zero():
    curve = LossTermCurve(23)  # windows of 3 iterations (at least 10 points): 3, 6, ..., 21, 23
    for step in range(23):
        terms = {"cross_entropy": torch.tensor(float(step))}
        if step >= 4:  # a term that starts inside the second window
            terms["distillation"] = torch.tensor(1.0)
        curve.add(terms, weight=0.5 if step == 22 else 1.0)
    means, curves = curve.record()
    assert [point[0] for point in curves["cross_entropy"]] == [3, 6, 9, 12, 15, 18, 21, 23]
    assert curves["cross_entropy"][0][1] == pytest.approx((0 + 1 + 2) / 3)
    assert curves["cross_entropy"][-1][1] == pytest.approx((21 + 0.5 * 22) / 2)  # the weighted last step
    assert curves["distillation"][1][1] == pytest.approx(2 / 3)  # steps 3, 4, 5: absent, 1, 1
    assert curves["distillation"][0][1] == 0.0 and len(curves["distillation"]) == 8
    assert means["cross_entropy"] == pytest.approx((sum(range(22)) + 11) / 23)
    assert means["distillation"] == pytest.approx((18 + 0.5) / 23)


def test_terms_are_read_back_once_per_window_not_once_per_step():
    curve = LossTermCurve(100)  # windows of 10
    reads = []
    original = curve._close
    curve._close = lambda: (reads.append(curve.steps), original())[1]
    for _ in range(100):
        curve.add({"cross_entropy": torch.tensor(1.0), "penalty": torch.tensor(2.0)})
    assert reads == list(range(10, 101, 10))


# ---------------------------------------------------------------------- what each strategy records


def _step_terms(strategy: Strategy, model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    output = forward(model, strategy.transform_batch(batch))
    cross_entropy = F.cross_entropy(output.logits, batch.y)
    extra = strategy.loss(model, batch, output)
    return cross_entropy + extra, loss_terms(strategy, cross_entropy, extra)


def test_lwf_records_distillation_feature_and_entropy_terms_that_sum_to_its_loss():
    stream = digits("task")
    model = small_model(stream)
    strategy = LwF(temperature=2.0, alpha=0.7, feature_weight=0.3, entropy_weight=0.2)
    train_through(model, strategy, stream, last=0)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    total, terms = _step_terms(strategy, model, batch)
    output = forward(model, batch)
    teacher = strategy.teacher_
    with torch.no_grad():
        old_logits, old_features = teacher.all_logits(batch.x)[:, [0]], teacher.features(batch.x)
    assert list(terms) == ["cross_entropy", "distillation", "feature", "entropy"]
    assert terms["distillation"].item() == pytest.approx(0.7 * kd_kl(output.all_logits[:, [0]], old_logits, 2.0).item(), rel=1e-5)
    assert terms["feature"].item() == pytest.approx(0.3 * feature_distance(output.features, old_features, "mse").item(), rel=1e-5)
    assert terms["entropy"].item() == pytest.approx(0.2 * entropy(output.logits).item(), rel=1e-5)
    assert sum(value.item() for value in terms.values()) == pytest.approx(total.item(), rel=1e-6)
    assert all(not value.requires_grad for value in terms.values())


def test_first_experience_and_finetune_record_cross_entropy_alone():
    stream = digits("task")
    model = small_model(stream)
    for strategy in (LwF(feature_weight=1.0), EWC(), MultiTeacher(), Finetune()):
        strategy.check_stream(stream)
        strategy.before_experience(model, stream[0])
        assert list(_step_terms(strategy, model, first_batch(stream, 0))[1]) == ["cross_entropy"]


def test_ewc_records_its_penalty_and_multi_teacher_its_distillation():
    stream = digits("task")
    for strategy, name in ((EWC(ewc_lambda=50.0, fisher_samples=50), "penalty"), (MultiTeacher(), "distillation")):
        model = small_model(stream)
        train_through(model, strategy, stream, last=0)
        strategy.before_experience(model, stream[1])
        with torch.no_grad():  # move away from the anchor, so the penalty is not zero
            next(model.parameters()).add_(0.1)
        total, terms = _step_terms(strategy, model, first_batch(stream, 1))
        assert list(terms) == ["cross_entropy", name] and terms[name].item() > 0
        assert (terms["cross_entropy"] + terms[name]).item() == pytest.approx(total.item(), rel=1e-6)


def test_compress_records_labels_teacher_hint_and_self_distillation():
    stream = digits("task")
    model = small_model(stream)
    strategy = Compress(teacher_weight=0.7, hint_weight=0.5, self_weight=0.4, label_weight=1.5)
    train_through(model, strategy, stream, last=0)
    torch.manual_seed(123)
    strategy.set_teacher(freeze_copy(build_model("mlp:64,64", stream.input_shape, stream.n_heads, stream.n_outputs)))
    strategy.before_experience(model, stream[1])
    total, terms = _step_terms(strategy, model, first_batch(stream, 1))
    assert list(terms) == ["cross_entropy", "labels", "teacher", "hint", "self_distillation"]
    assert terms["labels"].item() == pytest.approx(0.5 * terms["cross_entropy"].item(), rel=1e-6)
    assert sum(value.item() for value in terms.values()) == pytest.approx(total.item(), rel=1e-6)


class _PlainExtra(Finetune):
    """A strategy whose extra loss is a plain tensor (no named parts)."""

    name = "plain-extra"

    def loss(self, model, batch, output):
        return 0.1 * output.logits.pow(2).mean()


def test_a_strategy_without_named_parts_is_one_term_named_after_it():
    stream = digits("task")
    model = small_model(stream)
    strategy = _PlainExtra()
    total, terms = _step_terms(strategy, model, first_batch(stream, 0))
    assert list(terms) == ["cross_entropy", "plain-extra"]
    assert (terms["cross_entropy"] + terms["plain-extra"]).item() == pytest.approx(total.item(), rel=1e-6)


def test_recording_the_terms_does_not_change_the_step():
    stream = digits("task")
    models = []
    for keep in (False, True):
        model = small_model(stream)
        strategy = LwF(feature_weight=0.5)
        train_through(model, strategy, stream, last=0)
        strategy.before_experience(model, stream[1])
        terms = {} if keep else None
        value = train_step(model, strategy, make_optimizer(model, TrainConfig()), first_batch(stream, 1), terms=terms)
        models.append((value, model))
    assert models[0][0] == models[1][0]
    for plain, recorded in zip(models[0][1].parameters(), models[1][1].parameters(), strict=True):
        assert torch.equal(plain, recorded)


# ---------------------------------------------------------------------- what a run records


@pytest.fixture(scope="module")
def lwf_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("terms") / "run"
    with one_thread():
        assert main(["run", *QUICK, "--epochs", "2", "--strategy", "lwf", "--feature-weight", "0.5", "--entropy-weight", "0.1", "--out", str(out)]) == 0
    return out


def test_each_report_holds_the_terms_per_experience_and_every_window(lwf_run):
    results = json.loads((lwf_run / "results.json").read_text())
    for index, report in enumerate(results["reports"]):
        training = report["training"]
        expected = ["cross_entropy"] + (["distillation", "feature", "entropy"] if index else [])
        assert list(training["loss_terms"]) == expected
        assert sum(training["loss_terms"].values()) == pytest.approx(training["mean_loss"], rel=1e-5)
        for name, points in training["loss_terms_curve"].items():
            assert [point[0] for point in points] == [point[0] for point in training["loss_curve"]], name
        for position, (iteration, loss) in enumerate(training["loss_curve"]):
            parts = sum(points[position][1] for points in training["loss_terms_curve"].values())
            assert parts == pytest.approx(loss, rel=1e-5), iteration
    lines = [json.loads(line) for line in (lwf_run / "metrics.jsonl").read_text().splitlines()[1:]]
    assert [line["training"] for line in lines] == [report["training"] for report in results["reports"]]


def test_results_record_the_cpu_model_and_the_device(lwf_run):
    results = json.loads((lwf_run / "results.json").read_text())
    assert results["timing"]["machine"]["cpu"] == cpu_model() and cpu_model()
    assert results["setup"]["hardware"]["device"] == "cpu" and "gpu" not in results["setup"]["hardware"]  # a GPU's name on CUDA


def test_tensorboard_holds_one_curve_per_term(lwf_run):
    reports = json.loads((lwf_run / "results.json").read_text())["reports"]
    for name in ("cross_entropy", "distillation", "feature", "entropy"):
        recorded = [point for report in reports for point in report["training"]["loss_terms_curve"].get(name, [])]
        logged = _scalars(lwf_run / "tensorboard" / "train", f"train/{name}")
        assert [step for step, _ in logged] == [step for step, _ in recorded]
        assert [value for _, value in logged] == pytest.approx([value for _, value in recorded], rel=1e-6, abs=1e-9)


def _api_run(folder: Path, loggers: list, resume: bool = False) -> dict:
    stream = build_stream("split-digits", StreamOptions(scenario="task", train_size=100, test_size=30))
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False)
    strategy = LwF(feature_weight=0.2)
    return run(stream, model, strategy, loggers=[TensorBoardLogger(folder, figures=False), *loggers], config=config, out=folder, resume=resume)


def test_a_resumed_run_records_and_logs_each_term_point_once_with_the_same_values(tmp_path):
    whole = _api_run(tmp_path / "whole", [])
    with pytest.raises(KeyboardInterrupt):
        _api_run(tmp_path / "cut", [CrashAfter(2)])
    resumed = _api_run(tmp_path / "cut", [], resume=True)
    assert [r["training"]["loss_terms"] for r in resumed["reports"]] == [r["training"]["loss_terms"] for r in whole["reports"]]
    for name in ("cross_entropy", "distillation", "feature"):
        expected = _scalars(tmp_path / "whole" / "tensorboard" / "train", f"train/{name}")
        assert _scalars(tmp_path / "cut" / "tensorboard" / "train", f"train/{name}") == expected
        assert len(expected) == len({step for step, _ in expected}) > 3
