"""Instruments on hand-made cases (every expected value worked out in a comment), then inside real runs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lifelong_kd import Evaluator, Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.evaluation import instruments
from lifelong_kd.evaluation.evaluator import accuracy
from lifelong_kd.pipeline import seed_everything
from tests.helpers import CrashAfter

NAN = float("nan")


# --- confusion matrix and per-class accuracy ---------------------------------------------------


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    # class 0: one right, one called 1; class 1: right; class 2: two right, one called 0.
    assert instruments.confusion_matrix(targets, predicted, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_confusion_matrix_refuses_units_out_of_range():
    with pytest.raises(ValueError, match="predictions must be units in 0..2"):
        instruments.confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)


def test_per_class_accuracy_is_the_share_of_each_class_predicted_right():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predicted = torch.tensor([0, 1, 1, 2, 0, 2])
    result = instruments.per_class_accuracy(targets, predicted, [0, 1, 2, 3])
    assert result[:3] == pytest.approx([1 / 2, 1 / 1, 2 / 3])
    assert math.isnan(result[3])  # no sample of class 3: undefined, not 0


def test_per_class_forgetting_max_and_avalanche_definitions():
    # history[l][j][c]: after step l, class c of experience j. Experience 0 has two classes, experience 1 one.
    history = [
        [[0.9, 0.6], [0.0]],
        [[0.5, 0.8], [0.7]],
        [[0.4, 0.2], [0.3]],
    ]
    # max: class (0,0): max(0.9, 0.5) - 0.4 = 0.5; class (0,1): max(0.6, 0.8) - 0.2 = 0.6; class (1,0): 0.7 - 0.3 = 0.4
    assert instruments.per_class_forgetting(history) == [pytest.approx([0.5, 0.6]), pytest.approx([0.4])]
    # avalanche (from the row the experience was learned): (0,1): 0.6 - 0.2 = 0.4
    assert instruments.per_class_forgetting(history, definition="avalanche") == [pytest.approx([0.5, 0.4]), pytest.approx([0.4])]
    # at step 1 only experience 0 can have been forgotten: 0.9 - 0.5 = 0.4 and 0.6 - 0.8 = -0.2
    assert instruments.per_class_forgetting(history, step=1) == [pytest.approx([0.4, -0.2])]
    assert instruments.per_class_forgetting(history, step=0) == []
    assert instruments.nanmean(instruments.per_class_forgetting(history)) == pytest.approx((0.5 + 0.6 + 0.4) / 3)


def test_per_class_forgetting_skips_unmeasured_classes():
    history = [[[NAN, 0.5]], [[NAN, 0.1]]]
    (row,) = instruments.per_class_forgetting(history)
    assert math.isnan(row[0]) and row[1] == pytest.approx(0.4)
    assert instruments.nanmean([row]) == pytest.approx(0.4)
    assert math.isnan(instruments.nanmean([[NAN]]))


# --- negative flips -----------------------------------------------------------------------------


def test_negative_flips_count_samples_the_old_model_got_right_and_the_new_one_wrong():
    targets = torch.tensor([0, 1, 2, 3])
    old = torch.tensor([0, 1, 0, 3])  # right on samples 0, 1, 3
    new = torch.tensor([0, 2, 2, 0])  # wrong on 1 and 3 (negative flips); right on 2 (a positive flip)
    assert instruments.negative_flips(targets, old, new) == 2
    assert instruments.negative_flip_rate(targets, old, new) == pytest.approx(2 / 4)
    assert instruments.negative_flip_rate(targets, old, old) == 0.0
    assert math.isnan(instruments.negative_flip_rate(targets[:0], old[:0], new[:0]))


# --- linear CKA ---------------------------------------------------------------------------------


def test_linear_cka_of_one_dimensional_features_is_the_squared_correlation():
    # centred x = (-1, 0, 1), y = (-1, 1, 0): y'x = 1, x'x = y'y = 2, so CKA = 1^2 / (2 * 2) = 0.25 = corr^2
    x, y = torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.0], [3.0], [2.0]])
    assert instruments.linear_cka(x, y) == pytest.approx(0.25)


def test_linear_cka_hand_case_in_two_dimensions():
    # x'x = diag(2, 2) (norm 2 sqrt 2), y'y = diag(2, 0) (norm 2), y'x = [[2, 0], [0, 0]] (squared norm 4)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])
    assert instruments.linear_cka(x, y) == pytest.approx(4 / (2 * math.sqrt(2) * 2))


def _random(rows: int, columns: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, columns, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_is_one_for_identical_rotated_and_scaled_features(debiased):
    x = _random(60, 8, 0)
    rotation, _ = torch.linalg.qr(_random(8, 8, 1))
    assert instruments.linear_cka(x, x, debiased) == pytest.approx(1.0)
    assert instruments.linear_cka(x, x @ rotation, debiased) == pytest.approx(1.0)
    assert instruments.linear_cka(x, 3.7 * x + 5.0, debiased) == pytest.approx(1.0)  # isotropic scaling and a shift
    y = _random(60, 5, 2)
    assert instruments.linear_cka(x @ rotation, 0.1 * y, debiased) == pytest.approx(instruments.linear_cka(x, y, debiased))


def test_linear_cka_is_not_invariant_to_anisotropic_scaling():
    x = _random(60, 8, 0)
    stretched = x * torch.tensor([1.0, 1, 1, 1, 1, 1, 1, 30.0], dtype=torch.float64)
    assert instruments.linear_cka(x, stretched) < 0.5


def test_independent_features_give_about_zero_with_many_samples_and_the_debiased_estimator_at_few():
    # Biased linear CKA of independent features is about sqrt(p1 p2 / ((N + p1)(N + p2))): near 0 only when N >> p.
    assert instruments.linear_cka(_random(4000, 5, 3), _random(4000, 5, 4)) < 0.01
    few_x, few_y = _random(200, 100, 5), _random(200, 100, 6)
    assert instruments.linear_cka(few_x, few_y) == pytest.approx(100 / 300, abs=0.05)  # the documented bias
    assert abs(instruments.linear_cka(few_x, few_y, debiased=True)) < 0.05


def test_linear_cka_of_a_constant_representation_is_undefined():
    assert math.isnan(instruments.linear_cka(torch.ones(10, 3), _random(10, 3, 0)))
    with pytest.raises(ValueError, match="same samples"):
        instruments.linear_cka(_random(10, 3, 0), _random(9, 3, 0))


def test_feature_extractor_reads_a_wrapped_network():
    from lifelong_kd.strategies.icarl import NearestMeanOfExemplars

    network = build_model("mlp:16", (1, 8, 8), 1, 10)
    wrapper = NearestMeanOfExemplars(network, torch.zeros(10, 16), 10)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(instruments.feature_extractor(wrapper)(x), network.features(x))
    with pytest.raises(TypeError, match="no features"):
        instruments.feature_extractor(torch.nn.Linear(3, 3))


# --- inside real runs ---------------------------------------------------------------------------

CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False)


def _run(scenario: str, **kwargs):
    stream = build_stream("split-digits", StreamOptions(scenario=scenario, train_size=120))
    seed_everything(0)
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    return stream, model, run(stream, model, Finetune(), config=CONFIG, **kwargs)


@pytest.mark.parametrize("scenario", ["class", "task", "domain"])
def test_per_class_accuracy_and_confusion_agree_with_the_accuracy_matrix(scenario):
    stream, _, results = _run(scenario)
    for report in results["reports"]:
        step, found = report["step"], report["instruments"]
        for j, experience in enumerate(stream):
            counts = [int((experience.test.y == label).sum()) for label in instruments.experience_labels(stream)[j]]
            weighted = sum(n * a for n, a in zip(counts, found["per_class_accuracy"][j]) if n) / sum(counts)
            assert weighted == pytest.approx(report["accuracy_matrix"][step][j])  # the test-set-weighted mean is R[t, j]
        confusion = torch.tensor(found["confusion_matrix"])
        seen = [len(e.test) for e in stream][: step + 1]
        assert int(confusion.sum()) == sum(seen)
        assert float(confusion.trace()) / sum(seen) == pytest.approx(sum(n * a for n, a in zip(seen, report["accuracy_matrix"][step])) / sum(seen))
    final = results["instruments"]
    assert len(final["per_class_forgetting"]) == len(stream) - 1
    assert final["drift"]["cka_matrix"][-1][-1] == pytest.approx(1.0)


def test_negative_flips_bound_the_accuracy_lost_between_snapshots():
    _, _, results = _run("class")
    for report in results["reports"][1:]:
        step, flips = report["step"], report["instruments"]["negative_flips"]
        assert len(flips["per_experience"]) == step
        for j, rate in enumerate(flips["per_experience"]):
            # on the same test set, accuracy_new >= accuracy_old - NFR: a sample lost is a negative flip
            assert report["accuracy_matrix"][step - 1][j] - report["accuracy_matrix"][step][j] <= rate + 1e-9
    assert results["instruments"]["negative_flips"]["rate"] > 0.1  # finetuning in the class scenario flips old samples


def test_evaluator_row_is_unchanged_by_the_instruments():
    stream, model, results = _run("task")
    assert results["accuracy_matrix"][-1] == pytest.approx([accuracy(model, e) for e in stream])
    plain = Evaluator(instruments=False).evaluate(model, stream, 0)
    assert plain.instruments is None and "instruments" not in plain.to_dict()


def test_a_resumed_run_ends_with_the_same_instruments(tmp_path):
    stream, _, full = _run("class", out=tmp_path / "full")
    seed_everything(0)
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    with pytest.raises(KeyboardInterrupt):
        run(stream, model, Finetune(), loggers=[CrashAfter(1)], config=CONFIG, out=tmp_path / "cut")
    checkpoint = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)  # tensors, numbers and lists only
    assert len(checkpoint["members"]["model"]["evaluator"]["instruments"]["features"]) == 2
    fresh = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    resumed = run(stream, fresh, Finetune(), config=CONFIG, out=tmp_path / "cut", resume=True)
    assert resumed["instruments"] == full["instruments"]  # flips at step 2 need step 1's predictions; CKA every snapshot's features
    saved = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert saved["instruments"]["drift"]["cka_matrix"] == json.loads((tmp_path / "full" / "results.json").read_text())["instruments"]["drift"]["cka_matrix"]


def test_run_folder_holds_the_instrument_figures_and_tensorboard_tags(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong_kd.cli import main

    out = tmp_path / "run"
    arguments = ["run", "--out", str(out), "--scenario", "class", "--epochs", "2", "--train-size", "60", "--shifts", "none", "--quiet"]
    assert main(arguments) == 0
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "representation_drift.png"):
        assert (out / name).stat().st_size > 1000, name
    results = json.loads((out / "results.json").read_text())
    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    flips = accumulator.Scalars("instruments/negative_flip_rate")
    assert [event.step for event in flips] == [1, 2, 3, 4]  # undefined after the first experience: not logged
    assert flips[-1].value == pytest.approx(results["instruments"]["negative_flips"]["rate"])
    assert "per_class_accuracy/experience_0/class_1" in accumulator.Tags()["scalars"]
    assert {"confusion_matrix", "representation_drift"} <= set(accumulator.Tags()["images"])
    assert [event.step for event in accumulator.Images("confusion_matrix")] == [4]


def test_the_per_class_history_goes_to_the_checkpoint_as_tensors_and_comes_back_equal(tmp_path):
    tracker = instruments.InstrumentTracker()
    tracker.class_history_ = [[[0.5, math.nan], [0.25, 0.75, 1.0]], [[0.1, 0.2], [0.3, 0.4, 0.5]], [[1 / 3, 2 / 3]]]
    state = tracker.state_dict()["class_history"]
    assert all(isinstance(value, torch.Tensor) for value in state.values())  # a few tensors, not 1 object per number
    assert state["values"].dtype == torch.float64 and len(state["values"]) == 12
    restored = instruments.InstrumentTracker()
    torch.save({"class_history": state}, tmp_path / "state.pt")
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    got = restored.class_history_
    assert [[len(row) for row in step] for step in got] == [[2, 3], [2, 3], [2]]
    assert got[0][0][0] == 0.5 and math.isnan(got[0][0][1]) and got[2][0] == [1 / 3, 2 / 3]  # float64: exact
    tracker.class_history_ = tracker.class_history_[:2] + [[[0.9, 0.8]]]  # a step replaced: its tensor is made anew
    assert tracker.state_dict()["class_history"]["values"][-2:].tolist() == [0.9, 0.8]
    old_format = instruments.InstrumentTracker()
    old_format.load_state_dict({"class_history": [[[0.5, 0.25]], [[0.75]]]})  # checkpoints written before the tensors
    assert old_format.class_history_ == [[[0.5, 0.25]], [[0.75]]]
