"""EWC: the Fisher against a per-sample loop, the penalty's formula, separate vs online."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lifelong_kd.data.stream import Experience, Split
from lifelong_kd.models import build_model
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.strategies.ewc import EWC, _plain_linear_layers, diagonal_fisher
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through


def _loop_fisher(model, experience, kind):
    """Reference: one backward pass per sample (and per label for the true Fisher)."""
    model.eval()
    fisher = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    x = experience.transform(experience.train.x)
    for i in range(len(x)):
        log_probs = F.log_softmax(model(x[i : i + 1], experience.task_id), dim=-1)[0]
        if kind == "empirical":
            pairs = [(int(experience.train.y[i]), 1.0)]
        elif kind == "predicted":
            pairs = [(int(log_probs.argmax()), 1.0)]
        else:
            pairs = [(c, float(log_probs[c].detach().exp())) for c in range(len(log_probs))]
        for label, weight in pairs:
            model.zero_grad()
            log_probs[label].backward(retain_graph=True)
            for n, p in model.named_parameters():
                fisher[n] += weight * p.grad**2 / len(x)
    return fisher


@pytest.mark.parametrize("per_sample_only", [False, True])
@pytest.mark.parametrize("kind", ["true", "empirical", "predicted"])
@pytest.mark.parametrize("scenario", ["task", "class"])
def test_fisher_matches_a_per_sample_loop(kind, scenario, per_sample_only):
    stream = digits(scenario)
    model = small_model(stream)
    full = stream[1]
    experience = Experience(1, full.task_id, Split(full.train.x[:12], full.train.y[:12]), full.test, full.classes, full.transform)
    fisher = diagonal_fisher(model, experience, kind, n_samples=0, per_sample_only=per_sample_only)
    reference = _loop_fisher(model, experience, kind)
    for name in reference:
        assert torch.allclose(fisher[name], reference[name], atol=1e-7, rtol=1e-4), name
    if scenario == "task":  # only the experience's own head rows carry information
        rows = fisher["head.weight"].view(5, 2, -1)
        assert rows[1].abs().sum() > 0 and rows[0].abs().sum() == 0 and rows[2:].abs().sum() == 0


@pytest.mark.parametrize("kind", ["true", "empirical"])
def test_fisher_of_a_batch_norm_convnet_matches_a_per_sample_loop(kind):
    stream = digits("task")
    seed_everything(0)
    model = build_model("convnet:4", stream.input_shape, stream.n_heads, stream.n_outputs)
    train_through(model, EWC(fisher_samples=0), stream, last=0)  # trained: batch-norm running statistics are not the defaults
    full = stream[1]
    experience = Experience(1, full.task_id, Split(full.train.x[:10], full.train.y[:10]), full.test, full.classes, full.transform)
    fisher = diagonal_fisher(model, experience, kind, n_samples=0)
    reference = _loop_fisher(model, experience, kind)
    assert set(fisher) == set(reference)
    for name in reference:
        assert torch.allclose(fisher[name], reference[name], atol=1e-7, rtol=1e-4), name


def test_linear_layers_take_the_matmul_path_and_the_rest_per_sample_gradients():
    stream = digits("task")
    mlp = small_model(stream)
    seed_everything(0)
    conv = build_model("convnet:4", stream.input_shape, stream.n_heads, stream.n_outputs)
    probe = stream[0].transform(stream[0].train.x[:1])
    for model, expected in ((mlp, {"backbone.1.weight", "backbone.1.bias", "head.weight", "head.bias"}), (conv, {"backbone.16.weight", "backbone.16.bias", "head.weight", "head.bias"})):
        params = {name: p.detach() for name, p in model.named_parameters()}
        found = _plain_linear_layers(model, params, probe, 0)
        assert {name for names in found.values() for name in names} == expected


def test_penalty_is_half_lambda_fisher_weighted_squared_distance():
    stream = digits("domain")
    model = small_model(stream)
    strategy = EWC(ewc_lambda=7.0, fisher_samples=0)
    train_through(model, strategy, stream, last=0)
    strategy.before_experience(model, stream[1])
    batch = first_batch(stream, 1)
    assert strategy.loss(model, batch, forward(model, batch)).item() == 0.0  # still at the anchor
    with torch.no_grad():
        model.head.bias.add_(0.5)
    expected = 0.5 * 7.0 * (strategy.fishers_[0]["head.bias"] * 0.25).sum()
    assert strategy.loss(model, batch, forward(model, batch)).item() == pytest.approx(expected.item(), rel=1e-5)


def test_first_experience_adds_zero():
    stream = digits("task")
    model = small_model(stream)
    strategy = EWC()
    strategy.check_stream(stream)
    batch = first_batch(stream, 0)
    assert strategy.loss(model, batch, forward(model, batch)).item() == 0.0


def test_separate_keeps_one_penalty_per_experience_online_folds_them():
    stream = digits("task")
    separate, online = EWC(ewc_mode="separate"), EWC(ewc_mode="online", ewc_decay=0.5)
    for strategy in (separate, online):
        train_through(small_model(stream), strategy, stream, last=2)
    assert len(separate.fishers_) == 3 and len(online.fishers_) == 1
    # online: F = 0.5 * (0.5 * F0 + F1) + F2; each Fk lives on head rows k (task scenario), and
    # the first two experiences train identically in both modes (one identical penalty each)
    rows = online.fishers_[0]["head.weight"].view(5, 2, -1)
    separate_rows = [f["head.weight"].view(5, 2, -1)[k] for k, f in enumerate(separate.fishers_)]
    assert torch.allclose(rows[0], 0.25 * separate_rows[0], atol=1e-9)
    assert torch.allclose(rows[1], 0.5 * separate_rows[1], atol=1e-9)
    assert rows[2].abs().sum() > 0 and rows[3:].abs().sum() == 0
    model = small_model(stream)
    assert torch.equal(online.anchors_[0]["head.weight"], separate.anchors_[2]["head.weight"]) or model is not None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ewc_lambda": -1.0}, "ewc_lambda"),
        ({"ewc_lambda": "big"}, "ewc_lambda must be a finite number"),
        ({"fisher_kind": "exact"}, "fisher_kind must be one of"),
        ({"fisher_samples": -5}, "fisher_samples"),
        ({"ewc_mode": "both"}, "ewc_mode must be one of"),
        ({"ewc_decay": 2.0}, "ewc_decay"),
    ],
)
def test_invalid_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        EWC(**options).check_stream(digits("task"))


# ---------------------------------------------------------------------- divergence hint


def _planted(ewc_lambda: float) -> EWC:
    strategy = EWC(ewc_lambda=ewc_lambda)
    strategy.fishers_ = [{"w": torch.tensor([0.5, 2.0])}, {"w": torch.tensor([1.0, 0.0])}]  # summed: [1.5, 2.0]
    strategy.anchors_ = [{"w": torch.zeros(2)}, {"w": torch.zeros(2)}]
    return strategy


def test_penalty_curvature_is_lambda_times_the_largest_summed_fisher():
    assert _planted(100.0).penalty_curvature() == (200.0, "w")
    assert EWC().penalty_curvature() == (0.0, "")


def test_divergence_hint_names_the_lambda_below_sgds_stability_limit():
    strategy = _planted(100.0)  # curvature 200
    assert strategy.divergence_hint("sgd", 0.01, 0.9) is None  # 0.01 x 200 = 2 < 2 x 1.9
    hint = strategy.divergence_hint("sgd", 0.02, 0.9)  # 4 >= 3.8
    assert "--ewc-lambda below 95" in hint and "--lr below 0.019" in hint and "along w" in hint
    assert strategy.divergence_hint("sgd", 0.011, 0.0) == strategy.divergence_hint("sgd", 0.011, 0.0)  # 2.2 >= 2 without momentum
    assert strategy.divergence_hint("sgd", 0.011, 0.0) is not None
    assert strategy.divergence_hint("adam", 1.0, 0.9) is None  # Adam rescales its steps: no such bound


@pytest.mark.parametrize(("factor", "grows"), [(0.95, False), (1.05, True)])
def test_the_limit_is_where_torch_sgd_with_momentum_diverges_on_the_penalty(factor, grows):
    """torch's SGD on the penalty alone: bounded just below lr x curvature = 2 (1 + m), growing just above."""
    curvature, momentum = 200.0, 0.9
    lr = factor * 2 * (1 + momentum) / curvature
    theta = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = torch.optim.SGD([theta], lr=lr, momentum=momentum)
    for _ in range(400):
        optimizer.zero_grad()
        (0.5 * curvature * theta.pow(2)).sum().backward()
        optimizer.step()
    final = float(theta.detach())
    assert (not math.isfinite(final) or abs(final) > 1.0) == grows


def test_a_diverging_ewc_run_says_which_lambda_keeps_sgd_stable(tmp_path, capsys):
    from lifelong_kd.cli import main

    code = main(["run", "--benchmark", "split-digits", "--strategy", "ewc", "--ewc-lambda", "1e6", "--lr", "0.1", "--train-size", "200",
                 "--shifts", "none", "--no-instruments", "--drift-samples", "0", "--out", str(tmp_path / "run"), "--quiet"])
    error = capsys.readouterr().err
    assert code == 1 and "non-finite" in error
    assert "EWC's penalty has curvature" in error and "--ewc-lambda below" in error
