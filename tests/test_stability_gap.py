"""The stability-gap table script (benchmarks/stability_gap.py): its dip/recovery arithmetic on a
hand-made probe curve, and the results-page table rebuilt from the committed records."""

from __future__ import annotations

import re

import pytest

from tests.test_packaging import RESULTS_MD, load_script, markdown_tables


def test_dip_and_recovery_of_a_hand_made_probe_curve():
    script = load_script("stability_gap")
    # Three experiences, evaluated every 2 iterations; experience t ends at iterations 2, 6, 10.
    continual = {
        "iterations": [2, 4, 6, 8, 10],
        "experience": [0, 1, 1, 2, 2],
        "ends": [2, 6, 10],
        "accuracy": [
            [0.9, None, None],
            [0.5, 0.6, None],  # experience 0 falls from 0.9 to 0.5 inside experience 1 ...
            [0.7, 0.8, None],  # ... and recovers to 0.7 at its end
            [0.6, 0.4, 0.5],  # inside experience 2: 0 falls 0.7 -> 0.6, 1 falls 0.8 -> 0.4
            [0.65, 0.7, 0.9],
        ],
    }
    dips, recovered = script.probe_dips(continual)
    assert dips == pytest.approx([0.4, 0.1, 0.4])
    assert recovered == pytest.approx([0.2, 0.05, 0.3])


def test_results_page_stability_table_rebuilds_from_the_records():
    script = load_script("stability_gap")
    text = RESULTS_MD.read_text()
    start = text.index(script.HEADING)
    following = text.find("\n## ", start + 1)
    section = text[start:] if following < 0 else text[start:following]
    assert re.search(r"`python benchmarks/stability_gap\.py --table-only --write-results`", section)
    records = script.read_jsonl(script.RECORDS)
    assert records, "no records in benchmarks/output/stability_runs.jsonl"
    assert script.table(records, script.STRATEGIES.split(",")) in markdown_tables(section)
