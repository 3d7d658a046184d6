"""Size and cost measurements of one model, and ratios between two models.

Every function leaves the model as it found it: training/eval flags are restored, and
quantisation runs on a deep copy. Input shapes exclude the batch dimension, e.g.
``(1, 28, 28)`` for MNIST images. ``forward_kwargs`` are passed to the forward call as
``model(x, **forward_kwargs)``; use it for models that take a task id, e.g.
``forward_kwargs={"task_id": 0}``.

See ``docs/metrics.md`` ("Compression") for the definitions of the ratios.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (trainable or frozen; shared tensors counted once).

    Buffers such as batch-norm running statistics are not parameters; they are included in
    :func:`state_bytes`.

    Args:
        model: The model to measure.

    Returns:
        ``sum(p.numel() for p in model.parameters())``.
    """
    return sum(parameter.numel() for parameter in model.parameters())


def _serialized_size(state: Mapping[str, Any]) -> int:
    """Bytes of ``state`` written with ``torch.save`` to an in-memory buffer."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


def state_bytes(model: nn.Module) -> int:
    """Serialized size of the model's state dict with floating tensors stored as float32.

    The size includes ``torch.save``'s container overhead (keys, zip headers), so it is
    at least ``4 * count_parameters(model)`` bytes.

    Args:
        model: The model to measure.

    Returns:
        Size in bytes of ``torch.save({name: float32 tensor on CPU})``.
    """
    state = {
        name: tensor.detach().cpu().float() if tensor.is_floating_point() else tensor.cpu()
        for name, tensor in model.state_dict().items()
    }
    return _serialized_size(state)


def _dynamic_int8_copy(model: nn.Module) -> nn.Module | None:
    """Returns a dynamically int8-quantised deep copy, or ``None`` if this torch cannot.

    Uses ``torch.ao.quantization.quantize_dynamic`` on the ``nn.Linear`` layers. In
    torch 2.10+ that API is deprecated in favour of ``torchao``; the deprecation warnings
    are suppressed here, only around this call.
    """
    if not set(torch.backends.quantized.supported_engines) - {"none"}:
        return None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        try:
            from torch.ao.quantization import quantize_dynamic
        except ImportError:
            return None
        float_copy = copy.deepcopy(model).cpu().float().eval()
        return quantize_dynamic(float_copy, {nn.Linear}, dtype=torch.qint8)


def quantized_bytes(model: nn.Module) -> int | None:
    """Serialized size after dynamic int8 quantisation of the ``nn.Linear`` layers.

    The weights of every ``nn.Linear`` become int8 (per-tensor affine, with a scale and zero
    point); other layers stay float32. The model itself is not modified (a deep copy is
    quantised).

    Args:
        model: The model to measure.

    Returns:
        Size in bytes of the quantised copy's state dict, or ``None`` if the model has no
        ``nn.Linear`` layer (nothing to quantise) or this torch has no dynamic quantisation.
    """
    if not any(isinstance(module, nn.Linear) for module in model.modules()):
        return None
    quantized = _dynamic_int8_copy(model)
    return None if quantized is None else _serialized_size(quantized.state_dict())


@contextlib.contextmanager
def _evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Puts every submodule in eval mode, restoring each one's flag on exit."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _example_input(
    model: nn.Module, input_shape: tuple[int, ...], batch_size: int
) -> torch.Tensor:
    """Random input of shape ``(batch_size, *input_shape)`` on the model's device and dtype."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch_size, *input_shape), generator=generator, dtype=dtype).to(device)


def flops_per_sample(
    model: nn.Module,
    input_shape: tuple[int, ...],
    forward_kwargs: Mapping[str, Any] | None = None,
) -> int:
    """Floating-point operations of one forward pass on a single sample.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` in eval and inference mode on a
    batch of one. A multiply-add counts as 2 FLOPs, so ``nn.Linear(n, m)`` costs ``2 * n * m``
    and ``nn.Conv2d(c_in, c_out, k)`` costs ``2 * c_out * c_in * k * k * H_out * W_out``.
    Only matrix products and convolutions (and a few similar operators) are counted: bias
    additions, activations, pooling and normalisation count as 0.

    Args:
        model: The model to measure.
        input_shape: Shape of one sample, without the batch dimension.
        forward_kwargs: Extra keyword arguments for the forward call.

    Returns:
        Total FLOPs for one sample.
    """
    inputs = _example_input(model, tuple(input_shape), batch_size=1)
    from torch.utils.flop_counter import FlopCounterMode  # here, not at import: it loads triton (issue 18, start-up)

    counter = FlopCounterMode(display=False)
    with _evaluation_mode(model), torch.inference_mode(), counter:
        model(inputs, **(forward_kwargs or {}))
    return int(counter.get_total_flops())


def latency_seconds(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 256,
    forward_kwargs: Mapping[str, Any] | None = None,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
) -> float:
    """Median wall time of one forward pass on a batch, in eval and inference mode.

    Measured with ``torch.utils.benchmark.Timer(...).blocked_autorange(min_run_time)``,
    which warms up, then times blocks of calls for at least ``min_run_time`` seconds.

    Args:
        model: The model to measure (on its current device; CPU on our reference machine).
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Samples per forward pass. 256 matches our evaluation batch size.
        forward_kwargs: Extra keyword arguments for the forward call.
        min_run_time: Minimum total timing in seconds; 0.2 keeps measurement cheap, raise it
            for steadier numbers.
        num_threads: Torch threads during timing; default ``torch.get_num_threads()``
            (``Timer`` itself would default to 1).

    Returns:
        Median seconds per batch.
    """
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be positive, got {min_run_time}")
    inputs = _example_input(model, tuple(input_shape), batch_size)
    timer = _torch_benchmark().Timer(
        stmt="model(inputs, **forward_kwargs)",
        globals={"model": model, "inputs": inputs, "forward_kwargs": dict(forward_kwargs or {})},
        num_threads=num_threads or torch.get_num_threads(),
    )
    with _evaluation_mode(model), torch.inference_mode():
        measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return float(measurement.median)


def _torch_benchmark() -> ModuleType:
    """``torch.utils.benchmark``, imported on first use and without torch's CUDA_HOME warning.

    Importing it loads ``torch.utils.cpp_extension``, which logs "No CUDA runtime is found,
    using CUDA_HOME=..." on machines with a CUDA toolkit directory and no GPU: a note about
    compiling C++ extensions, which timing a model never does. Importing it here, not at
    module level, also keeps ``import lifelong_kd`` fast.
    """
    extension_logger = logging.getLogger("torch.utils.cpp_extension")
    level = extension_logger.level
    extension_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import benchmark
    finally:
        extension_logger.setLevel(level)
    return benchmark


@dataclass(frozen=True)
class CompressionStats:
    """Size and cost of one model.

    Attributes:
        parameters: Number of parameter elements.
        state_bytes: Serialized float32 state-dict size in bytes.
        quantized_bytes: Serialized size after dynamic int8 quantisation, or ``None`` if
            nothing was quantisable.
        flops_per_sample: Forward FLOPs for one sample (multiply-add = 2 FLOPs).
        latency_seconds: Median seconds per forward batch, or ``None`` if not timed.
    """

    parameters: int
    state_bytes: int
    quantized_bytes: int | None
    flops_per_sample: int
    latency_seconds: float | None


def measure(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 256,
    forward_kwargs: Mapping[str, Any] | None = None,
    min_run_time: float = 0.2,
    time_latency: bool = True,
) -> CompressionStats:
    """Measures every :class:`CompressionStats` field of ``model``.

    Args:
        model: The model to measure; left unchanged.
        input_shape: Shape of one sample, without the batch dimension.
        batch_size: Batch size for the latency measurement.
        forward_kwargs: Extra keyword arguments for the forward call.
        min_run_time: Minimum timing in seconds for the latency measurement.
        time_latency: Set ``False`` to skip timing (``latency_seconds`` is then ``None``).

    Returns:
        The measurements.
    """
    latency = (
        latency_seconds(model, input_shape, batch_size, forward_kwargs, min_run_time)
        if time_latency
        else None
    )
    return CompressionStats(
        parameters=count_parameters(model),
        state_bytes=state_bytes(model),
        quantized_bytes=quantized_bytes(model),
        flops_per_sample=flops_per_sample(model, input_shape, forward_kwargs),
        latency_seconds=latency,
    )


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or ``NaN`` when the denominator is 0."""
    return numerator / denominator if denominator else float("nan")


def compression_ratios(
    reference: CompressionStats,
    evaluated: CompressionStats,
    reference_accuracy: float | None = None,
    evaluated_accuracy: float | None = None,
) -> dict[str, float]:
    """Ratios ``reference / evaluated``: above 1 means the evaluated model is smaller or faster.

    ``quantized_bytes_ratio`` compares the reference's float32 size with the evaluated
    model's int8 size. ``accuracy_kept = evaluated_accuracy / reference_accuracy`` (for a
    distilled student against its teacher, typically average accuracies).

    Args:
        reference: Measurements of the reference model (e.g. the teacher).
        evaluated: Measurements of the evaluated model (e.g. the compressed student).
        reference_accuracy: Accuracy of the reference model, if known.
        evaluated_accuracy: Accuracy of the evaluated model, if known.

    Returns:
        Dict with ``parameter_ratio``, ``bytes_ratio``, ``flops_ratio`` and, when their
        inputs exist, ``quantized_bytes_ratio``, ``latency_ratio`` and ``accuracy_kept``.
        A ratio with a zero denominator is ``NaN``.
    """
    ratios = {
        "parameter_ratio": _ratio(reference.parameters, evaluated.parameters),
        "bytes_ratio": _ratio(reference.state_bytes, evaluated.state_bytes),
        "flops_ratio": _ratio(reference.flops_per_sample, evaluated.flops_per_sample),
    }
    if evaluated.quantized_bytes is not None:
        ratios["quantized_bytes_ratio"] = _ratio(reference.state_bytes, evaluated.quantized_bytes)
    if reference.latency_seconds is not None and evaluated.latency_seconds is not None:
        ratios["latency_ratio"] = _ratio(reference.latency_seconds, evaluated.latency_seconds)
    if reference_accuracy is not None and evaluated_accuracy is not None:
        ratios["accuracy_kept"] = _ratio(evaluated_accuracy, reference_accuracy)
    return ratios
