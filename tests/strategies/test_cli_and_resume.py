"""Every strategy runs end to end through the CLI, and resumes mid-stream to the same numbers."""

from __future__ import annotations

import io
import json

import pytest
import torch

from lifelong_kd.cli import STRATEGIES, build_strategy, main
from lifelong_kd.train import forward
from tests.strategies.helpers import digits, first_batch, small_model, train_through

FAST_RUN = ["--epochs", "1", "--train-size", "60", "--test-size", "40", "--model", "mlp:32", "--shifts", "none", "--no-tensorboard", "--quiet"]
OPTIONS = {
    "finetune": [],
    "joint": [],
    "lwf": ["--alpha", "0,1,1,2,2", "--warmup-iterations", "2", "--noise", "gaussian", "--noise-level", "0.1", "--feature-weight", "0.5"],
    "multi-teacher": ["--combine", "average", "--temperature", "3"],
    "ewc": ["--ewc-lambda", "10", "--fisher-samples", "30", "--ewc-mode", "online"],
}


def _results(folder) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_these_strategies_are_in_the_cli_map():
    assert set(OPTIONS) <= set(STRATEGIES)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_runs_end_to_end_through_the_cli(tmp_path, name, capsys):
    code = main(["run", "--strategy", name, "--scenario", "class", *FAST_RUN, "--out", str(tmp_path / "run"), *OPTIONS[name]])
    assert code == 0, capsys.readouterr().err
    results = _results(tmp_path / "run")
    assert results["finished_experiences"] == 5
    assert results["config"]["strategy"] == name


def test_bad_option_value_is_a_usage_error(tmp_path, capsys):
    code = main(["run", "--strategy", "lwf", *FAST_RUN, "--out", str(tmp_path / "run"), "--noise", "salt"])
    assert code == 2
    assert "noise must be one of none, gaussian, dropout" in capsys.readouterr().err


def test_list_shows_every_strategy_with_its_scenarios(capsys):
    main(["list"])
    out = capsys.readouterr().out
    for name in STRATEGIES:
        assert f"  {name} " in out
    assert "[class, domain, task]" in out


@pytest.mark.parametrize("name", ["lwf", "multi-teacher", "ewc", "joint"])
def test_resume_mid_stream_ends_with_the_same_numbers(tmp_path, name, monkeypatch):
    learning = ["--epochs", "4", "--batch-size", "16", "--lr", "0.05"]  # enough steps for the numbers to move
    args = ["run", "--strategy", name, "--scenario", "task", *FAST_RUN, *learning, *OPTIONS[name]]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    cls = STRATEGIES[name]
    original = cls.before_experience

    def crash_at_third(self, model, experience):
        if experience.index == 2:
            raise KeyboardInterrupt
        original(self, model, experience)

    monkeypatch.setattr(cls, "before_experience", crash_at_third)
    assert main([*args, "--out", str(tmp_path / "split")]) == 130
    assert _results(tmp_path / "split")["finished_experiences"] == 2
    monkeypatch.setattr(cls, "before_experience", original)
    assert main([*args, "--out", str(tmp_path / "split"), "--resume"]) == 0
    whole, resumed = _results(tmp_path / "whole"), _results(tmp_path / "split")
    assert resumed["finished_experiences"] == 5
    flat = [value for row in resumed["accuracy_matrix"] for value in row]
    assert flat == pytest.approx([value for row in whole["accuracy_matrix"] for value in row], abs=1e-9)
    assert resumed["accuracy_matrix"][-1] != resumed["accuracy_matrix"][1]  # training did change the model


@pytest.mark.parametrize("name", ["lwf", "multi-teacher", "ewc"])
def test_state_dict_survives_a_weights_only_round_trip(name):
    stream = digits("class")
    model = small_model(stream)
    strategy = build_strategy(name, {})
    train_through(model, strategy, stream, last=1)
    buffer = io.BytesIO()
    torch.save(strategy.state_dict(), buffer)
    buffer.seek(0)
    restored = build_strategy(name, {})
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    batch = first_batch(stream, 2)
    for candidate in (strategy, restored):
        candidate.before_experience(model, stream[2])
    with torch.no_grad():
        model.head.weight.add_(0.05 * torch.randn_like(model.head.weight))  # move away from the teacher
    expected = strategy.loss(model, batch, forward(model, batch))
    assert expected.item() > 0
    assert restored.loss(model, batch, forward(model, batch)).item() == pytest.approx(expected.item(), abs=1e-7)
