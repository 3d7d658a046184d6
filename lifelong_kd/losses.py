"""Distillation and regularisation losses as pure tensor functions.

Every function takes raw, unnormalised **logits** (never probabilities) and returns a
scalar tensor. Teacher inputs are ``.detach()``-ed inside each function, so no gradient
ever reaches a teacher, even when the caller forgot ``torch.no_grad()``.

Shapes: ``B`` is the batch size, ``C`` the number of classes, ``H`` the number of heads
(multi-head models that score every sample with several task heads), ``D`` a feature
dimension. Reductions are "sum over classes, mean over everything else" unless a
docstring says otherwise.

Low-precision inputs (bfloat16 logits from a ``torch.autocast`` region) are upcast, so every
loss is computed and returned in float32.

This module imports only torch, so it can be used without the rest of the package.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

FEATURE_DISTANCE_KINDS: tuple[str, ...] = ("mse", "l2", "cosine")
"""Valid values for the ``kind`` argument of :func:`feature_distance`."""


def _fp32(*tensors: Tensor) -> list[Tensor]:
    """``tensors`` with float16/bfloat16 ones upcast to float32 (others unchanged)."""
    return [t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors]


def _check_temperature(temperature: float) -> None:
    """Raises ValueError unless ``temperature`` is a finite number greater than zero."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(
            f"temperature must be a finite number > 0, got {temperature!r}; "
            "use 1.0 for plain softmax, 2.0 as in LwF (Li & Hoiem 2016)."
        )


def _check_logits(student_logits: Tensor, teacher_logits: Tensor) -> None:
    """Raises ValueError unless both logits are (B, C) or (B, H, C) with equal shapes."""
    if student_logits.dim() not in (2, 3):
        raise ValueError(
            "logits must have shape (B, C) or (B, H, C), got "
            f"{tuple(student_logits.shape)}; add a batch dimension with unsqueeze(0)."
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must have the same shape; slice the student "
            "output to the classes the teacher knows."
        )


def _temperature_factor(temperature: float, scale_t2: bool) -> float:
    """Returns T^2 when ``scale_t2`` is set, else 1."""
    return temperature**2 if scale_t2 else 1.0


# Below this many classes, PyTorch's CPU log_softmax kernel (torch 2.14) is 1.3-4.8x slower than
# ``x - logsumexp(x)`` (forward, 1 thread; 3x with the backward at 10 classes); from 16 on it is
# faster. LwF over many 10-class heads spent most of its growing step time there (issue 18).
SMALL_CLASS_COUNT = 16


def log_softmax(logits: Tensor) -> Tensor:
    """``log_softmax`` over the last dimension, by the faster of two exact formulations for the device and size.

    ``logits - logsumexp(logits)`` (numerically stable: ``logsumexp`` subtracts the maximum) on the
    CPU below :data:`SMALL_CLASS_COUNT` classes, ``F.log_softmax`` otherwise. The two agree to float
    rounding (about 1e-6).
    """
    if logits.device.type == "cpu" and logits.shape[-1] < SMALL_CLASS_COUNT:
        return logits - logits.logsumexp(-1, keepdim=True)
    return F.log_softmax(logits, dim=-1)


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    scale_t2: bool = True,
) -> Tensor:
    r"""Knowledge-distillation loss: temperature-softened KL from teacher to student.

    .. math::
        L = T^2 \cdot \frac{1}{N} \sum_{n=1}^{N} \sum_{c=1}^{C}
            p_{n,c} \left(\log p_{n,c} - \log q_{n,c}\right),
        \quad p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T)

    i.e. ``T^2 * KL(softmax(t/T) || softmax(s/T))`` with ``reduction="batchmean"``: sum over
    classes, mean over the ``N`` rows. For (B, C) inputs ``N = B``; for (B, H, C) inputs
    ``N = B * H``, so the loss is the mean over batch **and** heads (equal to the mean of
    the per-head losses).

    The ``T^2`` factor (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network",
    Sec. 2) keeps gradient magnitudes comparable across temperatures. Learning without
    Forgetting (Li & Hoiem 2016) and Avalanche's ``LearningWithoutForgetting`` omit it;
    pass ``scale_t2=False`` to reproduce them.

    Note the argument order: the KL is taken *from the teacher* (the target distribution)
    to the student; KL is not symmetric.

    Args:
        student_logits: Raw student scores, shape (B, C) or (B, H, C).
        teacher_logits: Raw teacher scores, same shape. Detached inside: never receives
            a gradient.
        temperature: Softmax temperature ``T > 0``; larger values soften both
            distributions. Default 2.0 as in LwF.
        scale_t2: Multiply by ``T^2`` (Hinton, default). False gives the LwF/Avalanche form.

    Returns:
        Scalar tensor, >= 0, zero iff both softened distributions are equal.

    Raises:
        ValueError: If ``temperature`` is not > 0 or the shapes differ or are not 2-D/3-D.
    """
    _check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    student_logits, teacher_logits = _fp32(student_logits, teacher_logits)
    classes = student_logits.shape[-1]
    student_log_probs = log_softmax(student_logits.reshape(-1, classes) / temperature)
    teacher_log_probs = log_softmax(teacher_logits.detach().reshape(-1, classes) / temperature)
    # kl_div(input, target) computes KL(target || input); both in log space here.
    divergence = F.kl_div(
        student_log_probs, teacher_log_probs, reduction="batchmean", log_target=True
    )
    return divergence * _temperature_factor(temperature, scale_t2)


def soft_cross_entropy(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 2.0,
    scale_t2: bool = False,
) -> Tensor:
    r"""Cross-entropy between temperature-softened teacher and student (the LwF form).

    .. math::
        L = -\frac{1}{N} \sum_{n=1}^{N} \sum_{c=1}^{C} p_{n,c} \log q_{n,c},
        \quad p = \mathrm{softmax}(t / T),\ q = \mathrm{softmax}(s / T)

    times ``T^2`` if ``scale_t2``. This is the "knowledge distillation loss" of Learning
    without Forgetting (Li & Hoiem 2016, Eq. 2, with T = 2 and no ``T^2``). It differs from
    :func:`kd_kl` only by the teacher's entropy, which is constant for the student:
    ``soft_cross_entropy = kd_kl(scale_t2=False) + entropy(teacher, T)`` (times ``T^2``
    when scaled), so both give the same student gradients; this one is not zero when
    student == teacher.

    Reduction: sum over classes, mean over batch (and heads, for (B, H, C) inputs).

    Args:
        student_logits: Raw student scores, shape (B, C) or (B, H, C).
        teacher_logits: Raw teacher scores, same shape. Detached inside.
        temperature: Softmax temperature ``T > 0``. Default 2.0 as in LwF.
        scale_t2: Multiply by ``T^2`` (Hinton et al. 2015). Default False as in LwF.

    Returns:
        Scalar tensor, >= entropy of the softened teacher.

    Raises:
        ValueError: If ``temperature`` is not > 0 or the shapes are invalid.
    """
    _check_temperature(temperature)
    _check_logits(student_logits, teacher_logits)
    student_logits, teacher_logits = _fp32(student_logits, teacher_logits)
    student_log_probs = log_softmax(student_logits / temperature)
    teacher_probs = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    cross_entropy = -(teacher_probs * student_log_probs).sum(dim=-1).mean()
    return cross_entropy * _temperature_factor(temperature, scale_t2)


def hard_soft_loss(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
    scale_t2: bool = True,
) -> Tensor:
    r"""Hinton's mixture of the label loss and the distillation loss.

    .. math::
        L = (1 - \alpha)\, \mathrm{CE}(s, y)
            + \alpha\, T^2\, \mathrm{KL}(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T))

    (Hinton et al. 2015, Sec. 2: "a weighted average of two different objective
    functions"). The cross-entropy uses the unsoftened student logits and is averaged
    over the batch; the second term is :func:`kd_kl`.

    Args:
        student_logits: Raw student scores, shape (B, C) or (B, H, C).
        targets: Integer class labels, shape (B,) or (B, H) (``student_logits.shape[:-1]``).
        teacher_logits: Raw teacher scores, same shape as ``student_logits``. Detached inside.
        alpha: Weight of the distillation term, in [0, 1]; 0 is plain cross-entropy,
            1 is pure distillation.
        temperature: Softmax temperature ``T > 0`` of the distillation term.
        scale_t2: Multiply the distillation term by ``T^2`` (Hinton, default).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: If ``alpha`` is outside [0, 1], ``temperature`` is not > 0, or shapes
            do not match.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}.")
    if targets.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"targets {tuple(targets.shape)} must have shape "
            f"{tuple(student_logits.shape[:-1])} (the logits' shape without the class axis)."
        )
    distillation = kd_kl(student_logits, teacher_logits, temperature, scale_t2)
    classes = student_logits.shape[-1]
    label_loss = F.cross_entropy(student_logits.reshape(-1, classes), targets.reshape(-1))
    return (1.0 - alpha) * label_loss + alpha * distillation


def feature_distance(
    student_features: Tensor,
    teacher_features: Tensor,
    kind: str = "mse",
) -> Tensor:
    r"""Distance between student and teacher feature maps, averaged over the batch.

    Inputs of shape (B, ...) are flattened to (B, D). With ``d_n = s_n - t_n``:

    - ``"mse"``: :math:`\frac{1}{B D} \sum_{n,i} d_{n,i}^2` (mean over all elements; the
      feature "hint" loss of FitNets, Romero et al. 2015).
    - ``"l2"``: :math:`\frac{1}{B} \sum_n \lVert d_n \rVert_2` (mean Euclidean distance;
      its gradient is defined as zero where ``s_n == t_n``).
    - ``"cosine"``: :math:`\frac{1}{B} \sum_n \left(1 - \frac{s_n \cdot t_n}
      {\max(\lVert s_n \rVert \lVert t_n \rVert, \epsilon)}\right)`, in [0, 2]
      (scale-invariant; used e.g. by LUCIR, Hou et al. 2019, on normalised features).

    Args:
        student_features: Student features, shape (B, D) or (B, ...).
        teacher_features: Teacher features, same shape. Detached inside.
        kind: One of :data:`FEATURE_DISTANCE_KINDS`.

    Returns:
        Scalar tensor, >= 0.

    Raises:
        ValueError: If ``kind`` is unknown, or the shapes differ or lack a batch axis.
    """
    if kind not in FEATURE_DISTANCE_KINDS:
        raise ValueError(
            f"unknown feature distance kind {kind!r}; valid kinds: "
            f"{', '.join(FEATURE_DISTANCE_KINDS)}."
        )
    if student_features.shape != teacher_features.shape:
        raise ValueError(
            f"student features {tuple(student_features.shape)} and teacher features "
            f"{tuple(teacher_features.shape)} must have the same shape; add a projection "
            "(e.g. nn.Linear or a 1x1 convolution) on the student side to match them."
        )
    if student_features.dim() < 2:
        raise ValueError(
            f"features need a batch axis, shape (B, D) or (B, ...), got "
            f"{tuple(student_features.shape)}."
        )
    student_features, teacher_features = _fp32(student_features, teacher_features)
    student = student_features.flatten(start_dim=1)
    teacher = teacher_features.detach().flatten(start_dim=1)
    if kind == "mse":
        return F.mse_loss(student, teacher, reduction="mean")
    if kind == "l2":
        return torch.linalg.vector_norm(student - teacher, dim=1).mean()
    return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    r"""Mean Shannon entropy (in nats) of the temperature-softened predictions.

    .. math::
        H = -\frac{1}{N} \sum_{n=1}^{N} \sum_{c=1}^{C} p_{n,c} \log p_{n,c},
        \quad p = \mathrm{softmax}(z / T)

    (Shannon 1948). Sum over classes, mean over batch (and heads for (B, H, C) inputs).
    Ranges from 0 (one-hot) to ``log C`` (uniform). The sign is the caller's choice:
    a strategy that penalises over-confidence (confidence penalty, Pereyra et al. 2017)
    *subtracts* it from the loss; one that sharpens predictions (entropy minimisation,
    Grandvalet & Bengio 2005) *adds* it. Unlike the other functions, the input is not
    detached: it is usually the student's output.

    Args:
        logits: Raw scores, shape (B, C) or (B, H, C).
        temperature: Softmax temperature ``T > 0``. Default 1.0 (plain softmax).

    Returns:
        Scalar tensor in [0, log C].

    Raises:
        ValueError: If ``temperature`` is not > 0 or ``logits`` is not 2-D/3-D.
    """
    _check_temperature(temperature)
    _check_logits(logits, logits)
    (logits,) = _fp32(logits)
    log_probs = F.log_softmax(logits / temperature, dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1).mean()
