"""Figures a reader can read, checked on the figure objects (not pixels): titles naming the run,
untrained cells of the accuracy matrix masked, curve axes fitted to the data, mean ± std bands,
TensorBoard's run name and compression charts only with a reference model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lifelong_kd.cli import main
from lifelong_kd.evaluation import metrics
from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.loggers.base import run_label
from lifelong_kd.loggers.figures import (
    FigureLogger,
    accuracy_matrix_figure,
    fitted_limits,
    forgetting_curves_figure,
    method_curves_figure,
    robustness_figure,
    stability_curve_figure,
)
from lifelong_kd.loggers.tensorboard import TensorBoardLogger, has_reference

CONFIG = {"benchmark": "split-mnist", "scenario": "class", "strategy": "lwf", "seed": 3, "lr": 0.01}
# A full 3 x 3 matrix as the evaluator records it: the untrained cells (j > i) are measured too.
MATRIX = [[0.95, 0.31, 0.12], [0.93, 0.94, 0.27], [0.92, 0.91, 0.96]]


def test_run_label_names_benchmark_scenario_strategy_and_seed():
    assert run_label(CONFIG) == "split-mnist (class scenario), lwf, seed 3"
    assert run_label({"benchmark": "split-digits", "strategy": "compress", "student": "mlp:8", "seed": 0}) == "split-digits, compress -> student mlp:8, seed 0"
    assert run_label({}) == ""


def test_titles_carry_the_run_label():
    label = run_label(CONFIG)
    for figure in (accuracy_matrix_figure(MATRIX, label), forgetting_curves_figure(MATRIX, label)):
        title = figure.axes[0].get_title()
        assert "split-mnist" in title and "class scenario" in title and "lwf" in title and "seed 3" in title
    assert accuracy_matrix_figure(MATRIX).axes[0].get_title().startswith("Accuracy matrix")


def test_untrained_cells_of_the_accuracy_matrix_are_masked_not_drawn_as_values():
    import matplotlib

    figure = accuracy_matrix_figure(MATRIX)
    pixels = figure.axes[0].images[0].get_array()  # the cells' colours, 8-bit RGBA
    grey = (0xE6, 0xE6, 0xE6, 255)
    masked = [[tuple(int(v) for v in pixels[i, j]) == grey for j in range(3)] for i in range(3)]
    assert masked == [[False, True, True], [False, False, True], [False, False, False]]
    viridis = matplotlib.colormaps["viridis"]
    assert tuple(pixels[2, 1]) == viridis(0.91, bytes=True) and tuple(pixels[0, 0]) == viridis(0.95, bytes=True)
    annotations = {text.get_text() for text in figure.axes[0].texts}
    assert annotations == {"95", "93", "94", "92", "91", "96"}  # no number on a masked cell (31, 12, 27)
    assert grey != viridis(0.0, bytes=True)  # masked cells do not take the colour of 0%
    colorbar = figure.axes[1]  # the colour bar keeps the 0-100 scale
    assert colorbar.get_ylim() == pytest.approx((0.0, 100.0))


def test_accuracy_curves_are_fitted_to_their_points():
    figure = forgetting_curves_figure(MATRIX)
    low, high = figure.axes[0].get_ylim()
    drawn = np.concatenate([line.get_ydata() for line in figure.axes[0].get_lines()])
    assert low <= drawn.min() and high >= drawn.max()
    assert low > 80 and high <= 100  # points from 91 to 96: not the 0-100 range
    assert fitted_limits([91.0, 96.0]) == (89.0, 98.0)
    assert fitted_limits([5.0, 99.5]) == (0.0, 100.0)  # kept within 0-100
    curve = {"iterations": [10, 20, 30], "experience": [0, 0, 1], "accuracy": [[0.9, None], [0.93, None], [0.91, 0.95]], "ends": [20, 30], "eval_every": 10, "probe_samples": 64}
    low, high = stability_curve_figure(curve, "x").axes[0].get_ylim()
    assert 80 < low < 90 and high <= 100


def test_suite_curves_draw_the_mean_in_a_band_of_plus_minus_the_sample_std():
    other = [[0.7, 0.0, 0.0], [0.7, 0.9, 0.0], [0.7, 0.85, 0.9]]
    figure = method_curves_figure({"A": [MATRIX, other], "B": [other]}, "test")
    accuracy_axes = figure.axes[0]
    bands = {collection.get_label(): collection for collection in accuracy_axes.collections}
    assert set(bands) == {"_band A"}  # one run of B: no band
    runs = np.array([[100 * metrics.average_accuracy(m, t) for t in range(3)] for m in (MATRIX, other)])
    vertices = bands["_band A"].get_paths()[0].vertices
    for step in range(3):
        at_step = vertices[np.isclose(vertices[:, 0], step), 1]
        assert at_step.min() == pytest.approx(runs[:, step].mean() - runs[:, step].std(ddof=1))
        assert at_step.max() == pytest.approx(runs[:, step].mean() + runs[:, step].std(ddof=1))
    assert [text.get_text() for text in accuracy_axes.get_legend().get_texts()] == ["A", "B"]


def _report(step: int) -> EvalReport:
    robustness = {"grid": {"noise": {"1": [0.8, 0.7, 0.6]}}, "severities": [1], "relative_robustness": 0.9}
    return EvalReport(step=step, accuracy_matrix=tuple(tuple(row) for row in MATRIX[: step + 1]), metrics={"average_accuracy": 0.9}, robustness=robustness)


def test_figure_logger_titles_every_figure_with_the_config_it_was_given(tmp_path):
    logger = FigureLogger(tmp_path)
    logger.log_config(CONFIG)
    assert logger.label_ == run_label(CONFIG)
    logger.log_report(_report(1))
    assert (tmp_path / "accuracy_matrix.png").is_file() and (tmp_path / "robustness.png").is_file()
    assert "seed 3" in robustness_figure(_report(1).robustness, 1, logger.label_).axes[0].get_title()


def test_has_reference_only_when_the_reference_differs_from_the_model():
    own = {"parameters": 100, "flops_per_sample": 200}
    assert not has_reference(None) and not has_reference({"model": own, "reference": dict(own), "ratios": {"parameter_ratio": 1.0}})
    assert has_reference({"model": own, "reference": {"parameters": 1000, "flops_per_sample": 2000}, "ratios": {}})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "run"
    assert main(["run", "--train-size", "60", "--test-size", "30", "--epochs", "1", "--model", "mlp:8", "--shifts", "none", "--quiet", "--strategy", "lwf", "--seed", "2", "--out", str(out)]) == 0
    return out


def test_tensorboard_names_the_run_and_draws_no_compression_chart_without_a_reference(cli_run):
    accumulator = EventAccumulator(str(cli_run / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    texts = [event.tensor_proto.string_val[0].decode() for event in accumulator.Tensors("run_name/text_summary")]
    assert texts == [f"split-digits (task scenario), lwf, seed 2 ({cli_run})"]
    assert not any(tag.startswith("compression/") for tag in accumulator.Tags()["scalars"])
    compression = json.loads((cli_run / "results.json").read_text())["compression"]
    assert compression["ratios"]["parameter_ratio"] == compression["ratios"]["flops_ratio"] == 1.0  # what the charts would have shown


def test_tensorboard_draws_compression_charts_with_a_reference_model(cli_run, tmp_path):
    out = tmp_path / "small"
    common = ["run", "--train-size", "60", "--test-size", "30", "--epochs", "1", "--shifts", "none", "--quiet", "--no-instruments"]
    assert main([*common, "--model", "mlp:4", "--reference-model", str(cli_run), "--out", str(out)]) == 0
    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    ratios = json.loads((out / "results.json").read_text())["compression"]["ratios"]
    logged = accumulator.Scalars("compression/parameter_ratio")
    assert [event.value for event in logged][-1] == pytest.approx(ratios["parameter_ratio"]) and ratios["parameter_ratio"] > 1


def test_tensorboard_logger_titles_its_heatmaps(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.log_config(CONFIG)
    assert logger.label_ == "split-mnist (class scenario), lwf, seed 3"
    logger.close()
