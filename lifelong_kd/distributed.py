"""Where a run executes: its device, and its processes. The only module that imports ``torch.distributed``.

**Devices.** A run names its device as ``auto`` (CUDA when available, else the CPU), ``cpu``,
``cuda``, ``cuda:N`` or ``mps`` (:func:`resolve_device`); a device that is not there is a
:class:`DeviceError` that says what is. The loop moves every model there once; everything
else follows the model (:func:`module_device`): minibatches, teacher caches, the EWC Fisher,
corruptions and evaluation.

**Processes.** ``torchrun --nproc-per-node N -m lifelong_kd run ...`` starts N processes with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment; :func:`session` starts the
process group (``nccl`` on CUDA, ``gloo`` on the CPU) and gives each process its GPU
(``cuda:LOCAL_RANK``). The group then lives until the program calls :func:`end` after its last
run (or until the process exits), so a program that runs several runs in one torchrun launch
reuses it; a group the program started itself is used as it is. Every collective below is a no-op in a single process, so the loop,
the evaluator and the strategies call them unconditionally:

* data parallelism: :func:`data_parallel` wraps the forward in ``DistributedDataParallel``
  (gradients averaged during the backward pass); :func:`shard_rows` splits each global
  minibatch; :func:`settle` gives every process the same buffers and random state after an
  experience;
* sharded work: :func:`shard` (this process's contiguous part of N items),
  :func:`all_reduce_sum`, :func:`all_gather_rows` (the parts back in order, on every process);
* one writer: :func:`is_main`, :func:`share` (rank 0's object, e.g. a checkpoint, to every
  process), :func:`on_main` (computed by rank 0, shared).
"""

from __future__ import annotations

import atexit
import gc
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
# The device names --device accepts (cuda:N with any GPU index N).
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# cuBLAS' workspace setting that makes its kernels deterministic (CUDA docs, "Reproducibility";
# torch.use_deterministic_algorithms raises without it on CUDA >= 10.2).
CUBLAS_WORKSPACE = ":4096:8"

T = TypeVar("T")

# The process group this module started: running, and ended by end() (see session).
_GROUP = {"started": False, "ended": False}


class DeviceError(ValueError):
    """The requested device, or device and precision, cannot run here; the message says what can."""


# ---------------------------------------------------------------------- devices


def check_device_name(name: str) -> None:
    """Raise :class:`DeviceError` unless ``name`` is one of :data:`DEVICE_CHOICES` (syntax only)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise DeviceError(f"device must be one of {', '.join(DEVICE_CHOICES)} (N: a GPU index), got {name!r}.")


def available_devices() -> str:
    """The devices this machine has, for error messages (e.g. ``cpu, cuda:0, cuda:1``)."""
    names = ["cpu"] + [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        names.append("mps")
    return ", ".join(names)


def resolve_device(name: str = "auto", local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device a process runs on.

    Args:
        name: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        local_rank: This process's index on its machine (``LOCAL_RANK``); with several
            processes, ``auto`` and ``cuda`` give each its own GPU, ``cuda:LOCAL_RANK``.
        world_size: Number of processes of the run.

    Raises:
        DeviceError: The name is unknown, or names a device this machine does not have, or
            one GPU for several processes.
    """
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"--device mps: this machine has no Apple MPS device (available: {available_devices()}); use --device cpu or auto.")
        if world_size > 1:
            raise DeviceError("--device mps runs in one process: torch.distributed has no MPS backend; start the run without torchrun.")
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(f"--device {name}: this machine has no CUDA device (available: {available_devices()}); use --device cpu or auto.")
    if world_size > 1 and name != "cuda":
        raise DeviceError(
            f"--device {name} names one GPU, but {world_size} processes would share it; with torchrun use --device cuda "
            "(or auto): each process takes cuda:LOCAL_RANK. Choose the GPUs with CUDA_VISIBLE_DEVICES."
        )
    index = local_rank if name == "cuda" else int(name.split(":")[1])
    if index >= count:
        where = f"process {local_rank} of this machine needs cuda:{index}" if name == "cuda" else f"--device {name}"
        raise DeviceError(f"{where}, but this machine has {count} CUDA device(s) (available: {available_devices()}); start at most {count} processes per machine, or pick another GPU.")
    return torch.device("cuda", index)


def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`DeviceError` when ``device`` cannot run ``precision`` under ``torch.autocast``.

    ``fp32`` runs everywhere; ``bf16`` on the CPU and on CUDA devices that support bfloat16
    (compute capability 8.0 and later: A100, H100, RTX 30xx and later); ``fp16`` on CUDA only
    (with a gradient scaler). MPS runs ``fp32`` only.
    """
    if precision == "fp32":
        return
    if device.type == "cuda":
        if precision in ("bf16", "bf16-master") and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"--precision {precision}: {torch.cuda.get_device_name(device)} has no bfloat16 support; use --precision fp16 or fp32.")
        return
    if device.type == "cpu" and precision in ("bf16", "bf16-master"):
        return
    if device.type == "cpu":
        raise DeviceError("--precision fp16 needs a CUDA device (float16 autocast with a gradient scaler); on the CPU use --precision bf16 or fp32.")
    raise DeviceError(f"--precision {precision} does not run on {device.type} here (lifelong_kd runs it in float32); use --precision fp32.")


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter (or buffer); the CPU for a module without tensors.

    An int8-quantised copy keeps its weights in packed form (neither parameters nor
    buffers) and runs on the CPU.
    """
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; from the CPU to CUDA through page-locked memory without blocking the host."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor (in dicts, lists and tuples) copied to the CPU: a checkpoint any machine loads."""
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(item) for item in value)
    return value


# ---------------------------------------------------------------------- the session


@dataclass(frozen=True)
class Placement:
    """Where this process runs.

    Attributes:
        device: Its device.
        rank: Its rank (0: the process that writes).
        world_size: Number of processes.
        backend: The process group's backend (``gloo``, ``nccl``), or None in a single process.
    """

    device: torch.device
    rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder and feeds the loggers."""
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """Plain values for ``results.json``: the device (with the GPU's name on CUDA), processes and backend."""
        described: dict[str, Any] = {"device": str(self.device), "processes": self.world_size, "backend": self.backend}
        if self.device.type == "cuda":
            described["gpu"] = torch.cuda.get_device_name(self.device)
        return described


def launched_world_size() -> int:
    """``WORLD_SIZE`` as torchrun (or another launcher) set it; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    """This process's rank: the process group's, or ``RANK`` from the launcher before the group starts; 0 alone."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    """Number of processes of the running group (1 without one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def is_main() -> bool:
    """Whether this is rank 0: the process that prints, logs and writes."""
    return rank() == 0


@contextmanager
def session(device: str = "auto", deterministic: bool = False) -> Iterator[Placement]:
    """The process group, device and determinism settings of one run (determinism restored on exit).

    Starts the process group when a launcher asked for several processes (``WORLD_SIZE > 1``)
    and none is running; it stays for the process's later runs and ends when the program calls
    :func:`end` or, failing that, when the process exits (starting a group again after ending it
    hangs with torchrun's store). A group the caller started is used as it is.

    Args:
        device: See :func:`resolve_device`.
        deterministic: ``torch.use_deterministic_algorithms(True)``, deterministic cuDNN and
            cuBLAS (``CUBLAS_WORKSPACE_CONFIG``); a kernel without a deterministic version
            then raises instead of running.
    """
    running = dist.is_available() and dist.is_initialized()
    processes = dist.get_world_size() if running else launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    placement_device = resolve_device(device, local_rank, processes)
    if processes > 1 and not running:
        if placement_device.type == "cuda":
            torch.cuda.set_device(placement_device)
        if _GROUP["ended"]:
            raise RuntimeError(
                "lifelong_kd.distributed.end() already ended this process's group, and a group cannot start "
                "again under torchrun; call end() once, after the program's last run."
            )
        dist.init_process_group("nccl" if placement_device.type == "cuda" else "gloo")
        atexit.register(_end_group)
        _GROUP["started"] = True
    backend = dist.get_backend() if processes > 1 else None
    placement = Placement(placement_device, rank(), processes, backend)
    previous = _set_deterministic(deterministic)
    try:
        yield placement
    finally:
        _restore_deterministic(previous)


def end() -> None:
    """End the process group :func:`session` started, once every process has called this.

    A program that ran its last run calls it (``lifelong-kd run`` does): the processes wait for
    each other (a barrier), objects that still hold the group's pending work are collected, and
    the group is destroyed while the interpreter is fully alive. Ending a group at interpreter
    exit instead can abort the process (SIGABRT, "terminate called without an active exception")
    when gloo's threads are torn down during finalization. A no-op in one process or when the
    caller started the group itself.
    """
    if not _GROUP["started"] or not dist.is_initialized():
        return
    dist.barrier()
    _end_group()
    _GROUP["ended"] = True


def _end_group() -> None:
    """End the process group this module started (also at process exit, without a barrier: a failing process must not wait)."""
    if _GROUP["started"] and dist.is_initialized():
        gc.collect()  # DistributedDataParallel reducers and pending work go before the group does
        dist.destroy_process_group()
    _GROUP["started"] = False


def _set_deterministic(enabled: bool) -> tuple[bool, bool, bool, bool] | None:
    """Switch deterministic kernels on; the previous settings (None: nothing changed)."""
    if not enabled:
        return None
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    return previous


def _restore_deterministic(previous: tuple[bool, bool, bool, bool] | None) -> None:
    if previous is not None:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]


# ---------------------------------------------------------------------- collectives


def _active() -> bool:
    return world_size() > 1


def _transport(tensor: Tensor) -> Tensor:
    """``tensor`` on a device the group's backend can send (CUDA for nccl, the CPU otherwise)."""
    if dist.get_backend() == "nccl":
        return tensor.to(torch.device("cuda", torch.cuda.current_device()))
    return tensor.cpu()


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of part ``index`` when ``total`` rows are split into ``count`` contiguous, near-equal parts."""
    return total * index // count, total * (index + 1) // count


def shard(total: int) -> slice:
    """This process's contiguous part of ``total`` items (all of them in a single process)."""
    start, stop = shard_bounds(total, rank() if _active() else 0, world_size())
    return slice(start, stop)


def shard_rows(size: int, index: int, count: int) -> tuple[slice, float]:
    """Rows of a global minibatch of ``size`` that process ``index`` of ``count`` trains on, and its loss weight.

    Each process's loss is a mean over its rows; ``DistributedDataParallel`` averages the
    gradients over processes. With the weight ``rows * count / size`` that average is the
    gradient of the mean over the whole minibatch, as one process would compute it, even when
    the parts differ in size. A process whose part is empty (a final minibatch smaller than
    the number of processes) gets the first row with weight 0: it still takes part in the
    gradient exchange, and adds nothing.
    """
    start, stop = shard_bounds(size, index, count)
    if stop == start:
        return slice(0, 1), 0.0
    return slice(start, stop), (stop - start) * count / size


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over processes, on ``tensor``'s device (``tensor`` itself alone)."""
    if not _active():
        return tensor
    moved = _transport(tensor.clone())
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(tensor.device)


def all_gather_rows(part: Tensor, total: int) -> Tensor:
    """Every process's part of ``total`` rows (split by :func:`shard`), concatenated in order, on every process.

    Args:
        part: This process's rows (its :func:`shard` of ``total``), any trailing shape.
        total: Number of rows over all processes.
    """
    if not _active():
        return part
    count = world_size()
    longest = max(stop - start for start, stop in (shard_bounds(total, i, count) for i in range(count)))
    padded = part.new_zeros((longest, *part.shape[1:]))
    padded[: len(part)] = part
    moved = _transport(padded)
    gathered = [torch.empty_like(moved) for _ in range(count)]
    dist.all_gather(gathered, moved)
    pieces = [piece[: stop - start] for piece, (start, stop) in zip(gathered, (shard_bounds(total, i, count) for i in range(count)), strict=True)]
    return torch.cat(pieces).to(part.device)


def share(value: T) -> T:
    """Rank 0's ``value``, on every process (pickled; the other processes' ``value`` is ignored)."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(compute: Callable[[], T]) -> T:
    """``compute()`` run by rank 0 only, its result shared with every process."""
    return share(compute() if is_main() else None)


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``parameters`` over processes (for modules trained outside ``DistributedDataParallel``)."""
    if not _active():
        return
    count = world_size()
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.copy_(all_reduce_sum(parameter.grad) / count)


# ---------------------------------------------------------------------- data parallel training


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when several processes run (``module`` itself alone).

    Buffers are not broadcast at every forward (``forward_sync_buffers=False``): each process
    keeps batch-norm statistics of its own rows until :func:`settle` averages them.
    """
    if not _active():
        return module
    device = module_device(module)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)


def settle(model: nn.Module) -> None:
    """After training an experience: the same buffers and random state on every process.

    Floating-point buffers (batch-norm running statistics, each process's from its own rows)
    become their mean over processes, other buffers rank 0's; torch's global random state
    becomes rank 0's, so what the strategy draws next (e.g. EWC's Fisher samples) is the
    same everywhere.
    """
    if not _active():
        return
    count = world_size()
    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                buffer.copy_(all_reduce_sum(buffer) / count)
            else:
                buffer.copy_(share(buffer.cpu()).to(buffer.device))
    torch.set_rng_state(share(torch.get_rng_state()))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(share(torch.cuda.get_rng_state()))

