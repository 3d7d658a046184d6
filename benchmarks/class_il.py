"""Class-incremental learning with memory: Buzzega et al. 2020 (DER), Table 2, on our library.

Methods: ER, DER, DER++, iCaRL, LUCIR, BiC at buffers 200 and 500, plus Finetune ("SGD"),
LwF and Joint, on

* ``seq-mnist``: split-MNIST (real MNIST), 5 experiences of 2 classes, the paper's protocol as far
  as the library allows: MLP 784-100-100-10, 1 epoch, batch 10, plain SGD (momentum 0), the
  per-method learning rate, replay minibatch, alpha and beta of mammoth's ``utils/best_args.py``
  (the authors' code, aimagelab/mammoth, commit d20f640);
* ``seq-cifar10``: split-CIFAR-10 (JPEG copy), 5 x 2 classes, on a budget this 2-core machine
  affords (``convnet:16``, a few epochs on a seeded subsample; the paper: ResNet-18, 50 epochs).

Scenarios: ``class`` (one head, no task id at test time). Every class-scenario run is also scored
the way the paper scores Task-IL: the final model's outputs masked to the tested experience's
classes (mammoth ``utils/training.py: mask_classes``), from the run folder's checkpoint. ``task``
runs our own task scenario (one head per experience, task id given in training and testing);
iCaRL, LUCIR and BiC refuse it (class-incremental only).

``buffers``: DER++ and ER on Seq-MNIST class-IL with one fixed set of hyper-parameters (their
buffer-500 arguments) at buffers 50, 200, 500, 2000: accuracy against ``memory_bytes``
(docs/strategies.md, "Choosing a buffer size").

``defaults``: ``lifelong-kd run --benchmark split-mnist --scenario class --strategy derpp
--buffer-size 200`` with every other flag at its CLI default (issue 14's "Done when").

Diagnostics, each changing one factor of a comparison run: ``cifar-lr`` (DER/DER++ at ER's
learning rate), ``cifar-long`` (13x the SGD steps; ``cifar-longer``: 39x), ``lucir-lambda`` (LUCIR's less-forget
weight), and on Seq-MNIST ``mnist-gaps`` (iCaRL trained on the exemplar images the authors'
code replayed before its 2022 fix; LwF with mammoth's seen-class cross-entropy or head
warm-up), ``mnist-raw`` (raw [0, 1] inputs) and ``mnist-init`` (mammoth's Xavier initialisation).

Every run is one ``lifelong-kd run`` (its command is logged), single-threaded, one at a time.
A record goes to ``benchmarks/output/class_il_runs.jsonl`` when a run finishes; a killed suite
continues where it stopped (logged runs are skipped, a run folder holding a checkpoint resumes).

    python benchmarks/run.py class-il --quick                                # CI smoke (< 2 min)
    python benchmarks/run.py class-il --parts mnist-class --seeds 0,1,2
    python benchmarks/run.py class-il --parts mnist-class --methods lucir,bic --rerun   # again, after a fix
    python benchmarks/run.py class-il --parts mnist-gaps,mnist-raw,mnist-init --seeds 0,1,2   # Seq-MNIST one-factor runs
    python benchmarks/run.py class-il --table-only --write-results           # docs from the log
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, DOCUMENTED_DATA_ROOT, OUTPUT, ROOT, append_jsonl, hardware, markdown_table, mean_std, read_jsonl, write_section  # noqa: E402

LOG = OUTPUT / "class_il_runs.jsonl"
QUICK_LOG = OUTPUT / "class_il_quick.jsonl"
RUNS = OUTPUT / "runs"
STRATEGIES_MD = ROOT / "docs" / "strategies.md"
HEADING = "## Class-incremental learning with memory (Buzzega et al. 2020)"
BUFFER_HEADING = "## Choosing a buffer size"
MEMORY_METHODS = ("er", "der", "derpp", "icarl", "lucir", "bic")
BASELINES = ("finetune", "lwf", "joint")
COMPARISON_PARTS = frozenset({"mnist-class", "mnist-task", "cifar-class", "cifar-task"})
CLASS_ONLY = frozenset({"icarl", "lucir", "bic"})  # their papers define the class scenario only
LABELS = {"finetune": "SGD (finetune)", "lwf": "LwF", "joint": "JOINT", "er": "ER", "der": "DER", "derpp": "DER++",
          "icarl": "iCaRL", "lucir": "LUCIR", "bic": "BiC"}
SWEEP_BUFFERS = (50, 200, 500, 2000)
SWEEP_METHODS = ("derpp", "er")
# --quick: every method on Seq-MNIST class-IL, plus DER++ in the task scenario and on Seq-CIFAR-10.
QUICK_PARTS = {"quick-task": ("seq-mnist", "task"), "quick-cifar": ("seq-cifar10", "class")}


@dataclass(frozen=True)
class Protocol:
    """One benchmark's training budget (everything but the per-method hyper-parameters)."""

    benchmark: str
    model: str
    epochs: int
    batch_size: int
    augment: bool
    train_size: int | None = None
    test_size: int | None = None


PROTOCOLS = {
    # Buzzega et al. 2020, Sec. 5 / mammoth datasets/seq_mnist.py + backbone/MNISTMLP.py: MLP 100-100, 1 epoch, batch 10
    "seq-mnist": Protocol("split-mnist", "mlp:100,100", 1, 10, False),
    # Reduced budget for a shared 2-core CPU (the paper: ResNet-18, 50 epochs, batch 32, all 50,000 images)
    "seq-cifar10": Protocol("split-cifar10", "convnet:16", 3, 32, True, 2500, 1000),
    # The same, 13x the SGD steps: 10 epochs on all 10,000 training images of each experience (part cifar-long)
    "seq-cifar10-long": Protocol("split-cifar10", "convnet:16", 10, 32, True, None, 1000),
    # Three times that: 30 epochs (part cifar-longer: does DER pass ER as the schedule grows?)
    "seq-cifar10-longer": Protocol("split-cifar10", "convnet:16", 30, 32, True, None, 1000),
}
# Part cifar-long: the methods of the paper's class-IL ordering (LwF < ER < DER < DER++).
LONG_METHODS = ("lwf", "er", "der", "derpp")
LONG_PARTS = {"cifar-long": "seq-cifar10-long", "cifar-longer": "seq-cifar10-longer"}  # part -> its longer Seq-CIFAR-10 protocol
# Part lucir-lambda: LUCIR's less-forget base weight on Seq-CIFAR-10 (the default 5 is the cifar-class row).
LUCIR_LAMBDAS = (0.0, 1.0, 2.0)
# Part mnist-gaps: one-factor runs on the two Seq-MNIST gaps above 3 points (iCaRL class-IL, LwF task-IL).
# icarl-prefix: iCaRL trained on the exemplar images mammoth's iCaRL replayed before its 2022 rewrite;
# lwf-seen: LwF with the cross-entropy over the classes seen so far (mammoth's LwF); lwf-warmup: LwF
# with mammoth's head warm-up before each experience after the first (one epoch of batch 10 there).
# Part mnist-raw: the comparison's Seq-MNIST rows with mammoth's raw [0, 1] inputs (``--input-format raw``).
# Part mnist-init: the same rows with mammoth's initialisation (Xavier-uniform weights, zero biases).
GAP_PARTS = ("icarl-prefix", "lwf-seen", "lwf-warmup", "raw-input", "xavier-init")
# Variants the CLI has no flag for (run by this script): the part that runs them and what they change.
BENCHMARK_ONLY_VARIANTS = {"icarl-prefix": ("mnist-gaps", "iCaRL with mammoth's pre-2022 replayed images"),
                           "xavier-init": ("mnist-init", "mammoth's initialisation: Xavier-uniform weights, zero biases")}
RAW_METHODS = ("finetune", "lwf", "er", "der", "derpp")
WARMUP_STEPS = 1200  # one epoch of batch 10 over one Seq-MNIST experience (about 12,000 images)
GAP_LABELS = {"raw-input": "raw [0, 1] inputs", "icarl-prefix": "mammoth's pre-2022 replayed images",
              "lwf-seen": "cross-entropy over seen classes", "lwf-warmup": f"head warm-up ({WARMUP_STEPS} steps, lr 0.03)",
              "xavier-init": "Xavier-uniform weights, zero biases"}

# Per-method hyper-parameters: mammoth utils/best_args.py (commit d20f640, "fix minibatch sizes"),
# keyed by buffer size (-1: no buffer). "replay" is mammoth's minibatch_size; iCaRL trains on the
# union of data and memory (mammoth concatenates the buffer into the training set), which our
# default replay share (None) reproduces. LwF's wd_reg 5e-4 is an explicit 5e-4 * sum(theta^2)
# term, i.e. SGD weight decay 1e-3. LUCIR and BiC have no Table 2 row and no best arguments for
# these data sets: they get the protocol's DER learning rate and the library defaults (not tuned).
HYPERPARAMETERS: dict[str, dict[str, dict[int, dict[str, Any]]]] = {
    "seq-mnist": {
        "finetune": {-1: {"lr": 0.03}},
        "joint": {-1: {"lr": 0.03}},  # no best_args entry; the SGD row's learning rate
        "lwf": {-1: {"lr": 0.03, "weight_decay": 1e-3, "temperature": 2.0, "alpha": 1.0}},
        "er": {200: {"lr": 0.01, "replay": 10}, 500: {"lr": 0.1, "replay": 10}},
        "der": {200: {"lr": 0.03, "replay": 10, "alpha": 0.2}, 500: {"lr": 0.03, "replay": 128, "alpha": 1.0}},
        "derpp": {200: {"lr": 0.03, "replay": 128, "alpha": 0.2, "beta": 1.0},
                  500: {"lr": 0.03, "replay": 10, "alpha": 1.0, "beta": 0.5}},
        "icarl": {200: {"lr": 0.1}, 500: {"lr": 0.1}},
        "lucir": {200: {"lr": 0.03}, 500: {"lr": 0.03}},
        "bic": {200: {"lr": 0.03}, 500: {"lr": 0.03}},
    },
    "seq-cifar10": {
        "finetune": {-1: {"lr": 0.1}},
        "joint": {-1: {"lr": 0.1}},
        "lwf": {-1: {"lr": 0.01, "weight_decay": 1e-3, "temperature": 2.0, "alpha": 3.0}},
        "er": {200: {"lr": 0.1, "replay": 32}, 500: {"lr": 0.1, "replay": 32}},
        "der": {200: {"lr": 0.03, "replay": 32, "alpha": 0.3}, 500: {"lr": 0.03, "replay": 32, "alpha": 0.3}},
        "derpp": {200: {"lr": 0.03, "replay": 32, "alpha": 0.1, "beta": 0.5},
                  500: {"lr": 0.03, "replay": 32, "alpha": 0.2, "beta": 0.5}},
        "icarl": {200: {"lr": 0.1, "weight_decay": 1e-5}, 500: {"lr": 0.1, "weight_decay": 1e-5}},
        "lucir": {200: {"lr": 0.03}, 500: {"lr": 0.03}},
        "bic": {200: {"lr": 0.03}, 500: {"lr": 0.03}},  # mammoth scripts/reproduce.json runs BiC on seq-cifar10 at lr 0.03
    },
}
HYPERPARAMETERS["seq-cifar10-long"] = HYPERPARAMETERS["seq-cifar10-longer"] = HYPERPARAMETERS["seq-cifar10"]
# The buffer sweep: one set of arguments for every size (each method's buffer-500 row on Seq-MNIST).
SWEEP_ARGUMENTS = {method: HYPERPARAMETERS["seq-mnist"][method][500] for method in SWEEP_METHODS}

# Buzzega et al. 2020, Table 2, (class-IL, task-IL). Provenance (see docs/results.md): Seq-CIFAR-10
# class-IL as copied in issue 14; Seq-CIFAR-10 task-IL SGD/LwF/JOINT as already quoted in
# benchmarks/method_suites.py; every other value was NOT checked against the paper in this
# repository (the paper's text could not be retrieved here) and is marked unverified in the docs.
PUBLISHED: dict[str, dict[tuple[str, int], tuple[float | None, float | None]]] = {
    "seq-mnist": {
        ("joint", -1): (95.57, 99.51), ("finetune", -1): (19.60, 97.86), ("lwf", -1): (19.62, 94.11),
        ("er", 200): (80.43, 97.86), ("er", 500): (86.12, 99.04),
        ("icarl", 200): (70.51, 98.28), ("icarl", 500): (70.10, 98.32),
        ("der", 200): (84.55, 98.80), ("der", 500): (90.54, 98.84),
        ("derpp", 200): (85.61, 98.76), ("derpp", 500): (91.00, 98.94),
    },
    "seq-cifar10": {
        ("joint", -1): (92.20, 98.31), ("finetune", -1): (19.62, 61.02), ("lwf", -1): (19.61, 63.29),
        ("er", 200): (44.79, 91.19), ("er", 500): (57.74, 93.61),
        ("icarl", 200): (49.02, 88.99), ("icarl", 500): (47.55, 88.22),
        ("der", 200): (61.93, 91.40), ("der", 500): (70.51, 93.40),
        ("derpp", 200): (64.88, 91.92), ("derpp", 500): (72.70, 93.88),
    },
}
PUBLISHED["seq-cifar10-long"] = PUBLISHED["seq-cifar10-longer"] = PUBLISHED["seq-cifar10"]


@dataclass(frozen=True)
class Job:
    """One run: protocol, scenario, method, buffer size (-1: none), seed and which part asked for it."""

    part: str
    protocol: str
    scenario: str
    method: str
    buffer: int
    seed: int

    @property
    def key(self) -> tuple:
        """What identifies a finished run in the log (with the budget)."""
        return (self.part, self.protocol, self.scenario, self.method, self.buffer, self.seed)


def protocol_of(job: Job, args: argparse.Namespace) -> Protocol:
    """The job's budget: the protocol, with the CIFAR budget flags and ``--quick`` applied."""
    protocol = PROTOCOLS[job.protocol]
    if job.protocol == "seq-cifar10":
        protocol = replace(protocol, model=args.cifar_model or protocol.model, epochs=args.cifar_epochs or protocol.epochs,
                           train_size=args.cifar_train_size or protocol.train_size)
    if args.quick:
        protocol = replace(protocol, epochs=1, train_size=200 if job.protocol == "seq-mnist" else 100, test_size=200)
    return protocol


def arguments_of(job: Job) -> dict[str, Any]:
    """The job's hyper-parameters (learning rate, weight decay, strategy options)."""
    if job.part == "buffers":
        return dict(SWEEP_ARGUMENTS[job.method])
    table = HYPERPARAMETERS[job.protocol][job.method]
    arguments = dict(table[job.buffer if job.buffer in table else -1])
    if job.part == "cifar-lr":
        arguments["lr"] = HYPERPARAMETERS[job.protocol]["er"][job.buffer]["lr"]
    if job.part.startswith("lucir-lambda"):
        arguments["lambda_base"] = float(job.part.removeprefix("lucir-lambda"))
    if job.part == "lwf-warmup":  # mammoth's warm-up runs at the protocol's learning rate
        arguments.update(warmup_iterations=WARMUP_STEPS, warmup_lr=arguments["lr"])
    return arguments


def strategy_options(job: Job, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The strategy's constructor options."""
    accepted = ("alpha", "beta", "temperature", "lambda_base", "warmup_iterations", "warmup_lr")
    options = {key: value for key, value in arguments.items() if key in accepted}
    if job.buffer > 0:
        options["buffer_size"] = job.buffer
    if "replay" in arguments:
        options["replay_batch_size"] = arguments["replay"]
    return options


def run_folder(job: Job, protocol: Protocol, quick: bool) -> Path:
    """``benchmarks/output/runs/class-il-...``: one folder per job and budget."""
    budget = f"{protocol.model.replace(':', '').replace(',', 'x')}-e{protocol.epochs}-n{protocol.train_size or 'all'}"
    buffer = f"-m{job.buffer}" if job.buffer > 0 else ""
    return RUNS / f"class-il{'-quick' if quick else ''}-{job.part}-{job.protocol}-{job.scenario}-{budget}-{job.method}{buffer}-s{job.seed}"


def config_for(job: Job, args: argparse.Namespace) -> Any:
    """The ``RunConfig`` of one job."""
    from lifelong_kd.config import RunConfig

    if job.part == "defaults":  # every flag at its CLI default but the ones issue 14 names
        return RunConfig(benchmark="split-mnist", scenario="class", strategy="derpp", strategy_options={"buffer_size": job.buffer},
                         seed=job.seed, data_root=str(args.data_root), out=str(run_folder(job, PROTOCOLS["seq-mnist"], args.quick)),
                         quiet=True, tensorboard=False)
    protocol, arguments = protocol_of(job, args), arguments_of(job)
    return RunConfig(
        benchmark=protocol.benchmark, scenario=job.scenario, n_experiences=5, strategy=job.method,
        strategy_options=strategy_options(job, arguments), model=protocol.model, epochs=protocol.epochs,
        batch_size=protocol.batch_size, lr=arguments["lr"], momentum=0.0, weight_decay=arguments.get("weight_decay", 0.0),
        augment=protocol.augment, seed=job.seed, train_size=protocol.train_size, test_size=protocol.test_size,
        data_root=str(args.data_root), out=str(run_folder(job, protocol, args.quick)), quiet=True, shifts="none",
        instruments=False, drift_samples=0, tensorboard=False, cross_entropy_classes="seen" if job.part == "lwf-seen" else "all",
        input_format="raw" if job.part == "raw-input" else "normalised",
    )


def command(config: Any) -> str:
    """The equivalent ``lifelong-kd run`` command line (defaults left out)."""
    from lifelong_kd.config import RunConfig

    default = RunConfig()
    parts = [f"--benchmark {config.benchmark} --scenario {config.scenario} --strategy {config.strategy}"]
    for name in ("n_experiences", "model", "epochs", "batch_size", "lr", "momentum", "weight_decay", "train_size", "test_size",
                 "cross_entropy_classes", "input_format", "seed"):
        value = getattr(config, name)
        if value != getattr(default, name) or (name in ("lr", "momentum") and config.shifts == "none"):  # the protocol's, always shown
            parts.append(f"--{name.replace('_', '-')} {value}")
    parts += ["--augment"] if config.augment else []
    parts += [f"--{key.replace('_', '-')} {value}" for key, value in config.strategy_options.items()]
    if config.shifts == "none":
        parts.append("--shifts none --no-instruments --drift-samples 0")
    return "lifelong-kd run " + " ".join(parts) + f" --data-root {DOCUMENTED_DATA_ROOT}"


def task_il_masked(config: Any) -> float:
    """The paper's Task-IL accuracy of a finished class-scenario run (mammoth ``mask_classes``).

    The final model (through the strategy's evaluation model: iCaRL's nearest mean of exemplars,
    BiC's corrected logits, LUCIR's cosine scores) scores each experience's test set with every
    output outside that experience's classes masked out; the mean over experiences.
    """
    import torch

    from lifelong_kd.cli.compose import build_strategy
    from lifelong_kd.data.benchmarks import build_stream
    from lifelong_kd.data.stream import model_inputs
    from lifelong_kd.models import build_model, inference_batch_size

    member = torch.load(Path(config.out) / "checkpoint.pt", weights_only=True, map_location="cpu")["members"]["model"]
    stream = build_stream(config.benchmark, config.stream_options())
    strategy = build_strategy(config.strategy, config.strategy_options)
    strategy.check_stream(stream)
    model = build_model(config.model, stream.input_shape, stream.n_heads, stream.n_outputs, head=strategy.model_head)
    model.load_state_dict(member["model"])
    strategy.load_state_dict(member["strategy"])
    scorer = strategy.evaluation_model(model).eval()
    accuracies = []
    with torch.inference_mode():
        for experience in stream:
            classes = torch.unique(experience.test.y)
            correct = 0
            for x, y in model_inputs(experience, "test", inference_batch_size(model, experience.test.x.shape[1:])):
                scores = scorer(x, experience.task_id).float()[:, classes]
                correct += int((classes[scores.argmax(1)] == y).sum())
            accuracies.append(correct / len(experience.test.y))
    return sum(accuracies) / len(accuracies)


def prefix_replay_icarl(options: Mapping[str, Any]) -> Any:
    """iCaRL trained on the exemplar images mammoth's iCaRL replayed on Seq-MNIST before its 2022 rewrite (part icarl-prefix).

    mammoth (aimagelab/mammoth, ``models/icarl.py`` from the first commit 7ab9db9 to 0d727a7)
    merged the memory into the next experience's training set by casting each stored exemplar,
    a ``ToTensor`` image in [0, 1], to uint8 without scaling it by 255 (its CIFAR branch scales
    it): every pixel becomes 0 except the saturated ones (255), which become 1. The network
    then trains on near-black images labelled with the old classes, while herding, the
    distillation and the nearest-mean classifier see the real exemplars. The rewrite
    (``utils/buffer.py: icarl_replay``) scales by 255. Here only the replayed minibatch changes:
    stored pixel ``p`` becomes ``1 if p == 255 else 0`` before the stream's transform.
    """
    from dataclasses import replace as replaced

    import torch

    from lifelong_kd.strategies import ICaRL

    class PrefixReplayICaRL(ICaRL):
        def replay_exemplars(self, batch: Any, share: Any, experience: Any, candidates: Any = None) -> Any:
            replayed = super().replay_exemplars(batch, share, experience, candidates)
            if replayed is None:
                return None
            if replayed.stored.x.dtype != torch.uint8:
                raise ValueError("part icarl-prefix needs a stream stored as uint8 images (Seq-MNIST).")
            blank = replaced(replayed.stored, x=(replayed.stored.x == 255).to(replayed.stored.x.dtype))
            x = self.rehearsal_.inputs(blank, device=replayed.batch.x.device)
            return replaced(replayed, batch=replaced(replayed.batch, x=x))

    return PrefixReplayICaRL(**options)


def xavier_initialised(model: Any, seed: int) -> Any:
    """``model`` with mammoth's MLP initialisation (``backbone/__init__.py: xavier``), part xavier-init.

    Every ``nn.Linear`` gets Xavier-uniform weights (gain 1) and zero biases, drawn from
    ``seed``; ours keeps PyTorch's default (Kaiming-uniform weights, uniform biases).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.xavier_uniform_(module.weight, generator=generator)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
    return model


def execute_variant(config: Any, part: str) -> dict[str, Any]:
    """``lifelong_kd.cli.execute`` for a variant the CLI does not offer: iCaRL's pre-2022 replay or mammoth's initialisation."""
    from lifelong_kd.cli.compose import compose_run, run_composed

    config, stream, strategy, model, evaluator = compose_run(config)
    if part == "icarl-prefix":
        strategy = prefix_replay_icarl(config.strategy_options)
        strategy.check_stream(stream)
    elif part == "xavier-init":
        model = xavier_initialised(model, config.seed)
    return run_composed(config, stream, strategy, model, evaluator)


def job_command(job: Job, args: argparse.Namespace) -> str:
    """How to run ``job`` again: its ``lifelong-kd run`` line, or the benchmark's for a variant the CLI does not have."""
    if job.part in BENCHMARK_ONLY_VARIANTS:
        part, what = BENCHMARK_ONLY_VARIANTS[job.part]
        return f"python benchmarks/run.py class-il --parts {part} --methods {job.method} --buffers {max(job.buffer, 200)} --seeds SEED  # {what}"
    return command(config_for(job, args))


def run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job (resuming its folder when it holds a checkpoint) and log its record."""
    from lifelong_kd.cli import execute

    config = config_for(job, args)
    checkpoint = (Path(config.out) / "checkpoint.pt").is_file()
    start = time.perf_counter()
    fresh = args.quick or args.rerun
    config = replace(config, resume=checkpoint and not fresh, overwrite=fresh)
    results = execute_variant(config, job.part) if job.part in BENCHMARK_ONLY_VARIANTS else execute(config)
    wall = time.perf_counter() - start
    protocol = protocol_of(job, args) if job.part != "defaults" else None
    record = {
        "part": job.part, "protocol": job.protocol, "scenario": job.scenario, "method": job.method, "buffer": job.buffer,
        "seed": job.seed, "quick": args.quick, "model": config.model, "epochs": config.epochs, "train_size": config.train_size,
        "test_size": config.test_size, "budget": list(budget_of_protocol(protocol)) if protocol else None,
        "average_accuracy": results["metrics"]["average_accuracy"], "forgetting": results["metrics"]["forgetting"],
        "task_il_masked": task_il_masked(config) if job.scenario == "class" else None,
        "memory_bytes": results.get("memory_bytes"), "train_seconds": results["timing"]["train_seconds"],
        "eval_seconds": results["timing"]["eval_seconds"], "wall_seconds": wall, "command": job_command(job, args),
        "hardware": hardware(), "accuracy_matrix": results["accuracy_matrix"],
    }
    append_jsonl(QUICK_LOG if args.quick else LOG, record)
    masked = f"  task-IL (masked) {100 * record['task_il_masked']:.2f}" if record["task_il_masked"] is not None else ""
    print(f"{job.part} {job.protocol} {job.scenario} {job.method} m{job.buffer} s{job.seed}: "
          f"avg acc {100 * record['average_accuracy']:.2f}{masked}  ({wall:.0f} s wall)", flush=True)
    return record


def budget_of_protocol(protocol: Protocol) -> tuple:
    """The budget fields that make two runs of a protocol comparable."""
    return (protocol.model, protocol.epochs, protocol.train_size, protocol.test_size)


def jobs(args: argparse.Namespace) -> Iterator[Job]:
    """Every job the chosen parts, seeds and methods ask for, in run order."""
    methods = args.methods.split(",")
    for part in args.parts.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            yield from part_jobs(part, seed, methods, args)


def part_jobs(part: str, seed: int, methods: list[str], args: argparse.Namespace) -> Iterator[Job]:
    """The jobs of one part and seed."""
    if part == "defaults":
        yield Job(part, "seq-mnist", "class", "derpp", 200, seed)
        return
    if part in QUICK_PARTS:
        yield Job(part, *QUICK_PARTS[part], "derpp", 200, seed)
        return
    if part == "cifar-lr":  # diagnostic: DER and DER++ at ER's learning rate (is the short schedule the cause?)
        for method in ("der", "derpp"):
            yield from (Job(part, "seq-cifar10", "class", method, buffer, seed) for buffer in args.buffers)
        return
    if part in LONG_PARTS:  # is the short schedule why the paper's ordering does not hold?
        protocol = LONG_PARTS[part]
        for method in (m for m in methods if m in LONG_METHODS):
            yield from (Job(part, protocol, "class", method, buffer, seed) for buffer in (args.buffers if method in MEMORY_METHODS else [-1]))
        return
    if part == "lucir-lambda":  # is the less-forget weight why LUCIR learns no new class on Seq-CIFAR-10?
        for value in LUCIR_LAMBDAS:
            yield from (Job(f"lucir-lambda{value:g}", "seq-cifar10", "class", "lucir", buffer, seed) for buffer in args.buffers)
        return
    if part == "mnist-gaps":  # what makes the two Seq-MNIST gaps above 3 points? (one factor per part)
        if "icarl" in methods:
            yield from (Job("icarl-prefix", "seq-mnist", "class", "icarl", buffer, seed) for buffer in args.buffers)
        if "lwf" in methods:
            yield from (Job(variant, "seq-mnist", "class", "lwf", -1, seed) for variant in ("lwf-seen", "lwf-warmup"))
        return
    if part in ("mnist-raw", "mnist-init"):  # is the input scaling / the initialisation why ER, DER and DER++ sit 2-3 points below the paper?
        variant = {"mnist-raw": "raw-input", "mnist-init": "xavier-init"}[part]
        for method in (m for m in methods if m in RAW_METHODS):
            yield from (Job(variant, "seq-mnist", "class", method, buffer, seed) for buffer in (args.buffers if method in MEMORY_METHODS else [-1]))
        return
    if part == "buffers":
        for method in SWEEP_METHODS:
            for buffer in SWEEP_BUFFERS:
                yield Job(part, "seq-mnist", "class", method, buffer, seed)
        return
    protocol, scenario = {"mnist": "seq-mnist", "cifar": "seq-cifar10"}[part.split("-")[0]], part.split("-")[1]
    for method in methods:
        if scenario == "task" and method in CLASS_ONLY:
            continue
        for buffer in (args.buffers if method in MEMORY_METHODS else [-1]):
            yield Job(part, protocol, scenario, method, buffer, seed)


def matching(records: list[dict[str, Any]], job: Job, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Logged records of ``job`` on the budget it would run with now."""
    budget = list(budget_of_protocol(protocol_of(job, args))) if job.part != "defaults" else None
    return [r for r in records if (r["part"], r["protocol"], r["scenario"], r["method"], r["buffer"], r["seed"]) == job.key
            and r.get("budget") == budget and r["quick"] == args.quick]


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every job not yet logged on this budget (all of them with ``--quick`` or ``--rerun``); the new records.

    A rerun's record is appended after the earlier one, and the tables take the newest record of each run.
    """
    logged = [] if args.quick or args.rerun else read_jsonl(LOG)
    return [run_job(job, args) for job in jobs(args) if not matching(logged, job, args)]


# ---------------------------------------------------------------------------------------------- tables


def cell(records: list[dict[str, Any]], field: str) -> str:
    """``mean ± std`` (in %) of one field over seeds, or ``-``."""
    return mean_std([r[field] for r in records if r.get(field) is not None])


def number(value: float | None) -> str:
    """A published value with two decimals, or ``-``."""
    return "-" if value is None else f"{value:.2f}"


def gap(records: list[dict[str, Any]], field: str, published: float | None) -> str:
    """Ours minus the paper, in points (mean over seeds)."""
    values = [100 * r[field] for r in records if r.get(field) is not None]
    if not values or published is None:
        return "-"
    return f"{sum(values) / len(values) - published:+.2f}"


def latest_records(records: list[dict[str, Any]], budget: list | None) -> list[dict[str, Any]]:
    """The newest record of each (part, scenario, method, buffer, seed) on ``budget``."""
    chosen: dict[tuple, dict[str, Any]] = {}
    for record in records:
        if record.get("budget") == budget and not record["quick"]:
            chosen[(record["part"], record["scenario"], record["method"], record["buffer"], record["seed"])] = record
    return list(chosen.values())


def rows_of(protocol: str) -> Iterator[tuple[str, int]]:
    """(method, buffer) in table order: the baselines, then each buffer's memory methods."""
    yield from (("joint", -1), ("finetune", -1), ("lwf", -1))
    for buffer in (200, 500):
        yield from ((method, buffer) for method in MEMORY_METHODS)


def comparison_table(protocol: str, records: list[dict[str, Any]]) -> str:
    """Ours (mean ± std over seeds) beside Buzzega et al. 2020's Table 2, one row per method and buffer."""
    rows = []
    for method, buffer in rows_of(protocol):
        mine = [r for r in records if r["method"] == method and r["buffer"] == buffer]
        classes = [r for r in mine if r["scenario"] == "class"]
        tasks = [r for r in mine if r["scenario"] == "task"]
        if not mine:
            continue
        paper_class, paper_task = PUBLISHED[protocol].get((method, buffer), (None, None))
        rows.append([
            "-" if buffer < 0 else buffer, LABELS[method], cell(classes, "average_accuracy"), number(paper_class),
            gap(classes, "average_accuracy", paper_class), cell(classes, "task_il_masked"), number(paper_task),
            gap(classes, "task_il_masked", paper_task), cell(tasks, "average_accuracy"), cell(classes, "forgetting"),
            ",".join(str(r["seed"]) for r in sorted(classes, key=lambda r: r["seed"])) or "-",
        ])
    headers = ["buffer", "method", "class-IL ours", "class-IL paper*", "gap", "task-IL ours (masked)", "task-IL paper*", "gap",
               "task scenario ours (multi-head)", "class-IL forgetting", "seeds"]
    return markdown_table(headers, rows)


def learning_rate_table(diagnostic: list[dict[str, Any]], shown: list[dict[str, Any]]) -> str:
    """DER/DER++ at ER's learning rate beside the same methods at the paper's, on the same budget."""
    rows = []
    for method in ("er", "der", "derpp"):
        for buffer in sorted({r["buffer"] for r in diagnostic}):
            for part, records in (("cifar-class", shown), ("cifar-lr", diagnostic)):
                mine = [r for r in records if r["part"] == part and r["method"] == method and r["buffer"] == buffer]
                if mine:
                    lr = arguments_of(Job(part, "seq-cifar10", "class", method, buffer, 0))["lr"]
                    seeds = ",".join(str(r["seed"]) for r in sorted(mine, key=lambda r: r["seed"]))
                    rows.append([buffer, LABELS[method], lr, cell(mine, "average_accuracy"), cell(mine, "task_il_masked"),
                                 cell(mine, "forgetting"), seeds])
    return markdown_table(["buffer", "method", "lr", "class-IL (%)", "task-IL masked (%)", "forgetting (%)", "seeds"], rows)


def long_budget_table(long: list[dict[str, Any]], short: list[dict[str, Any]], longer: list[dict[str, Any]] = ()) -> str:
    """The paper's class-IL ordering methods on the long Seq-CIFAR-10 budget beside the same runs on the short one (and the 39x one)."""
    rows = []
    for method in LONG_METHODS:
        for buffer in sorted({r["buffer"] for r in long if r["method"] == method}):
            paper = PUBLISHED["seq-cifar10"].get((method, buffer), (None, None))[0]
            for name, records in (("short", short), ("long (13x steps)", long), ("longer (39x steps)", longer)):
                mine = [r for r in records if r["method"] == method and r["buffer"] == buffer and r["scenario"] == "class"]
                if mine:
                    rows.append(["-" if buffer < 0 else buffer, LABELS[method], name, cell(mine, "average_accuracy"), number(paper),
                                 cell(mine, "task_il_masked"), cell(mine, "forgetting"), ",".join(str(r["seed"]) for r in sorted(mine, key=lambda r: r["seed"]))])
    return markdown_table(["buffer", "method", "budget", "class-IL (%)", "class-IL paper*", "task-IL masked (%)", "forgetting (%)", "seeds"], rows)


def lucir_lambda_table(variants: list[dict[str, Any]], default: list[dict[str, Any]]) -> str:
    """LUCIR on Seq-CIFAR-10 at each less-forget base weight (the default 5 from the comparison runs)."""
    rows = []
    default_lambda = 5.0  # lifelong_kd.strategies.LUCIR's default (Hou et al. 2019, Sec. 4.1)
    groups = [(float(r["part"].removeprefix("lucir-lambda")), r) for r in variants] + [(default_lambda, r) for r in default]
    for value in sorted({value for value, _ in groups}):
        for buffer in sorted({r["buffer"] for v, r in groups if v == value}):
            mine = [r for v, r in groups if v == value and r["buffer"] == buffer]
            rows.append([f"{value:g}" + (" (default)" if value == default_lambda else ""), buffer, cell(mine, "average_accuracy"),
                         cell(mine, "task_il_masked"), cell(mine, "forgetting"), ",".join(str(r["seed"]) for r in sorted(mine, key=lambda r: r["seed"]))])
    return markdown_table(["lambda_base", "buffer", "class-IL (%)", "task-IL masked (%)", "forgetting (%)", "seeds"], rows)


def gap_table(variants: list[dict[str, Any]], base: list[dict[str, Any]]) -> str:
    """Seq-MNIST one-factor variants beside the comparison rows they change (same seeds), and the paper's row."""
    rows = []
    for part in GAP_PARTS:
        for method, buffer in rows_of("seq-mnist"):
            mine = [r for r in variants if r["part"] == part and r["method"] == method and r["buffer"] == buffer]
            if not mine:
                continue
            seeds = {r["seed"] for r in mine}
            same = [r for r in base if r["method"] == method and r["buffer"] == buffer and r["seed"] in seeds]
            paper_class, paper_task = PUBLISHED["seq-mnist"].get((method, buffer), (None, None))
            for name, records in (("as in the table above", same), (GAP_LABELS[part], mine)):
                rows.append(["-" if buffer < 0 else buffer, LABELS[method], name, cell(records, "average_accuracy"), number(paper_class),
                             cell(records, "task_il_masked"), number(paper_task), ",".join(str(r["seed"]) for r in sorted(records, key=lambda r: r["seed"]))])
    return markdown_table(["buffer", "method", "variant", "class-IL (%)", "class-IL paper*", "task-IL masked (%)", "task-IL paper*", "seeds"], rows)


def defaults_table(records: list[dict[str, Any]]) -> str:
    """The bare ``lifelong-kd run ... --strategy derpp --buffer-size 200`` per seed and on average."""
    mine = sorted(records, key=lambda r: r["seed"])
    rows = [[r["seed"], f"{100 * r['average_accuracy']:.2f}", f"{100 * r['forgetting']:.2f}"] for r in mine]
    rows.append(["mean ± std", cell(mine, "average_accuracy"), cell(mine, "forgetting")])
    return markdown_table(["seed", "class-IL accuracy (%)", "forgetting (%)"], rows)


def buffer_table(records: list[dict[str, Any]]) -> str:
    """Accuracy against the memory's bytes, per method and buffer size."""
    rows = []
    for method in SWEEP_METHODS:
        for buffer in SWEEP_BUFFERS:
            mine = [r for r in records if r["method"] == method and r["buffer"] == buffer]
            if mine:
                nbytes = mine[0]["memory_bytes"]
                rows.append([LABELS[method], buffer, f"{nbytes:,}", f"{nbytes / 1024:.0f}", f"{nbytes / buffer:.0f}",
                             cell(mine, "average_accuracy"), cell(mine, "forgetting"), len(mine)])
    headers = ["method", "buffer (samples)", "memory_bytes", "KiB", "bytes / sample", "class-IL accuracy (%)", "forgetting (%)", "seeds"]
    return markdown_table(headers, rows)


def commands(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Each configuration's ``lifelong-kd run`` command once (seed written SEED), derived from the job
    as :func:`command` writes it now (records logged before a change of that format stay comparable)."""
    jobs_run = {Job(r["part"], r["protocol"], r["scenario"], r["method"], r["buffer"], r["seed"]) for r in records}
    lines = (job_command(job, args) for job in jobs_run)
    return "\n".join(sorted({seedless(line) if line.startswith("lifelong-kd") else line for line in lines}))


def seedless(line: str) -> str:
    """``line`` with its ``--seed N`` (absent for the default seed 0) moved to the end as ``--seed SEED``."""
    words = line.split()
    kept = [word for index, word in enumerate(words) if word != "--seed" and (index == 0 or words[index - 1] != "--seed")]
    return " ".join(kept) + " --seed SEED"


def wall_minutes(records: list[dict[str, Any]]) -> float:
    """Summed wall time of ``records`` in minutes."""
    return sum(r["wall_seconds"] for r in records) / 60


def notes(name: str) -> str:
    """The hand-written reading (``benchmarks/notes/<name>.md``), kept across rewrites."""
    path = Path(__file__).resolve().parent / "notes" / f"{name}.md"
    return path.read_text().rstrip() + "\n\n" if path.exists() else ""


def budget_line(protocol: Protocol) -> str:
    """One sentence describing a protocol's budget."""
    subset = f"{protocol.train_size} training images per experience (seeded subsample)" if protocol.train_size else "all training images"
    test = f", {protocol.test_size} test images per experience" if protocol.test_size else ", the full test set"
    return (f"`{protocol.model}`, {protocol.epochs} epoch(s), batch {protocol.batch_size}, SGD without momentum, "
            f"{subset}{test}{', random crop + flip (replayed samples too)' if protocol.augment else ''}")


def section(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The class-IL section of docs/results.md."""
    parts: list[str] = []
    shown: list[dict[str, Any]] = []
    for protocol in ("seq-mnist", "seq-cifar10"):
        budget = list(budget_of_protocol(protocol_of(Job("x", protocol, "class", "er", 200, 0), args)))
        mine = [r for r in latest_records(records, budget) if r["part"] in COMPARISON_PARTS]
        shown += mine
        if mine:
            title = {"seq-mnist": "Seq-MNIST (split-MNIST, real MNIST)", "seq-cifar10": "Seq-CIFAR-10 (split-CIFAR-10, JPEG copy)"}[protocol]
            parts.append(f"### {title}\n\nBudget: {budget_line(protocol_of(Job('x', protocol, 'class', 'er', 200, 0), args))}; "
                         f"{len(mine)} runs, {wall_minutes(mine):.0f} min of wall time on the loaded machine.\n\n"
                         f"{comparison_table(protocol, mine)}")
    mnist_budget = list(budget_of_protocol(protocol_of(Job("x", "seq-mnist", "class", "er", 200, 0), args)))
    gaps = [r for r in latest_records(records, mnist_budget) if r["part"] in GAP_PARTS]
    if gaps:
        base = [r for r in shown if r["protocol"] == "seq-mnist" and r["part"] == "mnist-class"]
        parts.append(f"### Seq-MNIST diagnostic: one factor at a time\n\nEach variant changes one thing in the comparison's run "
                     f"(`--parts mnist-gaps,mnist-raw,mnist-init`); the first line of each pair is the comparison row on the same seeds.\n\n"
                     f"{gap_table(gaps, base)}")
        shown += gaps
    cifar_budget = list(budget_of_protocol(protocol_of(Job("x", "seq-cifar10", "class", "er", 200, 0), args)))
    diagnostic = [r for r in latest_records(records, cifar_budget) if r["part"] == "cifar-lr"]
    if diagnostic:
        shown += diagnostic
        parts.append(f"### Seq-CIFAR-10 diagnostic: DER and DER++ at ER's learning rate\n\n{learning_rate_table(diagnostic, shown)}")
    long_budget = list(budget_of_protocol(PROTOCOLS["seq-cifar10-long"]))
    long = [r for r in latest_records(records, long_budget) if r["part"] == "cifar-long"]
    longer = [r for r in latest_records(records, list(budget_of_protocol(PROTOCOLS["seq-cifar10-longer"]))) if r["part"] == "cifar-longer"]
    if long:
        short = [r for r in shown if r["protocol"] == "seq-cifar10" and r["part"] == "cifar-class" and r["seed"] in {x["seed"] for x in long}]
        longer_line = (f" The 39x rows (`--parts cifar-longer`) change only the epochs, to {PROTOCOLS['seq-cifar10-longer'].epochs} "
                       f"({wall_minutes(longer):.0f} min); compare them with the 13x rows of the same seeds." if longer else "")
        parts.append(f"### Seq-CIFAR-10 diagnostic: a 13x longer schedule\n\nBudget: {budget_line(PROTOCOLS['seq-cifar10-long'])} "
                     f"({wall_minutes(long):.0f} min of wall time); the short rows are the same seeds of the table above.{longer_line}\n\n"
                     f"{long_budget_table(long, short, longer)}")
        shown += long + longer
    lucir = [r for r in latest_records(records, cifar_budget) if r["part"].startswith("lucir-lambda")]
    if lucir:
        default = [r for r in shown if r["part"] == "cifar-class" and r["method"] == "lucir" and r["buffer"] in {x["buffer"] for x in lucir}]
        parts.append(f"### Seq-CIFAR-10 diagnostic: LUCIR's less-forget weight\n\n{lucir_lambda_table(lucir, default)}")
        shown += lucir
    defaults = latest_records(records, None)
    defaults = [r for r in defaults if r["part"] == "defaults"]
    if defaults:
        parts.append("### DER++ with the CLI defaults (issue 14's check)\n\n`lifelong-kd run --benchmark split-mnist --scenario "
                     "class --strategy derpp --buffer-size 200 --data-root ../shared/data --seed SEED` (every other flag at its "
                     f"default):\n\n{defaults_table(defaults)}")
    used = shown + defaults
    return (
        f"{notes('class-il')}" + "\n\n".join(parts) + f"\n\n{notes('class-il-reading')}"
        + f"Hardware: {records[-1].get('hardware') if records else hardware()}. Rebuilt from "
        f"`{LOG.relative_to(ROOT)}` by `python benchmarks/run.py class-il --table-only --write-results`.\n\n"
        f"Commands (one line per configuration):\n\n```\n{commands(used, args)}\n```\n"
    )


def buffer_section(records: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The "Choosing a buffer size" section of docs/strategies.md."""
    mine = [r for r in latest_records(records, list(budget_of_protocol(PROTOCOLS["seq-mnist"]))) if r["part"] == "buffers"]
    return (
        f"{notes('class-il-buffers')}{buffer_table(mine)}\n\n{notes('class-il-buffers-reading')}"
        f"Runs: `python benchmarks/run.py class-il --parts buffers --seeds 0,1,2`; table rebuilt by "
        f"`python benchmarks/run.py class-il --table-only --write-results` from `{LOG.relative_to(ROOT)}`. Commands:\n\n"
        f"```\n{commands(mine, args)}\n```\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke: small subsamples, 1 epoch, one seed, buffer 200")
    parser.add_argument("--parts", default="mnist-class,cifar-class,buffers,defaults,mnist-task",
                        help="mnist-class, mnist-task, cifar-class, cifar-task, cifar-lr, cifar-long, cifar-longer, lucir-lambda, mnist-gaps, mnist-raw, mnist-init, buffers, defaults")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(BASELINES + MEMORY_METHODS), help="comma-separated strategy names")
    parser.add_argument("--rerun", action="store_true", help="run the chosen jobs again even if logged (after a fix), from scratch")
    parser.add_argument("--buffers", default="200,500", help="buffer sizes of the comparison parts")
    parser.add_argument("--cifar-model", default=None, help=f"default {PROTOCOLS['seq-cifar10'].model}")
    parser.add_argument("--cifar-epochs", type=int, default=None, help=f"default {PROTOCOLS['seq-cifar10'].epochs}")
    parser.add_argument("--cifar-train-size", type=int, default=None, help=f"default {PROTOCOLS['seq-cifar10'].train_size}")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--table-only", action="store_true", help="rebuild the tables from the log without running")
    parser.add_argument("--write-results", action="store_true", help="rewrite the docs sections (not with --quick)")
    args = parser.parse_args(argv)
    args.buffers = [int(b) for b in args.buffers.split(",")]
    if args.quick:  # every method on Seq-MNIST class-IL; one of each kind elsewhere
        args.parts, args.seeds, args.buffers = "mnist-class,quick-task,quick-cifar", "0", [200]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    new = [] if args.table_only else run_all(args)
    if args.quick:
        print(markdown_table(["protocol", "scenario", "method", "buffer", "avg acc (%)", "task-IL masked (%)", "wall s"],
                             [[r["protocol"], r["scenario"], r["method"], r["buffer"], f"{100 * r['average_accuracy']:.2f}",
                               "-" if r["task_il_masked"] is None else f"{100 * r['task_il_masked']:.2f}",
                               f"{r['wall_seconds']:.0f}"] for r in new]))
        return 0
    records = read_jsonl(LOG)
    text = section(records, args)
    print(text)
    print(buffer_section(records, args))
    if args.write_results:
        write_section(HEADING, text)
        write_section(BUFFER_HEADING, buffer_section(records, args), STRATEGIES_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
