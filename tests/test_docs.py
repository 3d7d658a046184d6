"""The worked example in docs/adding_a_strategy.md runs as written and its test passes."""

from __future__ import annotations

import re
from pathlib import Path

from lifelong_kd.strategies.finetune import Finetune

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding_a_strategy.md"


def test_adding_a_strategy_example_runs_and_its_test_passes():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    namespace: dict = {"__name__": "doc_example", "Finetune": Finetune}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)  # the strategy file
    exec(compile(blocks[1], str(DOC), "exec"), namespace)  # its test
    namespace["test_l2_anchor_forgets_less_than_finetune_in_the_domain_scenario"]()


def test_every_relative_link_and_image_in_the_docs_exists():
    root = Path(__file__).resolve().parents[1]
    missing = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                missing.append(f"{page.name}: {target}")
    assert not missing, missing
