"""Forgetting-curve figures plot the numbers of the accuracy matrix and the metrics."""

from __future__ import annotations

import pytest

from lifelong_kd.evaluation import metrics
from lifelong_kd.loggers.figures import forgetting_curves_figure, method_curves_figure

MATRIX = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.1], [0.5, 0.7, 0.95]]


def test_forgetting_curves_start_where_each_experience_is_learned():
    figure = forgetting_curves_figure(MATRIX)
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert list(lines["E0"].get_ydata()) == pytest.approx([90, 60, 50])
    assert list(lines["E1"].get_xdata()) == [1, 2] and list(lines["E1"].get_ydata()) == pytest.approx([80, 70])
    assert list(lines["E2"].get_ydata()) == pytest.approx([95])
    assert list(lines["average"].get_ydata()) == pytest.approx([90, 70, (50 + 70 + 95) / 3])


def test_method_curves_average_accuracy_and_forgetting_over_seeds():
    other = [[0.7, 0.0, 0.0], [0.7, 0.9, 0.0], [0.7, 0.9, 0.9]]
    figure = method_curves_figure({"A": [MATRIX, other], "B": [other]}, "test")
    accuracy, forgetting = ({line.get_label(): line.get_ydata() for line in axes.get_lines()} for axes in figure.axes)
    expected_a = [(100 * metrics.average_accuracy(MATRIX, t) + 100 * metrics.average_accuracy(other, t)) / 2 for t in range(3)]
    assert list(accuracy["A"]) == pytest.approx(expected_a)
    assert list(forgetting["A"]) == pytest.approx([(30 + 0) / 2, (100 * metrics.forgetting(MATRIX) + 0) / 2])
    assert list(forgetting["B"]) == pytest.approx([0, 0])
