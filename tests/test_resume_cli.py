"""`lifelong-kd run --resume`: equal settings written differently are accepted, real differences are named."""

from __future__ import annotations

import json

from lifelong_kd.cli import main
from tests.conftest import requires_mnist

QUICK = ["--benchmark", "split-digits", "--train-size", "40", "--test-size", "30", "--model", "mlp:8", "--shifts", "none", "--quiet"]


def _first(tmp_path, *extra):
    folder = tmp_path / "run"
    assert main(["run", *QUICK, "--epochs", "2", *extra, "--out", str(folder)]) == 0
    return folder


def test_resume_accepts_a_default_given_explicitly_and_options_that_do_not_change_numbers(tmp_path, capsys):
    folder = tmp_path / "run"
    assert main(["run", *QUICK, "--out", str(folder)]) == 0  # epochs: the default (20 on digits)
    saved = json.loads((folder / "results.json").read_text())["config"]
    assert saved["epochs"] == 20 and saved["model"] == "mlp:8" and saved["n_experiences"] == 5
    again = ["run", *QUICK, "--epochs", "20", "--no-tensorboard", "--eval-batch-size", "7", "--out", str(folder) + "/", "--resume"]
    assert main(again) == 0, capsys.readouterr().err


def test_resume_refusal_names_each_option_that_differs(tmp_path, capsys):
    folder = _first(tmp_path, "--lr", "0.05")
    capsys.readouterr()
    assert main(["run", *QUICK, "--epochs", "3", "--lr", "0.1", "--out", str(folder), "--resume"]) == 2
    error = capsys.readouterr().err
    assert "epochs: 2 in the folder, 3 now" in error and "lr: 0.05 in the folder, 0.1 now" in error
    assert "Traceback" not in error


def test_resume_refuses_another_strategy_option_given_explicitly(tmp_path, capsys):
    folder = _first(tmp_path, "--strategy", "lwf")
    capsys.readouterr()
    assert main(["run", *QUICK, "--epochs", "2", "--strategy", "lwf", "--temperature", "2", "--out", str(folder), "--resume"]) == 0
    assert main(["run", *QUICK, "--epochs", "2", "--strategy", "lwf", "--temperature", "4", "--out", str(folder), "--resume"]) == 2
    assert "setup.members.model.options.temperature: 2.0 in the folder, 4.0 now" in capsys.readouterr().err


def test_auto_model_is_recorded_as_what_ran(tmp_path):
    folder = tmp_path / "run"
    assert main(["run", "--benchmark", "split-digits", "--train-size", "40", "--test-size", "30", "--epochs", "1",
                 "--shifts", "none", "--quiet", "--out", str(folder)]) == 0
    assert json.loads((folder / "results.json").read_text())["config"]["model"] == "mlp:400,400"


@requires_mnist
def test_resume_treats_data_root_spellings_and_the_environment_variable_alike(tmp_path, data_root, monkeypatch, capsys):
    common = ["run", "--benchmark", "split-mnist", "--train-size", "30", "--test-size", "30", "--epochs", "1",
              "--model", "mlp:8", "--shifts", "none", "--quiet", "--out", str(tmp_path / "run")]
    assert main([*common, "--data-root", data_root + "/"]) == 0
    monkeypatch.setenv("LIFELONG_KD_DATA", data_root)
    assert main([*common, "--resume"]) == 0, capsys.readouterr().err
