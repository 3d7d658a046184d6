"""Method-comparison suites: every strategy side by side on one budget, robustness included.

``split-cifar10``: task scenario, 5 experiences x 2 classes of the **JPEG copy of CIFAR-10**
in ``../shared/data`` (lossy: absolute accuracies run a little below the original data set).
Methods: Finetune, Joint, EWC, LwF, LwF + feature distillation, LwF with the T^2 factor, MultiTeacher; the same model,
optimiser, epochs, augmentation and seeds for all. Published anchors (Buzzega et al. 2020,
task-IL, full ResNet-18, 50 epochs): SGD 61.02, LwF 63.29, oEWC 68.29, SI 68.05, JOINT 98.31.

``split-cifar10-full``: the same methods on all 50,000 training images with ``convnet:32``,
2 epochs per experience (its own table and log, so budgets never mix).

``permuted-mnist``: the same six methods on permuted-MNIST (5 experiences, domain scenario,
MLP 784-400-400, 1 epoch), the robustness suite's MNIST half.

Every run evaluates the default corruption suite, so ``robustness`` tables come from the
same runs (``python benchmarks/run.py robustness``).

    python benchmarks/method_suites.py split-cifar10 --quick             # CI smoke (minutes)
    python benchmarks/method_suites.py split-cifar10 --seeds 0 --epochs 5 --write-results
    python benchmarks/method_suites.py permuted-mnist --seeds 0,1 --write-results
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_doc import DEFAULT_DATA, DOCUMENTED_DATA_ROOT, OUTPUT, ROOT, append_jsonl, hardware, markdown_table, mean_std, read_jsonl, write_section  # noqa: E402

from lifelong_kd.cli import execute  # noqa: E402
from lifelong_kd.config import RunConfig  # noqa: E402
from lifelong_kd.run_folder import CHECKPOINT  # noqa: E402

METHODS = {
    "Finetune": ("finetune", {}),
    "Joint": ("joint", {}),
    "EWC": ("ewc", {"ewc_lambda": 100.0}),
    "LwF": ("lwf", {"temperature": 2.0, "alpha": 1.0}),
    "LwF + features": ("lwf", {"temperature": 2.0, "alpha": 1.0, "feature_weight": 1.0}),
    "LwF (T^2)": ("lwf", {"temperature": 2.0, "alpha": 1.0, "scale_t2": True}),
    "MultiTeacher": ("multi-teacher", {"temperature": 2.0, "alpha": 1.0}),
}


@dataclass(frozen=True)
class Suite:
    """One benchmark's budget (full mode) and where its numbers go."""

    benchmark: str
    scenario: str
    model: str
    epochs: int
    batch_size: int
    lr: float
    augment: bool
    n_experiences: int
    heading: str
    published: dict[str, float]
    quick_train_size: int
    ewc_lambda: float = 100.0  # van de Ven et al. 2019 (permuted-MNIST); 100 diverges on split-CIFAR-10


SPLIT_CIFAR10 = Suite(
    "split-cifar10", "task", "convnet:32", 5, 64, 0.03, True, 5,
    "## Split-CIFAR-10 (task scenario, JPEG copy)",
    {"Finetune": 61.02, "Joint": 98.31, "EWC": 68.29, "LwF": 63.29},
    500,
    ewc_lambda=5.0,
)
SUITES = {
    "split-cifar10": SPLIT_CIFAR10,
    "split-cifar10-full": replace(SPLIT_CIFAR10, epochs=2, heading="## Split-CIFAR-10, all training images (task scenario, JPEG copy)"),
    "permuted-mnist": Suite(
        "permuted-mnist", "domain", "mlp:400,400", 1, 128, 0.01, False, 5,
        "## Permuted-MNIST, the same methods (domain scenario)",
        {},
        2000,
    ),
}


def log_path(suite: str) -> Path:
    """The JSON-lines log of one suite's runs."""
    return OUTPUT / f"{suite.replace('-', '_')}_runs.jsonl"


def config_for(suite_name: str, method: str, seed: int, args: argparse.Namespace) -> RunConfig:
    """The run config of one method and seed."""
    suite = SUITES[suite_name]
    strategy, options = METHODS[method]
    if strategy == "ewc":
        options = {**options, "ewc_lambda": suite.ewc_lambda}
    model = (args.model or suite.model).replace(":", "").replace(",", "x")
    budget = f"{'quick-' if args.quick else ''}{model}-e{args.epochs}-n{args.train_size or 'all'}"
    variant = ("-feat" if "feature_weight" in options else "") + ("-t2" if options.get("scale_t2") else "")
    tag = f"{suite_name}-{budget}-{strategy}{variant}-s{seed}"
    return RunConfig(
        benchmark=suite.benchmark,
        scenario=suite.scenario,
        n_experiences=suite.n_experiences,
        strategy=strategy,
        strategy_options=options,
        model=args.model or suite.model,
        epochs=args.epochs,
        batch_size=suite.batch_size,
        lr=suite.lr,
        augment=suite.augment,
        seed=seed,
        train_size=args.train_size,
        test_size=args.test_size,
        data_root=str(args.data_root),
        out=str(OUTPUT / "runs" / tag),
        quiet=True,
        robustness_samples=args.robustness_samples,
        robustness_every="1",  # the suite after every experience: these tables report corrupted forgetting
        tensorboard=False,
    )


def command(config: RunConfig) -> str:
    """The equivalent ``lifelong-kd run`` command line."""
    parts = [
        f"--benchmark {config.benchmark} --scenario {config.scenario} --n-experiences {config.n_experiences}",
        f"--strategy {config.strategy} --model {config.model} --epochs {config.epochs} --batch-size {config.batch_size}",
        f"--lr {config.lr}{' --augment' if config.augment else ''} --seed {config.seed} --data-root {DOCUMENTED_DATA_ROOT}",
        f"--robustness-samples {config.robustness_samples}",
    ]
    parts += [f"--{key.replace('_', '-')} {value}" for key, value in config.strategy_options.items()]
    if config.train_size:
        parts.append(f"--train-size {config.train_size} --test-size {config.test_size}")
    return "lifelong-kd run " + " ".join(parts)


def run_one(suite: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """Run one method/seed (resuming its run folder when it holds a checkpoint) and log its summary."""
    config = config_for(suite, method, seed, args)
    start = time.perf_counter()
    results = execute(replace(config, resume=(Path(config.out) / CHECKPOINT).is_file()))
    robustness = results.get("robustness") or {}
    record = {
        "suite": suite,
        "method": method,
        "seed": seed,
        "quick": args.quick,
        "model": config.model,
        "epochs": config.epochs,
        "train_size": config.train_size,
        "average_accuracy": results["metrics"]["average_accuracy"],
        "forgetting": results["metrics"]["forgetting"],
        "mean_corrupted_accuracy": robustness.get("mean_corrupted_accuracy"),
        "relative_robustness": robustness.get("relative_robustness"),
        "corrupted_forgetting": robustness.get("corrupted_forgetting"),
        "train_seconds": results["timing"]["train_seconds"],
        "eval_seconds": results["timing"]["eval_seconds"],
        "wall_seconds": time.perf_counter() - start,
        "command": command(config),
        "hardware": hardware(),
        "accuracy_matrix": results["accuracy_matrix"],
    }
    append_jsonl(log_path(suite), record)
    print(f"{suite} {method:<16} seed {seed}: avg acc {100 * record['average_accuracy']:.2f}  "
          f"forgetting {100 * record['forgetting']:.2f}  train {record['train_seconds']:.0f} s", flush=True)
    return record


def table(records: list[dict], published: dict[str, float]) -> str:
    """Mean ± std per method over the logged seeds."""
    rows = []
    for method in METHODS:
        mine = [r for r in records if r["method"] == method]
        if mine:
            rows.append(
                [
                    method,
                    *([published.get(method, "-")] if published else []),
                    mean_std([r["average_accuracy"] for r in mine]),
                    mean_std([r["forgetting"] for r in mine]),
                    mean_std([r["mean_corrupted_accuracy"] for r in mine]),
                    mean_std([r["relative_robustness"] for r in mine], scale=1.0, digits=3),
                    mean_std([r["corrupted_forgetting"] for r in mine]),
                    f"{sum(r['train_seconds'] for r in mine) / len(mine):.0f}",
                    f"{sum(r['eval_seconds'] for r in mine) / len(mine):.0f}",
                    ",".join(str(r["seed"]) for r in mine),
                ]
            )
    headers = ["method", *(["published task-IL (Buzzega 2020)"] if published else []), "avg acc (%)", "forgetting (%)",
               "corrupted acc (%)", "rel. robustness", "corrupted forgetting (%)", "train s", "eval s", "seeds"]
    return markdown_table(headers, rows)


def budget_of(record: dict) -> tuple:
    """What makes two runs comparable in one table: mode, model, epochs, training subsample."""
    return (record.get("quick"), record.get("model"), record.get("epochs"), record.get("train_size"))


def latest(records: list[dict], budget: tuple | None = None) -> list[dict]:
    """The newest record of each (method, seed) on ``budget`` (None: the newest record's budget)."""
    if budget is None and records:
        budget = budget_of(records[-1])
    chosen: dict[tuple[str, int], dict] = {}
    for record in records:
        if budget_of(record) == budget:
            chosen[(record["method"], record["seed"])] = record
    return list(chosen.values())


IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def draw_curves(suite_name: str, records: list[dict]) -> str:
    """Average-accuracy and forgetting curves of every method (mean over seeds) -> docs/images; the file name."""
    from lifelong_kd.files import write_atomic
    from lifelong_kd.loggers.figures import figure_png, method_curves_figure

    matrices = {m: [r["accuracy_matrix"] for r in records if r["method"] == m] for m in METHODS}
    seeds = sorted({r["seed"] for r in records})
    suite = SUITES[suite_name]
    title = f"{suite.benchmark} ({suite.scenario} scenario): mean ± std over seeds {','.join(map(str, seeds))}"
    name = f"{suite_name.replace('-', '_')}_curves.png"
    write_atomic(IMAGES / name, figure_png(method_curves_figure({m: v for m, v in matrices.items() if v}, title)))
    draw_matrices(suite_name, records)
    return name


# Per-method accuracy matrices of seed 0 that the suites' notes show: image name part -> method.
MATRIX_IMAGES = {"finetune": "Finetune", "lwf": "LwF", "lwf-t2": "LwF (T^2)", "multi-teacher": "MultiTeacher"}


def draw_matrices(suite_name: str, records: list[dict]) -> None:
    """Redraw the seed-0 accuracy matrices the notes show (``docs/images/<suite>_<method>_accuracy_matrix.png``), titled and masked."""
    from lifelong_kd.files import write_atomic
    from lifelong_kd.loggers.base import run_label
    from lifelong_kd.loggers.figures import accuracy_matrix_figure, figure_png

    suite = SUITES[suite_name]
    for part, method in MATRIX_IMAGES.items():
        path = IMAGES / f"{suite_name.replace('-', '_')}_{part}_accuracy_matrix.png"
        record = next((r for r in records if r["method"] == method and r["seed"] == 0), None)
        if path.exists() and record is not None:
            label = run_label({"benchmark": suite.benchmark, "scenario": suite.scenario, "strategy": method, "seed": 0})
            write_atomic(path, figure_png(accuracy_matrix_figure(record["accuracy_matrix"], label)))


def section(suite_name: str, records: list[dict], args: argparse.Namespace) -> str:
    """Our section of docs/results.md (draws the curves figure it links to)."""
    suite = SUITES[suite_name]
    first = records[0]
    data = "CIFAR-10 **JPEG copy** (`../shared/data/cifar10-jpeg`)" if suite.benchmark == "split-cifar10" else "real MNIST"
    commands = "\n".join(sorted({r["command"].replace(f"--data-root {DEFAULT_DATA}", f"--data-root {DOCUMENTED_DATA_ROOT}") for r in records}))  # older records hold this machine's path
    wall = sum(r["wall_seconds"] for r in records) / 60
    subset = f", {first['train_size']} training images per experience (seeded subsample)" if first.get("train_size") else ", all training images"
    samples = recorded_option(first, "--robustness-samples") or args.robustness_samples
    return (
        f"Data: {data}; {suite.n_experiences} experiences, {suite.scenario} scenario{subset}. Model `{first['model']}`, "
        f"{first['epochs']} epoch(s) per experience, SGD lr {suite.lr} momentum 0.9, batch {suite.batch_size}"
        f"{', random crop + flip' if suite.augment else ''}; the same budget for every method. Robustness: default "
        f"corruption suite (8 corruptions x severities 1-5, {samples} test images per experience). "
        f"Hardware: {first.get('hardware') or hardware()}; total wall time {wall:.0f} min.\n\n"
        f"{table(records, suite.published)}\n\n"
        f"Average accuracy on the experiences seen so far and forgetting after each experience, per method "
        f"(mean over seeds; shaded band: ± the sample standard deviation):\n\n![{suite_name} curves](images/{draw_curves(suite_name, records)})\n\n"
        f"{notes(suite_name)}Commands ({suite_commands(suite_name, records)}):\n\n"
        f"```\n{commands}\n```\n"
    )


def recorded_option(record: dict, flag: str) -> str | None:
    """The value of ``flag`` in a record's ``lifelong-kd run`` command (None when absent)."""
    parts = record["command"].split()
    return parts[parts.index(flag) + 1] if flag in parts[:-1] else None


def suite_commands(suite_name: str, records: list[dict]) -> str:
    """The suite commands that produce these records (and rebuild the section from its log alone)."""
    suite, first = SUITES[suite_name], records[0]
    budget = [f"--model {first['model']}"] if first["model"] != suite.model else []
    budget += [f"--epochs {first['epochs']}"] if first["epochs"] != suite.epochs else []
    for flag in ("--train-size", "--test-size", "--robustness-samples"):
        value = recorded_option(first, flag)
        budget += [f"{flag} {value}"] if value is not None else []
    seeds = ",".join(str(seed) for seed in sorted({r["seed"] for r in records}))
    options = " ".join(budget)
    return (
        f"`python benchmarks/run.py {suite_name} --seeds {seeds} {options} --write-results` runs them all; "
        f"`python benchmarks/run.py {suite_name} --table-only {options} --write-results` rebuilds this section "
        f"from `{log_path(suite_name).relative_to(ROOT)}` without running"
    )


def notes(suite_name: str) -> str:
    """The hand-written reading of a suite's table (``benchmarks/notes/<suite>.md``), kept across rewrites."""
    path = Path(__file__).resolve().parent / "notes" / f"{suite_name}.md"
    return path.read_text().rstrip() + "\n\n" if path.exists() else ""


ROBUSTNESS_HEADING = "## Robustness under distribution shift"


def robustness_section(quick: bool) -> str:
    """Clean vs corrupted accuracy and forgetting for every method on both benchmarks."""
    rows = []
    for name in SUITES:
        records = [r for r in read_jsonl(log_path(name)) if r["quick"] == quick]
        records = latest(records)
        for method in METHODS:
            mine = [r for r in records if r["method"] == method]
            if mine:
                rows.append(
                    [name, method, mean_std([r["average_accuracy"] for r in mine]), mean_std([r["mean_corrupted_accuracy"] for r in mine]),
                     mean_std([r["relative_robustness"] for r in mine], scale=1.0, digits=3), mean_std([r["forgetting"] for r in mine]),
                     mean_std([r["corrupted_forgetting"] for r in mine]), len(mine)]
                )
    headers = ["benchmark", "method", "clean acc (%)", "corrupted acc (%)", "rel. robustness", "forgetting (%)", "corrupted forgetting (%)", "seeds"]
    return (
        "Every method of the method suites above, evaluated after each experience on corrupted copies of every "
        "test set (default suite: gaussian noise, impulse noise, gaussian blur, contrast, brightness, pixelate, JPEG, "
        "rotation; severities 1-5; definitions in [metrics.md](metrics.md)). Corrupted forgetting is the forgetting "
        "formula applied to the matrix of mean corrupted accuracies: does a method protect robustness on old tasks "
        "too? Rebuilt from the logs of those suites by `python benchmarks/run.py robustness --table-only --write-results`.\n\n"
        + markdown_table(headers, rows)
        + "\n\n"
        + notes("robustness").rstrip()
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=sorted([*SUITES, "robustness"]))
    parser.add_argument("--quick", action="store_true", help="CI smoke: a small subsample, 1 epoch, one seed")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", default=None, help="override the suite's model spec")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--robustness-samples", type=int, default=256)
    parser.add_argument("--train-size", type=int, default=None, help="training samples kept per experience (reduced budget)")
    parser.add_argument("--test-size", type=int, default=None, help="test samples kept per experience")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--write-results", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)
    suite = SUITES["permuted-mnist" if args.suite == "robustness" else args.suite]
    args.epochs = args.epochs or suite.epochs
    if args.quick:
        args.train_size, args.test_size = suite.quick_train_size, 200
        args.epochs, args.robustness_samples = 1, 32
    return args


def run_all(suite: str, args: argparse.Namespace) -> None:
    """Every chosen method for every seed."""
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in args.methods.split(","):
            run_one(suite, method, seed, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.suite == "robustness":
        if not args.table_only:  # the MNIST half; split-CIFAR-10 runs come from its own suite
            run_all("permuted-mnist", args)
        text = robustness_section(args.quick)
        print(text)
        if args.write_results and not args.quick:
            write_section(ROBUSTNESS_HEADING, text)
        return 0
    if not args.table_only:
        run_all(args.suite, args)
    suite = SUITES[args.suite]
    records = latest(read_jsonl(log_path(args.suite)), (args.quick, args.model or suite.model, args.epochs, args.train_size))
    print(table(records, suite.published))
    if args.write_results and records and not args.quick:
        write_section(suite.heading, section(args.suite, records, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
