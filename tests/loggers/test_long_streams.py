"""Loggers on long streams: figures drawn every k-th experience and at the end, large heatmaps unannotated and bounded in size."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lifelong_kd import Evaluator, LwF, StreamOptions, TrainConfig, build_model, build_stream
from lifelong_kd.cli import main
from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.loggers.figures import (
    MAX_HEATMAP_INCHES,
    MAX_TICK_LABELS,
    FigureLogger,
    accuracy_matrix_figure,
    confusion_matrix_figure,
    figures_due,
    forgetting_curves_figure,
)
from lifelong_kd.loggers.tensorboard import TensorBoardLogger
from lifelong_kd.pipeline import run, seed_everything

FIGURES = ("accuracy_matrix.png", "forgetting_curves.png", "confusion_matrix.png", "per_class_accuracy.png", "representation_drift.png")


def test_default_schedule_draws_short_streams_every_experience_medium_ones_five_times_and_long_ones_at_the_end():
    assert [s for s in range(5) if figures_due(s, 5)] == [0, 1, 2, 3, 4]
    assert [s for s in range(10) if figures_due(s, 10)] == [1, 3, 5, 7, 9]
    assert [s for s in range(20) if figures_due(s, 20)] == [3, 7, 11, 15, 19]
    assert [s for s in range(21) if figures_due(s, 21)] == [20]
    assert [s for s in range(50) if figures_due(s, 50)] == [49]
    assert [s for s in range(50) if figures_due(s, 50, every=10)] == [9, 19, 29, 39, 49]  # progress figures on request


def test_every_k_draws_after_each_kth_experience_and_the_last():
    assert [s for s in range(10) if figures_due(s, 10, every=3)] == [2, 5, 8, 9]
    assert [s for s in range(4) if figures_due(s, 4, every=1)] == [0, 1, 2, 3]
    assert [s for s in range(4) if figures_due(s, 4, every=10)] == [3]


def _matrix(n: int) -> list[list[float]]:
    return [[0.5 + 0.4 * ((i + j) % 3) / 2 for j in range(n)] for i in range(n)]


def _report(step: int, n: int) -> EvalReport:
    matrix = _matrix(n)
    return EvalReport(step=step, accuracy_matrix=tuple(tuple(row) for row in matrix[: step + 1]), metrics={"average_accuracy": 0.7})


def test_figure_logger_writes_only_when_due(tmp_path):
    logger = FigureLogger(tmp_path, every=2)
    logger.log_config({})
    drawn = []
    for step in range(5):
        before = (tmp_path / "accuracy_matrix.png").read_bytes() if (tmp_path / "accuracy_matrix.png").exists() else None
        logger.log_report(_report(step, 5))
        after = (tmp_path / "accuracy_matrix.png").read_bytes() if (tmp_path / "accuracy_matrix.png").exists() else None
        drawn.append(after is not None and after != before)
    assert drawn == [False, True, False, True, True]


def test_large_heatmaps_are_unannotated_bounded_and_sparsely_labelled():
    small = accuracy_matrix_figure(_matrix(10))
    assert len(small.axes[0].texts) == 55  # every trained cell of a 10 x 10 matrix carries its value
    large = accuracy_matrix_figure(_matrix(50))
    width, height = large.get_size_inches()
    assert not large.axes[0].texts and width <= MAX_HEATMAP_INCHES[0] and height <= MAX_HEATMAP_INCHES[1]
    assert len(large.axes[0].get_xticks()) <= MAX_TICK_LABELS and len(large.axes[0].get_yticks()) <= MAX_TICK_LABELS
    units = 500  # permuted-MNIST, task scenario, 50 experiences: 50 heads x 10 outputs
    confusion = confusion_matrix_figure([[1 if a == b else 0 for b in range(units)] for a in range(units)], [str(k) for k in range(units)], 49)
    assert tuple(confusion.get_size_inches()) <= MAX_HEATMAP_INCHES and not confusion.axes[0].texts


def test_forgetting_curves_of_a_long_stream_name_only_the_average_in_the_legend():
    figure = forgetting_curves_figure(_matrix(30))
    assert len(figure.axes[0].get_lines()) == 31  # every experience is still drawn
    assert [text.get_text() for text in figure.axes[0].get_legend().get_texts()] == ["average"]


class _Stop(Exception):
    pass


class _StopAfter:
    """The last logger: interrupts the run once experience ``step`` is saved and logged (as a SIGINT would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_config(self, config, first_step: int = 0) -> None:  # noqa: ANN001
        pass

    def log_report(self, report: EvalReport) -> None:
        if report.step == self.step:
            raise _Stop

    def close(self) -> None:
        pass


def _run(out: Path, resume: bool = False, stop: int | None = None) -> None:
    stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=30))
    seed_everything(0)
    model = build_model("mlp:8", stream.input_shape, stream.n_heads, stream.n_outputs)
    loggers = [FigureLogger(out, every=2), TensorBoardLogger(out, figures_every=2)] + ([_StopAfter(stop)] if stop is not None else [])
    config = TrainConfig(epochs=1, batch_size=32, progress=False)
    run(stream, model, LwF(), Evaluator(), loggers, config, out, resume=resume, record={"benchmark": "split-digits", "strategy": "lwf", "seed": 0})


def _image_steps(out: Path) -> dict[str, list[int]]:
    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Images(tag)] for tag in accumulator.Tags()["images"]}


def test_interrupted_and_resumed_run_ends_with_the_figures_of_an_uninterrupted_one(tmp_path):
    _run(tmp_path / "whole")
    with pytest.raises(_Stop):
        _run(tmp_path / "resumed", stop=1)  # after a due step: the resumed run redraws it once
    assert (tmp_path / "resumed" / "accuracy_matrix.png").is_file()
    assert not (tmp_path / "resumed" / "confusion_matrix.png").exists()  # instrument figures: after the last experience
    _run(tmp_path / "resumed", resume=True)
    for name in FIGURES:
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name
    steps = _image_steps(tmp_path / "whole")
    assert steps["accuracy_matrix"] == [1, 3, 4]
    assert steps["confusion_matrix"] == steps["representation_drift"] == [4]
    assert _image_steps(tmp_path / "resumed") == steps


def test_figures_every_on_the_command_line(tmp_path):
    out = tmp_path / "run"
    common = ["run", "--train-size", "40", "--test-size", "20", "--epochs", "1", "--model", "mlp:8", "--shifts", "none", "--quiet"]
    assert main([*common, "--figures-every", "3", "--out", str(out)]) == 0
    assert _image_steps(out)["accuracy_matrix"] == [2, 4]
    assert main([*common, "--figures-every", "0", "--out", str(tmp_path / "bad")]) == 2
