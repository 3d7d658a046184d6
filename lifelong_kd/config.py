"""RunConfig: every option of ``lifelong-kd run``, one field per CLI flag and config-file key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lifelong_kd.data.benchmarks import StreamOptions
from lifelong_kd.train import TrainConfig

# Small embedded streams need more passes than one: 250 samples per experience.
DEFAULT_EPOCHS = {"split-digits": 20, "permuted-digits": 20}
# Largest run seed: the loop derives torch seeds as seed * 1_000_003 + experience (pipeline.seed_everything),
# which must stay below 2**63; 2**31 - 1 also fits every 32-bit seed API (numpy, Python's random).
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class RunConfig:
    """One run. Field names are the CLI flags (``--n-experiences`` = ``n_experiences``).

    Strategy options (``temperature``, ``alpha``, ...) live in ``strategy_options``;
    on the command line and at the top level of a config file they are plain keys.
    """

    benchmark: str = "split-digits"  # embedded in scikit-learn: runs with no download
    scenario: str = "task"  # LwF's setting (Li & Hoiem 2016): task id given, one head per task
    n_experiences: int | None = None  # None: the benchmark's usual number (5, or 10 for permuted-MNIST)
    strategy: str = "finetune"
    model: str = "auto"  # mlp:400,400 for grayscale (van de Ven et al. 2019), resnet18:20 for colour
    epochs: int | None = None  # None: 1, or 20 on the small embedded digits streams
    iterations: int | None = None  # fixed minibatches per experience instead of epochs
    batch_size: int = 128  # van de Ven et al. 2019; Avalanche's examples
    lr: float = 0.01
    optimizer: str = "sgd"
    keep_optimizer: bool = False  # a fresh optimiser per experience (Avalanche); True: one for the whole run (van de Ven et al. 2019's code)
    cross_entropy_classes: str = "all"  # "all" outputs; "seen": class scenario, classes of experiences so far (van de Ven et al. 2019's "active classes")
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = False  # random crop + flip; use for split-CIFAR
    seed: int = 0
    eval_batch_size: int | None = None  # None: per model (1024 for MLPs, 32-64 for ConvNets)
    precision: str = "fp32"  # "bf16": bfloat16 autocast for matmuls/convolutions (about 2x on CPUs with AVX512-BF16/AMX); "bf16-master": the same on bfloat16 weight copies of float32 masters; "fp16": CUDA only
    fused_optimizer: bool = True  # torch's fused SGD/Adam step: the same numbers as its default to float rounding, fewer passes over memory
    compile: bool = False  # torch.compile of the training forward/backward; off: compiling costs minutes on a small CPU (compile_seconds in the timing)
    device: str = "auto"  # CUDA when available, else the CPU; under torchrun each process takes cuda:LOCAL_RANK (docs/distributed.md)
    deterministic: bool = False  # deterministic kernels only (CUDA runs repeat bit for bit, a little slower)
    data_on_device: bool = False  # copy each experience's training data to the device once instead of every minibatch
    threads: int | None = None  # torch CPU threads; None: $OMP_NUM_THREADS, else torch's default (one per core); lifelong_kd.threads
    train_size: int | None = None  # per-experience training subsample for quick runs
    test_size: int | None = None
    class_order: tuple[int, ...] | None = None
    shuffle_classes: bool = False
    data_root: str | None = None  # None: $LIFELONG_KD_DATA or ./data
    input_format: str = "normalised"  # MNIST: 28x28 normalised; "raw": 28x28 raw [0, 1] pixels (Buzzega et al. 2020's code); "raw32": 32x32 zero-padded raw pixels (van de Ven et al. 2019's code)
    validation_split: float = 0.0  # share of each experience's training data held out and evaluated instead of the test set (0: off)
    download: bool = False
    out: str | None = None
    resume: bool = False
    overwrite: bool = False  # replace the run --out holds (without it, a folder holding a run is refused)
    quiet: bool = False
    engine: str = "lifelong-kd"  # training loop: ours, or "avalanche" (its Naive template + our plugin) to compare
    shifts: str = "default"  # robustness suite: "default", "none", "all" or "name,name,..."
    severities: tuple[int, ...] = (1, 2, 3, 4, 5)  # all five levels, as in CIFAR-10-C / MNIST-C
    robustness_samples: int | None = 64  # test samples per experience under each corruption (64: the default suite stays near 10% of training, issue 18)
    robustness_every: str = "auto"  # when the suite runs: "auto" (per stream, docs/metrics.md), "final", or K (every K-th experience and the final one)
    instruments: bool = True  # per-class accuracy and forgetting, confusion matrix, negative flips (from the evaluation's own predictions)
    drift_samples: int | None = 512  # probe samples of representation drift (linear CKA between snapshots); 0: off
    eval_every: int | None = None  # continual evaluation every K iterations (De Lange et al. 2023 evaluate every one); None: off
    probe_samples: int | None = 256  # test samples per experience of the continual-evaluation probe (the paper's code: 1,000)
    reference_model: str | None = None  # run folder of a reference (teacher) for compression ratios
    tensorboard: bool = True
    figures_every: int | None = None  # draw figures every K experiences and after the last; None: every experience up to 5, about 5 times a run up to 20, else after the last only
    csv: bool = False  # <out>/metrics.csv: one row per experience (off: results.json and metrics.jsonl hold the same numbers)
    wandb: str | None = None  # Weights & Biases project to log to (None: off; needs the [wandb] extra)
    student: str | None = None  # lifelong compression: small model spec (e.g. mlp:100,100) distilled from --model
    teacher: str | None = None  # lifelong compression: run folder of a finished teacher instead of training --model
    prune: tuple[float, ...] = (0.5, 0.8, 0.9)  # sparsities of the pruned-teacher baselines (Han et al. 2015: ~90%)
    student_alone: bool = False  # also train the student without the large teacher (LwF only), as a baseline
    strategy_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(
                f"--seed must be an integer from 0 to {MAX_SEED} (2**31 - 1; the run derives 64-bit torch seeds "
                f"from it), got {self.seed!r}; pick a smaller seed."
            )

    def train_config(self) -> TrainConfig:
        """The training settings."""
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS.get(self.benchmark, 1)
        return TrainConfig(
            epochs=epochs,
            iterations=self.iterations,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            keep_optimizer=self.keep_optimizer,
            cross_entropy_classes=self.cross_entropy_classes,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            augment=self.augment,
            seed=self.seed,
            eval_batch_size=self.eval_batch_size,
            precision=self.precision,
            progress=not self.quiet,  # a bar on a terminal, else a line every 30 s (lifelong_kd.logs)
            device=self.device,
            deterministic=self.deterministic,
            data_on_device=self.data_on_device,
            fused_optimizer=self.fused_optimizer,
            compile=self.compile,
        )

    def stream_options(self) -> StreamOptions:
        """The stream settings."""
        return StreamOptions(
            n_experiences=self.n_experiences,
            scenario=self.scenario,
            seed=self.seed,
            class_order=self.class_order,
            shuffle_classes=self.shuffle_classes,
            train_size=self.train_size,
            test_size=self.test_size,
            data_root=self.data_root,
            download=self.download,
            input_format=self.input_format,
            validation_split=self.validation_split,
        )

    def record(self) -> dict[str, Any]:
        """Plain-value dict of every field (stored in ``results.json``)."""
        record = asdict(self)
        record["strategy_options"] = dict(self.strategy_options)
        record["class_order"] = list(self.class_order) if self.class_order is not None else None
        record["severities"] = list(self.severities)
        record["prune"] = list(self.prune)
        return record


def field_names() -> tuple[str, ...]:
    """Names of the :class:`RunConfig` fields (without ``strategy_options``)."""
    return tuple(f.name for f in fields(RunConfig) if f.name != "strategy_options")
