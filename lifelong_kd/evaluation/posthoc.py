"""Post-hoc compression baselines: global magnitude pruning and int8 dynamic quantisation.

Both return a **copy** of the model (the original is left untouched) that still runs as
``model(x, task_id)``, so the :class:`~lifelong_kd.evaluation.evaluator.Evaluator`
evaluates it like any other model.

* :func:`pruned_copy`: ``torch.nn.utils.prune.global_unstructured`` with L1 magnitude over
  the weights of every ``nn.Linear`` and ``nn.Conv2d`` (biases and batch-norm are kept),
  then ``prune.remove`` so the zeros are permanent (plain parameters, no masks or hooks).
* :func:`quantized_copy`: ``torch.ao.quantization.quantize_dynamic`` to int8. Dynamic
  quantisation only covers ``nn.Linear`` layers: an MLP is quantised entirely, a ConvNet or
  ResNet only in its dense layers and heads (convolutions stay float32).
* :func:`quantized_stats`: the :class:`CompressionStats` of a quantised copy. Quantised
  layers have no ``parameters()`` and cannot be counted by ``FlopCounterMode``, so the
  parameter and FLOP counts are those of the float model (the same values and
  multiply-adds, stored and computed in int8), and the bytes are the quantised state's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from lifelong_kd.evaluation import compression
from lifelong_kd.evaluation.compression import CompressionStats

PRUNABLE = (nn.Linear, nn.Conv2d)


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, "weight")`` for every ``nn.Linear`` and ``nn.Conv2d`` of ``model``."""
    return [(module, "weight") for module in model.modules() if isinstance(module, PRUNABLE)]


def pruned_copy(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``model`` with the smallest-magnitude ``sparsity`` fraction of weights set to zero.

    The threshold is global over all prunable weights (Han et al. 2015's magnitude
    pruning; ``prune.global_unstructured`` with ``L1Unstructured``), so layers lose
    different fractions. The pruning is made permanent with ``prune.remove``.

    Args:
        model: The model to prune (not modified).
        sparsity: Fraction of prunable weights set to zero, in [0, 1).

    Raises:
        ValueError: If ``sparsity`` is outside [0, 1) or the model has no prunable weight.
    """
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}; e.g. 0.9 removes 90% of the weights.")
    import copy

    pruned = copy.deepcopy(model)
    targets = prunable_weights(pruned)
    if not targets:
        raise ValueError("The model has no nn.Linear or nn.Conv2d weight to prune.")
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for module, name in targets:
        prune.remove(module, name)
    return pruned


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exact zeros among the weights of every ``nn.Linear`` and ``nn.Conv2d``."""
    weights = [getattr(module, name) for module, name in prunable_weights(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


def nonzero_parameters(model: nn.Module) -> int:
    """Number of parameter elements that are not exactly zero (what sparse storage keeps)."""
    return sum(int((p != 0).sum()) for p in model.parameters())


def quantized_copy(model: nn.Module) -> nn.Module:
    """An int8 dynamically quantised copy (``nn.Linear`` layers only), in eval mode, on CPU.

    Raises:
        RuntimeError: If this torch build has no quantisation engine.
    """
    quantized = compression._dynamic_int8_copy(model)
    if quantized is None:
        raise RuntimeError("This torch build has no dynamic quantisation engine (torch.backends.quantized).")
    return quantized


def quantized_stats(
    float_model: nn.Module,
    quantized: nn.Module,
    input_shape: tuple[int, ...],
    forward_kwargs: Mapping[str, Any] | None = None,
    time_latency: bool = True,
) -> CompressionStats:
    """Size and cost of ``quantized`` (made by :func:`quantized_copy` from ``float_model``).

    Returns:
        Parameters and FLOPs of ``float_model``; ``state_bytes`` and ``quantized_bytes`` =
        the serialized size of the quantised state dict; latency measured on ``quantized``.
    """
    size = compression._serialized_size(quantized.state_dict())
    latency = compression.latency_seconds(quantized, input_shape, forward_kwargs=forward_kwargs) if time_latency else None
    return CompressionStats(
        parameters=compression.count_parameters(float_model),
        state_bytes=size,
        quantized_bytes=size,
        flops_per_sample=compression.flops_per_sample(float_model, input_shape, forward_kwargs),
        latency_seconds=latency,
    )


def quantized_runs(quantized: nn.Module, input_shape: tuple[int, ...], task_id: int = 0) -> bool:
    """Whether ``quantized`` produces finite logits on a random batch (a smoke check)."""
    with torch.inference_mode():
        logits = quantized(torch.randn(2, *input_shape), task_id)
    return bool(torch.isfinite(logits).all())
