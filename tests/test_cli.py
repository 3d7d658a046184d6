"""The command line: runs, listings, reports, and clear errors with non-zero exits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import lifelong_kd
import lifelong_kd.__main__
from lifelong_kd.cli import main
from tests.conftest import requires_cifar10, requires_mnist

QUICK = ["--epochs", "2", "--train-size", "100", "--quiet", "--shifts", "none", "--no-tensorboard"]


def test_run_prints_the_matrix_and_writes_a_run_folder(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r"), *QUICK]) == 0
    out = capsys.readouterr().out
    assert "accuracy matrix" in out and "average_accuracy" in out
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["config"]["benchmark"] == "split-digits"
    assert (tmp_path / "r" / "metrics.jsonl").read_text().count("\n") == 6  # config + 5 reports


def test_list_names_benchmarks_strategies_and_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("split-digits", "permuted-mnist", "split-cifar10", "finetune", "resnet18"):
        assert name in out


def test_report_shows_runs_side_by_side(tmp_path, capsys):
    for seed in (0, 1):
        main(["run", "--out", str(tmp_path / f"s{seed}"), "--seed", str(seed), *QUICK])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "s0"), str(tmp_path / "s1")]) == 0
    table = capsys.readouterr().out
    assert "| s0 |" in table and "| s1 |" in table and "avg_acc" in table


def test_config_file_sets_flags_and_cli_flags_win(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('scenario = "class"\nepochs = 1\ntrain-size = 60\nseed = 3\nquiet = true\nshifts = "none"\n')
    assert main(["run", "--config", str(config), "--seed", "4", "--out", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert record["scenario"] == "class" and record["train_size"] == 60 and record["seed"] == 4


def test_resume_continues_a_finished_run_folder(tmp_path, capsys):
    out = str(tmp_path / "r")
    main(["run", "--out", out, *QUICK])
    first = json.loads((tmp_path / "r" / "results.json").read_text())["accuracy_matrix"]
    assert main(["run", "--out", out, "--resume", *QUICK]) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["accuracy_matrix"] == first


@pytest.mark.parametrize(
    "args,message",
    [
        (["--benchmark", "split-mnsit"], "choose one of: split-digits"),
        (["--strategy", "lwff"], "Unknown strategy 'lwff'"),
        (["--model", "vgg"], "Unknown model 'vgg'"),
        (["--n-experiences", "3"], "Cannot split 10 classes into 3"),
        (["--lr", "-0.1"], "lr must be a positive number"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--benchmark", "split-mnist", "--data-root", "/nonexistent"], "MNIST not found under /nonexistent"),
        (["--resume"], "--resume needs --out"),
    ],
)
def test_bad_input_exits_2_with_a_message_not_a_traceback(args, message, capsys, tmp_path):
    code = main(["run", *args, "--quiet", "--epochs", "1", "--shifts", "none"] + ([] if "--resume" in args else ["--out", str(tmp_path / "r")]))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_config_file_with_unknown_key_is_an_error(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("epochs = 1\nlearning_rate = 0.1\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err


def test_report_of_a_folder_without_results_is_an_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_python_dash_m_runs_the_command_as_a_process(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "lifelong_kd", "run", "--benchmark", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "Unknown benchmark" in done.stderr and "Traceback" not in done.stderr


def test_version_names_the_package_version():
    done = subprocess.run([sys.executable, "-m", "lifelong_kd", "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"lifelong-kd {lifelong_kd.__version__}"


def test_console_script_entry_point_is_importable():
    from importlib.metadata import entry_points

    (script,) = [point for point in entry_points(group="console_scripts") if point.name == "lifelong-kd"]
    # lifelong_kd.__main__.main sets the OpenMP wait policy before torch loads, then calls cli.main.
    assert script.value == "lifelong_kd.__main__:main" and script.load() is lifelong_kd.__main__.main


def test_import_does_not_pull_in_avalanche():
    code = "import sys, lifelong_kd; print('avalanche' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.slow
@requires_mnist
def test_permuted_mnist_finetune_on_real_mnist(data_root, tmp_path, capsys):
    args = ["run", "--benchmark", "permuted-mnist", "--data-root", data_root, "--n-experiences", "5"]
    assert main([*args, "--epochs", "1", "--strategy", "finetune", "--out", str(tmp_path / "r"), "--quiet"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    matrix = results["accuracy_matrix"]
    assert matrix[0][0] > 0.9 and matrix[-1][-1] > 0.9
    assert results["metrics"]["forgetting"] > 0.0


@pytest.mark.slow
@requires_cifar10
def test_split_cifar10_runs_from_the_jpeg_archive(data_root, tmp_path):
    args = ["run", "--benchmark", "split-cifar10", "--data-root", data_root, "--model", "convnet:16", "--shifts", "none"]
    quick = ["--train-size", "1000", "--test-size", "200", "--epochs", "3", "--batch-size", "64", "--lr", "0.03", "--augment"]
    assert main([*args, *quick, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(results["accuracy_matrix"]) == 5
    assert results["metrics"]["learning_accuracy"] > 0.65  # two classes per task: chance is 0.5


def test_overwrite_is_parsed_and_stored_in_the_run_config():
    from lifelong_kd.cli.arguments import config_from_args, parse_arguments

    assert config_from_args(parse_arguments(["run", "--overwrite"])).overwrite is True
    assert config_from_args(parse_arguments(["run"])).overwrite is False
