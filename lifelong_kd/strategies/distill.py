"""Shared pieces of the distillation strategies (LwF, MultiTeacher).

* :class:`Knowledge`: which outputs a snapshot knew (old heads, seen classes) and
  :meth:`Knowledge.select`, the part of a model's output that distillation compares;
* teacher snapshots to and from plain state dicts (checkpoints load with ``weights_only``);
* :func:`cached_outputs`: a frozen teacher's outputs on a whole training split, in order
  (on the teacher's device; with several processes each computes its part and every
  process gets the whole, :mod:`lifelong_kd.distributed`);
* :func:`add_noise`: input noise for denoising distillation;
* :func:`warm_up_head`: Li & Hoiem's warm-up of the new head before joint training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from lifelong_kd import distributed
from lifelong_kd.data.stream import Batch, Experience
from lifelong_kd.models import inference_batch_size
from lifelong_kd.teacher import freeze_copy

NOISE_KINDS = ("none", "gaussian", "dropout")
# Minibatch of the head warm-up (the loop's default, van de Ven et al. 2019).
WARMUP_BATCH_SIZE = 128
# Sensible distillation temperatures: at T = 1e30 every soft target is uniform (LwF silently becomes
# fine-tuning); below 0.1 soft targets are one-hot. Hinton et al. 2015 use 1..20, Li & Hoiem 2016 use 2.
TEMPERATURE_RANGE = (0.1, 100.0)


@dataclass(frozen=True)
class Knowledge:
    """The outputs a model had learned when it was snapshotted.

    Attributes:
        scenario: ``"task"``, ``"domain"`` or ``"class"``.
        heads: Task ids of the heads trained so far (task scenario), in training order.
        n_classes: Number of global labels seen so far (class scenario; labels are
            numbered by class-order position, so they are ``0..n_classes-1``).
    """

    scenario: str
    heads: tuple[int, ...] = ()
    n_classes: int = 0

    def learn(self, experience: Experience) -> Knowledge:
        """The knowledge after also training on ``experience``."""
        heads = self.heads if experience.task_id in self.heads else (*self.heads, experience.task_id)
        n_classes = max(self.n_classes, int(experience.train.y.max()) + 1) if len(experience.train) else self.n_classes
        return replace(self, heads=heads, n_classes=n_classes)

    def select(self, all_logits: Tensor) -> Tensor:
        """What distillation compares, from every head's logits (B, H, K).

        Returns:
            Task: the known heads (B, len(heads), K). Class: the seen classes of the one
            head (B, n_classes). Domain: the shared head (B, K).
        """
        if self.scenario == "task":
            return all_logits[:, list(self.heads)]
        if self.scenario == "class":
            return all_logits[:, 0, : self.n_classes]
        return all_logits[:, 0]

    def to_state(self) -> dict[str, object]:
        """Plain values for a checkpoint."""
        return {"scenario": self.scenario, "heads": list(self.heads), "n_classes": self.n_classes}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Knowledge:
        """Inverse of :meth:`to_state`."""
        return cls(str(state["scenario"]), tuple(int(h) for h in state["heads"]), int(state["n_classes"]))


def average_targets(outputs: Sequence[Tensor], scenario: str) -> Tensor:
    """Element-wise mean of several teachers' selected logits, each over the teachers that know it.

    Teachers know prefixes of the latest teacher's outputs (heads 0..j in the task
    scenario, classes 0..n_j-1 in the class scenario), so each output is zero-padded to the
    latest (largest) shape and divided by the number of teachers covering each position.

    Args:
        outputs: Per-teacher outputs of :meth:`Knowledge.select`, oldest first.
        scenario: The stream's scenario.
    """
    if scenario == "domain":
        return torch.stack(list(outputs)).mean(0)
    dim = 1 if scenario == "task" else -1
    full = outputs[-1].shape[dim]
    total, count = torch.zeros_like(outputs[-1]), torch.zeros_like(outputs[-1])
    for output in outputs:
        pad = [0, 0] * (output.dim() - 1 - dim % output.dim()) + [0, full - output.shape[dim]]
        total = total + F.pad(output, pad)
        count = count + F.pad(torch.ones_like(output), pad)
    return total / count


def alpha_for(alpha: float | Sequence[float], index: int) -> float:
    """The distillation weight of experience ``index`` (a number, or one value per experience)."""
    if isinstance(alpha, (int, float)):
        return float(alpha)
    return float(alpha[index])


def check_alpha(alpha: float | Sequence[float], n_experiences: int) -> None:
    """Raise ``ValueError`` unless ``alpha`` is a non-negative number or one per experience."""
    values = [alpha] if isinstance(alpha, (int, float)) else list(alpha)
    if isinstance(alpha, bool) or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"alpha must be a non-negative number or a list of them (one per experience), got {alpha!r}.")
    if not isinstance(alpha, (int, float)) and len(values) < n_experiences:
        raise ValueError(
            f"alpha has {len(values)} values but the stream has {n_experiences} experiences; "
            "give one value per experience (the first is unused: there is no teacher yet) or a single number."
        )


def check_number(name: str, value: object, minimum: float | None = 0.0) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number (and at least ``minimum``)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or (minimum is not None and value < minimum):
        bound = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
        raise ValueError(f"{name} must be {bound}, got {value!r}.")


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless the temperature is a number in :data:`TEMPERATURE_RANGE`."""
    low, high = TEMPERATURE_RANGE
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and low <= temperature <= high):
        raise ValueError(
            f"temperature must be a number from {low:g} to {high:g} (2 in Li & Hoiem 2016; Hinton et al. 2015 use 1 to 20), "
            f"got {temperature!r}: far above, every soft target is uniform and distillation does nothing."
        )


def teacher_state(teacher: nn.Module) -> dict[str, Tensor]:
    """A teacher's parameters and buffers as a detached state dict."""
    return {key: value.detach().clone() for key, value in teacher.state_dict().items()}


def rebuild_teacher(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A frozen teacher with ``model``'s architecture and the stored ``state``."""
    teacher = freeze_copy(model)
    teacher.load_state_dict(state)
    return teacher


@torch.no_grad()
def cached_outputs(
    targets: Callable[[Tensor], list[Tensor]], experience: Experience, teacher: nn.Module | None = None, batch_size: int | None = None
) -> list[Tensor]:
    """Run ``targets`` over ``experience``'s whole training split, in order.

    The inputs go to ``teacher``'s device (the CPU without one), and so do the outputs. With
    several processes each process runs ``targets`` on its contiguous part of the split
    (:func:`lifelong_kd.distributed.shard`) and the parts are gathered, so every process holds
    the whole cache for a share of the work.

    Args:
        targets: Maps model inputs (B, C, H, W) to a list of per-sample tensors (B, ...).
        experience: The experience whose training split is read (clean, un-augmented views).
        teacher: The model ``targets`` runs, to size the batches (:func:`~lifelong_kd.models.inference_batch_size`).
        batch_size: Samples per forward pass (None: from ``teacher``, or 1024 without one).

    Returns:
        One tensor per output of ``targets``, indexed by position in ``experience.train``.
    """
    if batch_size is None:
        batch_size = inference_batch_size(teacher, experience.train.x.shape[1:]) if teacher is not None else 1024
    device = distributed.module_device(teacher) if teacher is not None else torch.device("cpu")
    total = len(experience.train)
    part = distributed.shard(total)
    stored = experience.train.x[part]
    with record_function("lkd.teacher_cache"):
        # At least one (possibly empty) batch: a process without rows still sends its part.
        starts = range(0, max(len(stored), 1), batch_size)
        outputs = [targets(experience.transform(distributed.to_device(stored[start : start + batch_size], device))) for start in starts]
        return [distributed.all_gather_rows(torch.cat(column), total) for column in zip(*outputs, strict=True)]


def require_scenario(scenario: str | None) -> str:
    """The scenario a strategy recorded in ``check_stream``, or a clear error if it was skipped."""
    if scenario is None:
        raise RuntimeError("Call strategy.check_stream(stream) before training (pipeline.run does).")
    return scenario


def require_experience(experience: Experience | None) -> Experience:
    """The current experience, or a clear error if ``before_experience`` was skipped."""
    if experience is None:
        raise RuntimeError("Call before_experience(model, experience) before computing the loss.")
    return experience


def lookup_targets(
    batch: Batch,
    targets: Callable[[Tensor], list[Tensor]],
    cache: list[Tensor] | None,
    experience: Experience | None,
    teacher: nn.Module | None = None,
) -> tuple[list[Tensor], list[Tensor] | None]:
    """A frozen teacher's targets for ``batch``: online on augmented views, else from the cache.

    ``teacher`` (the model ``targets`` runs) sizes the cache's inference batches.

    Returns:
        ``(values, cache)``: the batch's targets and the cache (filled on first use, over
        the whole training split of ``experience``); keep the returned cache.
    """
    if batch.augmented:
        return targets(batch.x), cache
    if cache is None:
        cache = cached_outputs(targets, require_experience(experience), teacher)
    return [values[batch.index] for values in cache], cache


def add_noise(x: Tensor, kind: str, level: float) -> Tensor:
    """Corrupt model inputs for denoising distillation.

    ``"gaussian"`` adds ``level * N(0, 1)`` (in normalised input units); ``"dropout"`` sets each
    input element to zero (the data mean after normalisation) with probability ``level``,
    without rescaling (masking noise, Vincent et al. 2008); ``"none"`` returns ``x``.
    """
    if kind == "gaussian":
        return x + level * torch.randn_like(x)
    if kind == "dropout":
        return x * (torch.rand_like(x) >= level)
    return x


def check_noise(kind: str, level: float) -> None:
    """Raise ``ValueError`` for an unknown noise kind or an out-of-range level."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {', '.join(NOISE_KINDS)}, got {kind!r}.")
    check_number("noise_level", level)
    if kind == "dropout" and not 0 <= level < 1:
        raise ValueError(f"noise_level is a drop probability for noise='dropout': use [0, 1), got {level}.")


def noised(batch: Batch, kind: str, level: float) -> Batch:
    """``batch`` with noised inputs (same labels and indices)."""
    return replace(batch, x=add_noise(batch.x, kind, level))


def warm_up_head(model: nn.Module, experience: Experience, iterations: int, lr: float) -> None:
    """Train only ``model.head`` on ``experience`` with cross-entropy (Li & Hoiem 2016, Sec. 3).

    The backbone is frozen (features under ``no_grad``, eval mode, so batch-norm statistics
    do not move); plain SGD over ``model.head``'s parameters. Since every head lives in one
    linear layer, in the task scenario only the current task's rows get a gradient, so the
    old heads are untouched; with one shared head (domain, class) the whole head adapts.
    Minibatches of :data:`WARMUP_BATCH_SIZE` are drawn with torch's global generator (the
    pipeline seeds it per experience). With several processes every process draws and takes
    the same steps (the warm-up is short), so the heads stay identical everywhere.
    """
    if not isinstance(getattr(model, "head", None), nn.Module):
        raise ValueError("warmup_iterations needs a model with a `head` module (lifelong_kd.models.Classifier).")
    was_training = model.training
    model.eval()
    optimizer = torch.optim.SGD(model.head.parameters(), lr=lr)
    device = distributed.module_device(model)
    for _ in range(iterations):
        index = torch.randint(len(experience.train), (WARMUP_BATCH_SIZE,))
        with torch.no_grad():
            features = model.features(experience.transform(distributed.to_device(experience.train.x[index], device)))
        logits = model.select(model.heads(features), experience.task_id)
        loss = F.cross_entropy(logits, distributed.to_device(experience.train.y[index], device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.train(was_training)
