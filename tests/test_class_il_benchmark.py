"""benchmarks/class_il.py: the one-factor Seq-MNIST variants (mammoth's pre-2022 iCaRL replay, raw inputs, LwF factors)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import class_il  # noqa: E402

from lifelong_kd.data.benchmarks import StreamOptions, build_stream  # noqa: E402
from lifelong_kd.data.stream import Batch  # noqa: E402
from lifelong_kd.models import build_model  # noqa: E402
from lifelong_kd.strategies.rehearsal import locate  # noqa: E402
from tests.conftest import requires_mnist  # noqa: E402


@requires_mnist
def test_prefix_replay_trains_on_saturated_pixels_only_while_the_memory_keeps_the_real_exemplars(data_root):
    stream = build_stream("split-mnist", StreamOptions(scenario="class", n_experiences=5, train_size=64, test_size=16, data_root=data_root))
    strategy = class_il.prefix_replay_icarl({"buffer_size": 20})
    strategy.check_stream(stream)
    model = build_model("mlp:16", stream.input_shape, stream.n_heads, stream.n_outputs, head=strategy.model_head, seed=0)
    strategy.before_experience(model, stream[0])
    strategy.after_experience(model, stream[0])
    strategy.before_experience(model, stream[1])
    train = stream[1].train
    batch = Batch(stream[1].transform(train.x[:8]), train.y[:8], torch.zeros(8, dtype=torch.long), torch.arange(8), False)
    replayed = strategy.replay_exemplars(batch, locate(batch), stream[1])
    assert replayed is not None and len(replayed.batch.x) > 0
    stored = replayed.stored.x
    assert stored.dtype == torch.uint8 and (stored > 0).any() and ((stored > 0) & (stored < 255)).any()  # real digits in memory
    expected = stream[0].transform((stored == 255).to(torch.uint8))
    assert torch.equal(replayed.batch.x, expected)
    assert not torch.equal(replayed.batch.x, stream[0].transform(stored))


def test_one_factor_jobs_change_only_their_factor():
    args = class_il.parse_args(["--parts", "mnist-gaps,mnist-raw,mnist-init", "--seeds", "1", "--data-root", "/nowhere"])
    jobs = list(class_il.jobs(args))
    parts = {job.part for job in jobs}
    assert parts == {"icarl-prefix", "lwf-seen", "lwf-warmup", "raw-input", "xavier-init"}
    for job in jobs:
        config = class_il.config_for(job, args)
        base = class_il.config_for(class_il.Job("mnist-class", "seq-mnist", "class", job.method, job.buffer, job.seed), args)
        changed = {name for name in vars(config) if getattr(config, name) != getattr(base, name) and name != "out"}
        expected = {"raw-input": {"input_format"}, "lwf-seen": {"cross_entropy_classes"}, "lwf-warmup": {"strategy_options"},
                    "icarl-prefix": set(), "xavier-init": set()}[job.part]  # the last two: changed by the script (execute_variant)
        assert changed == expected, (job, changed)
    warm = next(job for job in jobs if job.part == "lwf-warmup")
    assert class_il.config_for(warm, args).strategy_options["warmup_iterations"] == class_il.WARMUP_STEPS
    assert "--input-format raw" in class_il.command(class_il.config_for(next(j for j in jobs if j.part == "raw-input"), args))


def test_xavier_initialisation_is_mammoths_and_seeded():
    from lifelong_kd.models import build_model

    first = class_il.xavier_initialised(build_model("mlp:100,100", (1, 28, 28), 1, 10, seed=0), seed=3)
    again = class_il.xavier_initialised(build_model("mlp:100,100", (1, 28, 28), 1, 10, seed=5), seed=3)
    linears = [m for m in first.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3
    for layer in linears:
        bound = (6.0 / (layer.in_features + layer.out_features)) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
        assert torch.all(layer.bias == 0)
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)  # the seed decides, not the model's own initialisation
