"""LwF on permuted-MNIST, side by side: Avalanche's LwF, Avalanche + our plugin, our trainer.

Protocol (the same for the three runs): Avalanche's ``PermutedMNIST(5, seed)`` read from
``--data-root``, one epoch per experience, MLP 784-1000-1000-10 (our Classifier, same
initial weights), SGD lr 0.01 momentum 0.9 (a fresh optimiser per experience), batch
128, LwF with T = 2, alpha = 1 and no T^2, evaluation on every experience's test set
after each experience (batch 1024).

* (a) ``avalanche.training.supervised.LwF``: Avalanche's own strategy and data pipeline;
* (b) ``Naive`` + :class:`~lifelong_kd.integrations.avalanche.LifelongKDPlugin` (our LwF);
* (c) our trainer (``pipeline.run``) on the same samples, copied once into uint8 tensors
  by ``stream_from_benchmark`` (the copy is timed separately);
* (d) our trainer with ``precision="bf16"`` (bfloat16 autocast: matmuls in bfloat16,
  weights, optimiser and losses in float32);
* (e) Avalanche's ``LwF`` with its ``train``/``eval`` calls wrapped in the same bfloat16
  autocast, so (d) is also compared with Avalanche at equal precision;
* (f) our trainer with ``precision="bf16-master"``: (d)'s numbers, with the training forward
  on bfloat16 weight copies refreshed from the float32 weights after each step
  (``lifelong_kd.train.LowPrecisionWeights``) instead of autocast's casts in every forward.

Our runs step the optimiser in torch's fused kernel (the library's default);
``--no-fused-optimizer`` measures them with torch's default step instead. ``--compile`` trains
them through ``torch.compile``; its compile time stays in their training and wall time.

Also measured: the machine's matmul floor (float32, and bfloat16 for (d)), i.e. the time of the MLP's forward+backward
matmuls on random data (and of the forward alone, for the teacher cache), so the trainer's
throughput can be read as a fraction of what the hardware allows:
``c_train_fraction_of_floor`` = (c)'s training samples/s (teacher cache included) over the
floor of one forward+backward (batch 128) plus one teacher forward (batch 1024) per
sample; ``c_loop_fraction_of_floor`` = (c)'s minibatch loop alone over the forward+backward
floor. Run from the repository root::

    python benchmarks/speed_vs_avalanche.py              # full: 60,000 samples per experience
    python benchmarks/speed_vs_avalanche.py --quick      # 6,000 train / 2,000 test per experience

``speedup_vs_avalanche_lwf_fp32`` is the end-to-end wall time of (a) over (c). The last line,
``speedup_vs_avalanche_lwf: X``, is (a) over the fastest of our trainer's runs (c, d, f) whose final
average accuracy is within 1 point of (a)'s; the line before it names the run. The ``targets``
line checks issue 18's: (c) at >= 90% of the float32 floor and >= 2x (a); the faster bfloat16
run (d or f) at >= 70% of the bfloat16 floor, >= 3x (e); the fastest >= 5x (a).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lifelong_kd.evaluation import metrics
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.models import build_model
from lifelong_kd.pipeline import run, seed_everything
from lifelong_kd.strategies import LwF
from lifelong_kd.train import TrainConfig, autocast

REPO = Path(__file__).resolve().parents[1]
HIDDEN = (1000, 1000)
BATCH, LR, MOMENTUM, TEMPERATURE, ALPHA, EVAL_BATCH = 128, 0.01, 0.9, 2.0, 1.0, 1024
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
OURS = {"c": "fp32", "d": "bf16", "f": "bf16-master"}  # our trainer's runs and their precision
FLOOR_OF = {"fp32": "fp32", "bf16": "bf16", "bf16-master": "bf16"}  # the matmul floor each precision is measured against
NAMES = {"c": "c) lifelong_kd trainer", "d": "d) lifelong_kd trainer, bf16", "f": "f) lifelong_kd trainer, bf16-master"}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6,000 train / 2,000 test samples per experience")
    parser.add_argument("--data-root", default=os.environ.get("LIFELONG_KD_DATA", str(REPO.parent / "shared" / "data")))
    parser.add_argument("--experiences", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--runs", default="abcdef", help="which of a, b, c, d, e, f to run (default all)")
    parser.add_argument("--compile", action="store_true",
                        help="our runs (c, d, f) train through torch.compile (TrainConfig.compile); the compile time stays in their training time and is printed")
    parser.add_argument("--fused-optimizer", action=argparse.BooleanOptionalAction, default=True,
                        help="our runs step in torch's fused kernel (default, the library's default); --no-fused-optimizer: torch's default step")
    parser.add_argument("--out", default=None, help="JSON results (default benchmarks/output/speed_vs_avalanche[_quick].json)")
    parser.add_argument("--write-results", action="store_true", help="rewrite the 'Speed vs Avalanche' section of docs/results.md")
    return parser.parse_args()


def load_benchmark(args: argparse.Namespace) -> Any:
    """Avalanche's PermutedMNIST, subsampled with Avalanche's own ``subset`` in quick mode."""
    from avalanche.benchmarks import dataset_benchmark
    from avalanche.benchmarks.classic import PermutedMNIST

    benchmark = PermutedMNIST(args.experiences, seed=args.seed, dataset_root=args.data_root)
    if not args.quick:
        return benchmark
    generator = torch.Generator().manual_seed(args.seed)

    def sample(dataset: Any, size: int) -> Any:  # Avalanche stores samples sorted by class: draw at random
        return dataset.subset(torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist())

    train = [sample(e.dataset, 6000) for e in benchmark.train_stream]
    test = [sample(e.dataset, 2000) for e in benchmark.test_stream]
    return dataset_benchmark(train, test)


def initial_model(seed: int) -> nn.Module:
    """The MLP 784-1000-1000-10 every run starts from."""
    torch.manual_seed(seed)
    return build_model("mlp:" + ",".join(map(str, HIDDEN)), (1, 28, 28), 1, 10)


def summary(name: str, matrix: list[list[float]], train: float, evaluation: float, wall: float, samples: int) -> dict[str, Any]:
    """One row of the results table."""
    values = metrics.summarize(matrix)
    return {
        "run": name, "train_seconds": train, "eval_seconds": evaluation, "wall_seconds": wall,
        "samples": samples, "samples_per_second": samples / train,
        "average_accuracy": values["average_accuracy"], "forgetting": values["forgetting"], "accuracy_matrix": matrix,
    }


def avalanche_row(results: dict[str, Any], n: int) -> list[float]:
    """Accuracy on every test experience from Avalanche's metric dictionary."""
    row = []
    for j in range(n):
        key = next(k for k in results if k.startswith("Top1_Acc_Exp/eval_phase/test_stream/") and k.endswith(f"Exp{j:03d}"))
        row.append(float(results[key]))
    return row


def run_avalanche(name: str, benchmark: Any, model: nn.Module, ours: bool, seed: int, precision: str = "fp32") -> dict[str, Any]:
    """(a, e) Avalanche's LwF or (b) Naive + our plugin; timed train and eval phases."""
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import LwF as AvalancheLwF
    from avalanche.training.supervised import Naive

    from lifelong_kd.integrations.avalanche import LifelongKDPlugin

    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    common = {"model": model, "optimizer": sgd(model), "criterion": nn.CrossEntropyLoss(), "train_mb_size": BATCH,
              "train_epochs": 1, "eval_mb_size": EVAL_BATCH, "evaluator": evaluator}
    if ours:
        plugin = LifelongKDPlugin(LwF(temperature=TEMPERATURE, alpha=ALPHA, scale_t2=False), materialize=False)
        template = Naive(**common, plugins=[plugin])
    else:
        template = AvalancheLwF(**common, alpha=ALPHA, temperature=TEMPERATURE)
    train = evaluation = 0.0
    matrix, samples = [], 0
    wall = time.perf_counter()
    for experience in benchmark.train_stream:
        seed_everything(seed, experience.current_experience)
        template.optimizer = sgd(model)
        start = time.perf_counter()
        with autocast(precision):
            template.train(experience)
        train += time.perf_counter() - start
        samples += len(experience.dataset)
        start = time.perf_counter()
        with autocast(precision):
            results = template.eval(benchmark.test_stream)
        evaluation += time.perf_counter() - start
        matrix.append(avalanche_row(results, len(benchmark.test_stream)))
        print(f"  {name}: experience {experience.current_experience} done, row {[round(100 * a, 1) for a in matrix[-1]]}", flush=True)
    return summary(name, matrix, train, evaluation, time.perf_counter() - wall, samples)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """SGD lr 0.01 momentum 0.9 over the model's parameters."""
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def run_ours(name: str, benchmark: Any, model: nn.Module, seed: int, precision: str, fused: bool = True, compiled: bool = False) -> tuple[dict[str, Any], float]:
    """(c, d, f) our trainer on the same samples; returns the row and the copy time."""
    from lifelong_kd.integrations.avalanche import stream_from_benchmark

    start = time.perf_counter()
    stream = stream_from_benchmark(benchmark, "permuted-mnist", "domain", MNIST_MEAN, MNIST_STD)
    copy_seconds = time.perf_counter() - start
    config = TrainConfig(epochs=1, batch_size=BATCH, lr=LR, momentum=MOMENTUM, seed=seed, eval_batch_size=EVAL_BATCH, progress=False,
                         precision=precision, fused_optimizer=fused, compile=compiled)
    strategy = LwF(temperature=TEMPERATURE, alpha=ALPHA, scale_t2=False)
    wall = time.perf_counter()
    results = run(stream, model, strategy, Evaluator(batch_size=EVAL_BATCH, compression=False), config=config)
    wall = time.perf_counter() - wall
    timing = results["timing"]
    row = summary(name, results["accuracy_matrix"], timing["train_seconds"], timing["eval_seconds"], wall,
                  sum(t["samples"] for t in timing["per_experience"]))
    row["loop_seconds"] = sum(t["loop_seconds"] for t in timing["per_experience"])
    if compiled:
        row["compile_seconds"] = sum(t.get("compile_seconds", 0.0) for t in timing["per_experience"])
    return row, copy_seconds


def matmul_floor(repeats: int = 60, dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """Seconds per sample of the MLP's matmuls: forward+backward (batch 128), and forward (batch 1024).

    ``dtype`` is the matmuls' element type (float32, or bfloat16 for the autocast run).

    Forward: x W1^T, h1 W2^T, h2 W3^T. Backward: the three weight gradients and the two
    input gradients (none for the input layer). Random data; biases and activations
    (elementwise, memory bound) are left out, so this is a floor on the time.
    """
    dims = [784, *HIDDEN, 10]
    weights = [(torch.randn(o, i) * 0.01).to(dtype) for i, o in zip(dims[:-1], dims[1:], strict=True)]

    def step(x: torch.Tensor, backward: bool) -> None:
        activations = [x]
        for weight in weights:
            activations.append(activations[-1] @ weight.t())
        if backward:
            grad = torch.randn(len(x), dims[-1], dtype=dtype)
            for layer in reversed(range(len(weights))):
                grad.t() @ activations[layer]
                if layer > 0:
                    grad = grad @ weights[layer]

    def seconds_per_sample(batch: int, backward: bool) -> float:
        x = torch.randn(batch, dims[0], dtype=dtype)
        for _ in range(5):
            step(x, backward)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                step(x, backward)
            times.append((time.perf_counter() - start) / (repeats * batch))
        return min(times)

    train, forward = seconds_per_sample(BATCH, True), seconds_per_sample(EVAL_BATCH, False)
    return {"train_seconds_per_sample": train, "forward_seconds_per_sample": forward,
            "train_samples_per_second": 1 / train, "lwf_cached_samples_per_second": 1 / (train + forward)}


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table."""
    lines = ["| run | train s | eval s | wall s | train samples/s | avg acc % | forgetting % |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['train_seconds']:.1f} | {r['eval_seconds']:.1f} | {r['wall_seconds']:.1f} | "
                     f"{r['samples_per_second']:,.0f} | {100 * r['average_accuracy']:.2f} | {100 * r['forgetting']:.2f} |")
    return "\n".join(lines)


def results_section(record: dict[str, Any], command: str) -> str:
    """The body of the "Speed vs Avalanche" section of docs/results.md."""
    machine, found, floors = record["machine"], record["ratios"], record["floors"]
    lines = [
        "Protocol: see `benchmarks/speed_vs_avalanche.py` (permuted-MNIST, 5 experiences, 1 epoch each, MLP "
        "784-1000-1000-10, SGD lr 0.01 momentum 0.9, batch 128, LwF T=2 alpha=1, evaluation on all experiences "
        "after each). (a) Avalanche's `LwF`, (b) Avalanche `Naive` + `LifelongKDPlugin`, (c) our trainer on the same "
        "samples, (d) our trainer with `precision=\"bf16\"` (bfloat16 autocast), (e) Avalanche's `LwF` under the "
        "same bfloat16 autocast, (f) our trainer with `precision=\"bf16-master\"` (bfloat16 weight copies of float32 "
        "masters, (d)'s numbers). Our runs step the optimiser in torch's fused kernel"
        + (" (the default)." if record["protocol"].get("fused_optimizer", True) else " only with the default; this run: torch's default step.")
        + (" They train through `torch.compile` (`--compile`); the compile time is in their training and wall time." if record["protocol"].get("compile") else ""),
        "",
        f"    {command}",
        "",
        f"Machine: {machine['platform']}, {machine['threads']} torch threads, load average before {machine['load_before'][0]:.1f}, "
        f"after {machine['load_after'][0]:.1f}. Matmul floor (forward+backward plus the teacher-cache forward): "
        + ", ".join(f"{name} {floor['lwf_cached_samples_per_second']:,.0f} samples/s" for name, floor in floors.items()) + ".",
        "",
        table(list(record["rows"].values())),
        "",
        *[f"- {key}: {value:.3f}" for key, value in found.items()],
        "",
        *reading(record),
    ]
    return "\n".join(lines)


def reading(record: dict[str, Any]) -> list[str]:
    """The section's reading, with this run's numbers."""
    rows, found = record["rows"], record["ratios"]
    if not {"c_wall_speedup_vs_a", "d_wall_speedup_vs_a", "d_wall_speedup_vs_e"} <= set(found):
        return []
    a, c, d = rows["a"], rows["c"], rows["d"]
    ceiling = a["wall_seconds"] / (c["samples"] / record["floors"]["fp32"]["lwf_cached_samples_per_second"] + c["eval_seconds"])
    matmul_speedup = record["floors"]["bf16"]["train_samples_per_second"] / record["floors"]["fp32"]["train_samples_per_second"]
    return [
        "Reading: in float32 our trainer (c) is "
        f"**{found['c_wall_speedup_vs_a']:.2f}x** faster end to end than Avalanche's LwF (training "
        f"{found['c_train_speedup_vs_a']:.2f}x, evaluation {found['c_eval_speedup_vs_a']:.2f}x) at "
        f"{found['c_accuracy_minus_a_points']:+.2f} points of accuracy, and trains at "
        f"{100 * found['c_train_fraction_of_floor']:.0f}% of the float32 matmul floor. In float32, with one epoch per "
        "experience the cached teacher saves no FLOPs: (c) at 100% of the floor plus its evaluation would be "
        f"{ceiling:.1f}x. With `precision=\"bf16\"` (d) our trainer is "
        f"**{found['d_wall_speedup_vs_a']:.2f}x** faster than Avalanche's LwF at {found['d_accuracy_minus_a_points']:+.2f} "
        f"points, and {found['d_wall_speedup_vs_e']:.2f}x faster than Avalanche's LwF under the same bfloat16 autocast (e), "
        "so the gain is not only the number format: Avalanche's per-sample data pipeline and per-experience "
        "evaluation loop gain less from faster matmuls. (d) reaches "
        f"{100 * found['d_train_fraction_of_floor']:.0f}% of the bfloat16 matmul floor "
        f"({d['samples_per_second'] / record['floors']['fp32']['lwf_cached_samples_per_second']:.2f}x the float32 floor): "
        f"at {matmul_speedup:.1f}x faster matmuls (this run's floors), the float32<->bfloat16 casts of the 1.8M weights and their gradients in every step "
        "(memory bound) and the elementwise work are most of the step (`benchmarks/profile_runs.py`).",
        *master_reading(record),
    ]


def master_reading(record: dict[str, Any]) -> list[str]:
    """The reading of (f), bfloat16 weight copies of float32 masters, next to (d)."""
    rows, found = record["rows"], record["ratios"]
    if "f" not in rows or "d" not in rows or "f_wall_speedup_vs_a" not in found:
        return []
    f, d = rows["f"], rows["d"]
    return [
        "",
        f"With `precision=\"bf16-master\"` (f) our trainer is **{found['f_wall_speedup_vs_a']:.2f}x** faster than Avalanche's "
        f"LwF at {found['f_accuracy_minus_a_points']:+.2f} points"
        + (f" and {found['f_wall_speedup_vs_e']:.2f}x faster than (e)" if "f_wall_speedup_vs_e" in found else "")
        + f"; it trains at {100 * found['f_train_fraction_of_floor']:.0f}% of the bfloat16 floor ((d): "
        f"{100 * found['d_train_fraction_of_floor']:.0f}%), {f['samples_per_second'] / d['samples_per_second']:.2f}x (d)'s "
        f"training speed, at {100 * (f['average_accuracy'] - d['average_accuracy']):+.2f} points from (d).",
    ]


def ratios(rows: dict[str, dict[str, Any]], floors: dict[str, dict[str, float]]) -> dict[str, float]:
    """Speed-ups against (a) (and (d) against (e)), accuracy differences, and our runs' share of the matmul floor."""
    out: dict[str, float] = {}
    a = rows.get("a")
    for key, row in rows.items():
        if a is not None and key != "a":
            out[f"{key}_wall_speedup_vs_a"] = a["wall_seconds"] / row["wall_seconds"]
            out[f"{key}_train_speedup_vs_a"] = a["train_seconds"] / row["train_seconds"]
            out[f"{key}_eval_speedup_vs_a"] = a["eval_seconds"] / max(row["eval_seconds"], 1e-9)
            out[f"{key}_accuracy_minus_a_points"] = 100 * (row["average_accuracy"] - a["average_accuracy"])
    for key in ("d", "f"):
        if key in rows and "e" in rows:
            out[f"{key}_wall_speedup_vs_e"] = rows["e"]["wall_seconds"] / rows[key]["wall_seconds"]
    for key, precision in OURS.items():
        if key in rows:
            row, floor = rows[key], floors[FLOOR_OF[precision]]
            out[f"{key}_train_fraction_of_floor"] = row["samples_per_second"] / floor["lwf_cached_samples_per_second"]
            out[f"{key}_loop_fraction_of_floor"] = (row["samples"] / row["loop_seconds"]) / floor["train_samples_per_second"]
    return out


def best_ours(rows: dict[str, dict[str, Any]], found: dict[str, float]) -> str | None:
    """The fastest of our trainer's runs whose accuracy is within 1 point of (a)'s."""
    equal = [key for key in OURS if f"{key}_wall_speedup_vs_a" in found and abs(found[f"{key}_accuracy_minus_a_points"]) <= 1]
    return max(equal, key=lambda key: found[f"{key}_wall_speedup_vs_a"], default=None)


def targets(found: dict[str, float], best: str | None) -> list[str]:
    """Issue 18's targets, each met or not, for the runs that were measured."""
    lines = []
    if "c_train_fraction_of_floor" in found:
        lines.append(f"target float32 loop >= 90% of its floor: {found['c_train_fraction_of_floor']:.3f} {found['c_train_fraction_of_floor'] >= 0.9}")
    if "c_wall_speedup_vs_a" in found:
        lines.append(f"target float32 >= 2x Avalanche's LwF: {found['c_wall_speedup_vs_a']:.2f} {found['c_wall_speedup_vs_a'] >= 2}")
    low = [key for key in ("d", "f") if f"{key}_train_fraction_of_floor" in found]
    if low:
        key = max(low, key=lambda k: found[f"{k}_train_fraction_of_floor"])
        lines.append(f"target bfloat16 loop >= 70% of its floor ({key}): {found[f'{key}_train_fraction_of_floor']:.3f} {found[f'{key}_train_fraction_of_floor'] >= 0.7}")
    same = [key for key in ("d", "f") if f"{key}_wall_speedup_vs_e" in found]
    if same:
        key = max(same, key=lambda k: found[f"{k}_wall_speedup_vs_e"])
        lines.append(f"target >= 3x Avalanche under the same autocast ({key} vs e): {found[f'{key}_wall_speedup_vs_e']:.2f} {found[f'{key}_wall_speedup_vs_e'] >= 3}")
    if best is not None:
        lines.append(f"target fastest at equal accuracy >= 5x Avalanche's LwF ({best}): {found[f'{best}_wall_speedup_vs_a']:.2f} {found[f'{best}_wall_speedup_vs_a'] >= 5}")
    return lines


def main() -> None:
    """Run the selected comparisons and print the table, ratios and the speed-up line."""
    args = parse_args()
    warnings.filterwarnings("ignore")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus, load {load_before}", flush=True)
    benchmark = load_benchmark(args)
    floors = {"fp32": matmul_floor(), "bf16": matmul_floor(dtype=torch.bfloat16)}
    for name, floor in floors.items():
        print(f"{name} matmul floor: {floor['train_samples_per_second']:,.0f} samples/s fwd+bwd; "
              f"{floor['lwf_cached_samples_per_second']:,.0f} samples/s with the teacher-cache forward", flush=True)
    rows: dict[str, dict[str, Any]] = {}
    avalanche_runs = {"a": ("a) Avalanche LwF", False, "fp32"), "b": ("b) Avalanche + LifelongKDPlugin", True, "fp32"),
                      "e": ("e) Avalanche LwF, bf16 autocast", False, "bf16")}
    copy_seconds = None
    for key in sorted(set(args.runs)):
        print(f"load before ({key}): {os.getloadavg()}", flush=True)
        if key in avalanche_runs:
            name, ours, precision = avalanche_runs[key]
            rows[key] = run_avalanche(name, benchmark, initial_model(args.seed), ours, args.seed, precision)
        elif key in OURS:
            rows[key], copy_seconds = run_ours(NAMES[key], benchmark, initial_model(args.seed), args.seed, OURS[key], args.fused_optimizer, args.compile)
            print(f"  {key}) data copied into tensors once in {copy_seconds:.1f} s (not in the wall time)", flush=True)
            if args.compile:
                print(f"  {key}) torch.compile: {rows[key]['compile_seconds']:.1f} s of compiling steps (in the training and wall time)", flush=True)
    for name in floors:  # the load may have changed: keep the faster floor (a conservative fraction)
        after = matmul_floor(dtype=torch.float32 if name == "fp32" else torch.bfloat16)
        if after["lwf_cached_samples_per_second"] > floors[name]["lwf_cached_samples_per_second"]:
            floors[name] = after
    print(table(list(rows.values())))
    found = ratios(rows, floors)
    for key, value in found.items():
        print(f"{key}: {value:.3f}")
    best = best_ours(rows, found)
    record = {"protocol": vars(args), "machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
              "load_before": load_before, "load_after": os.getloadavg()}, "floors": floors, "copy_seconds": copy_seconds,
              "rows": rows, "ratios": found, "best": best}
    out = Path(args.out or REPO / "benchmarks" / "output" / f"speed_vs_avalanche{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"load average after: {os.getloadavg()}; results in {out}")
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_doc import write_section

        command = "python benchmarks/speed_vs_avalanche.py " + " ".join(sys.argv[1:])
        write_section("## Speed vs Avalanche", results_section(record, command.strip()))
    if "c_wall_speedup_vs_a" in found:
        print(f"speedup_vs_avalanche_lwf_fp32: {found['c_wall_speedup_vs_a']:.2f}")
    for line in targets(found, best):
        print(line)
    if best is not None:
        print(f"fastest at equal accuracy: {rows[best]['run']}")
        print(f"speedup_vs_avalanche_lwf: {found[f'{best}_wall_speedup_vs_a']:.2f}")


if __name__ == "__main__":
    main()
