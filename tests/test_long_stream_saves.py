"""Saving a long stream: each report is encoded once, the files stay what a full encoding writes, TensorBoard scalars go in one event per report."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lifelong_kd import Evaluator, LwF, StreamOptions, TrainConfig, build_model, build_stream, run_folder
from lifelong_kd.evaluation.report import json_safe
from lifelong_kd.loggers.tensorboard import TensorBoardLogger
from lifelong_kd.pipeline import run, seed_everything
from lifelong_kd.run_folder import METRICS, RESULTS, MemberLog, json_line, readable_json, results_document

EXPERIENCES = 5  # split-digits: 5 experiences of 2 classes


def _run(out: Path, loggers: list | None = None) -> dict:
    """A real LwF run on split-digits with the instruments (confusion matrix, per-class accuracy, drift) and a run folder."""
    stream = build_stream("split-digits", StreamOptions(train_size=60, test_size=30))
    seed_everything(0)
    model = build_model("mlp:8", stream.input_shape, stream.n_heads, stream.n_outputs)
    config = TrainConfig(epochs=1, batch_size=32, progress=False)
    return run(stream, model, LwF(), Evaluator(instruments=True, drift_samples=16), loggers or [], config, out, record={"benchmark": "split-digits", "seed": 0})


def _counting_json_lines(monkeypatch) -> list[int]:
    """Count calls of run_folder.json_line (the encoder of a report not encoded before) per save: a spy around the real function."""
    counts: list[int] = []
    calls = [0]
    encode, save = run_folder.json_line, run_folder.RunFolder.save

    def counted_json_line(value):  # noqa: ANN001, ANN202
        calls[0] += 1
        return encode(value)

    def counted_save(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls[0] = 0
        save(self, *args, **kwargs)
        counts.append(calls[0])

    monkeypatch.setattr(run_folder, "json_line", counted_json_line)
    monkeypatch.setattr(run_folder.RunFolder, "save", counted_save)
    return counts


def test_a_save_encodes_no_earlier_report_again(tmp_path, monkeypatch):
    counts = _counting_json_lines(monkeypatch)
    _run(tmp_path / "run")
    assert len(counts) == EXPERIENCES
    assert counts == [counts[0]] * EXPERIENCES  # does not grow with the reports kept (was: every report, twice, at every save)
    assert counts[0] <= 1  # the config line of metrics.jsonl at most


def test_files_equal_a_full_encoding_of_the_returned_document(tmp_path):
    document = _run(tmp_path / "run")
    copied = json.loads(json.dumps(json_safe(document)))  # new dicts: nothing to reuse by identity
    assert (tmp_path / "run" / RESULTS).read_text() == readable_json(copied)
    lines = (tmp_path / "run" / METRICS).read_text().splitlines()
    assert lines[1:] == [json.dumps(json_safe(report)) for report in document["reports"]]
    checkpoint = torch.load(tmp_path / "run" / run_folder.CHECKPOINT, weights_only=True)
    assert [json.loads(text) for text in checkpoint["members"]["model"]["reports"]] == document["reports"]


def test_readable_json_writes_the_given_text_of_a_report_held_by_identity():
    report = {"step": 0, "accuracy_matrix": [[0.5]]}
    equal_copy = dict(report)
    text = readable_json({"reports": [report, equal_copy]}, {id(report): '{"marker": 1}'})
    assert json.loads(text)["reports"] == [{"marker": 1}, report]  # the copy is encoded, the held one reused


def test_results_document_places_the_logs_reports_without_copying_them():
    log = MemberLog()
    for step in range(3):
        log.add({"step": step, "accuracy_matrix": [[0.5] * 3] * (step + 1), "metrics": {"average_accuracy": 0.5}}, {"train_seconds": 1.0})
    document = results_document({"seed": 0}, {"model": log}, "model")
    assert all(placed is kept for placed, kept in zip(document["reports"], log.reports, strict=True))
    assert set(log.encoded()) == {id(report) for report in document["reports"]}
    assert document == json_safe(document)  # still JSON-safe throughout


def test_tensorboard_scalars_of_a_report_are_one_event_and_read_back_as_before(tmp_path):
    logger = TensorBoardLogger(tmp_path, figures=False)
    _run(tmp_path / "run", [logger])
    accumulator = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    document = json.loads((tmp_path / "run" / RESULTS).read_text())
    tags = accumulator.Tags()["scalars"]
    per_class = [tag for tag in tags if tag.startswith("per_class_accuracy/")]
    assert len(per_class) == sum(len(row) for row in document["instruments"]["per_class_accuracy"])
    last = document["reports"][-1]
    for j, row in enumerate(last["instruments"]["per_class_accuracy"]):
        for i, value in enumerate(row):
            events = accumulator.Scalars(f"per_class_accuracy/experience_{j}/class_{i}")
            assert [event.step for event in events] == list(range(EXPERIENCES))
            assert events[-1].value == torch.tensor(value).item()  # float32 as TensorBoard stores it
    accuracy = accumulator.Scalars("accuracy/experience_0")
    assert [event.value for event in accuracy] == [torch.tensor(row[0]).item() for row in document["accuracy_matrix"]]
    steps_per_event = _scalar_events_per_step(tmp_path / "tensorboard")
    assert steps_per_event == {step: 1 for step in range(EXPERIENCES)}  # one event per report holds all its scalars


def _scalar_events_per_step(folder: Path) -> dict[int, int]:
    """Number of events holding scalar values, per step, in the event files of ``folder`` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    counts: dict[int, int] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():  # the events as written (EventFileLoader turns scalars into tensors)
            values = event.summary.value if event.HasField("summary") else []
            if any(value.HasField("simple_value") and not value.tag.startswith("final/") for value in values):  # final/*: hparams' own writer
                counts[event.step] = counts.get(event.step, 0) + 1
    return counts


def test_json_line_is_the_text_the_checkpoint_holds():
    report = {"step": 1, "metrics": {"forgetting": None, "average_accuracy": 0.25}, "row": [0.1, 0.2]}
    log = MemberLog([report], [{}])
    assert log.checkpoint_reports() == [json_line(report)]
