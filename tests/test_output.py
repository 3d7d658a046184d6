"""Output a batch job can read: logging (never configured by the library), progress without a
terminal, bars only on a terminal, SIGTERM handled like Ctrl-C, and `--resume --out DIR` alone.

Processes are real (`python -m lifelong_kd`, or a script using the API); the progress interval is
shortened through `$LIFELONG_KD_PROGRESS_SECONDS` so that a short run logs progress lines.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from lifelong_kd.cli import main
from lifelong_kd.logs import Progress, duration, heartbeat, progress_seconds

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--benchmark", "split-digits", "--train-size", "60", "--test-size", "30", "--model", "mlp:16", "--batch-size", "16", "--shifts", "none"]


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def _command(*arguments: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifelong_kd", *arguments], env=_environment(**extra), capture_output=True, text=True, timeout=600)


# ---------------------------------------------------------------------- command line without a terminal


def test_without_a_terminal_progress_and_one_line_per_experience_are_plain_lines(tmp_path):
    done = _command("run", *QUICK, "--epochs", "4", "--out", str(tmp_path / "run"), LIFELONG_KD_PROGRESS_SECONDS="0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("split-digits (task scenario, 5 experiences), finetune, mlp:16")
    finished = [line for line in lines if line.startswith("experience ") and ": accuracy " in line]
    assert [line.split(":")[0] for line in finished] == [f"experience {i}/5" for i in range(1, 6)]
    assert "forgetting" in finished[-1] and "loss" in finished[-1] and "eval" in finished[-1]
    progress = [line for line in lines if " batches (" in line]
    assert progress and all("samples/s" in line and "ETA" in line for line in progress)
    # the first evaluation (it also times the model for the compression ratios) outlasts a 0.05 s heartbeat
    assert any(line.startswith("evaluating model after experience 1/5: running for") for line in lines)
    assert "accuracy matrix (%):" in done.stdout
    assert done.stderr == ""  # no bar, no warning
    assert "\r" not in done.stdout


def test_quiet_keeps_the_results_and_drops_banner_and_progress(tmp_path, capsys):
    assert main(["run", *QUICK, "--epochs", "2", "--quiet", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("accuracy matrix (%):")
    assert "experience 1/5" not in out and "scenario" not in out


def test_verbose_adds_debug_messages_and_main_restores_the_logging_configuration(tmp_path, capsys):
    logger = logging.getLogger("lifelong_kd")
    before = (logger.level, logger.propagate, list(logger.handlers))
    assert main(["run", *QUICK, "--epochs", "1", "-v", "--out", str(tmp_path / "run")]) == 0
    assert '"strategy_options": {}' in capsys.readouterr().out  # the resolved configuration, at debug level
    assert main(["run", *QUICK, "--epochs", "1", "--out", str(tmp_path / "other")]) == 0
    assert "configuration:" not in capsys.readouterr().out
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


def test_errors_and_notes_go_to_stderr_with_the_command_prefix(tmp_path, capsys):
    assert main(["run", "--benchmark", "no-such-stream", "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("lifelong-kd: error: ") and captured.err.count("\n") == 1


# ---------------------------------------------------------------------- the Python API


API_SCRIPT = """
import logging, sys
from lifelong_kd import Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
if sys.argv[1] == "logging":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=30))
model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs, seed=0)
run(stream, model, Finetune(), config=TrainConfig(epochs=4, batch_size=16, progress=sys.argv[2] == "progress"))
print("handlers:", logging.getLogger("lifelong_kd").handlers, logging.getLogger().handlers if sys.argv[1] != "logging" else [])
"""


def _api(tmp_path: Path, mode: str, progress: str, stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    return subprocess.run([sys.executable, str(script), mode, progress], env=_environment(LIFELONG_KD_PROGRESS_SECONDS="0"),
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=600)


def test_the_library_configures_no_logging_and_writes_no_bar_into_a_file(tmp_path):
    with open(tmp_path / "stderr.txt", "w") as stderr:
        done = _api(tmp_path, "silent", "progress", stderr=stderr)
    assert done.returncode == 0
    assert done.stdout == "handlers: [] []\n"
    assert (tmp_path / "stderr.txt").read_text() == ""


def test_a_script_that_configures_logging_sees_progress_unless_train_config_progress_is_off(tmp_path):
    shown = _api(tmp_path, "logging", "progress")
    assert shown.returncode == 0, shown.stderr
    assert "lifelong_kd.progress: experience 5/5: accuracy" in shown.stdout
    assert "lifelong_kd.progress: experience 1/5: 1/" in shown.stdout and "samples/s" in shown.stdout
    hidden = _api(tmp_path, "logging", "none")
    assert "lifelong_kd.progress: experience 5/5: accuracy" in hidden.stdout  # the line per experience stays
    assert " batches (" not in hidden.stdout


def test_a_bar_is_drawn_only_when_stderr_is_a_terminal(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), "silent", "progress"], env=_environment(), stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        drawn += chunk
    assert process.wait(timeout=600) == 0
    os.close(leader)
    assert b"experience 1/5" in drawn and (b"batch/s" in drawn or b"s/batch" in drawn)


def test_progress_lines_say_batches_done_speed_and_time_left(monkeypatch):
    monkeypatch.setenv("LIFELONG_KD_PROGRESS_SECONDS", "0")
    progress = Progress(400, "experience 2/5", enabled=True, samples_per_unit=128)
    progress.done = 100
    assert progress.line(elapsed=10.0) == "experience 2/5: 100/400 batches (25%), 1,280 samples/s, ETA 30 s"
    assert duration(4.25) == "4.2 s" and duration(185) == "3 min 05 s" and duration(7620) == "2 h 07 min"


def test_a_long_block_logs_a_heartbeat_and_a_short_one_logs_nothing(monkeypatch, caplog):
    monkeypatch.setenv("LIFELONG_KD_PROGRESS_SECONDS", "0.1")
    caplog.set_level(logging.INFO, logger="lifelong_kd.progress")
    with heartbeat("evaluating model after experience 3/5"):
        time.sleep(0.35)
    beats = [record.getMessage() for record in caplog.records]
    assert len(beats) >= 2 and all(message.startswith("evaluating model after experience 3/5: running for ") for message in beats)
    caplog.clear()
    with heartbeat("quick"):
        pass
    assert caplog.records == []


@pytest.mark.parametrize("text", ["soon", "-1", "nan"])
def test_a_bad_progress_interval_is_a_clear_error(monkeypatch, text):
    monkeypatch.setenv("LIFELONG_KD_PROGRESS_SECONDS", text)
    with pytest.raises(ValueError, match="LIFELONG_KD_PROGRESS_SECONDS must be a number of seconds"):
        progress_seconds()


# ---------------------------------------------------------------------- SIGTERM and --resume --out DIR alone


# Long enough per experience (a few seconds) that SIGTERM lands while experience 2 trains.
SLOW = ["run", "--benchmark", "split-digits", "--scenario", "class", "--model", "mlp:64", "--epochs", "150", "--batch-size", "32", "--shifts", "none",
        "--strategy", "lwf", "--temperature", "3", "--seed", "5", "--no-tensorboard", "--quiet"]


def test_sigterm_keeps_finished_experiences_exits_143_and_resume_with_out_alone_ends_with_the_same_numbers(tmp_path):
    folder = tmp_path / "stopped"
    process = subprocess.Popen([sys.executable, "-m", "lifelong_kd", *SLOW, "--out", str(folder)], env=_environment(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (folder / "checkpoint.pt").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in err and f"lifelong-kd run --out {folder} --resume" in err and "Traceback" not in err
    finished = json.loads((folder / "results.json").read_text())["finished_experiences"]
    assert 1 <= finished < 5

    resumed = _command("run", "--out", str(folder), "--resume")  # no other flag: the saved configuration is used
    assert resumed.returncode == 0, resumed.stderr
    whole_run = _command(*SLOW, "--out", str(tmp_path / "whole"))  # same thread settings as the stopped run: same float sums
    assert whole_run.returncode == 0, whole_run.stderr
    whole, continued = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("whole", "stopped"))
    assert continued["accuracy_matrix"] == whole["accuracy_matrix"]
    assert [r["training"] for r in continued["reports"]] == [r["training"] for r in whole["reports"]]
    assert continued["setup"]["members"]["model"]["options"]["temperature"] == 3.0
    assert not (folder / "tensorboard").exists()  # --no-tensorboard kept from the saved configuration


@pytest.fixture(scope="module")
def finished_lwf(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("resume") / "run"
    assert main(["run", *QUICK, "--epochs", "2", "--strategy", "lwf", "--alpha", "0.5", "--lr", "0.05", "--quiet", "--out", str(folder)]) == 0
    return folder


def test_resume_with_out_alone_reloads_the_saved_configuration(finished_lwf, capsys):
    before = json.loads((finished_lwf / "results.json").read_text())
    assert main(["run", "--out", str(finished_lwf), "--resume"]) == 0
    captured = capsys.readouterr()
    assert f"resuming {finished_lwf}: options not given are taken from its saved configuration" in captured.out
    after = json.loads((finished_lwf / "results.json").read_text())
    assert after["accuracy_matrix"] == before["accuracy_matrix"] and after["config"]["lr"] == 0.05


def test_resume_compares_the_flags_given_with_the_saved_configuration(finished_lwf, capsys):
    assert main(["run", "--out", str(finished_lwf), "--resume", "--lr", "0.05", "--alpha", "0.5", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "--out", str(finished_lwf), "--resume", "--lr", "0.1", "--alpha", "2", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "lr: 0.05 in the folder, 0.1 now" in error and "options.alpha: 0.5 in the folder, 2.0 now" in error
    assert main(["run", "--out", str(finished_lwf), "--resume", "--strategy", "ewc", "--quiet"]) == 2
    assert "strategy: 'lwf' in the folder, 'ewc' now" in capsys.readouterr().err


def test_resume_with_out_alone_of_an_empty_folder_says_there_is_nothing_to_resume(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
