"""The Python API is reproducible: the README's example, run twice in fresh processes, prints the same numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lifelong_kd
from lifelong_kd import build_model
from lifelong_kd.pipeline import seed_everything

REPO = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The README's Python API block, on the embedded split-digits stream (no data set needed)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert '"split-mnist"' in code and "seed=seed" in code, "the README example changed: update this test"
    return code.replace('"split-mnist"', '"split-digits"')


def _run_example(script: Path, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


def test_readme_example_run_twice_in_fresh_processes_prints_identical_numbers(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example())
    first = _run_example(script, tmp_path)
    assert first.returncode == 0, first.stderr
    second = _run_example(script, tmp_path)  # the same folder again: overwrite=True replaces the run
    assert second.returncode == 0, second.stderr
    assert first.stdout == second.stdout
    matrix_line, metrics_line = first.stdout.strip().splitlines()
    assert matrix_line.startswith("[[") and len(metrics_line.split()) == 2
    assert (tmp_path / "runs" / "lwf-split-mnist" / "results.json").is_file()
    assert "\r" not in first.stderr and "it/s" not in first.stderr  # no progress bar without a terminal


def test_build_model_seed_gives_the_weights_the_command_line_starts_from():
    seed_everything(7)  # what `lifelong-kd run --seed 7` did before building the model
    expected = build_model("mlp:16", (1, 8, 8), 2, 3)
    built = build_model("mlp:16", (1, 8, 8), 2, 3, seed=7)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(built.state_dict()[name], tensor), name


def test_build_model_seed_leaves_the_global_generator_untouched():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    first = build_model("convnet:4", (3, 8, 8), 1, 2, seed=1)
    assert torch.equal(torch.random.get_rng_state(), before)
    second = build_model("convnet:4", (3, 8, 8), 1, 2, seed=1)
    other = build_model("convnet:4", (3, 8, 8), 1, 2, seed=2)
    weights = [next(model.parameters()) for model in (first, second, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, True, "0"])
def test_build_model_refuses_a_seed_out_of_range_with_a_clear_message(seed):
    with pytest.raises(ValueError, match="seed must be an integer from 0 to 2147483647"):
        build_model("mlp:4", (1, 8, 8), seed=seed)


def test_seed_everything_is_exported():
    assert lifelong_kd.seed_everything is seed_everything and "seed_everything" in lifelong_kd.__all__


def test_documented_commands_name_one_data_folder_and_no_machine_specific_path():
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "/work/" not in text and "/home/" not in text, f"{page.name} names a machine-specific path"
        roots = {root.strip("`,)\"'") for root in re.findall(r"(?:--data-root[ =]|data_root=|dataset_root=)(\S+)", text)}
        # the convention (relative to the repository root), a fresh folder for --download, or a placeholder in prose
        assert roots <= {"../shared/data", "./data", "DIR"}, f"{page.name}: {sorted(roots)}"
