"""The one training loop: minibatches of cross-entropy plus the strategy's extra loss.

Devices: minibatches go where the model is (:func:`lifelong_kd.distributed.module_device`).
The stored data stays in host memory (``uint8`` images); each minibatch is gathered there,
augmented, moved (through page-locked memory, without blocking, to a GPU) and transformed on
the device; ``TrainConfig.data_on_device`` instead copies an experience's data to the device
once. ``Batch.index`` stays on the host (strategies index stored data with it).

Several processes (:mod:`lifelong_kd.distributed`): every process draws the same global
permutation and trains on its rows of each global minibatch (:meth:`TrainingSet.shards`);
the forward runs through ``DistributedDataParallel``, which averages the gradients, and each
process's loss is weighted so that the average is the gradient of the whole minibatch's mean
loss. A step therefore sees the same samples, and gives the same update up to float
rounding, as one process with the same (global) ``batch_size``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from lifelong_kd import distributed
from lifelong_kd.data.augment import random_crop_flip
from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.logs import LossCurve, Progress
from lifelong_kd.loss_terms import LossTermCurve
from lifelong_kd.strategies.base import ModelOutput, Strategy

OPTIMIZERS = ("sgd", "adam")
PRECISIONS = ("fp32", "bf16", "bf16-master", "fp16")
CROSS_ENTROPY_CLASSES = ("all", "seen")
AUTOCAST_TYPES = {"bf16": torch.bfloat16, "bf16-master": torch.bfloat16, "fp16": torch.float16}
FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused SGD/Adam kernels run (torch.optim docs, "fused")
LOW_PRECISION_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layers torch.autocast runs in bfloat16


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; finished experiences are kept on disk."""


@dataclass(frozen=True)
class TrainConfig:
    """How each experience is trained.

    Attributes:
        epochs: Passes over each experience's training set (ignored when ``iterations`` is set).
        iterations: Fixed number of minibatches per experience (van de Ven et al. 2019 use
            2,000 on split-MNIST); None trains for ``epochs``.
        batch_size: Samples per minibatch (128 in van de Ven et al. 2019 and Avalanche examples).
        lr: Learning rate.
        optimizer: ``"sgd"`` or ``"adam"``; a fresh optimiser per experience, as Avalanche does,
            unless ``keep_optimizer``.
        keep_optimizer: Carry the optimiser's state (Adam's moments and step count, SGD's
            momentum) from one experience to the next, as one optimiser for the whole run
            would (van de Ven et al. 2019's code: ``--optimizer adam``; their ``adam_reset`` is
            our default, a fresh optimiser per experience). The run folder keeps the state.
        cross_entropy_classes: ``"all"``: the cross-entropy covers every output of the
            sample's head. ``"seen"``: in the class scenario, only the classes of the
            experiences trained so far (van de Ven et al. 2019's "active classes"); outputs of
            later classes get no gradient from it. No effect in the task and domain scenarios.
        momentum: SGD momentum (0.9, the common choice for split-CIFAR).
        weight_decay: L2 penalty (0: none of the reproduced papers use it).
        augment: Random crop (padding 4) and horizontal flip per sample, for colour images.
        seed: Seed of model initialisation, shuffling and augmentation.
        eval_batch_size: Samples per batch at evaluation; None (default) picks one per model
            (:func:`lifelong_kd.models.inference_batch_size`: 1024 for MLPs, 32-64 for ConvNets).
        progress: Show progress: a bar with ETA when stderr is a terminal, else a log line
            every 30 s (logger ``lifelong_kd.progress``, see :mod:`lifelong_kd.logs`).
        precision: ``"fp32"`` (default), ``"bf16"``, ``"bf16-master"`` or ``"fp16"``: matmuls and
            convolutions of training, teacher forwards and evaluation run in bfloat16 (CPU, or
            CUDA from compute capability 8.0) or float16 (CUDA only, with a gradient scaler) under
            ``torch.autocast``; weights, optimiser state and losses stay float32. bf16 is about
            2x faster on CPUs with AVX512-BF16 or AMX; much slower on CPUs without them.
            ``"bf16-master"`` is ``"bf16"`` with the training forward run on bfloat16 copies of
            the linear and convolution weights (:class:`LowPrecisionWeights`), refreshed in
            place from the float32 parameters (the master weights, Micikevicius et al. 2018)
            after each optimiser step, instead of cast by autocast in every forward: the same
            numbers as ``"bf16"`` (tests/test_fast_steps.py), one process only.
        fused_optimizer: The optimiser step in torch's fused kernel (``fused=True`` of SGD and
            Adam, on the CPU and CUDA): one pass over parameters, gradients and state instead
            of one operation per tensor and term; the same numbers to float rounding
            (tests/test_fast_steps.py). False: torch's default implementation.
        compile: Run the training forward and backward through ``torch.compile`` (TorchInductor;
            on the CPU it needs a C++ compiler). The first step of each minibatch size compiles
            (seconds to minutes, counted in the training time and reported as
            ``compile_seconds``); later experiences of the same model reuse the code. The numbers
            agree with the eager ones to float rounding, not bit for bit (fused kernels).
        device: ``"auto"`` (default: CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"`` or ``"mps"`` (:func:`lifelong_kd.distributed.resolve_device`); the loop
            moves the models there. Under torchrun, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
        deterministic: Deterministic kernels only (``torch.use_deterministic_algorithms``,
            cuDNN and cuBLAS settings): CUDA runs repeat bit for bit, a little slower; CPU runs
            are deterministic already.
        data_on_device: Copy each experience's training data to the device once, instead of
            moving every minibatch (faster on a GPU when the data fits in its memory; no effect
            on the CPU).
    """

    epochs: int = 1
    iterations: int | None = None
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: bool = False
    seed: int = 0
    keep_optimizer: bool = False  # fresh optimiser per experience, as Avalanche; True: van de Ven et al. 2019's code
    cross_entropy_classes: str = "all"  # every output; "seen": van de Ven et al. 2019's active classes (class scenario)
    eval_batch_size: int | None = None
    progress: bool = True
    precision: str = "fp32"
    device: str = "auto"  # CUDA when available (the usual expectation of GPU users), else the CPU
    deterministic: bool = False  # off: PyTorch's default (fast, possibly non-deterministic CUDA kernels)
    data_on_device: bool = False  # per-minibatch copies: works whatever the data's size
    fused_optimizer: bool = True  # same numbers as torch's default step to float rounding, fewer passes over memory
    compile: bool = False  # off: compiling costs minutes on a small CPU, more than a short run saves

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (self.iterations is None or self.iterations >= 1, f"iterations must be at least 1, got {self.iterations}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size is None or self.eval_batch_size >= 1, f"eval_batch_size must be at least 1, got {self.eval_batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be a positive number, got {self.lr}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"weight_decay must be non-negative, got {self.weight_decay}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.cross_entropy_classes in CROSS_ENTROPY_CLASSES, f"cross_entropy_classes must be one of {', '.join(CROSS_ENTROPY_CLASSES)}, got {self.cross_entropy_classes!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")
        distributed.check_device_name(self.device)


def autocast(precision: str, device_type: str = "cpu") -> AbstractContextManager:
    """The mixed-precision context of a run: autocast to bfloat16 (``"bf16"``, ``"bf16-master"``) or float16 (``"fp16"``), else nothing.

    Wraps everything that runs the model in a step of the stream (strategy hooks, the
    minibatch loop and evaluation), so teacher caches and accuracies use the same precision
    as training.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"bf16-master"`` or ``"fp16"``.
        device_type: ``"cpu"``, ``"cuda"`` or ``"mps"``: where the models run.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    # No weight-cast cache: the region spans many optimiser steps, and a cached low-precision
    # copy of a weight would go stale after the first one.
    dtype = AUTOCAST_TYPES.get(precision, torch.bfloat16)
    return torch.autocast(device_type, dtype=dtype, enabled=precision != "fp32", cache_enabled=False)


def gradient_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A gradient scaler for float16 training (its small exponent range underflows small gradients); None otherwise."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """A fresh optimiser over the trainable parameters, in torch's fused kernel when ``config.fused_optimizer`` allows."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = fused_step(params, config)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused)
    start_momentum(optimizer)
    return optimizer


def start_momentum(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter of a fused SGD with momentum a zero momentum buffer, where it has none.

    Torch's fused SGD treats a step as every parameter's first or none's: a parameter whose
    first gradient comes after the others' (a new task's head, a head that only replayed
    samples reach) would have no buffer and stop the step. A zero buffer gives the default
    step's numbers exactly: its first update is ``momentum * 0 + gradient = gradient``, what the
    default step stores (our SGD has no dampening).
    """
    if not isinstance(optimizer, torch.optim.SGD):
        return
    for group in optimizer.param_groups:
        if group.get("fused") and group["momentum"] != 0:
            for parameter in group["params"]:
                state = optimizer.state[parameter]
                if state.get("momentum_buffer") is None:
                    state["momentum_buffer"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)


def fused_step(params: list[Tensor], config: TrainConfig) -> bool | None:
    """True when ``config`` asks for the fused step and every parameter is a float tensor on a device that has it; else None (torch's default)."""
    if not config.fused_optimizer or not params:
        return None
    supported = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return True if supported else None


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load ``state`` (``keep_optimizer``, ``--resume``) and keep this optimiser's implementation.

    ``Optimizer.load_state_dict`` takes every group setting from the saved state, ``fused`` and
    ``foreach`` included; the run's current ``fused_optimizer`` choice is put back, and the
    parameters the saved state has no momentum for get a zero one (:func:`start_momentum`).
    """
    implementation = [{key: group.get(key) for key in ("fused", "foreach")} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, implementation, strict=True):
        group.update(kept)
    start_momentum(optimizer)


class LowPrecisionWeights:
    """bfloat16 copies of a model's linear and convolution parameters, for the training forward (``precision="bf16-master"``).

    The model's own float32 parameters stay the master weights that the optimiser steps,
    the checkpoint saves and evaluation, teachers and strategies read. The training forward
    runs on the copies (``torch.func.functional_call``), so autocast finds its matmul weights
    in bfloat16 already and casts none of them; after the backward pass
    :meth:`gradients_to_masters` hands the copies' bfloat16 gradients to the masters in
    float32, and after the optimiser step :meth:`refresh` rounds the masters into the copies,
    in place. The copies and their rounding are those autocast makes in each forward, so a
    step gives the numbers of ``precision="bf16"``.

    Args:
        model: A model with ``features`` and ``heads`` (:class:`~lifelong_kd.models.Classifier`).
        dtype: The copies' type.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.network = FeaturesAndLogits(model)
        self.masters = {
            ".".join(part for part in ("model", module_name, name) if part): parameter
            for module_name, module in model.named_modules()
            if isinstance(module, LOW_PRECISION_LAYERS)
            for name, parameter in module.named_parameters(recurse=False)
            if parameter.requires_grad and parameter.is_floating_point()
        }
        self.copies = {name: master.detach().to(dtype).requires_grad_() for name, master in self.masters.items()}
        self.gradients: dict[str, Tensor] = {}  # float32 gradient buffers, reused every step

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, D) and every head's logits (B, H, K) of ``x``, computed with the copies."""
        return torch.func.functional_call(self.network, self.copies, (x,))

    @torch.no_grad()
    def gradients_to_masters(self) -> None:
        """Each copy's gradient, in float32, into its master's ``grad`` (added to one the master already has)."""
        for name, copy in self.copies.items():
            if copy.grad is None:
                continue
            master = self.masters[name]
            if master.grad is None:
                buffer = self.gradients.get(name)
                if buffer is None:
                    buffer = self.gradients[name] = torch.empty_like(master)
                master.grad = buffer.copy_(copy.grad)
            else:
                master.grad.add_(copy.grad)
            copy.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Round the (just stepped) masters into the copies, in place."""
        for name, copy in self.copies.items():
            copy.copy_(self.masters[name])


class TrainingSet:
    """Concatenation of experiences' training splits, sampled by global index.

    ``Batch.index`` is the position in this concatenation (for one experience, the
    position in its training split).

    Args:
        experiences: The experiences whose training splits are drawn from.
        augment: Random crop (padding 4) and horizontal flip per sample.
        generator: Source of the permutations and augmentations (seeded alike in every process).
        device: Where minibatches go (None: the CPU).
        data_on_device: Copy the training splits to ``device`` once, instead of moving each minibatch.
    """

    def __init__(
        self, experiences: list[Experience], augment: bool, generator: torch.Generator, device: torch.device | None = None, data_on_device: bool = False
    ) -> None:
        self.experiences = experiences
        self.augment = augment
        self.generator = generator
        self.device = device or torch.device("cpu")
        self.stored = [(e.train.x, e.train.y) for e in experiences]
        if data_on_device:
            self.stored = [(x.to(self.device), y.to(self.device)) for x, y in self.stored]
        sizes = [len(e.train) for e in experiences]
        self.offsets = torch.tensor([0, *sizes]).cumsum(0)
        self.size = int(self.offsets[-1])

    def _arrange(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``index`` in minibatch order (grouped by experience, drawing order within each) and each position's experience."""
        if len(self.experiences) == 1:
            return index, torch.zeros_like(index)
        owners = torch.bucketize(index, self.offsets[1:], right=True)
        order = torch.argsort(owners, stable=True)
        return index[order], owners[order]

    def batch(self, index: Tensor, rows: slice | None = None) -> Batch:
        """Gather, augment, move and transform the samples at global positions ``index``.

        Args:
            index: Global positions of one minibatch.
            rows: Keep only these rows of the minibatch (one process's part). Augmentations
                are still drawn for the whole minibatch, so each row gets the crop and flip
                it gets in a single process, and every process's generator stays in step.
        """
        if len(self.experiences) == 1 and rows is None:
            return self._single_batch(index)
        positions, owners = self._arrange(index)
        if rows is not None and not self.augment:
            positions, owners = positions[rows], owners[rows]
        groups, counts = torch.unique_consecutive(owners, return_counts=True)
        xs, ys, tasks = [], [], []
        for part, local in zip(groups.tolist(), positions.split(counts.tolist()), strict=True):
            x, y = self.stored[part]
            local = local - self.offsets[part]
            x = x.index_select(0, local.to(x.device))  # as x[local]; several times faster on uint8 images
            xs.append(random_crop_flip(x, self.generator) if self.augment else x)
            ys.append(y.index_select(0, local.to(y.device)))
            tasks.append(torch.full((len(local),), self.experiences[part].task_id, dtype=torch.long))
        x, y, task_id = torch.cat(xs), torch.cat(ys), torch.cat(tasks)
        if rows is not None and self.augment:
            x, y, task_id, positions, owners = x[rows], y[rows], task_id[rows], positions[rows], owners[rows]
            groups, counts = torch.unique_consecutive(owners, return_counts=True)
        x, y, task_id = (distributed.to_device(t, self.device) for t in (x, y, task_id))
        return Batch(self._transform(x, groups.tolist(), counts.tolist()), y, task_id, positions, self.augment)

    def _single_batch(self, index: Tensor) -> Batch:
        """:meth:`batch` of a training set of one experience, in one process: the same samples, fewer operations."""
        x, y = self.stored[0]
        experience = self.experiences[0]
        x = x.index_select(0, index.to(x.device))  # as x[index]; advanced indexing of (N, C, H, W) uint8 is several times slower
        x = random_crop_flip(x, self.generator) if self.augment else x
        y = y.index_select(0, index.to(y.device))
        task_id = torch.full((len(index),), experience.task_id, dtype=torch.long)
        x, y, task_id = (distributed.to_device(t, self.device) for t in (x, y, task_id))
        return Batch(experience.transform(x), y, task_id, index, self.augment)

    def _transform(self, x: Tensor, parts: list[int], counts: list[int]) -> Tensor:
        """Stored samples -> model inputs, each consecutive group of rows by its own experience's transform."""
        if len(parts) == 1:
            return self.experiences[parts[0]].transform(x)
        return torch.cat([self.experiences[part].transform(piece) for part, piece in zip(parts, x.split(counts), strict=True)])

    def positions(self, batch_size: int, n_batches: int) -> Iterator[Tensor]:
        """Global positions of ``n_batches`` shuffled minibatches, reshuffling after each pass."""
        produced = 0
        while produced < n_batches:
            permutation = torch.randperm(self.size, generator=self.generator)
            for start in range(0, self.size, batch_size):
                if produced == n_batches:
                    return
                yield permutation[start : start + batch_size]
                produced += 1

    def batches(self, batch_size: int, n_batches: int) -> Iterator[Batch]:
        """``n_batches`` shuffled minibatches, reshuffling after each pass."""
        for index in self.positions(batch_size, n_batches):
            yield self.batch(index)

    def shards(self, batch_size: int, n_batches: int, rank: int = 0, world_size: int = 1) -> Iterator[tuple[Batch, float]]:
        """Process ``rank``'s rows of each of ``n_batches`` global minibatches, with its loss weight.

        Every process draws the same permutations; the rows and the weight come from
        :func:`lifelong_kd.distributed.shard_rows` (weight 1 in a single process).
        """
        for index in self.positions(batch_size, n_batches):
            if world_size == 1:
                yield self.batch(index), 1.0
                continue
            rows, weight = distributed.shard_rows(len(index), rank, world_size)
            yield self.batch(index, rows), weight


def n_batches(size: int, config: TrainConfig) -> int:
    """Number of minibatches one experience trains for."""
    if config.iterations is not None:
        return config.iterations
    return config.epochs * math.ceil(size / config.batch_size)


class FeaturesAndLogits(nn.Module):
    """``model.features`` then ``model.heads`` as one module call: what ``DistributedDataParallel`` wraps.

    Running the forward through the wrapper is what makes it exchange the gradients during
    the backward pass (it hooks the parameters used by its own forward).

    Args:
        model: A model with ``features`` and ``heads`` (:class:`~lifelong_kd.models.Classifier`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Features (B, D) and every head's logits (B, H, K)."""
        features = self.model.features(x)
        return features, self.model.heads(features)


def forward(model: nn.Module, batch: Batch, network: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> ModelOutput:
    """One forward pass giving features, every head's logits and each sample's own logits.

    Args:
        model: The model.
        batch: The minibatch.
        network: A callable giving ``(features, all_logits)`` of ``batch.x`` for ``model`` (the
            data-parallel :class:`FeaturesAndLogits`, or :class:`LowPrecisionWeights`); None calls
            ``model`` directly.
    """
    if network is None:
        features = model.features(batch.x)
        all_logits = model.heads(features)
    else:
        features, all_logits = network(batch.x)
    return ModelOutput(model.select(all_logits, batch.task_id), all_logits, features)


def train_step(
    model: nn.Module,
    strategy: Strategy,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    *,
    network: nn.Module | None = None,
    weight: float = 1.0,
    scaler: torch.amp.GradScaler | None = None,
    terms: dict[str, Tensor] | None = None,
    seen_classes: Tensor | None = None,
    weight_copies: LowPrecisionWeights | None = None,
) -> float:
    """Cross-entropy + strategy loss, backward, optimiser step; returns the loss.

    The phases are labelled ``lkd.forward``, ``lkd.loss``, ``lkd.backward`` and
    ``lkd.optimizer`` for ``torch.profiler`` (``benchmarks/profile_runs.py`` reads them).

    Args:
        model: The model being trained.
        strategy: Adds its loss term.
        optimizer: Steps the model's parameters.
        batch: This process's minibatch.
        network: The forward module (see :func:`forward`); None: ``weight_copies`` when given, else ``model``.
        weight: Multiplies the loss before the backward pass (a process's share of a global
            minibatch, :func:`lifelong_kd.distributed.shard_rows`); the returned loss is unweighted.
        scaler: Gradient scaler of float16 training (:func:`gradient_scaler`).
        terms: Filled with the loss's parts, detached on the device (:func:`loss_terms`); None: not kept.
        seen_classes: Boolean mask (K,) of the outputs the cross-entropy covers (:func:`seen_class_mask`); None: all.
        weight_copies: Low-precision copies of the weights the forward runs on (``precision="bf16-master"``,
            one process; directly or inside ``network``, :func:`training_network`): their gradients go to
            the model's parameters before the optimiser step, which they follow after it. None: the
            forward runs on the model's parameters.
    """
    with phase("lkd.forward"):
        output = forward(model, strategy.transform_batch(batch), network if network is not None else weight_copies)
    with phase("lkd.loss"):
        logits = output.logits if seen_classes is None else output.logits.masked_fill(~seen_classes, float("-inf"))
        cross_entropy = F.cross_entropy(logits, batch.y)
        extra = strategy.loss(model, batch, output) if has_extra_loss(strategy) else None
        loss = cross_entropy if extra is None else cross_entropy + extra
        if terms is not None:
            terms.update(loss_terms(strategy, cross_entropy, extra))
        value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"loss became {value} (non-finite); lower --lr or check the strategy's weights. "
            "Every finished experience is kept in the run folder."
        )
    with phase("lkd.backward"):
        optimizer.zero_grad(set_to_none=True)
        scale = weight * strategy.loss_scale()
        weighted = loss if scale == 1.0 else loss * scale
        (weighted if scaler is None else scaler.scale(weighted)).backward()
    with phase("lkd.optimizer"):
        if weight_copies is not None:
            weight_copies.gradients_to_masters()
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        if weight_copies is not None:
            weight_copies.refresh()
    return value


def has_extra_loss(strategy: Strategy) -> bool:
    """Whether ``strategy`` adds a loss term (overrides :meth:`~lifelong_kd.strategies.base.Strategy.loss`).

    The base class's term is a zero: adding it changes neither the loss nor a gradient
    (``x + 0 == x`` exactly), so the loop leaves it out, with its two operations per step.
    """
    return type(strategy).loss is not Strategy.loss


def loss_terms(strategy: Strategy, cross_entropy: Tensor, extra: Tensor | None) -> dict[str, Tensor]:
    """The named parts of one step's loss, detached: ``cross_entropy``, then the strategy's terms.

    The terms the strategy recorded (:meth:`~lifelong_kd.strategies.base.Strategy.sum_terms`), or
    its whole extra loss as one term named after it; none for a strategy without an extra loss
    (``extra`` None).
    """
    recorded = strategy.recorded_terms()
    if recorded is None:
        recorded = {} if extra is None or not has_extra_loss(strategy) else {strategy.name: extra.detach()}
    return {"cross_entropy": cross_entropy.detach(), **recorded}


def phase(label: str) -> AbstractContextManager:
    """``record_function(label)`` while a profiler records (``torch.profiler``), else nothing.

    Entering a ``record_function`` costs a dispatcher call even with no profiler running
    (several per step, a few percent of a small model's step), so the labels exist only
    when someone reads them (``benchmarks/profile_runs.py``).
    """
    return record_function(label) if torch._C._autograd._profiler_enabled() else nullcontext()


def train_experience(
    model: nn.Module,
    strategy: Strategy,
    stream: Stream,
    experience: Experience,
    config: TrainConfig,
    on_step: Callable[[int, int], None] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` on one experience (the hooks are the caller's).

    ``optimizer_state``, when given, is loaded into the new optimiser (``keep_optimizer``:
    the state the previous experience ended with, returned as ``"optimizer_state"``).

    ``on_step(iteration, total)``, when given, is called after every optimiser step with the
    iteration just done (counted from 1 within the experience) and the experience's number of
    iterations (continual evaluation, :meth:`lifelong_kd.evaluation.Evaluator.continual_callback`).

    Minibatches go to the model's device. With several processes each trains on its rows of
    every global minibatch (see the module docstring); at the end the processes agree on
    buffers and random state (:func:`lifelong_kd.distributed.settle`), and the returned
    samples and mean loss are those of the whole run, as in one process.

    Returns:
        ``{"train_seconds", "samples", "mean_loss", "iterations", "loss_curve", "loss_terms",
        "loss_terms_curve"}``; the loss curve is :meth:`lifelong_kd.logs.LossCurve.points` (mean
        loss every few iterations), the terms' means and curves
        :meth:`lifelong_kd.loss_terms.LossTermCurve.record` (each part of the loss, same windows).
    """
    device = distributed.module_device(model)
    rank, world_size = distributed.rank(), distributed.world_size()
    generator = torch.Generator().manual_seed(config.seed * 7919 + experience.index)
    data = TrainingSet(strategy.train_experiences(stream, experience), config.augment, generator, device, config.data_on_device)
    total = n_batches(data.size, config)
    optimizer = make_optimizer(model, config)
    if optimizer_state is not None:
        load_optimizer_state(optimizer, optimizer_state)
    seen_classes = seen_class_mask(stream, experience, config, device)
    network, weight_copies = training_network(model, config, world_size)
    scaler = gradient_scaler(config.precision, device)
    model.train()
    start, samples, loss_sum = time.perf_counter(), 0.0, 0.0
    bar = Progress(total, f"experience {experience.index + 1}/{len(stream)}", config.progress and rank == 0, samples_per_unit=config.batch_size)
    curve, term_curve, clock = LossCurve(total), LossTermCurve(total), CompileClock(config.compile)
    for iteration, (batch, weight) in enumerate(_labelled(data.shards(config.batch_size, total, rank, world_size), "lkd.data"), start=1):
        terms: dict[str, Tensor] = {}
        with clock.step(len(batch.y)):
            loss = weight * train_step(model, strategy, optimizer, batch, network=network, weight=weight, scaler=scaler, terms=terms,
                                       seen_classes=seen_classes, weight_copies=weight_copies)
        loss_sum += loss
        curve.add(loss)
        term_curve.add(terms, weight)
        samples += len(batch.y) if weight > 0 else 0
        bar.update(1)
        if on_step is not None:
            on_step(iteration, total)
    bar.close()
    del network, weight_copies
    distributed.settle(model)
    samples, loss_sum = distributed.all_reduce_sum(torch.tensor([samples, loss_sum], dtype=torch.float64)).tolist()
    loss_curve = curve.points(distributed.all_reduce_sum(curve.sums) / world_size)
    term_means, term_curves = term_curve.record(lambda sums: distributed.all_reduce_sum(sums) / world_size)
    return {"train_seconds": time.perf_counter() - start, "samples": int(samples), "mean_loss": loss_sum / world_size / max(total, 1),
            "iterations": total, "loss_curve": loss_curve, "loss_terms": term_means, "loss_terms_curve": term_curves,
            "optimizer_state": optimizer.state_dict() if config.keep_optimizer else None, "compile_seconds": clock.seconds if config.compile else None}


def training_network(model: nn.Module, config: TrainConfig, world_size: int = 1) -> tuple[Callable[[Tensor], tuple[Tensor, Tensor]] | None, LowPrecisionWeights | None]:
    """The forward of the training steps (None: ``model`` itself) and the low-precision weight copies (None: none).

    Several processes: the data-parallel :class:`FeaturesAndLogits`; ``precision="bf16-master"``:
    the copies (:func:`weight_copies_for`); ``config.compile``: that forward through ``torch.compile``.
    """
    weight_copies = weight_copies_for(model, config, world_size)
    network: Callable[[Tensor], tuple[Tensor, Tensor]] | None = distributed.data_parallel(FeaturesAndLogits(model)) if world_size > 1 else weight_copies
    if config.compile:
        network = torch.compile(network if network is not None else FeaturesAndLogits(model))
    return network, weight_copies


class CompileClock:
    """Seconds of the training steps that compile: with ``torch.compile``, the first step of each minibatch size.

    A new input shape makes ``torch.compile`` trace and compile again; those steps' own work
    (milliseconds) is counted too, next to the compilation (seconds or more).

    Args:
        enabled: Whether the steps compile (``TrainConfig.compile``); off, :meth:`step` measures nothing.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.sizes: set[int] = set()
        self.seconds = 0.0

    @contextmanager
    def step(self, size: int) -> Iterator[None]:
        """Time the step inside when its minibatch size is new."""
        if not self.enabled or size in self.sizes:
            yield
            return
        start = time.perf_counter()
        yield
        self.seconds += time.perf_counter() - start
        self.sizes.add(size)


def weight_copies_for(model: nn.Module, config: TrainConfig, world_size: int = 1) -> LowPrecisionWeights | None:
    """The bfloat16 weight copies of ``precision="bf16-master"`` (None for the other precisions).

    Raises:
        ValueError: Several processes: their data-parallel forward runs on the model's own
            parameters (it exchanges their gradients), so the copies cannot take their place.
    """
    if config.precision != "bf16-master":
        return None
    if world_size > 1:
        raise ValueError(
            f"--precision bf16-master trains one process's bfloat16 weight copies, but this run has {world_size} processes, "
            "whose data-parallel forward must run on the model's own parameters; use --precision bf16 under torchrun."
        )
    return LowPrecisionWeights(model)


def seen_class_mask(stream: Stream, experience: Experience, config: TrainConfig, device: torch.device) -> Tensor | None:
    """Outputs the cross-entropy covers on ``experience`` (``cross_entropy_classes="seen"``, class scenario); None: all.

    Class-scenario labels are numbered in class-order position (:mod:`lifelong_kd.data.benchmarks`),
    so the seen classes are the first ``sum of len(classes)`` outputs up to this experience.
    """
    if config.cross_entropy_classes != "seen" or stream.scenario != "class":
        return None
    seen = sum(len(e.classes) for e in stream.experiences[: experience.index + 1])
    return torch.arange(stream.n_outputs, device=device) < seen


def _labelled(batches: Iterator[Batch], label: str) -> Iterator[Batch]:
    """``batches``, each one's gathering and transforms labelled ``label`` for ``torch.profiler``."""
    while True:
        with phase(label):
            batch = next(batches, None)
        if batch is None:
            return
        yield batch
