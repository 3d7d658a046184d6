"""Representation drift on long streams: the features of a bounded number of snapshots are kept."""

from __future__ import annotations

import math

import pytest

from lifelong_kd import StreamOptions, build_model, build_stream
from lifelong_kd.evaluation.evaluator import predictions
from lifelong_kd.evaluation.instruments import DRIFT_SNAPSHOTS, InstrumentTracker
from lifelong_kd.pipeline import seed_everything


def _snapshots(stream, count: int) -> list:
    """Differently initialised models stand for the snapshots after each experience (their CKAs all differ)."""
    models = []
    for seed in range(count):
        seed_everything(seed)
        models.append(build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs).eval())
    return models


def _drift_rows(tracker: InstrumentTracker, stream, models) -> list[dict]:
    found = []
    for step, model in enumerate(models):
        predicted = [predictions(model, experience) for experience in stream]
        found.append(tracker.update(model, stream, step, predicted, batch_size=256)["drift"])
    return found


def test_bounded_drift_keeps_the_first_and_the_most_recent_snapshots_with_the_same_values():
    stream = build_stream("split-digits", StreamOptions(train_size=40, test_size=40))
    models = _snapshots(stream, len(stream))
    bounded, full = InstrumentTracker(drift_samples=100, drift_snapshots=3), InstrumentTracker(drift_samples=100, drift_snapshots=None)
    for step, (kept, every) in enumerate(zip(_drift_rows(bounded, stream, models), _drift_rows(full, stream, models))):
        measured = {0, step - 1, step} if step else {0}  # the first, the previous and the newest snapshot
        last_row, full_row = kept["cka_matrix"][-1], every["cka_matrix"][-1]
        for j in range(step + 1):
            if j in measured:
                assert last_row[j] == full_row[j]  # the same arithmetic, bit for bit
            else:
                assert math.isnan(last_row[j])
        assert (kept["cka_previous"], kept["cka_first"]) == (every["cka_previous"], every["cka_first"])
    kept_features = bounded.state_dict()["features"]  # what the checkpoint holds after the last experience
    assert [f is not None for f in kept_features] == [True, False, False, True, True]
    assert sum(f is not None for f in full.state_dict()["features"]) == len(stream)


def test_short_streams_compare_every_pair_by_default():
    assert DRIFT_SNAPSHOTS >= 10  # the default streams (5 or 10 experiences) keep their full CKA matrix
    stream = build_stream("split-digits", StreamOptions(train_size=40, test_size=40))
    final = _drift_rows(InstrumentTracker(drift_samples=100), stream, _snapshots(stream, len(stream)))[-1]
    assert not any(math.isnan(value) for row in final["cka_matrix"] for value in row)


def test_drift_snapshots_below_two_is_a_clear_error():
    with pytest.raises(ValueError, match="drift_snapshots must be at least 2"):
        InstrumentTracker(drift_snapshots=1)
