"""The program tests/test_distributed.py starts with torchrun (2 gloo processes), and its single-process reference.

``python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py MODE ...``

* ``check OUT``: for LwF and EWC, a real run of the loop (:func:`experiment`) into the run
  folder ``OUT/run-<strategy>`` (the same path in both processes: only rank 0 may open it);
  each process saves ``OUT/<strategy>-rank<R>.pt``: the model's parameters and a hash of the
  strategy's state after every experience, the accuracy row evaluated sharded (summed over
  processes) and unsharded (the whole test sets in this process), and how often its logger
  was called. The test runs :func:`experiment` once more in one process and compares.
* ``check OUT NAME...``: the same for the named strategies only (e.g. the replay-memory
  strategies of :data:`MEMORY_STRATEGIES`, on their class-incremental stream); each record
  also holds a hash of the replay memory alone.
* ``kill N ARGS...``: ``lifelong-kd ARGS`` in which rank 0 SIGKILLs itself at its N-th
  training step (a machine failing mid-run).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lifelong_kd import distributed, pipeline, train
from lifelong_kd.data.benchmarks import StreamOptions, build_stream
from lifelong_kd.evaluation.evaluator import Evaluator, accuracy
from lifelong_kd.models import build_model
from lifelong_kd.strategies import DER, ER, LUCIR, BiC, DERpp, ICaRL
from lifelong_kd.strategies.ewc import EWC
from lifelong_kd.strategies.lwf import LwF

# Tiny split-digits: 60 training samples per experience in minibatches of 25 (25, 25, 10):
# each minibatch splits unevenly over 2 processes (12 + 13 rows), so the per-process loss
# weights matter.
STREAM = StreamOptions(train_size=60, test_size=50)
CONFIG = train.TrainConfig(epochs=2, batch_size=25, lr=0.05, progress=False)
STRATEGIES = {"lwf": lambda: LwF(), "ewc": lambda: EWC(ewc_lambda=10.0, fisher_samples=50)}
# Replay-memory strategies on class-incremental split-digits: 51 training samples per
# experience in minibatches of 25 (25, 25, 1): 12 + 13 rows, then a minibatch of one row, which
# leaves the first process a stand-in row of weight 0. A buffer of 40 is full within the first
# experience, so the reservoir replaces samples and herding shrinks old classes.
MEMORY_STREAM = StreamOptions(scenario="class", train_size=51, test_size=50)
MEMORY_BUFFER = 40
MEMORY_STRATEGIES = {
    "er": lambda: ER(buffer_size=MEMORY_BUFFER),
    "der": lambda: DER(buffer_size=MEMORY_BUFFER),
    "derpp": lambda: DERpp(buffer_size=MEMORY_BUFFER),
    "icarl": lambda: ICaRL(buffer_size=MEMORY_BUFFER),
    "lucir": lambda: LUCIR(buffer_size=MEMORY_BUFFER),
    "bic": lambda: BiC(buffer_size=MEMORY_BUFFER, bias_epochs=20),
}


def state_hash(state: Any) -> str:
    """A hash of a state dict (tensors by dtype, shape and bytes; other values by repr)."""
    digest = hashlib.sha256()

    def add(value: Any) -> None:
        if isinstance(value, Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)
        else:
            digest.update(repr(value).encode())

    add(state)
    return digest.hexdigest()


def recording(cls: type) -> type:
    """``cls`` that records, after every experience, the model's parameters and a hash of its own state."""

    class Recording(cls):
        def after_experience(self, model: torch.nn.Module, experience: Any) -> None:
            super().after_experience(model, experience)
            self.records_ = [*getattr(self, "records_", []), ({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, state_hash(self.state_dict()))]
            memory = getattr(self, "memory_", None)
            if memory is not None:
                self.memories_ = [*getattr(self, "memories_", []), (state_hash(memory.state_dict()), memory.state_dict())]

    Recording.__name__ = cls.__name__
    return Recording


class CallLogger:
    """A logger that counts its calls (only rank 0's may be called)."""

    def __init__(self) -> None:
        self.calls = 0

    def log_config(self, config: Any, first_step: int = 0) -> None:
        self.calls += 1

    def log_report(self, report: Any) -> None:
        self.calls += 1

    def close(self) -> None:
        self.calls += 1


def experiment(name: str, out: Path | None) -> dict[str, Any]:
    """One run of ``name`` on the tiny stream (a memory strategy: on :data:`MEMORY_STREAM`); what the test compares."""
    memory = name in MEMORY_STRATEGIES
    stream = build_stream("split-digits", MEMORY_STREAM if memory else STREAM)
    strategy = (MEMORY_STRATEGIES if memory else STRATEGIES)[name]()
    strategy.__class__ = recording(type(strategy))
    pipeline.seed_everything(CONFIG.seed)
    model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs, head=strategy.model_head)
    logger = CallLogger()
    evaluator = Evaluator(compression=False)
    document = pipeline.run(stream, model, strategy, evaluator, [logger], CONFIG, out)
    return {
        "after_experience": [params for params, _ in strategy.records_],
        "strategy_hashes": [digest for _, digest in strategy.records_],
        "memory_hashes": [digest for digest, _ in getattr(strategy, "memories_", [])],
        "memories": [state for _, state in getattr(strategy, "memories_", [])],
        "accuracy_matrix": document["accuracy_matrix"],
        "mean_loss": [row["mean_loss"] for row in document["timing"]["per_experience"]],
        "logger_calls": logger.calls,
        "model": model,
        "stream": stream,
    }


def check(out: Path, names: list[str] | None = None) -> None:
    """The ``check`` mode (see the module docstring): ``names`` (None: :data:`STRATEGIES`)."""
    for name in names or STRATEGIES:
        with distributed.session("cpu") as placement:  # one group for the checks after the run, too
            result = experiment(name, out / f"run-{name}")
            model, stream = result.pop("model"), result.pop("stream")
            result["sharded_row"] = Evaluator(compression=False).row(model, stream)
            result["local_row"] = [accuracy(model, experience) for experience in stream]
            result["world_size"] = placement.world_size
            torch.save(result, out / f"{name}-rank{placement.rank}.pt")
    distributed.end()


def kill_at_step(nth: int) -> None:
    """Make rank 0 SIGKILL itself at its ``nth`` training step."""
    if os.environ.get("RANK", "0") != "0":
        return
    original, calls = train.train_step, [0]

    def counted(*args: Any, **kwargs: Any) -> float:
        calls[0] += 1
        if calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    train.train_step = counted


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "check":
        check(Path(sys.argv[2]), sys.argv[3:])
    elif mode == "kill":
        kill_at_step(int(sys.argv[2]))
        from lifelong_kd.cli import main

        sys.exit(main(sys.argv[3:]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
