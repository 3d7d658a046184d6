"""When the robustness suite runs (every K-th experience and the final one), what a sparse suite reports, and evaluation's timed parts."""

from __future__ import annotations

import copy

import pytest

from lifelong_kd import Evaluator, Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.cli.compose import robustness_schedule
from lifelong_kd.cli.errors import UsageError
from lifelong_kd.config import RunConfig
from lifelong_kd.evaluation import metrics
from lifelong_kd.evaluation.evaluator import EVALUATION_PARTS
from lifelong_kd.evaluation.robustness import INFERENCE_COST, ROBUSTNESS_BUDGET, default_every, evaluations, suite_inferences
from lifelong_kd.pipeline import seed_everything

SUITE = ("gaussian_noise", "contrast")
SEVERITIES = (1, 5)


@pytest.fixture(scope="module")
def stream():
    return build_stream("split-digits", StreamOptions(scenario="task", train_size=60))


def evaluator(every):
    return Evaluator(shifts=SUITE, severities=SEVERITIES, robustness_samples=32, compression=False, robustness_every=every)


@pytest.fixture(scope="module")
def runs(stream):
    """One run per schedule, each from the same initial model: the models train alike, only evaluation differs."""
    seed_everything(0)
    initial = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    results = {}
    for every in (1, 2, None):
        chosen = evaluator(every)
        results[every] = (run(stream, copy.deepcopy(initial), Finetune(), chosen, config=TrainConfig(epochs=2, batch_size=32, progress=False)), chosen)
    return results


@pytest.mark.parametrize(("every", "steps"), [(1, [0, 1, 2, 3, 4]), (2, [1, 3, 4]), (3, [2, 4]), (None, [4])])
def test_the_suite_runs_after_every_kth_experience_and_the_final_one(every, steps):
    chosen = evaluator(every)
    assert [step for step in range(5) if chosen.robustness_due(step, 5)] == steps


def test_reports_between_scheduled_experiences_have_no_robustness_part(runs):
    results, _ = runs[2]
    assert [report["robustness"] is not None for report in results["reports"]] == [False, True, False, True, True]


def test_a_sparse_suite_measures_the_same_rows_as_the_dense_one(runs):
    dense, sparse = runs[1][0]["robustness"], runs[2][0]["robustness"]
    assert sparse["corrupted_steps"] == [1, 3, 4]
    assert sparse["corrupted_accuracy_matrix"] == [dense["corrupted_accuracy_matrix"][step] for step in (1, 3, 4)]
    assert sparse["mean_corrupted_accuracy"] == dense["mean_corrupted_accuracy"]


def test_corrupted_forgetting_is_absent_unless_the_suite_ran_after_every_experience(runs):
    dense = runs[1][0]["robustness"]
    assert dense["corrupted_steps"] == [0, 1, 2, 3, 4]
    assert dense["corrupted_forgetting"] == pytest.approx(metrics.forgetting(dense["corrupted_accuracy_matrix"]))
    assert runs[2][0]["robustness"]["corrupted_forgetting"] is None
    assert runs[None][0]["robustness"]["corrupted_forgetting"] is None


def test_the_clean_accuracy_matrix_does_not_depend_on_the_schedule(runs):
    assert runs[1][0]["accuracy_matrix"] == runs[2][0]["accuracy_matrix"] == runs[None][0]["accuracy_matrix"]


def test_a_sparse_schedule_survives_a_state_round_trip(runs):
    _, chosen = runs[2]
    restored = evaluator(2)
    restored.load_state_dict(chosen.state_dict())
    assert restored.corrupted_rows_ == chosen.corrupted_rows_
    assert [row is None for row in restored.corrupted_rows_] == [True, False, True, False, False]


def test_every_part_of_evaluation_is_timed(runs):
    _, chosen = runs[1]
    assert set(chosen.seconds_) == set(EVALUATION_PARTS)
    for part in ("initial", "clean", "instruments", "robustness"):
        assert chosen.seconds_[part] > 0, part
    assert chosen.seconds_["continual"] == 0  # no continual evaluation in this run


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_a_schedule_that_is_not_a_positive_count_is_refused(every):
    with pytest.raises(ValueError, match="robustness_every"):
        evaluator(every)


def test_default_schedule_is_the_most_frequent_one_within_the_budget(stream):
    blocks, samples = 1 + len(SUITE) * len(SEVERITIES), 32
    per_evaluation = INFERENCE_COST * suite_inferences(stream, blocks, samples)
    assert suite_inferences(stream, blocks, samples) == sum(blocks * min(samples, len(e.test)) for e in stream)
    # Training big enough for every experience, for exactly three evaluations (K=2 on 5 experiences), for less than one.
    assert default_every(stream, blocks, samples, int(5 * per_evaluation / ROBUSTNESS_BUDGET) + 1) == 1
    assert default_every(stream, blocks, samples, int(3 * per_evaluation / ROBUSTNESS_BUDGET) + 1) == 2
    assert evaluations(2, 5) == 3 and evaluations(None, 5) == 1 and evaluations(1, 5) == 5
    assert default_every(stream, blocks, samples, int(0.5 * per_evaluation / ROBUSTNESS_BUDGET)) is None


def test_the_command_line_schedule_accepts_auto_final_and_a_count_and_explains_anything_else(stream):
    config = RunConfig(benchmark="split-digits")
    assert robustness_schedule(config.__class__(robustness_every="final"), stream) is None
    assert robustness_schedule(config.__class__(robustness_every="3"), stream) == 3
    assert robustness_schedule(config.__class__(robustness_every="auto", shifts="none"), stream) == 1
    with pytest.raises(UsageError, match="--robustness-every must be auto, final or a positive number"):
        robustness_schedule(config.__class__(robustness_every="often"), stream)
