"""Frozen teacher snapshots for self-distillation across tasks.

:func:`freeze_copy` is the only place in the package where a teacher is made. This module
imports only torch, so it can be used without the rest of the package.
"""

import copy

from torch import nn


def freeze_copy(model: nn.Module) -> nn.Module:
    """Returns an independent, frozen, eval-mode copy of ``model`` to use as a teacher.

    The copy is made with :func:`copy.deepcopy` (parameters and buffers share no storage
    with ``model``), then put in eval mode with ``.eval()`` and frozen with
    ``.requires_grad_(False)``. ``model`` itself is not modified.

    Why eval mode matters: in train mode, dropout masks random units on every call, so the
    teacher's targets would be noisy and differ between two forward passes of the same
    batch; batch normalisation would normalise with the statistics of the current batch
    (task k's data) and *update its running statistics*, silently drifting the snapshot of
    task k-1 towards task k. In eval mode the teacher is a deterministic function that
    matches the model as it was evaluated at the end of its task. Avalanche's
    ``LearningWithoutForgetting`` (v0.6) deep-copies the model but never calls ``.eval()``
    on it, so its teacher runs with dropout and batch-norm in train mode.

    Keep the teacher out of the student's module tree (do not assign it as an attribute of
    an ``nn.Module``): ``student.train()`` would otherwise switch it back to train mode.
    Run teacher forwards under ``torch.no_grad()`` or ``torch.inference_mode()`` to save
    memory; the losses in :mod:`lifelong_kd.losses` also detach teacher outputs.

    Args:
        model: The model to snapshot, typically the student at the end of an experience.

    Returns:
        A new module in eval mode whose parameters all have ``requires_grad=False``.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"freeze_copy expects an nn.Module, got {type(model).__name__}.")
    teacher = copy.deepcopy(model)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def is_frozen(model: nn.Module) -> bool:
    """Tells whether ``model`` is usable as a teacher: eval mode and no trainable parameter.

    Args:
        model: Any module.

    Returns:
        True if every submodule is in eval mode and no parameter requires a gradient.
    """
    in_eval = not any(module.training for module in model.modules())
    no_grad = not any(parameter.requires_grad for parameter in model.parameters())
    return in_eval and no_grad
