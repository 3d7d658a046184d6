"""Elastic Weight Consolidation (Kirkpatrick et al. 2017): the non-distillation baseline."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong_kd import distributed
from lifelong_kd.data.stream import Batch, Experience
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import check_number

FISHER_KINDS = ("true", "empirical", "predicted")
EWC_MODES = ("separate", "online")
# Per-sample gradients are computed in chunks holding about this many floats.
CHUNK_FLOATS = 2**25
# Samples per chunk when every parameter is in a linear layer (no per-sample gradients are held).
LINEAR_CHUNK = 1024


def _log_likelihood(model: nn.Module, constants: dict[str, Tensor], task_id: int):  # noqa: ANN202
    """log p(label | x) of one sample as a function of the parameters (for torch.func)."""

    def log_likelihood(params: dict[str, Tensor], x: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(model, (params, constants), (x.unsqueeze(0), task_id))
        return F.log_softmax(logits, dim=-1)[0].gather(0, label.reshape(1)).squeeze(0)

    return log_likelihood


def _squared_grads(per_sample: Any, params: dict[str, Tensor], x: Tensor, labels: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Sum over the chunk of ``weight_n * grad_n^2`` for every parameter."""
    grads = per_sample(params, x, labels)
    return {name: torch.einsum("n,n...->...", weights, g.pow(2)) for name, g in grads.items()}


def diagonal_fisher(
    model: nn.Module, experience: Experience, kind: str = "true", n_samples: int = 0, per_sample_only: bool = False
) -> dict[str, Tensor]:
    r"""Diagonal Fisher information of ``model`` on ``experience``'s training data.

    .. math::
        F_i = \frac{1}{N} \sum_n \mathbb{E}_{y}\big[(\partial_{\theta_i} \log p_\theta(y \mid x_n))^2\big]

    with ``y`` drawn from the model (``"true"``: exact expectation over the outputs of the
    sample's head, Kirkpatrick et al. 2017), the data set's label (``"empirical"``), or the
    model's most likely label (``"predicted"``, van de Ven et al. 2019's code). In eval mode.

    Linear layers (``nn.Linear`` called once per forward on (B, D) inputs: every layer of an
    MLP and every head) need no per-sample gradients: sample ``n``'s weight gradient is the
    outer product ``g_n a_n^T`` of the layer's output gradient and input, so
    ``sum_n w_n (g_n a_n^T)^2 = (w * G^2)^T A^2``, one matmul per batch, with ``G`` from one
    backward pass of the summed log-likelihoods (samples do not interact in eval mode). Other
    parameters (convolutions, batch-norm) get per-sample gradients from ``torch.func``
    (``vmap`` over ``grad``).

    The samples are drawn with torch's global generator; the computation runs on the
    model's device. With several processes each process sums the terms of its contiguous
    part of the drawn samples and the sums are added up (:mod:`lifelong_kd.distributed`), so
    every process ends with the same Fisher.

    Args:
        model: The trained model (a Classifier: ``model(x, task_id)`` gives (B, K) logits).
        experience: Its training split is used (``task_id`` picks the head).
        kind: ``"true"``, ``"empirical"`` or ``"predicted"``.
        n_samples: Random training samples used (0: all).
        per_sample_only: Use per-sample gradients for every parameter, linear layers too (the
            slower reference path, for checks and benchmarks).

    Returns:
        Parameter name -> Fisher diagonal (same shape as the parameter).
    """
    was_training = model.training
    model.eval()
    device = distributed.module_device(model)
    try:
        params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        probe = experience.transform(experience.train.x[:1].to(device))
        linear = {} if per_sample_only else _plain_linear_layers(model, params, probe, experience.task_id)
        in_linear = {name for names in linear.values() for name in names if name is not None}
        rest = {name: p for name, p in params.items() if name not in in_linear}
        constants = {**{name: b.detach() for name, b in model.named_buffers()}, **{n: params[n] for n in in_linear}}
        per_sample = vmap(grad(_log_likelihood(model, constants, experience.task_id)), in_dims=(None, 0, 0))
        size = len(experience.train)
        drawn = torch.randperm(size)[: n_samples or size]
        index = drawn[distributed.shard(len(drawn))]
        chunk = max(1, CHUNK_FLOATS // sum(p.numel() for p in rest.values())) if rest else LINEAR_CHUNK
        fisher = {name: torch.zeros_like(p) for name, p in params.items()}
        for start in range(0, len(index), chunk):
            part = index[start : start + chunk]
            x = experience.transform(distributed.to_device(experience.train.x[part], device))
            pairs = _labels_and_weights(model, x, experience, part, kind)
            if linear:
                _add_linear_terms(model, linear, x, experience.task_id, pairs, fisher)
            if rest:
                for labels, weights in pairs:
                    for name, value in _squared_grads(per_sample, rest, x, labels, weights).items():
                        fisher[name] += value
    finally:
        model.train(was_training)
    return {name: distributed.all_reduce_sum(value) / len(drawn) for name, value in fisher.items()}


def _plain_linear_layers(model: nn.Module, params: dict[str, Tensor], probe: Tensor, task_id: int) -> dict[nn.Module, tuple[str, str | None]]:
    """Linear layers whose weight gradient is one outer product per sample: called once, on (B, D) inputs.

    Returns:
        layer -> (weight name, bias name or None), for layers whose parameters are all trained.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    calls: dict[nn.Module, list[int]] = {}
    hooks = [
        module.register_forward_hook(lambda m, args, out: calls.setdefault(m, []).append(args[0].dim()) and None)
        for module in model.modules()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.no_grad():
            model(probe, task_id)
    finally:
        for hook in hooks:
            hook.remove()
    found = {}
    for layer, dims in calls.items():
        weight = names.get(id(layer.weight))
        bias = names.get(id(layer.bias)) if layer.bias is not None else None
        if dims == [2] and weight in params and (layer.bias is None or bias in params):
            found[layer] = (weight, bias)
    return found


def _add_linear_terms(
    model: nn.Module,
    layers: dict[nn.Module, tuple[str, str | None]],
    x: Tensor,
    task_id: int,
    pairs: list[tuple[Tensor, Tensor]],
    fisher: dict[str, Tensor],
) -> None:
    """Add ``sum_n w_n (g_n a_n^T)^2`` (and ``sum_n w_n g_n^2`` for biases) of every plain linear layer."""
    inputs: dict[nn.Module, Tensor] = {}
    outputs: dict[nn.Module, Tensor] = {}

    def keep(module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
        inputs[module], outputs[module] = args[0].detach(), out

    hooks = [layer.register_forward_hook(keep) for layer in layers]
    try:
        with torch.enable_grad():
            log_probs = F.log_softmax(model(x.detach().requires_grad_(True), task_id).float(), dim=-1)
            order = list(layers)
            for labels, weights in pairs:
                total = log_probs.gather(1, labels[:, None]).sum()
                grads = torch.autograd.grad(total, [outputs[layer] for layer in order], retain_graph=True)
                with torch.autocast(x.device.type, enabled=False):  # accumulate in float32, also under autocast
                    for layer, g in zip(order, grads, strict=True):
                        weighted = g.float().pow(2) * weights[:, None]
                        weight_name, bias_name = layers[layer]
                        fisher[weight_name] += weighted.T @ inputs[layer].float().pow(2)
                        if bias_name is not None:
                            fisher[bias_name] += weighted.sum(0)
    finally:
        for hook in hooks:
            hook.remove()


@torch.no_grad()
def _labels_and_weights(
    model: nn.Module, x: Tensor, experience: Experience, part: Tensor, kind: str
) -> list[tuple[Tensor, Tensor]]:
    """(labels, weights) pairs whose weighted squared gradients sum to the Fisher terms (on ``x``'s device)."""
    ones = torch.ones(len(x), device=x.device)
    if kind == "empirical":
        return [(experience.train.y[part].to(x.device), ones)]
    probs = F.softmax(model(x, experience.task_id), dim=-1)
    if kind == "predicted":
        return [(probs.argmax(-1), ones)]
    return [(torch.full((len(x),), c, dtype=torch.long, device=x.device), probs[:, c]) for c in range(probs.shape[1])]


class EWC(Strategy):
    r"""Elastic Weight Consolidation: a quadratic pull towards earlier solutions, weighted by Fisher.

    .. math::
        L = \frac{\lambda}{2} \sum_{j<k} \sum_i F_{j,i} (\theta_i - \theta^*_{j,i})^2

    with one penalty per earlier experience (``"separate"``, Kirkpatrick et al. 2017), or
    one running penalty (``"online"``, Schwarz et al. 2018): ``F <- decay * F + F_k`` and
    ``theta* <- theta_k``. The Fisher is computed after each experience on its training data
    (:func:`diagonal_fisher`).

    Args:
        ewc_lambda: Penalty strength lambda. Its scale depends on the Fisher's normalisation
            (here: mean over samples, as van de Ven et al.). 100 is their grid's choice on
            permuted-MNIST and keeps plain SGD at lr 0.01 stable; on split-MNIST their grid
            chose much larger values (1e5 task, 1e10 domain, 1e9 class, with Adam).
        fisher_kind: ``"true"`` (Kirkpatrick et al. 2017), ``"empirical"`` or ``"predicted"``.
        fisher_samples: Training samples the Fisher is estimated from (0: all); 1000 as in
            van de Ven et al.'s later permuted-MNIST runs.
        ewc_mode: ``"separate"`` (Kirkpatrick et al. 2017) or ``"online"`` (Schwarz et al. 2018).
        ewc_decay: Online mode's decay gamma of the old Fisher (1: van de Ven et al. 2019).
    """

    name = "ewc"

    def __init__(
        self,
        ewc_lambda: float = 100.0,  # van de Ven et al.'s permuted-MNIST grid choice
        fisher_kind: str = "true",  # Kirkpatrick et al. 2017
        fisher_samples: int = 1000,  # van de Ven et al. (permuted-MNIST, --fisher-n=1000)
        ewc_mode: str = "separate",  # Kirkpatrick et al. 2017
        ewc_decay: float = 1.0,  # Schwarz et al. 2018 gamma; van de Ven et al. 2019 use 1
    ) -> None:
        self.ewc_lambda = ewc_lambda
        self.fisher_kind = fisher_kind
        self.fisher_samples = fisher_samples
        self.ewc_mode = ewc_mode
        self.ewc_decay = ewc_decay
        self.fishers_: list[dict[str, Tensor]] = []
        self.anchors_: list[dict[str, Tensor]] = []
        self._check_options()

    def _check_options(self) -> None:
        """Raise ``ValueError`` naming the first option out of its range (at construction, before any data is loaded)."""
        check_number("ewc_lambda", self.ewc_lambda)
        check_number("ewc_decay", self.ewc_decay)
        checks = [
            (self.fisher_kind in FISHER_KINDS, f"fisher_kind must be one of {', '.join(FISHER_KINDS)}, got {self.fisher_kind!r}"),
            (
                isinstance(self.fisher_samples, int) and self.fisher_samples >= 0,
                f"fisher_samples must be an integer >= 0 (0: all), got {self.fisher_samples!r}",
            ),
            (self.ewc_mode in EWC_MODES, f"ewc_mode must be one of {', '.join(EWC_MODES)}, got {self.ewc_mode!r}"),
            (self.ewc_decay <= 1, f"ewc_decay must be in [0, 1], got {self.ewc_decay!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message + ".")

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Move restored Fisher diagonals and anchors to the model's device (a checkpoint holds CPU tensors)."""
        device = distributed.module_device(model)
        self.fishers_ = [{name: value.to(device) for name, value in fisher.items()} for fisher in self.fishers_]
        self.anchors_ = [{name: value.to(device) for name, value in anchor.items()} for anchor in self.anchors_]

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """``lambda / 2 * sum_j sum_i F_j,i (theta_i - theta*_j,i)^2`` (zero before any penalty)."""
        if not self.fishers_:
            return self.sum_terms({}, output.logits)
        params = dict(model.named_parameters())
        total = output.logits.new_zeros(())
        for fisher, anchor in zip(self.fishers_, self.anchors_, strict=True):
            for name, weight in fisher.items():
                total = total + (weight * (params[name] - anchor[name]).pow(2)).sum()
        return self.sum_terms({"penalty": 0.5 * self.ewc_lambda * total}, output.logits)

    def penalty_curvature(self) -> tuple[float, str]:
        """The penalty's largest curvature ``lambda * max_i sum_j F_j,i`` and the parameter it is on (0 and "" before any penalty)."""
        summed: dict[str, Tensor] = {}
        for fisher in self.fishers_:
            for name, value in fisher.items():
                summed[name] = summed[name] + value if name in summed else value.float()
        if not summed:
            return 0.0, ""
        name = max(summed, key=lambda key: float(summed[key].max()))
        return self.ewc_lambda * float(summed[name].max()), name

    def divergence_hint(self, optimizer: str, lr: float, momentum: float) -> str | None:
        """With SGD: whether the penalty alone exceeds heavy-ball SGD's stability limit ``lr * h < 2 (1 + momentum)``, and the lambda below it.

        Along a parameter where the penalty has curvature ``h``, SGD with momentum ``m`` (PyTorch's
        heavy ball) converges only if ``lr * h < 2 (1 + m)``; beyond it the parameter oscillates
        with a growing amplitude whatever the data loss does (benchmarks/ewc_divergence.py
        checks this on split-CIFAR-10). Adam rescales each step, so no such bound applies.
        """
        curvature, name = self.penalty_curvature()
        limit = 2 * (1 + momentum)
        if optimizer != "sgd" or lr * curvature < limit:
            return None
        below = limit / (lr * curvature / self.ewc_lambda)
        return (
            f"EWC's penalty has curvature lambda x Fisher = {curvature:.4g} along {name}, and SGD at lr {lr:g} with momentum "
            f"{momentum:g} diverges along it once lr x curvature reaches 2 x (1 + momentum) = {limit:g} (here {lr * curvature:.3g}): "
            f"use --ewc-lambda below {below:.3g} or --lr below {limit / curvature:.3g}."
        )

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Estimate this experience's Fisher and store the anchor (or fold it in, online)."""
        fisher = diagonal_fisher(model, experience, self.fisher_kind, self.fisher_samples)
        anchor = {name: p.detach().clone() for name, p in model.named_parameters() if name in fisher}
        if self.ewc_mode == "online" and self.fishers_:
            fisher = {name: self.ewc_decay * old + fisher[name] for name, old in self.fishers_[0].items()}
            self.fishers_, self.anchors_ = [], []
        self.fishers_.append(fisher)
        self.anchors_.append(anchor)

    def state_dict(self) -> dict[str, Any]:
        """Fisher diagonals and anchors (lists of name -> tensor dicts)."""
        return {"fishers": self.fishers_, "anchors": self.anchors_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.fishers_ = [dict(f) for f in state["fishers"]]
        self.anchors_ = [dict(a) for a in state["anchors"]]
