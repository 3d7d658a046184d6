"""Metrics on hand-made accuracy matrices; every expected value is worked out in a comment."""

import math

import numpy as np
import pytest

from lifelong_kd.evaluation import metrics

# Any warning (e.g. numpy's "Mean of empty slice" on NaN cells) fails a test.
pytestmark = pytest.mark.filterwarnings("error")

NAN = float("nan")

# Full 3x3 matrix; row i = after training experience i, column j = test set of experience j.
FULL = [
    [0.9, 0.1, 0.2],
    [0.7, 0.8, 0.3],
    [0.6, 0.7, 0.9],
]
RANDOM_INIT = [0.1, 0.1, 0.1]

# Accuracy on experience 0 peaks after experience 1 (0.8 > R[0, 0] = 0.6).
PEAK_AFTER_OWN = [
    [0.6, 0.2, 0.1],
    [0.8, 0.7, 0.2],
    [0.5, 0.6, 0.9],
]

# Two rows of a 3-experience stream; experience 2 not evaluated yet.
PARTIAL = [
    [0.8, 0.3, NAN],
    [0.6, 0.9, NAN],
]

ONE_ROW = [[0.7, 0.1, 0.2]]


# --- average accuracy -------------------------------------------------------------------------


def test_average_accuracy_of_last_row_averages_all_experiences_at_end_of_stream() -> None:
    # (0.6 + 0.7 + 0.9) / 3 = 2.2 / 3
    assert metrics.average_accuracy(FULL) == pytest.approx(2.2 / 3)


def test_average_accuracy_at_earlier_step_averages_only_seen_experiences() -> None:
    # step 0: R[0, 0] = 0.9 ; step 1: (0.7 + 0.8) / 2 = 0.75
    assert metrics.average_accuracy(FULL, step=0) == pytest.approx(0.9)
    assert metrics.average_accuracy(FULL, step=1) == pytest.approx(0.75)


def test_average_accuracy_with_seen_only_false_includes_unseen_experiences() -> None:
    # step 0, all columns: (0.9 + 0.1 + 0.2) / 3 = 0.4
    assert metrics.average_accuracy(FULL, step=0, seen_only=False) == pytest.approx(0.4)


def test_negative_step_counts_from_the_last_row() -> None:
    assert metrics.average_accuracy(FULL, step=-1) == metrics.average_accuracy(FULL)
    assert metrics.average_accuracy(FULL, step=-3) == metrics.average_accuracy(FULL, step=0)


def test_average_accuracy_on_partial_matrix_skips_nan_cells() -> None:
    # last row t = 1: (0.6 + 0.9) / 2 = 0.75 ; all columns: column 2 is NaN, so also 0.75
    assert metrics.average_accuracy(PARTIAL) == pytest.approx(0.75)
    assert metrics.average_accuracy(PARTIAL, seen_only=False) == pytest.approx(0.75)
    # row 0, all columns: (0.8 + 0.3) / 2 = 0.55
    assert metrics.average_accuracy(PARTIAL, step=0, seen_only=False) == pytest.approx(0.55)


def test_average_accuracy_of_unevaluated_row_is_nan() -> None:
    assert math.isnan(metrics.average_accuracy([[NAN, NAN]]))


# --- forgetting -------------------------------------------------------------------------------


def test_forgetting_max_definition_on_full_matrix() -> None:
    # f_0 = max(0.9, 0.7) - 0.6 = 0.3 ; f_1 = max(0.8) - 0.7 = 0.1 ; mean = 0.2
    per_experience = metrics.per_experience_forgetting(FULL)
    np.testing.assert_allclose(per_experience, [0.3, 0.1])
    assert metrics.forgetting(FULL) == pytest.approx(0.2)


def test_forgetting_at_intermediate_step_uses_rows_up_to_that_step() -> None:
    # t = 1: f_0 = 0.9 - 0.7 = 0.2
    assert metrics.forgetting(FULL, step=1) == pytest.approx(0.2)


def test_forgetting_definitions_differ_when_accuracy_peaks_after_own_experience() -> None:
    # max:       f_0 = max(0.6, 0.8) - 0.5 = 0.3 ; f_1 = 0.7 - 0.6 = 0.1 ; mean 0.2
    # avalanche: f_0 = R[0, 0] - 0.5 = 0.6 - 0.5 = 0.1 ; f_1 = 0.7 - 0.6 = 0.1 ; mean 0.1
    np.testing.assert_allclose(metrics.per_experience_forgetting(PEAK_AFTER_OWN), [0.3, 0.1])
    np.testing.assert_allclose(
        metrics.per_experience_forgetting(PEAK_AFTER_OWN, definition="avalanche"), [0.1, 0.1]
    )
    assert metrics.forgetting(PEAK_AFTER_OWN) == pytest.approx(0.2)
    assert metrics.forgetting(PEAK_AFTER_OWN, definition="avalanche") == pytest.approx(0.1)


def test_forgetting_max_ignores_accuracy_before_the_experience_was_trained() -> None:
    # R[0, 1] = 0.8 is zero-shot accuracy before experience 1 was trained, so it is not a peak.
    # f_0 = max(0.9, 0.9) - 0.9 = 0.0 ; f_1 = max(R[1, 1]) - R[2, 1] = 0.5 - 0.4 = 0.1 ; mean 0.05
    matrix = [
        [0.9, 0.8, 0.1],
        [0.9, 0.5, 0.1],
        [0.9, 0.4, 0.7],
    ]
    np.testing.assert_allclose(metrics.per_experience_forgetting(matrix), [0.0, 0.1])
    assert metrics.forgetting(matrix) == pytest.approx(0.05)


def test_forgetting_on_partial_matrix() -> None:
    # t = 1: f_0 = 0.8 - 0.6 = 0.2
    assert metrics.forgetting(PARTIAL) == pytest.approx(0.2)


def test_forgetting_skips_a_column_that_was_never_evaluated() -> None:
    # column 0 all NaN -> f_0 = NaN (skipped) ; f_1 = 0.8 - 0.6 = 0.2
    matrix = [
        [NAN, 0.2, 0.1],
        [NAN, 0.8, 0.3],
        [NAN, 0.6, 0.9],
    ]
    per_experience = metrics.per_experience_forgetting(matrix)
    assert math.isnan(per_experience[0])
    assert per_experience[1] == pytest.approx(0.2)
    assert metrics.forgetting(matrix) == pytest.approx(0.2)


def test_forgetting_is_nan_when_there_is_no_earlier_experience() -> None:
    assert metrics.per_experience_forgetting(ONE_ROW).shape == (0,)
    assert math.isnan(metrics.forgetting(ONE_ROW))
    assert math.isnan(metrics.forgetting(FULL, step=0, definition="avalanche"))


# --- backward / forward transfer --------------------------------------------------------------


def test_backward_transfer_on_full_matrix() -> None:
    # ((0.6 - 0.9) + (0.7 - 0.8)) / 2 = (-0.3 - 0.1) / 2 = -0.2
    assert metrics.backward_transfer(FULL) == pytest.approx(-0.2)


def test_backward_transfer_is_negative_avalanche_forgetting() -> None:
    # ((0.5 - 0.6) + (0.6 - 0.7)) / 2 = -0.1 = -(avalanche forgetting 0.1)
    assert metrics.backward_transfer(PEAK_AFTER_OWN) == pytest.approx(-0.1)


def test_backward_transfer_on_partial_and_one_row_matrices() -> None:
    # partial: (0.6 - 0.8) / 1 = -0.2 ; one row: no earlier experience -> NaN
    assert metrics.backward_transfer(PARTIAL) == pytest.approx(-0.2)
    assert math.isnan(metrics.backward_transfer(ONE_ROW))


def test_forward_transfer_on_full_matrix() -> None:
    # j = 1: R[0, 1] - b_1 = 0.1 - 0.1 = 0.0 ; j = 2: R[1, 2] - b_2 = 0.3 - 0.1 = 0.2 ; mean 0.1
    assert metrics.forward_transfer(FULL, RANDOM_INIT) == pytest.approx(0.1)


def test_forward_transfer_on_partial_matrix_skips_nan_cells() -> None:
    # j = 1: 0.3 - 0.1 = 0.2 ; j = 2: R[1, 2] is NaN -> skipped ; mean 0.2
    assert metrics.forward_transfer(PARTIAL, RANDOM_INIT) == pytest.approx(0.2)


def test_forward_transfer_on_one_row_uses_the_next_experience() -> None:
    # j = 1 only: R[0, 1] - b_1 = 0.1 - 0.1 = 0.0
    assert metrics.forward_transfer(ONE_ROW, RANDOM_INIT) == pytest.approx(0.0)


def test_forward_transfer_of_a_single_experience_is_nan() -> None:
    assert math.isnan(metrics.forward_transfer([[0.9]], [0.1]))


# --- learning accuracy, intransigence, curves -------------------------------------------------


def test_learning_accuracy_is_the_diagonal_and_its_mean() -> None:
    # diagonal (0.9, 0.8, 0.9), mean 2.6 / 3
    np.testing.assert_allclose(metrics.per_experience_learning_accuracy(FULL), [0.9, 0.8, 0.9])
    assert metrics.learning_accuracy(FULL) == pytest.approx(2.6 / 3)


def test_learning_accuracy_on_partial_matrix_uses_existing_rows() -> None:
    # diagonal (0.8, 0.9), mean 0.85
    assert metrics.learning_accuracy(PARTIAL) == pytest.approx(0.85)


def test_intransigence_against_joint_reference() -> None:
    # ((0.95 - 0.9) + (0.9 - 0.8) + (0.9 - 0.9)) / 3 = (0.05 + 0.1 + 0.0) / 3 = 0.05
    assert metrics.intransigence(FULL, [0.95, 0.9, 0.9]) == pytest.approx(0.05)


def test_accuracy_curves_are_copied_columns() -> None:
    matrix = np.array(PARTIAL)
    curves = metrics.accuracy_curves(matrix)
    assert sorted(curves) == [0, 1, 2]
    np.testing.assert_allclose(curves[0], [0.8, 0.6])
    np.testing.assert_allclose(curves[1], [0.3, 0.9])
    assert np.isnan(curves[2]).all()
    curves[0][0] = 0.0
    assert matrix[0, 0] == 0.8


# --- summary ----------------------------------------------------------------------------------


def test_summarize_reports_every_headline_metric() -> None:
    summary = metrics.summarize(FULL, random_init_accuracy=RANDOM_INIT)
    assert summary == pytest.approx(
        {
            "average_accuracy": 2.2 / 3,
            "forgetting": 0.2,
            "backward_transfer": -0.2,
            "forward_transfer": 0.1,
            "learning_accuracy": 2.6 / 3,
        }
    )
    assert all(isinstance(value, float) for value in summary.values())


def test_summarize_without_random_init_omits_forward_transfer() -> None:
    assert "forward_transfer" not in metrics.summarize(FULL)


def test_summarize_passes_the_forgetting_definition() -> None:
    summary = metrics.summarize(PEAK_AFTER_OWN, forgetting_definition="avalanche")
    assert summary["forgetting"] == pytest.approx(0.1)


def test_summarize_of_one_row_has_nan_forgetting() -> None:
    summary = metrics.summarize(ONE_ROW)
    assert summary["average_accuracy"] == pytest.approx(0.7)
    assert math.isnan(summary["forgetting"])
    assert math.isnan(summary["backward_transfer"])


def test_metrics_do_not_modify_the_input_matrix() -> None:
    matrix = np.array(FULL)
    metrics.summarize(matrix, random_init_accuracy=RANDOM_INIT)
    np.testing.assert_array_equal(matrix, np.array(FULL))


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ([0.5, 0.5], "must be 2-D"),
        ([[[0.5]]], "must be 2-D"),
        (np.zeros((0, 3)), "at least one row"),
        ([[0.5], [0.5]], "rows <= columns"),
        ([[87.5, 0.1], [0.2, 0.9]], "not percentages"),
        ([[-0.1]], r"\[0, 1\]"),
        ([[float("inf")]], r"\[0, 1\]"),
        ([["a"]], "numeric"),
    ],
)
def test_invalid_accuracy_matrix_raises_clear_error(matrix: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.average_accuracy(matrix)


def test_out_of_range_value_error_names_its_position() -> None:
    with pytest.raises(ValueError, match=r"1\.5 at index \(1, 0\)"):
        metrics.forgetting([[0.5, 0.1], [1.5, 0.2]])


@pytest.mark.parametrize("step", [3, -4, 1.0, True])
def test_invalid_step_raises(step: object) -> None:
    with pytest.raises(ValueError, match="step"):
        metrics.forgetting(FULL, step=step)


def test_unknown_forgetting_definition_raises() -> None:
    with pytest.raises(ValueError, match="definition must be one of"):
        metrics.forgetting(FULL, definition="mean")


@pytest.mark.parametrize(
    ("baseline", "message"), [([0.1, 0.1], r"shape \(3,\)"), ([0.1, 0.1, 10.0], "fractions")]
)
def test_invalid_random_init_accuracy_raises(baseline: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.forward_transfer(FULL, baseline)
