"""GPU checks and GPU speed in one command: what a machine without CUDA cannot test.

    python benchmarks/device_check.py                    # on a CUDA machine: checks, then speed (a few minutes on one GPU)
    python benchmarks/device_check.py --checks-only      # the checks alone (about a minute)
    python benchmarks/device_check.py --scaling-model    # the all-reduce model of docs/distributed.md (no GPU needed)
    python benchmarks/device_check.py --rehearse-on-cpu  # the checks' code with cuda replaced by cpu (no GPU needed)
    python benchmarks/device_check.py --cpu-scaling      # 2 processes x 1 thread vs 1 process x 2 threads (run on a quiet machine)

Without a CUDA device it prints ``no CUDA device: skipped`` and exits 0.

**Checks** (each a real ``lifelong-kd run`` process, or the Python API where a run must be
stopped midway; tiny split-digits streams): a run on ``cuda`` lands there and agrees with a
CPU run within 2 points; two ``--deterministic`` runs repeat bit for bit; ``fp16`` (with its
gradient scaler) and ``bf16`` (if the GPU has it) finish within 5 points of ``fp32``; a run
stopped on the GPU resumes on the CPU and the reverse; ``--data-on-device`` gives the
per-minibatch numbers; the default robustness suite, EWC and a lifelong-compression run
(pruned and int8 members) run on the device; the replay-memory strategies (ER, DER++, iCaRL,
LUCIR, BiC; class-incremental) run on the device within 5 points of the CPU with the same
memory size; with two or more GPUs, ``torchrun`` over all of them (NCCL) agrees with one GPU
within 0.5 points, for LwF and for DER++ (memories gathered over NCCL).

**Speed**: the speed protocol (permuted-MNIST, MLP 784-1000-1000-10, LwF, batch 128, one
epoch per experience) and split-CIFAR-10 with the reduced ResNet-18, on one GPU in fp32 and
bf16 (fp16 where bf16 is missing): training samples/s, and their fraction of the GPU's own
measured floor (a tight loop of the same model's forward and backward on random data,
i.e. its matmul or convolution throughput at that batch); then across all visible GPUs with
torchrun (same global batch): samples/s and scaling efficiency = samples/s / (GPUs x one GPU's).
Results go to ``benchmarks/output/device_check.json``; docs/distributed.md says how to read them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "benchmarks" / "output" / "device_check.json"
STREAM = ["--benchmark", "split-digits", "--train-size", "100", "--test-size", "60", "--epochs", "3", "--batch-size", "32", "--model", "mlp:64", "--quiet"]
TINY = [*STREAM, "--shifts", "none", "--strategy", "lwf"]
# The replay-memory strategies (issue 14), class-incremental, on the same tiny stream.
MEMORY = [*STREAM, "--shifts", "none", "--scenario", "class", "--buffer-size", "50"]
MEMORY_STRATEGIES = ("er", "derpp", "icarl", "lucir", "bic")
# Speed protocol (benchmarks/speed_vs_avalanche.py): permuted-MNIST, MLP 1000-1000, LwF T=2, batch 128, one epoch.
SPEED = {
    "permuted-mnist mlp:1000,1000": ["--benchmark", "permuted-mnist", "--scenario", "domain", "--n-experiences", "5", "--model", "mlp:1000,1000",
                                     "--train-size", "12000", "--test-size", "2000"],
    "split-cifar10 resnet18:20": ["--benchmark", "split-cifar10", "--scenario", "task", "--model", "resnet18:20", "--train-size", "5000", "--test-size", "1000"],
}
SPEED_COMMON = ["--strategy", "lwf", "--epochs", "1", "--batch-size", "128", "--shifts", "none", "--no-instruments", "--quiet", "--no-tensorboard"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


# ---------------------------------------------------------------------- runs


def cli(arguments: list[str], processes: int = 1, threads: int | None = None) -> subprocess.CompletedProcess:
    """``lifelong-kd ARGUMENTS`` in a fresh process (``torchrun --nproc-per-node processes`` when > 1), ``threads`` torch threads each."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    env = {**ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)} if threads else ENV
    return subprocess.run([*launcher, "-m", "lifelong_kd", *arguments], capture_output=True, text=True, env=env, cwd=REPO, check=False)


def run(folder: Path, arguments: list[str], processes: int = 1, threads: int | None = None) -> dict[str, Any]:
    """A finished run's ``results.json`` (raises with the run's stderr when it failed)."""
    done = cli(["run", *arguments, "--out", str(folder), "--overwrite"], processes, threads)
    if done.returncode != 0:
        raise RuntimeError(f"lifelong-kd run {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads((folder / "results.json").read_text())


def average(document: dict[str, Any]) -> float:
    return document["metrics"]["average_accuracy"]


def losses(document: dict[str, Any]) -> list[float]:
    return [row["mean_loss"] for row in document["timing"]["per_experience"]]


# ---------------------------------------------------------------------- checks


def check_device_run(root: Path, device: str) -> str:
    gpu = run(root / "device", [*TINY, "--device", device])
    cpu = run(root / "cpu", [*TINY, "--device", "cpu"])
    placed = gpu["setup"]["hardware"]["device"]
    assert placed.startswith(device), f"ran on {placed}, asked for {device}"
    assert abs(average(gpu) - average(cpu)) <= 0.02, f"average accuracy {average(gpu):.4f} on {device}, {average(cpu):.4f} on cpu"
    return f"ran on {placed}; average accuracy {average(gpu):.4f} ({average(cpu):.4f} on the CPU)"


def check_determinism(root: Path, device: str) -> str:
    first = run(root / "first", [*TINY, "--device", device, "--deterministic"])
    second = run(root / "second", [*TINY, "--device", device, "--deterministic"])
    assert first["accuracy_matrix"] == second["accuracy_matrix"] and losses(first) == losses(second), "two --deterministic runs differ"
    plain = [run(root / f"plain{i}", [*TINY, "--device", device]) for i in range(2)]
    repeated = losses(plain[0]) == losses(plain[1])
    return f"--deterministic repeats bit for bit; without it the losses {'also repeat' if repeated else 'differ in the last bits'}"


def check_precisions(root: Path, device: str) -> str:
    reference = run(root / "fp32", [*TINY, "--device", device])
    found = []
    precisions = ["bf16"] if device == "cpu" else ["fp16"] + (["bf16"] if torch.cuda.is_bf16_supported() else [])
    for precision in precisions:
        document = run(root / precision, [*TINY, "--device", device, "--precision", precision])
        assert all(map(_finite, losses(document))), f"{precision}: non-finite loss"
        assert abs(average(document) - average(reference)) <= 0.05, f"{precision}: {average(document):.4f} vs fp32 {average(reference):.4f}"
        found.append(f"{precision} {average(document):.4f}")
    return f"fp32 {average(reference):.4f}; " + ", ".join(found)


def _finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")


class _StopAfter:
    """A logger that stops the run (KeyboardInterrupt) once experience ``step`` is saved."""

    def __init__(self, step: int) -> None:
        self.step = step

    def log_config(self, config: Any, first_step: int = 0) -> None:
        pass

    def log_report(self, report: Any) -> None:
        if report.step == self.step:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def _stopped_and_resumed(folder: Path, first: str, then: str) -> dict[str, Any]:
    """A Python-API run stopped after experience 1 on ``first`` and resumed on ``then``."""
    from lifelong_kd import pipeline
    from lifelong_kd.data.benchmarks import StreamOptions, build_stream
    from lifelong_kd.models import build_model
    from lifelong_kd.strategies.ewc import EWC
    from lifelong_kd.train import TrainConfig

    stream = build_stream("split-digits", StreamOptions(train_size=100, test_size=60))

    def start(device: str, resume: bool, loggers: list[Any]) -> dict[str, Any]:
        pipeline.seed_everything(0)
        model = build_model("mlp:64", stream.input_shape, stream.n_heads, stream.n_outputs)
        config = TrainConfig(epochs=3, batch_size=32, progress=False, device=device)
        return pipeline.run(stream, model, EWC(fisher_samples=50), loggers=loggers, config=config, out=folder, resume=resume)

    try:
        start(first, False, [_StopAfter(1)])
    except KeyboardInterrupt:
        pass
    return start(then, True, [])


def check_checkpoint_moves(root: Path, device: str) -> str:
    there_and_back = _stopped_and_resumed(root / "gpu-to-cpu", device, "cpu")
    back_and_there = _stopped_and_resumed(root / "cpu-to-gpu", "cpu", device)
    for document in (there_and_back, back_and_there):
        assert document["finished_experiences"] == 5
    gap = abs(average(there_and_back) - average(back_and_there))
    assert gap <= 0.02, f"the two resumed runs differ by {gap:.4f}"
    return f"{device} -> cpu and cpu -> {device} resume (EWC state moves along); average accuracy {average(there_and_back):.4f} / {average(back_and_there):.4f}"


def check_data_on_device(root: Path, device: str) -> str:
    moved = run(root / "moved", [*TINY, "--device", device, "--deterministic"])
    resident = run(root / "resident", [*TINY, "--device", device, "--deterministic", "--data-on-device"])
    assert moved["accuracy_matrix"] == resident["accuracy_matrix"] and losses(moved) == losses(resident), "--data-on-device changed the numbers"
    return "--data-on-device gives the per-minibatch numbers"


def check_everything_on_device(root: Path, device: str) -> str:
    run(root / "robustness", [*STREAM, "--strategy", "lwf", "--shifts", "default", "--device", device])
    run(root / "ewc", [*STREAM, "--shifts", "none", "--strategy", "ewc", "--device", device])
    compression = run(root / "compression", [*TINY, "--device", device, "--student", "mlp:16", "--prune", "0.5"])
    return f"default robustness suite, EWC, compression ({', '.join(compression['models'])}) ran"


def check_memory_on_device(root: Path, device: str) -> str:
    """Each memory strategy on the device (replay, herding, class means, BiC's held-out set) agrees with a CPU run."""
    found = []
    for strategy in MEMORY_STRATEGIES:
        on_device = run(root / strategy, [*MEMORY, "--strategy", strategy, "--device", device])
        on_cpu = run(root / f"{strategy}-cpu", [*MEMORY, "--strategy", strategy, "--device", "cpu"])
        assert on_device["memory_bytes"] == on_cpu["memory_bytes"], f"{strategy}: memory of {on_device['memory_bytes']} bytes, {on_cpu['memory_bytes']} on the CPU"
        assert abs(average(on_device) - average(on_cpu)) <= 0.05, f"{strategy}: average accuracy {average(on_device):.4f} on {device}, {average(on_cpu):.4f} on cpu"
        found.append(f"{strategy} {average(on_device):.4f} ({average(on_cpu):.4f})")
    return "average accuracy on the device (on the CPU): " + ", ".join(found)


def check_data_parallel(root: Path, device: str, gpus: int) -> str:
    processes = gpus if device == "cuda" else 2
    gaps = []
    for name, arguments in (("lwf", TINY), ("derpp", [*MEMORY, "--strategy", "derpp"])):
        one = run(root / f"{name}-one", [*arguments, "--device", device])
        many = run(root / f"{name}-many", [*arguments, "--device", device], processes)
        hardware = many["setup"]["hardware"]
        assert hardware["processes"] == processes, hardware
        gap = abs(average(many) - average(one))
        assert gap <= 0.005, f"{name}, {processes} processes: average accuracy {average(many):.4f}, one process {average(one):.4f}"
        gaps.append(f"{name} within {gap * 100:.2f} points of one")
    return f"{processes} processes ({hardware['backend']}): " + ", ".join(gaps)


def run_checks(device: str, gpus: int) -> list[dict[str, Any]]:
    """Every check; each reports ok and what it saw, or the failure."""
    checks: list[tuple[str, Callable[[Path], str]]] = [
        ("device run", lambda root: check_device_run(root, device)),
        ("determinism", lambda root: check_determinism(root, device)),
        ("precisions", lambda root: check_precisions(root, device)),
        ("checkpoint moves", lambda root: check_checkpoint_moves(root, device)),
        ("data on device", lambda root: check_data_on_device(root, device)),
        ("robustness, EWC, compression", lambda root: check_everything_on_device(root, device)),
        ("memory strategies", lambda root: check_memory_on_device(root, device)),
    ]
    if device == "cpu" or gpus >= 2:
        checks.append(("data parallel", lambda root: check_data_parallel(root, device, gpus)))
    results = []
    for name, check in checks:
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            try:
                detail, ok = check(Path(folder)), True
            except (AssertionError, RuntimeError) as error:
                detail, ok = str(error), False
        results.append({"check": name, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - start, 1)})
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return results


# ---------------------------------------------------------------------- speed


def floor_samples_per_second(spec: str, input_shape: tuple[int, ...], heads: int, outputs: int, precision: str, batch: int = 128, steps: int = 50) -> float:
    """The GPU's own ceiling for this model: forward + backward + SGD step on random data in a tight loop."""
    from lifelong_kd.models import build_model
    from lifelong_kd.train import autocast

    device = torch.device("cuda")
    model = build_model(spec, input_shape, heads, outputs).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *input_shape, device=device)
    y = torch.randint(0, outputs, (batch,), device=device)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def step() -> None:
        with autocast(precision, "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x, 0), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(10):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def loop_samples_per_second(document: dict[str, Any]) -> float:
    """Training samples/s of the minibatch loops (hooks and evaluation excluded)."""
    rows = document["timing"]["per_experience"]
    return sum(row["samples"] for row in rows) / max(sum(row["loop_seconds"] for row in rows), 1e-9)


def run_speed(data_root: str, gpus: int) -> list[dict[str, Any]]:
    """The two protocols on one GPU (fp32, low precision) and on every GPU."""
    low = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    shapes = {"permuted-mnist mlp:1000,1000": ("mlp:1000,1000", (1, 28, 28), 1, 10), "split-cifar10 resnet18:20": ("resnet18:20", (3, 32, 32), 5, 2)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, arguments in SPEED.items():
            base = [*arguments, *SPEED_COMMON, "--data-root", data_root, "--device", "cuda"]
            single = {}
            for precision in ("fp32", low):
                document = run(Path(folder) / f"{len(rows)}", [*base, "--precision", precision])
                speed, floor = loop_samples_per_second(document), floor_samples_per_second(*shapes[name], precision)
                single[precision] = speed
                rows.append({"protocol": name, "precision": precision, "gpus": 1, "samples_per_second": speed, "floor_samples_per_second": floor,
                             "fraction_of_floor": speed / floor, "average_accuracy": average(document)})
                print(f"{name} {precision} 1 GPU: {speed:,.0f} samples/s, {speed / floor:.0%} of the GPU's floor ({floor:,.0f}); "
                      f"average accuracy {average(document):.4f}", flush=True)
            if gpus >= 2:
                document = run(Path(folder) / f"{len(rows)}", [*base, "--precision", "fp32"], gpus)
                speed = loop_samples_per_second(document)
                efficiency = speed / (gpus * single["fp32"])
                rows.append({"protocol": name, "precision": "fp32", "gpus": gpus, "samples_per_second": speed, "scaling_efficiency": efficiency,
                             "average_accuracy": average(document)})
                print(f"{name} fp32 {gpus} GPUs: {speed:,.0f} samples/s, scaling efficiency {efficiency:.0%}; average accuracy {average(document):.4f}", flush=True)
    return rows


def run_cpu_scaling(data_root: str, quick: bool) -> dict[str, Any]:
    """The speed protocol on the CPU: 1 process x 2 threads against 2 processes x 1 thread (same global batch)."""
    arguments = [*SPEED["permuted-mnist mlp:1000,1000"], *SPEED_COMMON, "--data-root", data_root, "--device", "cpu"]
    if quick:
        arguments = [*arguments, "--train-size", "2000", "--test-size", "500"]
    with tempfile.TemporaryDirectory() as folder:
        one = run(Path(folder) / "one", arguments, 1, threads=2)
        two = run(Path(folder) / "two", arguments, 2, threads=1)
    ratio = loop_samples_per_second(two) / loop_samples_per_second(one)
    wall = sum(row["train_seconds"] for row in one["timing"]["per_experience"]) / sum(row["train_seconds"] for row in two["timing"]["per_experience"])
    result = {"one_process_two_threads": loop_samples_per_second(one), "two_processes_one_thread": loop_samples_per_second(two),
              "loop_ratio": ratio, "train_time_ratio": wall, "average_accuracy": [average(one), average(two)]}
    print(f"1 process x 2 threads: {result['one_process_two_threads']:,.0f} samples/s; 2 processes x 1 thread: {result['two_processes_one_thread']:,.0f} "
          f"samples/s; ratio {ratio:.2f} (training time ratio {wall:.2f}); average accuracy {average(one):.4f} vs {average(two):.4f}")
    return result


# ---------------------------------------------------------------------- the scaling model

# Assumptions of the model (docs/distributed.md gives their sources and what to measure instead).
LINKS = {  # name: (bus bandwidth of a ring all-reduce, bytes/s; latency per ring step, s)
    "NVLink (A100, one machine)": (150e9, 5e-6),
    "PCIe 4.0 x16 (one machine)": (20e9, 10e-6),
    "100 Gb/s InfiniBand/Ethernet (between machines)": (11e9, 20e-6),
    "10 Gb/s Ethernet (between machines)": (1.1e9, 50e-6),
}
# Effective float32 throughput of one GPU on these small models (an A100's peak is 19.5 TFLOP/s
# without TF32; small matmuls and 32x32 convolutions reach a fraction of it).
GPU_FLOPS = 8e12
# Per-step cost that does not shrink with more GPUs: Python, kernel launches, the loss.item() sync.
STEP_OVERHEAD = 1e-3


def allreduce_seconds(gradient_bytes: float, processes: int, link: tuple[float, float]) -> float:
    """Ring all-reduce: each process sends and receives 2 (p-1)/p of the gradients, in 2 (p-1) steps."""
    bandwidth, latency = link
    if processes == 1:
        return 0.0
    return 2 * (processes - 1) / processes * gradient_bytes / bandwidth + 2 * (processes - 1) * latency


def scaling_model() -> list[dict[str, Any]]:
    """Predicted step time and efficiency at 8 GPUs (one machine) and 4 machines x 8 GPUs, global batch 128 and 128 per GPU."""
    from lifelong_kd.evaluation.compression import count_parameters, flops_per_sample
    from lifelong_kd.models import build_model

    models = {"MLP 784-1000-1000-10": ("mlp:1000,1000", (1, 28, 28), 1, 10), "reduced ResNet-18 (20 filters)": ("resnet18:20", (3, 32, 32), 5, 2)}
    setups = [("8 GPUs, NVLink", 8, "NVLink (A100, one machine)"), ("8 GPUs, PCIe", 8, "PCIe 4.0 x16 (one machine)"),
              ("4 machines x 8 GPUs, 100 Gb/s", 32, "100 Gb/s InfiniBand/Ethernet (between machines)"),
              ("4 machines x 8 GPUs, 10 Gb/s", 32, "10 Gb/s Ethernet (between machines)")]
    rows = []
    for name, (spec, shape, heads, outputs) in models.items():
        model = build_model(spec, shape, heads, outputs)
        gradient_bytes = 4 * count_parameters(model)
        train_flops = 3 * flops_per_sample(model, shape, {"task_id": 0})  # forward + backward ~ 3x forward
        for batch_kind, per_gpu in (("global batch 128", False), ("128 per GPU", True)):
            one = 128 * train_flops / GPU_FLOPS + STEP_OVERHEAD
            for setup, gpus, link in setups:
                samples = 128 if per_gpu else 128 / gpus
                step = samples * train_flops / GPU_FLOPS + STEP_OVERHEAD + allreduce_seconds(gradient_bytes, gpus, LINKS[link])
                speedup = (gpus * 128 / step) / (128 / one) if per_gpu else one / step
                rows.append({"model": name, "gradient_megabytes": gradient_bytes / 1e6, "batch": batch_kind, "setup": setup,
                             "allreduce_ms": 1e3 * allreduce_seconds(gradient_bytes, gpus, LINKS[link]), "step_ms": 1e3 * step,
                             "one_gpu_step_ms": 1e3 * one, "efficiency": speedup / gpus})
    return rows


def print_scaling_model() -> None:
    rows = scaling_model()
    print("| model | all-reduced per step | batch | setup | all-reduce | step | one GPU's step | efficiency |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['model']} | {row['gradient_megabytes']:.1f} MB | {row['batch']} | {row['setup']} | {row['allreduce_ms']:.2f} ms | "
              f"{row['step_ms']:.2f} ms | {row['one_gpu_step_ms']:.2f} ms | {row['efficiency']:.0%} |")


# ---------------------------------------------------------------------- entry point


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks-only", action="store_true", help="skip the speed protocols")
    parser.add_argument("--scaling-model", action="store_true", help="print the all-reduce model of docs/distributed.md and exit")
    parser.add_argument("--rehearse-on-cpu", action="store_true", help="run the checks with cuda replaced by cpu (2 gloo processes for DDP)")
    parser.add_argument("--cpu-scaling", action="store_true", help="speed protocol on the CPU: 2 processes x 1 thread vs 1 process x 2 threads")
    parser.add_argument("--quick", action="store_true", help="with --cpu-scaling: 2,000 training samples per experience (a smoke run, not a measurement)")
    parser.add_argument("--data-root", default=os.environ.get("LIFELONG_KD_DATA", str(REPO.parent / "shared" / "data")),
                        help="MNIST and the CIFAR-10 JPEG archive for the speed protocols (default $LIFELONG_KD_DATA or ../shared/data)")
    parser.add_argument("--out", default=str(OUTPUT), help="JSON results")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.scaling_model:
        print_scaling_model()
        return 0
    if args.cpu_scaling:
        run_cpu_scaling(args.data_root, args.quick)
        return 0
    if not torch.cuda.is_available() and not args.rehearse_on_cpu:
        print("no CUDA device: skipped (run this on a machine with a GPU; --rehearse-on-cpu runs the checks' code on the CPU)")
        return 0
    device = "cpu" if args.rehearse_on_cpu else "cuda"
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    print(f"device checks on {device}" + (f" ({gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__})" if gpus else ""), flush=True)
    results: dict[str, Any] = {"device": device, "gpus": gpus, "torch": torch.__version__, "checks": run_checks(device, gpus)}
    if device == "cuda" and not args.checks_only:
        results["speed"] = run_speed(args.data_root, gpus)
        results["gpu"] = torch.cuda.get_device_name(0)
    if device == "cuda":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results in {args.out}")
    failed = [row["check"] for row in results["checks"] if not row["ok"]]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
