"""Elastic Weight Consolidation (Kirkpatrick et al. 2017): the non-distillation baseline."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import check_number

FISHER_KINDS = ("true", "empirical", "predicted")
EWC_MODES = ("separate", "online")
# Per-sample gradients are computed in chunks holding about this many floats.
CHUNK_FLOATS = 2**25


def _log_likelihood(model: nn.Module, buffers: dict[str, Tensor], task_id: int):  # noqa: ANN202
    """log p(label | x) of one sample as a function of the parameters (for torch.func)."""

    def log_likelihood(params: dict[str, Tensor], x: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(model, (params, buffers), (x.unsqueeze(0), task_id))
        return F.log_softmax(logits, dim=-1)[0].gather(0, label.reshape(1)).squeeze(0)

    return log_likelihood


def _squared_grads(per_sample: Any, params: dict[str, Tensor], x: Tensor, labels: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Sum over the chunk of ``weight_n * grad_n^2`` for every parameter."""
    grads = per_sample(params, x, labels)
    return {name: torch.einsum("n,n...->...", weights, g.pow(2)) for name, g in grads.items()}


def diagonal_fisher(model: nn.Module, experience: Experience, kind: str = "true", n_samples: int = 0) -> dict[str, Tensor]:
    r"""Diagonal Fisher information of ``model`` on ``experience``'s training data.

    .. math::
        F_i = \frac{1}{N} \sum_n \mathbb{E}_{y}\big[(\partial_{\theta_i} \log p_\theta(y \mid x_n))^2\big]

    with ``y`` drawn from the model (``"true"``: exact expectation over the outputs of the
    sample's head, Kirkpatrick et al. 2017), the data set's label (``"empirical"``), or the
    model's most likely label (``"predicted"``, van de Ven et al. 2019's code). Per-sample
    gradients come from ``torch.func`` (``vmap`` over ``grad``), in eval mode.

    Args:
        model: The trained model (a Classifier: ``model(x, task_id)`` gives (B, K) logits).
        experience: Its training split is used (``task_id`` picks the head).
        kind: ``"true"``, ``"empirical"`` or ``"predicted"``.
        n_samples: Random training samples used (0: all).

    Returns:
        Parameter name -> Fisher diagonal (same shape as the parameter).
    """
    was_training = model.training
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name: b.detach() for name, b in model.named_buffers()}
    per_sample = vmap(grad(_log_likelihood(model, buffers, experience.task_id)), in_dims=(None, 0, 0))
    size = len(experience.train)
    index = torch.randperm(size)[: n_samples or size]
    chunk = max(1, CHUNK_FLOATS // sum(p.numel() for p in params.values()))
    fisher = {name: torch.zeros_like(p) for name, p in params.items()}
    for start in range(0, len(index), chunk):
        part = index[start : start + chunk]
        x = experience.transform(experience.train.x[part])
        for labels, weights in _labels_and_weights(model, x, experience, part, kind):
            for name, value in _squared_grads(per_sample, params, x, labels, weights).items():
                fisher[name] += value
    model.train(was_training)
    return {name: value / len(index) for name, value in fisher.items()}


@torch.no_grad()
def _labels_and_weights(
    model: nn.Module, x: Tensor, experience: Experience, part: Tensor, kind: str
) -> list[tuple[Tensor, Tensor]]:
    """(labels, weights) pairs whose weighted squared gradients sum to the Fisher terms."""
    ones = torch.ones(len(x))
    if kind == "empirical":
        return [(experience.train.y[part], ones)]
    probs = F.softmax(model(x, experience.task_id), dim=-1)
    if kind == "predicted":
        return [(probs.argmax(-1), ones)]
    return [(torch.full((len(x),), c, dtype=torch.long), probs[:, c]) for c in range(probs.shape[1])]


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

    def check_stream(self, stream: Stream) -> None:
        """Validate the options (and the scenario)."""
        super().check_stream(stream)
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

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """``lambda / 2 * sum_j sum_i F_j,i (theta_i - theta*_j,i)^2`` (zero before any penalty)."""
        if not self.fishers_:
            return output.logits.new_zeros(())
        params = dict(model.named_parameters())
        total = output.logits.new_zeros(())
        for fisher, anchor in zip(self.fishers_, self.anchors_, strict=True):
            for name, weight in fisher.items():
                total = total + (weight * (params[name] - anchor[name]).pow(2)).sum()
        return 0.5 * self.ewc_lambda * total

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
