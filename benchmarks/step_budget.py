"""Where one training step of the speed protocol goes: the matmul floor, a bare PyTorch step, and its parts.

Issue 18 asks our float32 loop for 90% of the float32 matmul floor and the bfloat16 loop for 70% of
the bfloat16 one (``benchmarks/speed_vs_avalanche.py``: permuted-MNIST, MLP 784-1000-1000-10, SGD
lr 0.01 momentum 0.9, batch 128, LwF T = 2 against cached teacher logits). The floor counts the
matmuls alone; a step must also add biases, apply ReLU, compute the loss and step the optimiser.
This script measures, on one batch held in memory, in one process, side by side:

* ``floor``: the matmuls of a forward and backward pass (``speed_vs_avalanche.matmul_floor``, the
  same function the speed protocol divides by);
* ``model``: our model's forward, the LwF loss (cross-entropy + KL to cached teacher logits) and
  the backward pass, in plain PyTorch (no loop, no data pipeline, no optimiser);
* ``optimizer``: torch's fused SGD-momentum step over the model's parameters, alone;
* ``bare step``: ``model`` + ``zero_grad`` + ``optimizer``: what a hand-written step costs.

For ``bf16`` the model runs under ``torch.autocast(bfloat16)`` (our ``--precision bf16``); the
floor is then the bfloat16 matmuls. Each figure is the median of ``--rounds`` rounds of
``--steps`` steps, the variants interleaved, so a change of machine load hits all of them.

The ratios printed are the ceiling a loop can reach against the floor with PyTorch's own step
(``floor / bare step``) and the share of the bare step that is not matmul work. One JSON line
goes to ``benchmarks/output/step_budget.jsonl``. Run on a quiet machine::

    python benchmarks/step_budget.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed_vs_avalanche import ALPHA, BATCH, HIDDEN, LR, MOMENTUM, TEMPERATURE, matmul_floor  # noqa: E402

from lifelong_kd.models import build_model  # noqa: E402

OUTPUT = Path(__file__).resolve().parent / "output" / "step_budget.jsonl"


def lwf_loss(logits: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus alpha x KL(teacher || student) at temperature T (no T^2): the speed protocol's loss."""
    log_student = F.log_softmax(logits.float() / TEMPERATURE, dim=1)
    distill = F.kl_div(log_student, F.log_softmax(teacher / TEMPERATURE, dim=1), log_target=True, reduction="batchmean")
    return F.cross_entropy(logits.float(), target) + ALPHA * distill


def timed(function: Any, steps: int) -> float:
    """Seconds per call of ``function`` over ``steps`` calls."""
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps


def parts(precision: str, seed: int = 0) -> dict[str, Any]:
    """The step's parts for one precision, as closures over one model, batch and optimiser."""
    torch.manual_seed(seed)
    model = build_model("mlp:" + ",".join(map(str, HIDDEN)), (1, 28, 28), 1, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, fused=True)
    x = torch.randn(BATCH, 1, 28, 28)
    target = torch.randint(0, 10, (BATCH,))
    teacher = torch.randn(BATCH, 10)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

    def model_step() -> None:
        with autocast:
            logits = model(x)
        lwf_loss(logits, target, teacher).backward()

    def optimizer_step() -> None:
        optimizer.step()

    def bare_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model_step()
        optimizer.step()

    model_step()  # gradients exist for the optimiser-alone timing, and the momentum buffers after this
    optimizer.step()
    return {"model": model_step, "optimizer": optimizer_step, "bare step": bare_step}


def measure(rounds: int, steps: int) -> dict[str, Any]:
    """Medians over interleaved rounds of each part's seconds per step, per precision, and the floors."""
    floors = {"fp32": matmul_floor(dtype=torch.float32), "bf16": matmul_floor(dtype=torch.bfloat16)}
    closures = {precision: parts(precision) for precision in ("fp32", "bf16")}
    for functions in closures.values():  # warm-up: allocator, oneDNN primitives
        for function in functions.values():
            timed(function, 20)
    seconds: dict[str, dict[str, list[float]]] = {p: {name: [] for name in functions} for p, functions in closures.items()}
    for _ in range(rounds):
        for precision, functions in closures.items():
            for name, function in functions.items():
                seconds[precision][name].append(timed(function, steps))
    result: dict[str, Any] = {}
    for precision, by_part in seconds.items():
        medians = {name: statistics.median(values) for name, values in by_part.items()}
        floor = floors[precision]["train_seconds_per_sample"] * BATCH
        result[precision] = {
            "floor_ms": 1e3 * floor,
            **{f"{name.replace(' ', '_')}_ms": 1e3 * value for name, value in medians.items()},
            "bare_step_fraction_of_floor": floor / medians["bare step"],
            "model_fraction_of_floor": floor / medians["model"],
            "optimizer_share_of_bare_step": medians["optimizer"] / medians["bare step"],
            "not_matmul_share_of_bare_step": 1 - floor / medians["bare step"],
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--steps", type=int, default=50, help="steps per round and part (default 50)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = measure(args.rounds, args.steps)
    load_after = os.getloadavg()
    print(f"MLP 784-{'-'.join(map(str, HIDDEN))}-10, batch {BATCH}, LwF loss, fused SGD momentum; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    print(f"{'precision':<10}{'floor ms':>10}{'model ms':>10}{'optimizer ms':>14}{'bare step ms':>14}{'floor/bare':>12}{'floor/model':>13}")
    for precision, row in result.items():
        print(f"{precision:<10}{row['floor_ms']:>10.2f}{row['model_ms']:>10.2f}{row['optimizer_ms']:>14.2f}{row['bare_step_ms']:>14.2f}"
              f"{row['bare_step_fraction_of_floor']:>12.2f}{row['model_fraction_of_floor']:>13.2f}")
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__, "threads": torch.get_num_threads(),
              "load_before": load_before, "load_after": load_after, "rounds": args.rounds, "steps": args.steps, "result": result}
    OUTPUT.parent.mkdir(exist_ok=True)
    with OUTPUT.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
