"""The CSV logger: one row per experience (accuracies and headline metrics in percent, the loss and
its terms), the same numbers as results.json, one row per experience after a resume, and the
``--csv`` flag of ``lifelong-kd run`` (kept by ``--resume --out DIR`` alone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lifelong_kd import LwF, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.cli import STRATEGIES, main
from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.loggers.csv import CSVLogger, read_rows
from tests.helpers import CrashAfter
from tests.strategies.helpers import one_thread

QUICK = ["--benchmark", "split-digits", "--train-size", "60", "--test-size", "30", "--model", "mlp:8", "--batch-size", "16", "--shifts", "none", "--quiet", "--no-instruments"]


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def _report(step: int, terms: dict | None = None) -> EvalReport:
    matrix = ((0.9, 0.4, 0.1), (0.8, 0.95, 0.3), (0.7, 0.85, 0.99))[: step + 1]
    training = {"mean_loss": 0.5 + step, "loss_terms": terms or {"cross_entropy": 0.5 + step}}
    return EvalReport(step=step, accuracy_matrix=matrix, metrics={"average_accuracy": 0.8, "forgetting": 0.05 * step}, eval_seconds=0.25, extra={"training": training})


def test_rows_hold_percent_values_and_leave_untrained_experiences_empty(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_config({"strategy": "lwf"})
    logger.log_report(_report(0))
    logger.log_report(_report(1, {"cross_entropy": 1.25, "distillation": 0.25}))
    rows = read_rows(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == ["0", "1"]
    assert float(rows[1]["accuracy_E0_%"]) == pytest.approx(80.0) and float(rows[1]["accuracy_E1_%"]) == pytest.approx(95.0)
    assert rows[0]["accuracy_E1_%"] is None and rows[1]["accuracy_E2_%"] is None  # not trained yet
    assert float(rows[1]["forgetting_%"]) == pytest.approx(5.0) and float(rows[0]["average_accuracy_%"]) == pytest.approx(80.0)
    assert float(rows[1]["loss"]) == 1.5 and float(rows[1]["loss_distillation"]) == 0.25
    assert rows[0]["loss_distillation"] is None  # a term that appears later: a column, empty before
    assert float(rows[0]["eval_seconds"]) == 0.25


def test_a_resumed_logger_keeps_the_rows_before_first_step_and_replaces_the_others(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_config({})
    for step in range(3):
        logger.log_report(_report(step))
    resumed = CSVLogger(tmp_path)
    resumed.log_config({}, first_step=1)
    assert [row["step"] for row in read_rows(tmp_path / "metrics.csv")] == ["0"]
    resumed.log_report(_report(1, {"cross_entropy": 9.0}))
    resumed.log_report(_report(2))
    rows = read_rows(tmp_path / "metrics.csv")
    assert [row["step"] for row in rows] == ["0", "1", "2"] and rows[1]["loss_cross_entropy"] == "9.0"
    fresh = CSVLogger(tmp_path)
    fresh.log_config({})  # a new run in the folder starts an empty file
    assert read_rows(tmp_path / "metrics.csv") == []


def _api_run(folder: Path, loggers: list, resume: bool = False) -> dict:
    stream = build_stream("split-digits", StreamOptions(scenario="task", train_size=60, test_size=30))
    model = build_model("mlp:8", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, progress=False)
    return run(stream, model, LwF(feature_weight=0.1), loggers=[CSVLogger(folder), *loggers], config=config, out=folder, resume=resume)


def _without_times(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "eval_seconds"} for row in rows]


def test_the_rows_equal_results_json_and_survive_an_interruption(tmp_path):
    whole = _api_run(tmp_path / "whole", [])
    rows = read_rows(tmp_path / "whole" / "metrics.csv")
    assert len(rows) == len(whole["reports"]) == 5
    for row, report in zip(rows, whole["reports"]):
        step = report["step"]
        assert [float(row[f"accuracy_E{j}_%"]) for j in range(step + 1)] == pytest.approx([100 * v for v in report["accuracy_matrix"][step][: step + 1]])
        assert float(row["average_accuracy_%"]) == pytest.approx(100 * report["metrics"]["average_accuracy"])
        terms = report["training"]["loss_terms"]
        assert {name: float(row[f"loss_{name}"]) for name in terms} == pytest.approx(terms)
    with pytest.raises(KeyboardInterrupt):
        _api_run(tmp_path / "cut", [CrashAfter(2)])
    _api_run(tmp_path / "cut", [], resume=True)
    assert _without_times(read_rows(tmp_path / "cut" / "metrics.csv")) == _without_times(rows)


def test_run_flag_writes_metrics_csv_and_resume_with_out_alone_keeps_it(tmp_path, capsys):
    folder = tmp_path / "run"
    finetune = STRATEGIES["finetune"]
    original = finetune.before_experience

    def stop_at_third(self, model, experience):
        if experience.index == 2:
            raise KeyboardInterrupt
        original(self, model, experience)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(finetune, "before_experience", stop_at_third)
        assert main(["run", *QUICK, "--csv", "--out", str(folder)]) == 130
    assert [row["step"] for row in read_rows(folder / "metrics.csv")] == ["0", "1"]
    assert main(["run", "--out", str(folder), "--resume"]) == 0
    rows = read_rows(folder / "metrics.csv")
    results = json.loads((folder / "results.json").read_text())
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4"] and results["config"]["csv"] is True
    assert float(rows[-1]["forgetting_%"]) == pytest.approx(100 * results["metrics"]["forgetting"])
    assert main(["run", *QUICK, "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "metrics.csv").exists()  # off by default
