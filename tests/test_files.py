"""lifelong_kd.files: atomic writes keep the old file and leave no temporary file when writing fails."""

from __future__ import annotations

import pickle

import pytest
import torch

from lifelong_kd.files import save_torch_atomic, write_atomic


def test_torch_save_goes_straight_to_the_file_and_loads_back(tmp_path):
    state = {"weights": torch.arange(6.0).reshape(2, 3), "step": 3}
    save_torch_atomic(state, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert torch.equal(loaded["weights"], state["weights"]) and loaded["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_a_failing_save_keeps_the_old_file_and_removes_its_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    write_atomic(path, b"old")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_torch_atomic({"not picklable": lambda: None}, path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
