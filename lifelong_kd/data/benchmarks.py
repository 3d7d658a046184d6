"""Benchmark streams: split and permuted versions of digits, MNIST, Fashion-MNIST, CIFAR.

Scenarios (van de Ven & Tolias 2019, "Three scenarios for continual learning"):

* ``task``: the task id is given; the model has one head per experience and targets are
  local labels ``0..k-1`` within the experience.
* ``domain``: no task id; one shared head; targets are local labels ``0..k-1``.
* ``class``: no task id; one head over every class of the stream; targets are global
  labels, numbered in class-order position (experience 0 holds labels ``0..k-1``).

Split streams divide the classes into equal groups (``class_order`` sets the order);
permuted streams apply a fixed random pixel permutation per experience, the first
experience unpermuted (as in van de Ven et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

import torch

from lifelong_kd.data import sources
from lifelong_kd.data.stream import SCENARIOS, BatchTransform, Experience, Split, Stream

# Per-channel statistics of the training sets, for normalisation.
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2860,), (0.3530,))
DIGITS_STATS = ((0.3053,), (0.3759,))  # scikit-learn digits scaled to [0, 1]
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
# MNIST input formats (StreamOptions.input_format) and the benchmarks that take "raw" and "raw32".
INPUT_FORMATS = ("normalised", "raw", "raw32")
RAW_BENCHMARKS = ("split-mnist", "permuted-mnist")


@dataclass(frozen=True)
class StreamOptions:
    """Options shared by every benchmark builder.

    Attributes:
        n_experiences: Number of experiences (None: the benchmark's usual number).
        scenario: ``"task"``, ``"domain"`` or ``"class"``.
        seed: Seed for permutations, class shuffling and subsampling.
        class_order: Explicit class order for split streams (None: natural order,
            or a seeded shuffle when ``shuffle_classes`` is set).
        shuffle_classes: Shuffle the class order with ``seed``.
        train_size: Keep at most this many training samples per experience (None: all);
            a seeded random subset, for quick runs.
        test_size: Keep at most this many test samples per experience (None: all).
        data_root: Folder holding torchvision roots or image archives.
        download: Let torchvision download missing data sets.
        input_format: MNIST inputs: ``"normalised"`` (28x28, normalised with the training
            set's mean and std), ``"raw"`` (28x28, raw pixels in [0, 1], as Buzzega et al.
            2020's code: ``ToTensor()``) or ``"raw32"`` (zero-padded to 32x32, raw pixels in
            [0, 1], as van de Ven et al. 2019's code: ``Pad(2)`` then ``ToTensor()``;
            permutations then cover the 1,024 padded pixels). Other benchmarks take
            ``"normalised"`` only.
        validation_split: Share of each experience's training samples held out and used as
            its evaluation set instead of the test set (0: off, evaluate on the test set);
            for choosing hyperparameters without looking at the test set.
    """

    n_experiences: int | None = None
    scenario: str = "task"  # van de Ven et al. 2019 report all three; task is LwF's home ground
    seed: int = 0
    class_order: tuple[int, ...] | None = None
    shuffle_classes: bool = False  # natural order 0-1, 2-3, ... as in van de Ven et al. 2019
    train_size: int | None = None
    test_size: int | None = None
    data_root: str | Path | None = None
    download: bool = False
    input_format: str = "normalised"  # our convention; "raw": Buzzega et al. 2020's code; "raw32": van de Ven et al. 2019's
    validation_split: float = 0.0  # off: evaluate on the test set

    def __post_init__(self) -> None:
        _validate(self)


def _subsample(split: Split, size: int | None, generator: torch.Generator) -> Split:
    if size is None or size >= len(split):
        return split
    keep = torch.randperm(len(split), generator=generator)[:size].sort().values
    return Split(split.x[keep], split.y[keep])


def _is_count(value: object) -> bool:
    """An integer >= 1 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _validate(options: StreamOptions, n_classes: int | None = None) -> None:
    if options.scenario not in SCENARIOS:
        raise ValueError(f"Unknown scenario {options.scenario!r}; choose one of {', '.join(SCENARIOS)}.")
    if options.n_experiences is not None and not _is_count(options.n_experiences):
        raise ValueError(f"n_experiences must be an integer of at least 1 (or unset: the benchmark's own), got {options.n_experiences!r}.")
    for name in ("train_size", "test_size"):
        value = getattr(options, name)
        if value is not None and not _is_count(value):
            raise ValueError(f"{name} must be a positive number of samples (or unset: all), got {value!r}.")
    if options.input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {', '.join(INPUT_FORMATS)}, got {options.input_format!r}.")
    if not (isinstance(options.validation_split, (int, float)) and 0 <= options.validation_split < 1):
        raise ValueError(f"validation_split must be a share in [0, 1) of each experience's training samples (0: off), got {options.validation_split!r}.")
    if n_classes is not None and options.n_experiences is not None and n_classes % options.n_experiences:
        raise ValueError(
            f"Cannot split {n_classes} classes into {options.n_experiences} equal experiences; "
            f"choose n_experiences among the divisors of {n_classes}."
        )


def _class_order(n_classes: int, options: StreamOptions) -> list[int]:
    if options.class_order is not None:
        order = list(options.class_order)
        if sorted(order) != list(range(n_classes)):
            raise ValueError(f"class_order must be a permutation of 0..{n_classes - 1}, got {order}.")
        return order
    if options.shuffle_classes:
        return torch.randperm(n_classes, generator=torch.Generator().manual_seed(options.seed)).tolist()
    return list(range(n_classes))


def _select(split: Split, classes: Sequence[int], label_of: dict[int, int]) -> Split:
    mask = torch.isin(split.y, torch.tensor(list(classes)))
    lookup = torch.full((int(split.y.max()) + 1,), -1, dtype=torch.long)
    for original, label in label_of.items():
        lookup[original] = label
    return Split(split.x[mask], lookup[split.y[mask]])


def split_stream(
    name: str,
    data: tuple[Split, Split],
    options: StreamOptions,
    default_experiences: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> Stream:
    """Divide a labelled data set's classes into equal groups, one group per experience."""
    train, test = data
    n_classes = int(train.y.max()) + 1
    n_experiences = default_experiences if options.n_experiences is None else options.n_experiences
    _validate(replace(options, n_experiences=n_experiences), n_classes)
    order = _class_order(n_classes, options)
    per = n_classes // n_experiences
    generator = torch.Generator().manual_seed(options.seed)
    transform = BatchTransform(mean=stats[0], std=stats[1])
    experiences = []
    for k in range(n_experiences):
        classes = order[k * per : (k + 1) * per]
        offset = k * per if options.scenario == "class" else 0
        label_of = {c: offset + i for i, c in enumerate(classes)}
        exp_train = _subsample(_select(train, classes, label_of), options.train_size, generator)
        exp_test = _subsample(_select(test, classes, label_of), options.test_size, generator)
        task_id = k if options.scenario == "task" else 0
        experiences.append(Experience(k, task_id, exp_train, exp_test, tuple(classes), transform))
    return Stream(name, options.scenario, tuple(experiences), n_classes, tuple(train.x.shape[1:]))


def permuted_stream(
    name: str,
    data: tuple[Split, Split],
    options: StreamOptions,
    default_experiences: int,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
) -> Stream:
    """One experience per fixed pixel permutation; experience 0 is unpermuted.

    In the class scenario experience ``k`` relabels class ``c`` as ``c + k * n_classes``.
    """
    _validate(options)
    train, test = data
    n_base = int(train.y.max()) + 1
    n_experiences = default_experiences if options.n_experiences is None else options.n_experiences
    n_pixels = train.x.shape[-1] * train.x.shape[-2]
    generator = torch.Generator().manual_seed(options.seed)
    experiences = []
    for k in range(n_experiences):
        permutation = None if k == 0 else torch.randperm(n_pixels, generator=generator)
        offset = k * n_base if options.scenario == "class" else 0
        exp_train = _subsample(Split(train.x, train.y + offset), options.train_size, generator)
        exp_test = _subsample(Split(test.x, test.y + offset), options.test_size, generator)
        transform = BatchTransform(mean=stats[0], std=stats[1], permutation=permutation)
        task_id = k if options.scenario == "task" else 0
        classes = tuple(range(offset, offset + n_base))
        experiences.append(Experience(k, task_id, exp_train, exp_test, classes, transform))
    n_classes = n_base * n_experiences if options.scenario == "class" else n_base
    return Stream(name, options.scenario, tuple(experiences), n_classes, tuple(train.x.shape[1:]))


def _root(options: StreamOptions) -> Path:
    return Path(options.data_root) if options.data_root is not None else sources.default_data_root()


def split_digits(options: StreamOptions) -> Stream:
    """scikit-learn digits (8x8), 5 experiences of 2 classes; ships with scikit-learn."""
    return split_stream("split-digits", sources.load_digits(), options, 5, DIGITS_STATS)


def permuted_digits(options: StreamOptions) -> Stream:
    """scikit-learn digits (8x8) under 5 pixel permutations; ships with scikit-learn."""
    return permuted_stream("permuted-digits", sources.load_digits(), options, 5, DIGITS_STATS)


def mnist_input(options: StreamOptions) -> tuple[tuple[Split, Split], tuple[tuple[float, ...], tuple[float, ...]]]:
    """MNIST's splits and normalisation statistics in ``options.input_format``.

    ``raw`` leaves the images unnormalised (mean 0, std 1: raw [0, 1] pixels); ``raw32`` also
    pads the stored uint8 images (N, 1, 28, 28) with two zero pixels on every side to
    (N, 1, 32, 32).
    """
    splits = sources.load_torchvision("MNIST", _root(options), options.download)
    if options.input_format == "normalised":
        return splits, MNIST_STATS
    if options.input_format == "raw32":
        splits = tuple(Split(torch.nn.functional.pad(split.x, (2, 2, 2, 2)), split.y) for split in splits)
    return splits, ((0.0,), (1.0,))  # mean 0, std 1: raw [0, 1] pixels


def split_mnist(options: StreamOptions) -> Stream:
    """MNIST, 5 experiences of 2 classes (van de Ven et al. 2019)."""
    data, stats = mnist_input(options)
    return split_stream("split-mnist", data, options, 5, stats)


def permuted_mnist(options: StreamOptions) -> Stream:
    """MNIST under 10 pixel permutations (Goodfellow et al. 2013; van de Ven et al. 2019)."""
    data, stats = mnist_input(options)
    return permuted_stream("permuted-mnist", data, options, 10, stats)


def split_fashion_mnist(options: StreamOptions) -> Stream:
    """Fashion-MNIST, 5 experiences of 2 classes."""
    data = sources.load_torchvision("FashionMNIST", _root(options), options.download)
    return split_stream("split-fashion-mnist", data, options, 5, FASHION_STATS)


def split_cifar10(options: StreamOptions) -> Stream:
    """CIFAR-10, 5 experiences of 2 classes (Buzzega et al. 2020 setting)."""
    data = sources.load_cifar10(_root(options), options.download)
    return split_stream("split-cifar10", data, options, 5, CIFAR10_STATS)


def split_cifar100(options: StreamOptions) -> Stream:
    """CIFAR-100, 10 experiences of 10 classes."""
    data = sources.load_torchvision("CIFAR100", _root(options), options.download)
    return split_stream("split-cifar100", data, options, 10, CIFAR100_STATS)


BENCHMARKS: MappingProxyType[str, Callable[[StreamOptions], Stream]] = MappingProxyType(
    {
        "split-digits": split_digits,
        "permuted-digits": permuted_digits,
        "split-mnist": split_mnist,
        "permuted-mnist": permuted_mnist,
        "split-fashion-mnist": split_fashion_mnist,
        "split-cifar10": split_cifar10,
        "split-cifar100": split_cifar100,
    }
)


def build_stream(name: str, options: StreamOptions | None = None) -> Stream:
    """Build a benchmark stream by name (see :data:`BENCHMARKS`).

    Raises:
        ValueError: Unknown name (the message lists the valid ones).
        DataNotFoundError: The data set's files are missing.
    """
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}.")
    options = options or StreamOptions()
    if options.input_format != "normalised" and name not in RAW_BENCHMARKS:
        raise ValueError(f"input_format {options.input_format!r} applies to {', '.join(RAW_BENCHMARKS)} only; drop it for {name}.")
    stream = BENCHMARKS[name](options)
    return hold_out_validation(stream, options.validation_split, options.seed) if options.validation_split else stream


def hold_out_validation(stream: Stream, share: float, seed: int) -> Stream:
    """``stream`` with a seeded ``share`` of each experience's training samples moved into its evaluation split.

    The held-out samples replace the test split (which is dropped), so every accuracy the
    run reports is measured on data drawn from the training set: a validation set for
    choosing hyperparameters (e.g. EWC's lambda) without the test set.
    """
    generator = torch.Generator().manual_seed(seed * 104_729 + 17)  # its own stream: the subsamples' draws stay unchanged
    experiences = []
    for experience in stream:
        order = torch.randperm(len(experience.train), generator=generator)
        held = max(1, round(share * len(order)))
        validation, kept = order[:held].sort().values, order[held:].sort().values
        train = experience.train
        experiences.append(replace(experience, train=Split(train.x[kept], train.y[kept]), test=Split(train.x[validation], train.y[validation])))
    return replace(stream, experiences=tuple(experiences))
