"""What a run keeps per experience on long streams: earlier reports drop a large confusion matrix."""

from __future__ import annotations

from lifelong_kd.run_folder import KEPT_CONFUSION_CELLS, MemberLog, compact_report


def _report(step: int, units: int) -> dict:
    confusion = [[step + 1 if a == b else 0 for b in range(units)] for a in range(units)]
    return {"step": step, "accuracy_matrix": [[0.5]], "instruments": {"confusion_matrix": confusion, "class_forgetting": 0.1}}


def test_earlier_reports_drop_a_large_confusion_matrix_and_the_newest_keeps_it():
    units = int(KEPT_CONFUSION_CELLS**0.5) + 1
    log = MemberLog()
    for step in range(4):
        log.add(_report(step, units), {"train_seconds": 1.0})
    assert [r["instruments"]["confusion_matrix"] is None for r in log.reports] == [True, True, True, False]
    assert log.reports[-1]["instruments"]["confusion_matrix"][0][0] == 4
    assert all(r["instruments"]["class_forgetting"] == 0.1 for r in log.reports)  # everything else is kept


def test_small_confusion_matrices_stay_in_every_report():
    log = MemberLog()
    for step in range(3):
        log.add(_report(step, 10), {})
    assert [r["instruments"]["confusion_matrix"][0][0] for r in log.reports] == [1, 2, 3]


def test_replacing_the_newest_report_on_resume_keeps_its_matrix_and_compacts_nothing_twice():
    units = int(KEPT_CONFUSION_CELLS**0.5) + 1
    log = MemberLog([compact_report(_report(0, units)), _report(1, units)], [{}, {}])
    log.add(_report(1, units), {})  # a resumed run re-evaluates nothing, but add() may replace the newest step
    assert log.reports[0]["instruments"]["confusion_matrix"] is None and log.reports[1]["instruments"]["confusion_matrix"][0][0] == 2
    original = _report(0, units)
    compact_report(original)
    assert original["instruments"]["confusion_matrix"] is not None  # the live report is not changed


def test_readable_json_is_the_same_value_as_indented_json_with_number_lines_folded():
    import json
    import math

    from lifelong_kd.evaluation.report import json_safe
    from lifelong_kd.run_folder import json_line, readable_json

    document = {
        "matrix": [[1, 2, 3], [4, 5, 6]],
        "row": [0.5, math.nan, math.inf, None, True],
        "pair": (1, 2),
        "empty": [],
        "nested": [[1, [2, -math.inf]], {"a": math.nan, "b": ["x[y", "z"]}],
        "reports": [{"step": 0, "confusion": [[1, 0], [0, 1]], "f": math.nan}, {"step": 1, "confusion": [[2, 0], [0, 2]]}],
        "text": "a\u0000b",
    }
    text = readable_json(document)
    assert json.loads(text) == json.loads(json.dumps(json_safe(document), indent=2))
    assert '"matrix": [\n    [1, 2, 3],\n    [4, 5, 6]\n  ]' in text  # one line per row of numbers
    assert '\n    {"step": 1, "confusion": [[2, 0], [0, 2]]}\n' in text  # one line per report
    assert "NaN" not in text and "Infinity" not in text
    for line in (document["reports"][0], document["reports"][1], {"t": (1, math.inf)}):
        assert json_line(line) == json.dumps(json_safe(line))


def test_json_safe_is_unchanged_by_its_fast_path_for_lists_of_scalars():
    import math

    from lifelong_kd.evaluation.report import json_safe

    value = {"ints": [1, 2, 3], "floats": (0.5, math.nan), "mixed": [1, "a", None, True], "deep": [[math.inf], [[1]]], 3: "key"}
    assert json_safe(value) == {"ints": [1, 2, 3], "floats": [0.5, None], "mixed": [1, "a", None, True], "deep": [[None], [[1]]], "3": "key"}
    rows = [[1, 2], [3, 4]]
    copied = json_safe(rows)
    copied[0].append(5)
    assert rows == [[1, 2], [3, 4]]  # a copy, never the caller's lists


def test_reports_go_to_the_checkpoint_as_json_text_and_come_back_equal():
    import math

    log = MemberLog()
    for step in range(3):
        report = _report(step, 4)
        report["metrics"] = {"forgetting": None, "average_accuracy": 0.1 * (step + 1), "curve": [0.5, math.pi]}
        log.add(report, {"train_seconds": 0.5})
    texts = log.checkpoint_reports()
    assert all(isinstance(text, str) for text in texts) and len(texts) == 3
    assert log.checkpoint_reports() is not texts and log.checkpoint_reports() == texts  # encoded once, returned again
    restored = MemberLog(texts, log.timing)
    assert restored.reports == log.reports and restored.finished == 3
    restored.add(_report(3, 4), {})
    assert MemberLog(restored.checkpoint_reports()).reports == restored.reports  # the text of the re-compacted report is renewed


def test_a_large_confusion_matrix_is_written_as_a_full_encoding_writes_it():
    import json

    from lifelong_kd.run_folder import readable_json, results_document

    units = int(KEPT_CONFUSION_CELLS**0.5) + 1
    log = MemberLog()
    for step in range(3):
        log.add(_report(step, units), {"train_seconds": 1.0})
        document = results_document({"seed": 0}, {"model": log}, "model")
        encoded = log.encoded()
        newest = log.reports[-1]["instruments"]["confusion_matrix"]
        assert encoded[id(newest)] == [json.dumps(row) for row in newest]  # its rows' text, shared by the two places it is written
        assert len([value for value in encoded.values() if isinstance(value, list)]) == 1  # compacted reports' matrices are let go
        assert log.checkpoint_reports() == [json.dumps(report) for report in log.reports]
        copied = json.loads(json.dumps(document))  # new objects: nothing known by identity
        assert readable_json(document, encoded) == readable_json(copied)
        assert f'"confusion_matrix": [\n      {json.dumps(newest[0])},\n' in readable_json(document, encoded)  # one row per line


def test_a_matrix_that_is_not_integer_counts_takes_the_general_path():
    import json
    import math

    units = int(KEPT_CONFUSION_CELLS**0.5) + 1
    report = _report(0, units)
    report["instruments"]["confusion_matrix"][0][0] = math.nan
    log = MemberLog()
    log.add(report, {})
    assert log.checkpoint_reports() == [json.dumps(report)]
    assert not [value for value in log.encoded().values() if isinstance(value, list)]


# ---------------------------------------------------------------------- benchmarks/long_stream.py's measures


def _long_stream():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    return importlib.import_module("long_stream")


def test_phase_peaks_give_each_phase_its_own_high_water_mark():
    import pytest
    import torch

    long_stream = _long_stream()
    meter = long_stream.PhasePeaks()
    if not meter.works:
        pytest.skip("no /proc/self/clear_refs: the per-phase peak needs Linux")
    meter.mark("before")

    def allocate():
        block = torch.ones(200 * 2**20, dtype=torch.uint8)  # 200 MB, touched
        return int(block[-1])

    meter.around("big", allocate)()
    torch.ones(1000).sum()  # a small phase after the big one
    meter.mark("small")
    peaks = meter.take()
    assert peaks["big"] - peaks["before"] > 150 * 2**20  # the allocation shows in its own phase
    assert peaks["big"] - peaks["small"] > 150 * 2**20  # and not in the next one: the peak was reset
    assert meter.take() == {}


def test_pooled_training_ratio_is_the_median_of_the_last_five_over_experiences_3_to_7_over_all_runs():
    long_stream = _long_stream()

    def record(time, early, late):
        rows = [{"train_seconds": 0.0}] * 2 + [{"train_seconds": v} for v in early] + [{"train_seconds": 9.0}] * 3 + [{"train_seconds": v} for v in late]
        return {"time": time, "rows": rows, "train_ratio_median5": 1.0, "peak_rss_ratio_last_over_5th": 1.05, "loggers_share": 0.09}

    result = long_stream.pooled([record("a", [1.0] * 5, [1.2] * 5), record("b", [2.0] * 5, [2.0] * 5)])
    # experiences 3-7: five 1.0 and five 2.0 (median 1.5); last five: five 1.2 and five 2.0 (median 1.6)
    assert result["train_ratio_pooled"] == 1.6 / 1.5
    assert result["runs"] == ["a", "b"] and result["peak_rss_ratio_per_run"] == [1.05, 1.05]
