"""Robustness evaluation on a trained model: severity hurts, numbers agree with their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from lifelong_kd import Evaluator, Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.evaluation import metrics
from lifelong_kd.evaluation.robustness import RobustnessProbe
from lifelong_kd.pipeline import seed_everything

SUITE = ("gaussian_noise", "gaussian_blur", "contrast", "pixelate")


@pytest.fixture(scope="module")
def trained():
    stream = build_stream("split-digits", StreamOptions(scenario="task", train_size=150))
    seed_everything(0)
    model = build_model("mlp:64", stream.input_shape, stream.n_heads, stream.n_outputs)
    evaluator = Evaluator(shifts=SUITE, robustness_samples=None, compression=False)
    results = run(stream, model, Finetune(), evaluator, config=TrainConfig(epochs=6, batch_size=32, lr=0.05, progress=False))
    return stream, model, results


def test_higher_severity_lowers_a_trained_models_accuracy(trained):
    stream, model, _ = trained
    probe = RobustnessProbe(SUITE, (1, 5), samples=None)
    result = probe.evaluate(model, stream, step=len(stream) - 1)
    assert result["per_severity"]["5"] < result["per_severity"]["1"] - 0.05


def test_report_numbers_follow_their_definitions(trained):
    stream, _, results = trained
    robustness = results["robustness"]
    grid = robustness["grid"]
    cube = np.array([[grid[name][str(s)] for s in robustness["severities"]] for name in SUITE])
    assert robustness["mean_corrupted_accuracy"] == pytest.approx(cube.mean())
    assert robustness["relative_robustness"] == pytest.approx(cube.mean() / np.mean(robustness["clean"]))
    corrupted = robustness["corrupted_accuracy_matrix"]
    assert len(corrupted) == len(stream) and len(corrupted[-1]) == len(stream)
    assert corrupted[-1] == pytest.approx(cube.mean(axis=(0, 1)).tolist())
    assert robustness["corrupted_forgetting"] == pytest.approx(metrics.forgetting(corrupted))


def test_clean_accuracy_on_the_full_test_set_matches_the_accuracy_matrix(trained):
    _, _, results = trained
    assert results["robustness"]["clean"] == pytest.approx(results["accuracy_matrix"][-1])


def test_corrupted_sets_are_deterministic_given_the_seed(trained):
    stream, model, _ = trained
    a = RobustnessProbe(("gaussian_noise",), (3,), samples=50, seed=1).evaluate(model, stream, 4)
    b = RobustnessProbe(("gaussian_noise",), (3,), samples=50, seed=1).evaluate(model, stream, 4)
    assert a["grid"] == b["grid"]


def test_bad_severity_is_rejected():
    with pytest.raises(ValueError, match="1..5"):
        RobustnessProbe(("contrast",), (0, 6))


def test_automatic_inference_batch_gives_the_same_numbers_as_a_fixed_one(trained):
    stream, model, _ = trained
    automatic = Evaluator(shifts=("contrast",), severities=(2,), robustness_samples=None, compression=False)
    fixed = Evaluator(batch_size=7, shifts=("contrast",), severities=(2,), robustness_samples=None, compression=False)
    a, b = automatic.evaluate(model, stream, 4), fixed.evaluate(model, stream, 4)
    assert a.accuracy_matrix == b.accuracy_matrix
    assert a.robustness["grid"] == b.robustness["grid"]
