"""`lifelong-kd report`: damaged results files are named; unfinished folders are noted and skipped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lifelong_kd.cli import STRATEGIES, main

QUICK = ["--epochs", "1", "--train-size", "40", "--quiet", "--shifts", "none", "--no-tensorboard"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real finished run folder."""
    folder = tmp_path_factory.mktemp("runs") / "finished"
    assert main(["run", *QUICK, "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A real run interrupted after two of its five experiences (as Ctrl-C would stop it)."""
    folder = tmp_path_factory.mktemp("runs") / "interrupted"
    cls = STRATEGIES["finetune"]
    original = cls.before_experience

    def stop_at_third(self, model, experience):
        if experience.index == 2:
            raise KeyboardInterrupt
        original(self, model, experience)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cls, "before_experience", stop_at_third)
        assert main(["run", *QUICK, "--out", str(folder)]) == 130
    return folder


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "is not a lifelong-kd results file: config, metrics, finished_experiences, accuracy_matrix missing"),
        ("[1, 2]", "is not a lifelong-kd results file: it holds a JSON list, not an object"),
        ('{"config": {', "is damaged (not valid JSON"),
        ('{"config": {}, "metrics": {}, "finished_experiences": "5", "accuracy_matrix": []}', "is not a lifelong-kd results file: finished_experiences missing or of the wrong type"),
    ],
)
def test_a_damaged_results_file_is_named(tmp_path, capsys, finished, content, message):
    (tmp_path / "results.json").write_text(content)
    assert main(["report", str(finished), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'results.json'} {message}" in err and "Traceback" not in err


def test_unfinished_folders_are_noted_on_stderr_and_the_others_reported(tmp_path, capsys, finished, interrupted):
    started = tmp_path / "started"  # a run that has not finished an experience yet
    started.mkdir()
    assert main(["report", str(finished), str(interrupted), str(started)]) == 0
    captured = capsys.readouterr()
    assert "| finished |" in captured.out and "interrupted" not in captured.out and "started" not in captured.out
    assert f"skipped {interrupted}: unfinished (2 of 5 experiences; `lifelong-kd run --resume --out {interrupted}` continues it)" in captured.err
    assert f"skipped {started}: no results.json yet" in captured.err


def test_report_with_only_unfinished_folders_exits_2(capsys, interrupted):
    assert main(["report", str(interrupted)]) == 2
    err = capsys.readouterr().err
    assert "unfinished (2 of 5" in err and "None of the 1 folder(s) given holds a finished run" in err


def test_report_of_a_missing_folder_is_an_error_in_a_real_process(tmp_path, finished):
    done = subprocess.run([sys.executable, "-m", "lifelong_kd", "report", str(finished), str(tmp_path / "typo")], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and f"{tmp_path / 'typo'} does not exist" in done.stderr and "Traceback" not in done.stderr
