"""On real split-MNIST (task scenario), LwF forgets clearly less than fine-tuning, seed after seed."""

from __future__ import annotations

import inspect

import pytest

from lifelong_kd import Evaluator, Finetune, LwF, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.pipeline import seed_everything
from tests.conftest import SHARED_DATA, requires_mnist

# Short protocol: 500 training samples per experience, 150 Adam steps of 64, MLP 100-100.
# Fine-tuning then forgets 3-6 points on task-IL split-MNIST; LwF (defaults) under 1.
CONFIG = {"iterations": 150, "batch_size": 64, "lr": 1e-3, "optimizer": "adam", "progress": False}
MARGIN = 0.015  # forgetting is a fraction; 1.5 points


def _evaluator() -> Evaluator:
    wanted = {"batch_size": 2048, "shifts": (), "compression": False}
    accepted = inspect.signature(Evaluator).parameters
    return Evaluator(**{k: v for k, v in wanted.items() if k in accepted})


def _forgetting(strategy, seed: int) -> float:
    options = StreamOptions(scenario="task", seed=seed, train_size=500, test_size=500, data_root=str(SHARED_DATA))
    stream = build_stream("split-mnist", options)
    seed_everything(seed)
    model = build_model("mlp:100,100", stream.input_shape, stream.n_heads, stream.n_outputs)
    results = run(stream, model, strategy, _evaluator(), [], TrainConfig(seed=seed, **CONFIG))
    return results["metrics"]["forgetting"]


@pytest.mark.slow
@requires_mnist
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lwf_forgets_clearly_less_than_finetune_on_split_mnist(seed):
    finetune, lwf = _forgetting(Finetune(), seed), _forgetting(LwF(), seed)
    assert lwf < finetune - MARGIN, f"seed {seed}: LwF forgetting {lwf:.4f} vs fine-tuning {finetune:.4f}"
