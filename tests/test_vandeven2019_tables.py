"""benchmarks/vandeven2019.py and benchmarks/ewc_lambda.py: queue order, variants, tables and the lambda choice, on hand-made records."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ewc_lambda  # noqa: E402
import vandeven2019 as vdv  # noqa: E402


def record(experiment="permuted", scenario="domain", method="lwf", seed=1, accuracy=50.0, iterations=5000, command=None, **extra) -> dict:
    return {"experiment": experiment, "scenario": scenario, "method": method, "seed": seed, "average_accuracy": accuracy,
            "iterations": iterations, "command": command or f"{experiment} {scenario} {method} {seed} {extra}", "wall_seconds": 1.0, "threads": 1, **extra}


def test_issue16_queue_starts_with_permuted_seed_1_domain_then_task_then_class_then_seed_2():
    order = vdv.issue16_order()
    first = [(c.experiment, c.scenario, c.method, c.seed, c.variant) for c in order[:24]]
    expected = [("permuted", s, m, seed, "") for seed in (1, 2) for s in ("domain", "task", "class") for m in ("none", "ewc", "lwf", "joint")]
    assert first == expected
    hypotheses = [c for c in order if c.variant]
    assert hypotheses and order.index(hypotheses[0]) == 25  # after our split setting on the first hypothesis seed
    assert all(vdv.variant_factors(c.variant) for c in hypotheses)
    for cell in hypotheses:  # each variant has our setting on the same seed in the queue or in the main grid
        assert vdv.Cell(cell.experiment, cell.scenario, cell.method, cell.seed) in order
    assert len({c.name(5000) for c in order}) == len(order)  # one run folder per cell


def test_variants_change_only_their_factor():
    class Args:
        quick, train_size, test_size, data_root, validation_split = False, None, None, "/data", 0.0

    ours = vdv.run_config("split", "class", "lwf", 1, 2000, Args())
    for factor, field in (("raw32", "input_format"), ("keep-adam", "keep_optimizer"), ("active-classes", "cross_entropy_classes")):
        changed = vdv.run_config("split", "class", "lwf", 1, 2000, Args(), factor)
        differing = {name for name in ours.record() if ours.record()[name] != changed.record()[name]}
        assert differing == {field}, factor
    convex = vdv.run_config("split", "class", "lwf", 1, 2000, Args(), "convex")
    assert {k for k in ours.strategy_options if ours.strategy_options[k] != convex.strategy_options.get(k)} | (set(convex.strategy_options) - set(ours.strategy_options)) == {"alpha", "weighting"}
    assert vdv.run_config("split", "class", "ewc", 1, 2000, Args(), "convex") == vdv.run_config("split", "class", "ewc", 1, 2000, Args())
    paper = vdv.run_config("split", "class", "lwf", 1, 2000, Args(), "paper")
    assert "--input-format raw32 --keep-optimizer --cross-entropy-classes seen" in vdv.command_line(paper) and "--weighting convex" in vdv.command_line(paper)


def test_bad_cells_and_variants_are_clear_errors():
    with pytest.raises(SystemExit, match="Unknown variant factor"):
        vdv.Cell.parse("split/class/lwf/1/keep-sgd")
    with pytest.raises(SystemExit, match="EXPERIMENT/SCENARIO/METHOD/SEED"):
        vdv.Cell.parse("split/class/lwf")


def test_table_keeps_shortened_runs_apart_and_shows_missing_published_rows():
    runs = [record(accuracy=40.0, iterations=1000), record(accuracy=70.0), record(accuracy=74.0, seed=2)]
    lines = vdv.table(runs).splitlines()
    lwf = [line for line in lines if line.startswith("| permuted-MNIST | lwf |")]
    assert lwf[0].startswith("| permuted-MNIST | lwf | 5000 |") and "72.00 ± 2.83 (n=2)" in lwf[0] and "72.64" in lwf[0]
    assert lwf[1].startswith("| permuted-MNIST | lwf | 1000 (paper 5000) |") and "40.00" in lwf[1] and "72.64" not in lwf[1]
    joint = next(line for line in lines if line.startswith("| permuted-MNIST | joint | 5000 |"))
    assert "97.68" in joint and joint.count("| - |") == 3  # the paper's Offline numbers beside not-yet-run cells


def test_hypothesis_table_compares_with_our_runs_on_the_same_seeds():
    runs = [record(accuracy=40.0), record(accuracy=44.0, seed=2), record(accuracy=90.0, seed=3),
            record(accuracy=60.0, variant="keep-adam"), record(accuracy=50.0, seed=2, variant="keep-adam")]
    row = next(line for line in vdv.hypothesis_table(runs).splitlines() if "keep-adam" in line)
    assert "55.00 ± 7.07 (n=2)" in row and "42.00 ± 2.83 (n=2)" in row and "+13.00" in row
    assert "60.00" not in vdv.table(runs)  # variants stay out of the main table


def test_lambda_is_chosen_by_mean_validation_accuracy_over_seeds():
    runs = [record(method="ewc", ewc_lambda=10.0, accuracy=80.0), record(method="ewc", ewc_lambda=10.0, accuracy=60.0, seed=2),
            record(method="ewc", ewc_lambda=100.0, accuracy=75.0), record(method="ewc", ewc_lambda=100.0, accuracy=74.0, seed=2),
            record(method="ewc", scenario="task", ewc_lambda=1.0, accuracy=90.0)]
    assert ewc_lambda.choose(runs) == {("permuted", "domain"): 100.0, ("permuted", "task"): 1.0}
    assert "| permuted-MNIST | domain | **100** |" in ewc_lambda.table(runs)


def test_a_finished_cell_is_recognised_whatever_data_folder_its_record_shows(tmp_path):
    class Args:
        quick, train_size, test_size, data_root, validation_split = False, None, None, "/work/shared/data", 0.0

    command = vdv.command_line(vdv.run_config("split", "task", "none", 1, 2000, Args()))
    log = tmp_path / "runs.jsonl"
    log.write_text(__import__("json").dumps(record(command=command.replace("../shared/data", "DATA"))) + "\n")
    assert vdv.command_key(command) in vdv.finished_commands(log, quick=False)
    other = vdv.command_line(vdv.run_config("split", "task", "none", 2, 2000, Args()))
    assert vdv.command_key(other) not in vdv.finished_commands(log, quick=False)
