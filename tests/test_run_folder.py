"""The run folder: never overwritten or mixed, locked while written, clear errors for damaged files."""

from __future__ import annotations

import json

import pytest
import torch

from lifelong_kd import Finetune, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.run_folder import (
    CHECKPOINT,
    METRICS,
    RESULTS,
    ResumeError,
    RunFolderError,
    differences,
    open_run_folder,
    read_results,
)
from tests.helpers import CrashAfter

CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, progress=False)


def _stream():
    return build_stream("split-digits", StreamOptions(scenario="class", train_size=60, test_size=40))


def _run(folder, **kwargs):
    stream = _stream()
    seed_everything(0)
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs)
    return run(stream, model, Finetune(), config=kwargs.pop("config", CONFIG), out=folder, **kwargs)


def test_a_second_run_into_a_finished_folder_is_refused_and_overwrite_replaces_it(tmp_path):
    first = _run(tmp_path)
    with pytest.raises(RunFolderError, match="already holds a run.*--resume.*--overwrite"):
        _run(tmp_path, config=TrainConfig(epochs=1, batch_size=32, lr=0.2, progress=False))
    assert json.loads((tmp_path / RESULTS).read_text())["accuracy_matrix"] == first["accuracy_matrix"]
    second = _run(tmp_path, config=TrainConfig(epochs=1, batch_size=32, lr=0.2, progress=False), overwrite=True)
    assert second["accuracy_matrix"] != first["accuracy_matrix"]
    assert json.loads((tmp_path / RESULTS).read_text())["accuracy_matrix"] == second["accuracy_matrix"]
    rows = (tmp_path / METRICS).read_text().splitlines()
    assert len(rows) == 1 + 5  # config + one row per experience: nothing of the first run is left


def test_a_folder_locked_by_a_writer_is_refused(tmp_path):
    with open_run_folder(tmp_path):
        with pytest.raises(RunFolderError, match="being written by another process"):
            _run(tmp_path)
    _run(tmp_path)  # the lock dies with its holder


def test_resume_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(ResumeError, match="no checkpoint.pt.*no run was started there"):
        _run(tmp_path / "missing", resume=True)
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / METRICS).write_text('{"config": {}}\n')
    with pytest.raises(ResumeError, match="finished no experience.*--overwrite"):
        _run(tmp_path / "started", resume=True)


@pytest.mark.parametrize(
    "content",
    [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint at all"],
    ids=["empty", "truncated", "foreign-bytes"],
)
def test_a_damaged_checkpoint_is_a_clear_error_naming_the_file(tmp_path, content):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, loggers=[CrashAfter(1)])
    (tmp_path / CHECKPOINT).write_bytes(content)
    with pytest.raises(RunFolderError) as error:
        _run(tmp_path, resume=True)
    message = str(error.value)
    assert str(tmp_path / CHECKPOINT) in message and "--overwrite" in message
    assert "weights_only=False" not in message


def test_a_foreign_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({"model": {}}, tmp_path / "run" / CHECKPOINT)
    with pytest.raises(RunFolderError, match="not a lifelong_kd.run/1 checkpoint"):
        _run(tmp_path / "run", resume=True)
    torch.save(torch.nn.Linear(2, 2), tmp_path / "run" / CHECKPOINT)  # a pickled module: unsafe to load
    with pytest.raises(RunFolderError, match="cannot be read"):
        _run(tmp_path / "run", resume=True)


def test_out_at_or_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        _run(tmp_path / "file")
    with pytest.raises(RunFolderError, match="lies under .*file, which is a file"):
        _run(tmp_path / "file" / "run")


def test_resume_rewrites_what_a_kill_left_behind(tmp_path):
    full = _run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", loggers=[CrashAfter(2)])
    cut = tmp_path / "cut"
    # As if killed right after the checkpoint of experience 2: derived files stale, temp files left.
    (cut / RESULTS).unlink()
    lines = (cut / METRICS).read_text().splitlines()
    (cut / METRICS).write_text("\n".join(lines[:2]) + '\n{"step": 2, "accur')
    (cut / ".checkpoint.pt.tmp999").write_bytes(b"half")
    resumed = _run(cut, resume=True)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    steps = [json.loads(line).get("step") for line in (cut / METRICS).read_text().splitlines()]
    assert steps == [None, 0, 1, 2, 3, 4]
    assert not list(cut.rglob(".*.tmp*"))


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_numbers(tmp_path):
    full = _run(tmp_path)
    again = _run(tmp_path, resume=True)
    assert again["accuracy_matrix"] == full["accuracy_matrix"]
    assert again["timing"] == full["timing"]


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunFolderError, match="contradict"):
        _run(tmp_path, resume=True, overwrite=True)


def test_differences_name_each_key_and_both_values():
    saved = {"lr": 0.05, "members": {"model": {"strategy": "lwf"}}, "old": 1}
    current = {"lr": 0.1, "members": {"model": {"strategy": "lwf"}}, "new": 2}
    assert differences(saved, current) == [
        "lr: 0.05 in the folder, 0.1 now",
        "new (only now: 2)",
        "old (only in the folder: 1)",
    ]
    assert differences({"a": [1, 2]}, {"a": (1, 2)}) == []


@pytest.mark.parametrize("content", ["{}", "[1, 2]", '{"config": {}, "accuracy_matri'])
def test_reading_a_damaged_or_foreign_results_file_names_it(tmp_path, content):
    (tmp_path / RESULTS).write_text(content)
    with pytest.raises(RunFolderError, match=str(tmp_path / RESULTS)):
        read_results(tmp_path)


def test_a_signal_arriving_while_the_folder_is_written_is_delivered_after_it():
    import os
    import signal
    import time

    from lifelong_kd import run_folder

    import threading

    seen: list[str] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("handler"))
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # a second thread, as torch's: the kernel may deliver the signal to it
    other.start()
    try:
        with run_folder.signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            seen.append("written")
        seen.append("after")
    finally:
        stop.set()
        other.join()
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["written", "handler", "after"]


def test_tidy_finished_removes_a_killed_writers_temporary_files_unless_the_folder_is_being_written(tmp_path):
    from lifelong_kd.run_folder import RunFolder, tidy_finished

    stale = tmp_path / ".accuracy_matrix.png.tmp3900"  # a worker killed while drawing its final figures
    stale.write_bytes(b"half a png")
    kept = tmp_path / "results.json"
    kept.write_text("{}")
    writer = RunFolder(tmp_path)
    writer._acquire()  # another writer holds the folder: its temporary files are its own
    try:
        tidy_finished(tmp_path)
        assert stale.exists()
    finally:
        writer.release()
    tidy_finished(tmp_path)
    assert not stale.exists() and kept.read_text() == "{}"
