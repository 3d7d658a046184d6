"""Profile of full runs: where a training run's time goes, and how close it gets to the hardware.

Two workloads, each a real run of our pipeline (LwF, evaluation after every experience):

* ``permuted-mnist``: 10 experiences x 60,000 images, domain scenario, MLP 784-1000-1000-10,
  SGD lr 0.01 momentum 0.9, batch 128, one epoch per experience (the speed suite's model);
* ``split-cifar10``: 5 experiences x 10,000 images of the JPEG copy of CIFAR-10, task scenario,
  ``convnet:32``, SGD lr 0.03 momentum 0.9, batch 64, random crop + flip, one epoch.

Three variants run side by side:

* ``before``: float32, convolutions in PyTorch's default NCHW layout, evaluation in batches of
  1,024 (the library before the fixes this profile led to);
* ``fp32``: float32, channels-last convolutions, evaluation batches sized per model
  (:func:`lifelong_kd.models.inference_batch_size`): the library's defaults;
* ``bf16``: the defaults with ``precision="bf16"`` (bfloat16 autocast).

For every variant the script reports:

* training samples/s of the minibatch loop, evaluation seconds and end-to-end wall time;
* the **LwF-step floor**: samples/s of what one LwF step must compute at least, the student's
  forward + backward + SGD step plus one forward of a frozen teacher copy, on one batch held in
  memory, in a tight loop (no data pipeline, no loss beyond cross-entropy); and the **layers
  floor**: the same work done by the bare matmul/convolution layers alone at the model's shapes
  (forward + backward of each, plus the teacher's forward), i.e. the machine's measured
  matmul/convolution throughput on this model. FLOPs per sample come from
  ``torch.utils.flop_counter.FlopCounterMode``. The first experience has no teacher, so both
  fractions are slightly conservative;
* the loop's share of both floors;
* the phase breakdown from ``torch.profiler`` over the second experience (the one with a
  teacher): data (gather, augmentation, normalisation), forward, loss (cross-entropy plus the
  strategy's distillation term and its teacher-cache lookups), backward, optimiser step,
  teacher cache, evaluation. The loop labels these phases with ``record_function``.

Run from the repository root (idle machine; the variants run side by side in one process)::

    python benchmarks/profile_runs.py --write-results
    python benchmarks/profile_runs.py --quick       # 6,000 (MNIST) or 2,000 (CIFAR) training images per experience
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, OUTPUT, hardware, markdown_table, write_section  # noqa: E402

from lifelong_kd import Evaluator, LwF, StreamOptions, TrainConfig, build_model, build_stream  # noqa: E402
from lifelong_kd.pipeline import run, seed_everything  # noqa: E402
from lifelong_kd.teacher import freeze_copy  # noqa: E402
from lifelong_kd.train import autocast, forward, make_optimizer, train_experience  # noqa: E402

HEADING = "## Profile of full runs"
VARIANTS = {  # name: (precision, channels_last, evaluation batch size or None for per model)
    "before": ("fp32", False, 1024),
    "fp32": ("fp32", True, None),
    "bf16": ("bf16", True, None),
}
PHASES = ("lkd.data", "lkd.forward", "lkd.loss", "lkd.backward", "lkd.optimizer", "lkd.teacher_cache")


@dataclass(frozen=True)
class Workload:
    """One profiled run."""

    benchmark: str
    scenario: str
    model: str
    n_experiences: int
    batch_size: int
    lr: float
    augment: bool
    quick_sizes: tuple[int, int]


WORKLOADS = {
    "permuted-mnist": Workload("permuted-mnist", "domain", "mlp:1000,1000", 10, 128, 0.01, False, (6000, 2000)),
    "split-cifar10": Workload("split-cifar10", "task", "convnet:32", 5, 64, 0.03, True, (2000, 1000)),
}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images per experience (a smoke run)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--data-root", default=os.environ.get("LIFELONG_KD_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true", help=f"rewrite '{HEADING}' in docs/results.md")
    return parser.parse_args()


def make_stream(workload: Workload, args: argparse.Namespace):  # noqa: ANN201
    """The workload's stream (subsampled in quick mode)."""
    train, test = workload.quick_sizes if args.quick else (None, None)
    options = StreamOptions(n_experiences=workload.n_experiences, scenario=workload.scenario,
                            seed=args.seed, train_size=train, test_size=test, data_root=args.data_root)
    return build_stream(workload.benchmark, options)


def make_model(workload: Workload, stream: Any, seed: int, variant: str) -> torch.nn.Module:
    """The workload's model, seeded, in the variant's memory format."""
    seed_everything(seed)
    return build_model(workload.model, stream.input_shape, stream.n_heads, stream.n_outputs, channels_last=VARIANTS[variant][1])


def train_config(workload: Workload, variant: str, seed: int) -> TrainConfig:
    """One epoch per experience with the workload's optimiser settings."""
    precision, _, eval_batch = VARIANTS[variant]
    return TrainConfig(epochs=1, batch_size=workload.batch_size, lr=workload.lr, augment=workload.augment,
                       seed=seed, progress=False, precision=precision, eval_batch_size=eval_batch)


def time_loop(step: Any, batch: int, repeats: int = 30) -> float:
    """Samples/s of ``step()`` (best of three timed blocks after a warm-up)."""
    for _ in range(5):
        step()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        best = min(best, time.perf_counter() - start)
    return repeats * batch / best


def floors(workload: Workload, stream: Any, variant: str, seed: int) -> dict[str, float]:
    """Model-step floor, bare-layer floor and FLOPs per training sample for one variant."""
    precision = VARIANTS[variant][0]
    model = make_model(workload, stream, seed, variant)
    config = train_config(workload, variant, seed)
    optimizer = make_optimizer(model, config)
    experience = stream[0]
    x = experience.transform(experience.train.x[: workload.batch_size])
    y = experience.train.y[: workload.batch_size]
    task = torch.full_like(y, experience.task_id)

    teacher = freeze_copy(model)

    def model_step() -> None:
        with autocast(precision):
            with torch.no_grad():
                teacher(x, task)
            logits = model(x, task)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    counter = FlopCounterMode(display=False)
    with counter:
        model_step()
    with FlopCounterMode(display=False) as teacher_counter, torch.no_grad():
        teacher(x, task)
    flops_per_sample = counter.get_total_flops() / len(y)
    teacher_flops_per_sample = teacher_counter.get_total_flops() / len(y)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    inputs = _layer_inputs(model, layers, x, task)
    copies = [(copy.deepcopy(layer).to(dtype), inp.to(dtype).requires_grad_(True)) for layer, inp in zip(layers, inputs, strict=True)]

    def layers_step() -> None:  # each matmul/conv layer alone at the model's shapes: teacher forward, student fwd+bwd
        for layer, inp in copies:
            with torch.no_grad():
                layer(inp)
            out = layer(inp)
            out.backward(torch.ones_like(out))

    return {
        "model_step_samples_per_second": time_loop(model_step, len(y)),  # LwF step: teacher forward + student step
        "layers_samples_per_second": time_loop(layers_step, len(y)),
        "train_flops_per_sample": flops_per_sample,  # teacher forward + student forward/backward
        "teacher_flops_per_sample": teacher_flops_per_sample,
    }


def _layer_inputs(model: torch.nn.Module, layers: list[torch.nn.Module], x: torch.Tensor, task: torch.Tensor) -> list[torch.Tensor]:
    """The input each matmul/conv layer sees on ``x`` (recorded with forward hooks)."""
    seen: dict[int, torch.Tensor] = {}

    def keeper(index: int):  # noqa: ANN202 - a forward hook; returns None so the output is kept
        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            seen.setdefault(index, args[0].detach().clone())

        return hook

    hooks = [layer.register_forward_hook(keeper(i)) for i, layer in enumerate(layers)]
    with torch.no_grad():
        model(x, task)
    for hook in hooks:
        hook.remove()
    return [seen[i] for i in range(len(layers))]


def phase_profile(workload: Workload, stream: Any, variant: str, seed: int) -> dict[str, float]:
    """Seconds per phase (torch.profiler, CPU totals of the loop's labels) on the second experience."""
    model = make_model(workload, stream, seed, variant)
    config = train_config(workload, variant, seed)
    strategy = LwF(temperature=2.0, alpha=1.0)
    strategy.check_stream(stream)
    evaluator = Evaluator(batch_size=config.eval_batch_size, compression=False)
    with autocast(config.precision):
        strategy.before_experience(model, stream[0])
        train_experience(model, strategy, stream, stream[0], config)
        strategy.after_experience(model, stream[0])
        strategy.before_experience(model, stream[1])
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            train_experience(model, strategy, stream, stream[1], config)
            strategy.after_experience(model, stream[1])
            evaluator.evaluate(model, stream, 1)
            wall = time.perf_counter() - start
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        name = event.name
        if name in PHASES or name.startswith("lkd.evaluate"):
            totals["lkd.evaluate" if name.startswith("lkd.evaluate") else name] += event.cpu_time_total / 1e6
    totals["profiled_wall"] = wall
    return dict(totals)


def measure(workload: Workload, stream: Any, variant: str, seed: int) -> dict[str, Any]:
    """The full run's timing, its floors and its phase profile."""
    model = make_model(workload, stream, seed, variant)
    config = train_config(workload, variant, seed)
    start = time.perf_counter()
    results = run(stream, model, LwF(temperature=2.0, alpha=1.0), Evaluator(batch_size=config.eval_batch_size, compression=False),
                  config=config)
    wall = time.perf_counter() - start
    per = results["timing"]["per_experience"]
    samples, loop = sum(t["samples"] for t in per), sum(t["loop_seconds"] for t in per)
    found = {
        "wall_seconds": wall,
        "train_seconds": sum(t["train_seconds"] for t in per),
        "loop_seconds": loop,
        "eval_seconds": sum(t["eval_seconds"] for t in per),
        "samples": samples,
        "loop_samples_per_second": samples / loop,
        "average_accuracy": results["metrics"]["average_accuracy"],
        "forgetting": results["metrics"]["forgetting"],
    }
    found.update(floors(workload, stream, variant, seed))
    found["fraction_of_model_step"] = found["loop_samples_per_second"] / found["model_step_samples_per_second"]
    found["fraction_of_layers"] = found["loop_samples_per_second"] / found["layers_samples_per_second"]
    first = per[0]["samples"]  # the first experience has no teacher
    flops = samples * found["train_flops_per_sample"] - first * found["teacher_flops_per_sample"]
    found["loop_gflops"] = flops / loop / 1e9
    found["phases"] = phase_profile(workload, stream, variant, seed)
    return found


def tables(record: dict[str, Any]) -> str:
    """Markdown tables: throughput against the floors, and the phase breakdown."""
    rows, phase_rows = [], []
    for name, by_variant in record["workloads"].items():
        for variant, r in by_variant.items():
            rows.append([name, variant, f"{r['wall_seconds']:.1f}", f"{r['loop_seconds']:.1f}", f"{r['eval_seconds']:.1f}",
                         f"{r['loop_samples_per_second']:,.0f}", f"{r['model_step_samples_per_second']:,.0f}",
                         f"{r['layers_samples_per_second']:,.0f}", f"{100 * r['fraction_of_model_step']:.0f}%",
                         f"{100 * r['fraction_of_layers']:.0f}%", f"{r['loop_gflops']:.0f}",
                         f"{100 * r['average_accuracy']:.2f}"])
            phases = r["phases"]
            total = sum(phases.get(p, 0.0) for p in (*PHASES, "lkd.evaluate"))
            phase_rows.append([name, variant, *(f"{100 * phases.get(p, 0.0) / total:.0f}%" for p in (*PHASES, "lkd.evaluate")),
                               f"{total:.1f}"])
    throughput = markdown_table(
        ["workload", "variant", "wall s", "loop s", "eval s", "loop samples/s", "LwF-step floor", "layers floor",
         "of LwF step", "of layers", "loop GFLOP/s", "avg acc %"], rows)
    breakdown = markdown_table(
        ["workload", "variant", "data", "forward", "loss", "backward", "optimizer", "teacher cache", "evaluation", "profiled s"],
        phase_rows)
    return throughput + "\n\nShare of the profiled time of the second experience (training + evaluation), by phase:\n\n" + breakdown


def reading(record: dict[str, Any]) -> str:
    """What changed between the variants, with this run's numbers."""
    lines = []
    for name, by_variant in record["workloads"].items():
        before = by_variant.get("before")
        if before is None:
            continue
        parts = [f"**{name}**: wall {before['wall_seconds']:.0f} s before"]
        for variant in ("fp32", "bf16"):
            if variant in by_variant:
                after = by_variant[variant]
                parts.append(f"{after['wall_seconds']:.0f} s with {variant} defaults "
                             f"({before['wall_seconds'] / after['wall_seconds']:.2f}x; loop "
                             f"{after['loop_samples_per_second'] / before['loop_samples_per_second']:.2f}x, evaluation "
                             f"{before['eval_seconds'] / max(after['eval_seconds'], 1e-9):.2f}x; average accuracy "
                             f"{100 * after['average_accuracy']:.2f}% vs {100 * before['average_accuracy']:.2f}%)")
        lines.append("* " + ", ".join(parts) + ".")
    return "\n".join(lines)


def main() -> None:
    """Run every workload in every variant, print the tables, keep the JSON."""
    args = parse_args()
    variants = args.variants.split(",")
    record: dict[str, Any] = {"hardware": hardware(), "load_before": os.getloadavg(), "quick": args.quick, "workloads": {}}
    for name in args.workloads.split(","):
        workload = WORKLOADS[name]
        stream = make_stream(workload, args)
        record["workloads"][name] = {}
        for variant in variants:
            print(f"{name} {variant}: running (load {os.getloadavg()[0]:.1f})", flush=True)
            record["workloads"][name][variant] = measure(workload, stream, variant, args.seed)
            print(json.dumps(record["workloads"][name][variant], indent=1), flush=True)
    record["load_after"] = os.getloadavg()
    text = tables(record)
    print(text)
    out = OUTPUT / f"profile_runs{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"results in {out}")
    if args.write_results:
        command = "python benchmarks/profile_runs.py " + " ".join(sys.argv[1:])
        notes = Path(__file__).resolve().parent / "notes" / "profile.md"
        body = (f"```\n{command.strip()}\n```\n\n{record['hardware']}; load average {record['load_before'][0]:.1f} before, "
                f"{record['load_after'][0]:.1f} after.\n\n{text}\n\nBefore -> after:\n\n{reading(record)}\n\n"
                + (notes.read_text() if notes.exists() else ""))
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
