"""Continual evaluation: the stability-gap metrics on a hand-made curve, then inside real runs (resume, logs, figures)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lifelong_kd import Evaluator, Finetune, LwF, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.evaluation import continual
from lifelong_kd.evaluation.instruments import probe_indices
from tests.helpers import CrashAfter

# Three experiences of 4 iterations each (ends |T_i| = 4, 8, 12), evaluated every 2 iterations.
# Experience 0 dips from 0.9 to 0.3 right after experience 1 starts (a stability gap), then recovers.
ITERATIONS = [2, 4, 6, 8, 10, 12]
ACCURACY = [
    [0.5, None, None],
    [0.9, None, None],
    [0.3, 0.6, None],
    [0.7, 0.9, None],
    [0.6, 0.7, 0.5],
    [0.65, 0.5, 0.95],
]
ENDS = [4, 8, 12]


def test_min_accuracy_averages_each_earlier_experiences_minimum_after_it_was_learned():
    # E0 after n = 4: 0.3, 0.7, 0.6, 0.65 -> 0.3; E1 after n = 8: 0.7, 0.5 -> 0.5; mean 0.4
    assert continual.minimum_accuracies(ITERATIONS, ACCURACY, ENDS) == pytest.approx([0.3, 0.5])
    assert continual.min_accuracy(ITERATIONS, ACCURACY, ENDS) == pytest.approx(0.4)
    # at the end of experience 1 only E0 counts, over n in (4, 8]: min(0.3, 0.7)
    assert continual.min_accuracy(ITERATIONS, ACCURACY, ENDS[:2]) == pytest.approx(0.3)
    assert math.isnan(continual.min_accuracy(ITERATIONS, ACCURACY, ENDS[:1]))  # no earlier experience


def test_worst_case_accuracy_weighs_the_current_experience_by_one_over_k():
    # k = 3 tasks: 0.95 / 3 + (2 / 3) * 0.4
    assert continual.worst_case_accuracy(ITERATIONS, ACCURACY, ENDS) == pytest.approx(0.95 / 3 + 2 / 3 * 0.4)
    # k = 2: A(E_1, f_8) = 0.9; 0.9 / 2 + 0.3 / 2
    assert continual.worst_case_accuracy(ITERATIONS, ACCURACY, ENDS[:2]) == pytest.approx(0.6)
    # k = 1: the first experience's own final accuracy
    assert continual.worst_case_accuracy(ITERATIONS, ACCURACY, ENDS[:1]) == pytest.approx(0.9)


def test_windowed_forgetting_is_the_largest_drop_within_the_window_averaged_over_experiences():
    # w = 3 (pairs 2 iterations apart): E0 0.9 -> 0.3 = 0.6; E1 0.9 -> 0.7 and 0.7 -> 0.5 = 0.2; E2 rises = 0
    assert continual.windowed_forgetting(ITERATIONS, ACCURACY, ENDS, 3) == pytest.approx((0.6 + 0.2 + 0.0) / 3)
    # w = 5 (pairs up to 4 apart): E1 0.9 -> 0.5 = 0.4
    assert continual.windowed_forgetting(ITERATIONS, ACCURACY, ENDS, 5) == pytest.approx((0.6 + 0.4 + 0.0) / 3)
    # w = 2: no two evaluations are less than 2 iterations apart: undefined, not 0
    assert math.isnan(continual.windowed_forgetting(ITERATIONS, ACCURACY, ENDS, 2))
    # at the end of experience 0: E0 only, 0.5 -> 0.9 rises
    assert continual.windowed_forgetting(ITERATIONS, ACCURACY, ENDS[:1], 100) == 0.0


def test_stability_metrics_of_a_curve():
    curve = {"iterations": ITERATIONS, "accuracy": ACCURACY, "ends": ENDS, "eval_every": 2, "probe_samples": 10}
    found = continual.stability_metrics(curve, windows=(3, 5))
    assert found["min_accuracy"] == pytest.approx(0.4) and found["final_accuracy"] == pytest.approx(0.95)
    assert found["windowed_forgetting"] == {"3": pytest.approx(0.8 / 3), "5": pytest.approx(1.0 / 3)}
    assert found["minimum_accuracies"] == pytest.approx([0.3, 0.5]) and found["experiences"] == 3


def test_every_kth_and_the_last_iteration_are_evaluated():
    evaluation = continual.ContinualEvaluation(eval_every=4)
    assert [i for i in range(1, 11) if evaluation.due(i, 10)] == [4, 8, 10]
    with pytest.raises(ValueError, match="eval_every must be a positive number"):
        continual.ContinualEvaluation(eval_every=0)


def test_probe_subsets_are_fixed_seeded_and_differ_between_experiences():
    stream = build_stream("split-digits", StreamOptions(scenario="class"))
    first = [probe_indices(e, 20, seed=3, salt=continual.PROBE_SALT) for e in stream]
    again = [probe_indices(e, 20, seed=3, salt=continual.PROBE_SALT) for e in stream]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], probe_indices(stream[0], 20, seed=4, salt=continual.PROBE_SALT))
    assert all(len(index) == 20 and len(set(index.tolist())) == 20 for index in first)


# --- inside real runs ---------------------------------------------------------------------------

CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False)


def _run(evaluator: Evaluator, strategy=None, **kwargs):
    stream = build_stream("split-digits", StreamOptions(scenario="class", train_size=120))
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    return stream, run(stream, model, strategy or Finetune(), evaluator, config=CONFIG, **kwargs)


def test_continual_evaluation_does_not_change_training():
    _, plain = _run(Evaluator())
    _, watched = _run(Evaluator(eval_every=2, probe_samples=20))
    assert watched["accuracy_matrix"] == plain["accuracy_matrix"]
    assert "stability" not in plain and watched["stability"]["eval_every"] == 2


def test_the_last_point_of_each_experience_on_the_whole_test_sets_is_the_accuracy_matrix_row():
    stream, results = _run(Evaluator(eval_every=5, probe_samples=None))
    curve = results["reports"][-1]["continual"]
    iterations_per_experience = 3 * math.ceil(120 / 32)  # epochs * minibatches
    assert curve["ends"] == [iterations_per_experience * (k + 1) for k in range(len(stream))]
    for k, end in enumerate(curve["ends"]):
        row = curve["accuracy"][curve["iterations"].index(end)]
        assert row[: k + 1] == pytest.approx(results["accuracy_matrix"][k][: k + 1])  # Finetune evaluates the model itself
        assert row[k + 1 :] == [None] * (len(stream) - k - 1)
    for n, k in zip(curve["iterations"], curve["experience"]):
        start = curve["ends"][k - 1] if k else 0
        assert (n - start) % 5 == 0 or n == curve["ends"][k]  # every 5th iteration of the experience, and its last


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()[1:]]


def test_a_resumed_run_ends_with_the_same_curve_metrics_and_one_row_per_iteration_and_experience(tmp_path):
    _, full = _run(Evaluator(eval_every=3, probe_samples=25), LwF(), out=tmp_path / "full")
    stream = build_stream("split-digits", StreamOptions(scenario="class", train_size=120))
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
    with pytest.raises(KeyboardInterrupt):
        run(stream, model, LwF(), Evaluator(eval_every=3, probe_samples=25), loggers=[CrashAfter(1)], config=CONFIG, out=tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["members"]["model"]["evaluator"]["continual"]
    assert {point[1] for point in state["points"]} == {0, 1} and len(state["ends"]) == 2
    fresh = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)
    resumed = run(stream, fresh, LwF(), Evaluator(eval_every=3, probe_samples=25), config=CONFIG, out=tmp_path / "cut", resume=True)
    assert resumed["stability"] == full["stability"]
    untimed = [{k: v for k, v in document["reports"][-1]["continual"].items() if k != "seconds"} for document in (resumed, full)]
    assert untimed[0] == untimed[1]
    rows = [row for row in _rows(tmp_path / "cut") if "iteration" in row]
    keys = [(row["iteration"], row["experience"]) for row in rows]
    assert len(keys) == len(set(keys)) and rows == [row for row in _rows(tmp_path / "full") if "iteration" in row]
    assert [row["step"] for row in _rows(tmp_path / "cut") if "iteration" not in row] == [0, 1, 2, 3, 4]


def test_cli_run_logs_the_curve_to_tensorboard_once_per_iteration_after_a_kill_and_draws_it(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lifelong_kd.cli import main

    out = tmp_path / "run"
    arguments = ["run", "--out", str(out), "--scenario", "class", "--strategy", "lwf", "--epochs", "2", "--train-size", "60",
                 "--shifts", "none", "--quiet", "--eval-every", "2", "--probe-samples", "20"]
    import lifelong_kd.loggers.figures as figures

    original = figures.FigureLogger.log_report
    calls = []

    def crash_after_second(self, report):  # the process dies after experience 1 was saved and drawn
        original(self, report)
        calls.append(report.step)
        if report.step == 1:
            raise KeyboardInterrupt

    figures.FigureLogger.log_report = crash_after_second
    try:
        assert main(arguments) == 130
    finally:
        figures.FigureLogger.log_report = original
    assert main([*arguments, "--resume"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "stability_curve.png").stat().st_size > 1000
    accumulator = EventAccumulator(str(out / "tensorboard" / "continual"), size_guidance={"scalars": 0})
    accumulator.Reload()
    curve = results["reports"][-1]["continual"]
    steps = [event.step for event in accumulator.Scalars("continual/experience_0")]
    assert steps == curve["iterations"]  # one point per evaluated iteration, none twice
    values = [event.value for event in accumulator.Scalars("continual/experience_0")]
    assert values == pytest.approx([row[0] for row in curve["accuracy"]])
    main_run = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    main_run.Reload()
    assert main_run.Scalars("stability/min_accuracy")[-1].value == pytest.approx(results["stability"]["min_accuracy"])
    assert [event.step for event in main_run.Scalars("stability/worst_case_accuracy")] == [0, 1, 2, 3, 4]


def test_bad_eval_every_and_the_avalanche_engine_are_refused_with_a_message(tmp_path, capsys):
    from lifelong_kd.cli import main

    assert main(["run", "--eval-every", "0", "--quiet"]) == 2
    assert "--eval-every must be a positive number of iterations" in capsys.readouterr().err
    pytest.importorskip("avalanche")
    assert main(["run", "--eval-every", "5", "--engine", "avalanche", "--quiet", "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "runs inside our training loop" in error and "Traceback" not in error
    assert not (tmp_path / "run").exists()  # refused before anything was written
