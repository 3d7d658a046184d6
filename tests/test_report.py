"""`lifelong-kd report`: the engine column, one unit (percent) for every accuracy-like number, said
in the header, and ``--csv FILE`` with the same columns and units."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lifelong_kd.cli import main
from lifelong_kd.cli.report import UNITS, format_csv, report_rows

QUICK = ["--train-size", "60", "--test-size", "30", "--epochs", "1", "--model", "mlp:8", "--quiet", "--shifts", "none", "--no-tensorboard", "--no-instruments"]


def _hand_made(folder: Path) -> Path:
    """A results.json as an Avalanche-engine run with a reference model and corruptions would write it (fractions and ratios)."""
    folder.mkdir(parents=True)
    document = {
        "config": {"benchmark": "split-mnist", "scenario": "class", "strategy": "lwf", "engine": "avalanche", "seed": 4},
        "metrics": {"average_accuracy": 0.8125, "forgetting": 0.05, "backward_transfer": -0.0375, "forward_transfer": None},
        "finished_experiences": 2,
        "accuracy_matrix": [[0.9, 0.1], [0.85, 0.775]],
        "robustness": {"mean_corrupted_accuracy": 0.7, "relative_robustness": 0.875, "corrupted_forgetting": 0.06},
        "compression": {"ratios": {"parameter_ratio": 4.0, "flops_ratio": 3.5, "accuracy_kept": 0.95}},
        "timing": {"train_seconds": 12.34, "eval_seconds": 1.5},
    }
    (folder / "results.json").write_text(json.dumps(document))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("report")
    real = base / "real"
    assert main(["run", *QUICK, "--out", str(real)]) == 0
    return real, _hand_made(base / "hand")


def test_every_accuracy_like_column_is_in_percent_and_ratios_are_factors(runs):
    rows, notes = report_rows([str(path) for path in runs])
    assert notes == []
    real, hand = rows
    assert hand["engine"] == "avalanche" and real["engine"] == "lifelong-kd" and hand["seed"] == 4
    lines = list(csv.DictReader(format_csv(rows).splitlines()))
    shown = lines[1]
    assert float(shown["avg_acc_%"]) == pytest.approx(81.25) and float(shown["forgetting_%"]) == pytest.approx(5.0)
    assert float(shown["bwt_%"]) == pytest.approx(-3.75) and shown["fwt_%"] == ""
    assert float(shown["rel_robustness_%"]) == pytest.approx(87.5) and float(shown["acc_kept_%"]) == pytest.approx(95.0)
    assert float(shown["param_ratio_x"]) == 4.0 and float(shown["flops_ratio_x"]) == 3.5 and float(shown["train_s"]) == 12.34
    results = json.loads((runs[0] / "results.json").read_text())
    assert float(lines[0]["avg_acc_%"]) == pytest.approx(100 * results["metrics"]["average_accuracy"])


def test_the_table_names_the_units_and_the_engine(runs, capsys):
    assert main(["report", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert UNITS in out and "in %" in UNITS
    header = next(line for line in out.splitlines() if line.startswith("| run |"))
    assert "| engine |" in header and "avg_acc_%" in header and "rel_robustness_%" in header and "param_ratio_x" in header
    hand_row = next(line for line in out.splitlines() if line.startswith("| hand |"))
    assert "| avalanche |" in hand_row and "| 81.25 |" in hand_row and "| 87.50 |" in hand_row and "| 95.00 |" in hand_row


def test_csv_file_holds_the_table_unrounded(runs, tmp_path, capsys):
    target = tmp_path / "out" / "report.csv"
    assert main(["report", *map(str, runs), "--csv", str(target)]) == 0
    assert f"CSV written to {target}" in capsys.readouterr().out
    lines = list(csv.DictReader(target.read_text().splitlines()))
    assert [line["run"] for line in lines] == ["real", "hand"]
    assert float(lines[1]["avg_acc_%"]) == 81.25 and lines[1]["engine"] == "avalanche"


def test_csv_to_a_folder_is_a_clear_error(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), "--csv", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--csv {tmp_path} is a folder" in err and "Traceback" not in err
