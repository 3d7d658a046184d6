"""Options that reproduce van de Ven et al. 2019's code one factor at a time (issue 16).

32x32 zero-padded raw pixels (``input_format="raw32"``), the optimiser kept across
experiences (``keep_optimizer``, also through a resumed run), class-IL cross-entropy over the
classes seen so far (``cross_entropy_classes="seen"``), LwF's convex weighting, the KD averaged
over classes (``kd_reduction="mean"``, their code before 2019-05-17), and the held-out
validation split used to choose hyperparameters.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd import losses, pipeline
from lifelong_kd.data.benchmarks import StreamOptions, build_stream
from lifelong_kd.data.stream import Batch
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.models import build_model
from lifelong_kd.strategies import Finetune, LwF
from lifelong_kd.train import TrainConfig, seen_class_mask, train_experience, train_step
from tests.conftest import requires_mnist


def first_batch(stream, experience_index: int = 0, size: int = 16) -> Batch:
    experience = stream[experience_index]
    x = experience.transform(experience.train.x[:size])
    task_id = torch.full((size,), experience.task_id, dtype=torch.long)
    return Batch(x, experience.train.y[:size], task_id, torch.arange(size))


# ---------------------------------------------------------------------- (a) input format


@requires_mnist
@pytest.mark.parametrize("benchmark", ["split-mnist", "permuted-mnist"])
def test_raw32_pads_mnist_to_32_pixels_of_raw_unit_values(benchmark, data_root):
    options = StreamOptions(scenario="domain", n_experiences=2, train_size=64, test_size=32, data_root=data_root)
    ours = build_stream(benchmark, options)
    theirs = build_stream(benchmark, StreamOptions(**{**options.__dict__, "input_format": "raw32"}))
    assert ours.input_shape == (1, 28, 28) and theirs.input_shape == (1, 32, 32)
    stored = ours[0].train.x[:8]
    inputs = theirs[0].transform(theirs[0].train.x[:8])  # experience 0: no permutation
    assert torch.equal(inputs[:, :, 2:30, 2:30], stored.float() / 255)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.all(inputs[:, :, border] == 0)
    assert ours[0].transform(stored).min() < -0.4  # ours is normalised (background at -mean/std)


@requires_mnist
def test_raw_feeds_mnist_as_unit_pixels_of_the_same_size(data_root):
    options = StreamOptions(scenario="class", n_experiences=5, train_size=64, test_size=32, data_root=data_root)
    ours = build_stream("split-mnist", options)
    theirs = build_stream("split-mnist", StreamOptions(**{**options.__dict__, "input_format": "raw"}))
    assert theirs.input_shape == ours.input_shape == (1, 28, 28)
    stored = theirs[1].train.x[:8]
    assert torch.equal(stored, ours[1].train.x[:8])  # same images stored; only the transform differs
    assert torch.equal(theirs[1].transform(stored), stored.float() / 255)
    assert not torch.equal(ours[1].transform(stored), stored.float() / 255)


@requires_mnist
def test_raw32_permutations_cover_the_padded_pixels(data_root):
    stream = build_stream("permuted-mnist", StreamOptions(scenario="domain", n_experiences=2, train_size=16, test_size=16, input_format="raw32", data_root=data_root))
    permutation = stream[1].transform.permutation
    assert sorted(permutation.tolist()) == list(range(32 * 32))


def test_raw32_is_refused_for_other_benchmarks():
    with pytest.raises(ValueError, match="input_format 'raw32' applies to split-mnist, permuted-mnist only"):
        build_stream("split-digits", StreamOptions(input_format="raw32"))
    with pytest.raises(ValueError, match="input_format 'raw' applies to split-mnist, permuted-mnist only"):
        build_stream("split-cifar10", StreamOptions(input_format="raw"))
    with pytest.raises(ValueError, match="input_format must be one of"):
        StreamOptions(input_format="padded")


# ---------------------------------------------------------------------- validation split


def rows(x: torch.Tensor) -> list[tuple]:
    return sorted(tuple(row.flatten().tolist()) for row in x)


def test_validation_split_holds_out_training_samples_and_drops_the_test_set():
    whole = build_stream("split-digits", StreamOptions(scenario="class"))
    held = build_stream("split-digits", StreamOptions(scenario="class", validation_split=0.25))
    for before, after in zip(whole, held, strict=True):
        assert len(after.test) == round(0.25 * len(before.train))
        assert rows(torch.cat([after.train.x, after.test.x])) == rows(before.train.x)  # a partition of the training set
        assert sorted(torch.cat([after.train.y, after.test.y]).tolist()) == sorted(before.train.y.tolist())
        assert not set(rows(after.test.x)) & set(rows(before.test.x)) - set(rows(before.train.x))  # nothing from the test set


def test_validation_split_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"validation_split must be a share in \[0, 1\)"):
        StreamOptions(validation_split=1.0)


# ---------------------------------------------------------------------- (b) optimiser kept across experiences


def digits_run(keep: bool, iterations: int = 5) -> tuple:
    stream = build_stream("split-digits", StreamOptions(scenario="task"))
    config = TrainConfig(iterations=iterations, optimizer="adam", lr=1e-3, keep_optimizer=keep, progress=False, device="cpu")
    pipeline.seed_everything(0)
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    return stream, model, config


def test_kept_optimizer_continues_adam_from_the_previous_experience():
    stream, model, config = digits_run(keep=True)
    first = train_experience(model, Finetune(), stream, stream[0], config)
    state = first["optimizer_state"]
    assert all(int(s["step"]) == 5 for s in state["state"].values())
    moments = {k: s["exp_avg_sq"].clone() for k, s in state["state"].items()}
    second = train_experience(model, Finetune(), stream, stream[1], config, optimizer_state=state)
    steps = {int(s["step"]) for k, s in second["optimizer_state"]["state"].items() if k in moments}
    assert steps == {10}  # the shared layers continued: 5 + 5 steps
    fresh = train_experience(model, Finetune(), stream, stream[2], TrainConfig(**{**config.__dict__, "keep_optimizer": False}))
    assert fresh["optimizer_state"] is None


def test_kept_optimizer_changes_training_against_a_fresh_one():
    finals = []
    for keep in (False, True):
        stream, model, config = digits_run(keep)
        results = pipeline.run(stream, model, Finetune(), Evaluator(shifts=(), instruments=False, drift_samples=0), config=config)
        finals.append(results["accuracy_matrix"])
    assert finals[0][0] == finals[1][0]  # the first experience starts from a fresh optimiser either way
    assert finals[0][1:] != finals[1][1:]


class StopBeforeThirdExperience(Finetune):
    """Finetune that stops the run (as Ctrl-C would) when experience 3 starts."""

    def before_experience(self, model, experience):
        if experience.index == 2:
            raise KeyboardInterrupt
        super().before_experience(model, experience)


def test_resumed_run_with_kept_optimizer_equals_an_uninterrupted_run(tmp_path):
    evaluator = lambda: Evaluator(shifts=(), instruments=False, drift_samples=0)  # noqa: E731
    stream, model, config = digits_run(keep=True)
    whole = pipeline.run(stream, model, Finetune(), evaluator(), config=config, out=tmp_path / "whole")
    stream, model, config = digits_run(keep=True)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(stream, model, StopBeforeThirdExperience(), evaluator(), config=config, out=tmp_path / "cut")
    checkpoint = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert checkpoint["members"]["model"]["optimizer"] is not None
    stream, model, config = digits_run(keep=True)
    resumed = pipeline.run(stream, model, Finetune(), evaluator(), config=config, out=tmp_path / "cut", resume=True)
    assert resumed["accuracy_matrix"] == whole["accuracy_matrix"]


# ---------------------------------------------------------------------- (c) cross-entropy over the seen classes


def test_seen_classes_cross_entropy_ignores_later_classes():
    stream = build_stream("split-digits", StreamOptions(scenario="class"))
    batch = first_batch(stream)
    output_bias_grads = {}
    for classes in ("all", "seen"):
        torch.manual_seed(0)
        model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
        mask = seen_class_mask(stream, stream[0], TrainConfig(cross_entropy_classes=classes), torch.device("cpu"))
        logits = pipeline_forward(model, batch).logits
        expected = F.cross_entropy(logits[:, :2] if classes == "seen" else logits, batch.y)  # experience 0 holds labels 0 and 1
        value = train_step(model, Finetune(), torch.optim.SGD(model.parameters(), lr=0.0), batch, seen_classes=mask)
        assert value == pytest.approx(expected.item(), rel=1e-6)
        output_bias = [p for name, p in model.named_parameters() if name.endswith("bias")][-1]
        assert output_bias.shape == (10,)
        output_bias_grads[classes] = output_bias.grad
    assert torch.all(output_bias_grads["seen"][2:] == 0) and torch.any(output_bias_grads["all"][2:] != 0)


def test_seen_classes_grow_with_the_experiences_and_apply_to_the_class_scenario_only():
    config = TrainConfig(cross_entropy_classes="seen")
    stream = build_stream("split-digits", StreamOptions(scenario="class"))
    assert seen_class_mask(stream, stream[2], config, torch.device("cpu")).tolist() == [True] * 6 + [False] * 4
    domain = build_stream("split-digits", StreamOptions(scenario="domain"))
    assert seen_class_mask(domain, domain[2], config, torch.device("cpu")) is None
    with pytest.raises(ValueError, match="cross_entropy_classes must be one of all, seen"):
        TrainConfig(cross_entropy_classes="active")


# ---------------------------------------------------------------------- (d) LwF's convex weighting


def lwf_at_third_experience(**options) -> tuple:
    stream = build_stream("split-digits", StreamOptions(scenario="domain"))
    torch.manual_seed(0)
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
    strategy = LwF(temperature=2.0, scale_t2=True, **options)
    strategy.check_stream(stream)
    for index in range(2):
        strategy.before_experience(model, stream[index])
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.05 * torch.randn_like(parameter))  # the model moves on each experience
        strategy.after_experience(model, stream[index])
    strategy.before_experience(model, stream[2])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return stream, model, strategy


def test_convex_weighting_is_ce_over_k_plus_one_minus_one_over_k_distillation():
    stream, model, strategy = lwf_at_third_experience(weighting="convex", alpha=1.0)
    batch = first_batch(stream, 2)
    output = pipeline_forward(model, batch)
    cross_entropy = F.cross_entropy(output.logits, batch.y)
    with torch.no_grad():
        teacher = strategy.teacher_.heads(strategy.teacher_.features(batch.x))[:, 0]  # domain scenario: the one shared head
    kd = losses.kd_kl(output.logits, teacher, 2.0, True)
    total = strategy.loss_scale() * (cross_entropy + strategy.loss(model, batch, output))
    assert strategy.loss_scale() == pytest.approx(1 / 3)
    assert total.item() == pytest.approx((cross_entropy / 3 + (2 / 3) * kd).item(), rel=1e-5)


def test_added_weighting_with_alpha_k_minus_one_is_the_same_loss_unscaled():
    stream, model, convex = lwf_at_third_experience(weighting="convex", alpha=1.0)
    _, _, added = lwf_at_third_experience(weighting="added", alpha=[0.0, 1.0, 2.0, 3.0, 4.0])
    batch = first_batch(stream, 2)
    output = pipeline_forward(model, batch)
    assert added.loss_scale() == 1.0
    assert convex.loss(model, batch, output).item() == pytest.approx(added.loss(model, batch, output).item(), rel=1e-6)


def test_unknown_weighting_is_a_clear_error():
    with pytest.raises(ValueError, match="weighting must be one of added, convex"):
        LwF(weighting="mean")


# ---------------------------------------------------------------------- (e) the KD averaged over classes


def test_kd_reduction_mean_is_every_element_averaged_as_the_authors_code_before_its_fix():
    """Their loss_fn_kd until 2019-05-17: (-targets_norm * log_scores_norm).mean() * T^2, targets at T, scores at T."""
    stream, model, strategy = lwf_at_third_experience(kd_reduction="mean", alpha=1.0)
    batch = first_batch(stream, 2)
    output = pipeline_forward(model, batch)
    with torch.no_grad():
        teacher = strategy.teacher_.heads(strategy.teacher_.features(batch.x))[:, 0]
    targets, log_scores = F.softmax(teacher / 2.0, dim=1), F.log_softmax(output.logits / 2.0, dim=1)
    theirs = (-targets * log_scores).mean() * 4.0
    entropy = (-targets * targets.log()).mean() * 4.0  # the cross-entropy form differs from the KL by the targets' entropy only
    assert strategy.loss(model, batch, output).item() == pytest.approx((theirs - entropy).item(), rel=1e-5)
    _, _, summed = lwf_at_third_experience(alpha=1.0)
    assert summed.loss(model, batch, output).item() == pytest.approx(stream.n_outputs * (theirs - entropy).item(), rel=1e-5)


def test_unknown_kd_reduction_is_a_clear_error():
    with pytest.raises(ValueError, match="kd_reduction must be one of batchmean, mean"):
        LwF(kd_reduction="sum")


def pipeline_forward(model, batch):
    from lifelong_kd.train import forward

    return forward(model, batch)
