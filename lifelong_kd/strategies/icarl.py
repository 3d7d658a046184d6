"""iCaRL (Rebuffi et al. 2017, "iCaRL: Incremental Classifier and Representation Learning")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd import distributed
from lifelong_kd.data.stream import Batch, Experience
from lifelong_kd.strategies import distill, rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy

# Score of classes without exemplars in the nearest-mean classifier: never the arg max.
UNKNOWN_CLASS_SCORE = -1e9


class NearestMeanOfExemplars(nn.Module):
    r"""iCaRL's classifier: the class whose mean exemplar feature is nearest (Rebuffi et al. 2017, Algorithm 1).

    .. math::
        y^* = \arg\min_y \| \phi(x) - \mu_y \|_2, \qquad \text{score}_y(x) = -\| \phi(x) - \mu_y \|_2^2

    with ``phi`` the model's L2-normalised penultimate features and ``mu_y`` the
    normalised mean of class ``y``'s exemplars' features. Classes without exemplars (and
    output units past the known classes) score :data:`UNKNOWN_CLASS_SCORE`.

    Args:
        model: The trained network (``features(x)``); shared, not copied.
        means: Class means (C, D), row ``y`` for label ``y``; zero rows mark classes without
            exemplars (kept on the model's device).
        width: Number of output units K of the returned scores (at least C).
    """

    def __init__(self, model: nn.Module, means: Tensor, width: int) -> None:
        super().__init__()
        self.model = model
        self.width = width
        self.register_buffer("means", means.to(distributed.module_device(model)))

    def forward(self, x: Tensor, task_id: Tensor | int | None = None) -> Tensor:
        """Scores (B, K): minus the squared distance to each class mean (``task_id`` is unused)."""
        features = F.normalize(self.model.features(x).float(), dim=1)
        scores = -torch.cdist(features, self.means.to(features.device)).pow(2)
        known = self.means.norm(dim=1) > 0
        scores = scores.masked_fill(~known.to(scores.device), UNKNOWN_CLASS_SCORE)
        return F.pad(scores, (0, self.width - scores.shape[1]), value=UNKNOWN_CLASS_SCORE)


class ICaRL(rehearsal.ExemplarHooks, rehearsal.ReplayHooks, Strategy):
    r"""iCaRL: herding exemplars, sigmoid distillation on old classes, nearest-mean-of-exemplars classifier.

    **Representation learning** (Rebuffi et al. 2017, Algorithm 3): every step trains on
    the current minibatch together with ``R`` exemplars drawn from memory, with binary
    cross-entropy over the ``n`` classes seen so far (current experience included):

    .. math::
        L = \frac{1}{(B + R)\, n} \sum_{i} \sum_{y < n}
            \mathrm{BCE}\big(\sigma(s_y(x_i)),\ q_{iy}\big), \qquad
        q_{iy} = \begin{cases} \sigma(t_y(x_i)) & y \text{ old (known to the teacher)} \\
                               [y = y_i] & y \text{ new} \end{cases}

    with ``t`` the frozen snapshot taken at the end of the previous experience: old classes
    are distilled, new ones classified (the mean over units is mammoth's scaling of the
    paper's sum). This *replaces* the loop's cross-entropy: the term returned is ``L``
    minus the loop's cross-entropy on the current batch, so the total is exactly ``L``.
    ``R`` defaults to the expected number of exemplars in a minibatch drawn from the union
    of the experience's data and the memory, as in iCaRL's training set ``D ∪ P``.

    **Memory** (Algorithms 4-5): after each experience, every class seen keeps
    ``buffer_size // n`` exemplars: old classes their first ones, new classes the samples
    chosen by herding on L2-normalised features (:func:`lifelong_kd.memory.herding_order`).

    **Classification** (Algorithm 1): the evaluator measures
    :class:`NearestMeanOfExemplars` (:meth:`evaluation_model`), with the means of the
    exemplars' normalised features computed after each experience.

    Class-incremental scenario only (the paper's setting). The paper trains with lr 2.0,
    batch 128, 70 epochs and weight decay 1e-5 on iCIFAR-100 (``TrainConfig`` options).

    Args:
        buffer_size: Exemplars kept in memory (200 as ER and DER, Buzzega et al. 2020's
            smallest budget; Rebuffi et al. use K = 2000 on iCIFAR-100).
        replay_batch_size: Exemplars replayed per step; None: the current batch size times
            ``|memory| / (|experience| + |memory|)`` (rounded, at least 1), the expected
            share of exemplars in a minibatch of iCaRL's training set.
    """

    name = "icarl"
    scenarios = frozenset({"class"})

    def __init__(
        self,
        buffer_size: int = 200,  # Buzzega et al. 2020's smallest budget (Rebuffi et al. 2017: 2000)
        replay_batch_size: int | None = None,  # exemplars' share of the union D ∪ P (Rebuffi et al. 2017)
    ) -> None:
        self.buffer_size = buffer_size
        self.replay_batch_size = replay_batch_size
        self.init_exemplars(buffer_size)
        self.means_: Tensor | None = None

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """iCaRL's loss on the batch and replayed exemplars, minus the loop's cross-entropy."""
        experience = distill.require_experience(self._experience)
        share = rehearsal.locate(batch)
        replayed = self.replay_exemplars(batch, share, experience)
        logits, labels, inputs, drawn = rehearsal.with_replayed(model, batch, output, replayed)
        icarl = share.weigh(self._icarl_loss(logits, labels, inputs), len(labels), share.size + drawn)
        return icarl - F.cross_entropy(output.logits, batch.y)

    def _icarl_loss(self, logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        """Mean sigmoid BCE over the seen classes; old classes target the teacher's sigmoid outputs."""
        active = self._active_classes
        targets = F.one_hot(labels, logits.shape[1])[:, :active].float()
        if self.teacher_ is not None and self.knowledge_ is not None:
            old = self.knowledge_.n_classes
            with torch.no_grad():
                targets[:, :old] = torch.sigmoid(self.teacher_(inputs).float()[:, :old])
        return F.binary_cross_entropy_with_logits(logits[:, :active].float(), targets)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Snapshot the teacher, choose this experience's exemplars by herding, recompute the class means."""
        self.remember(model, experience)
        self.means_ = self.class_means(model)

    @torch.no_grad()
    def class_means(self, model: nn.Module) -> Tensor:
        """Normalised mean of each class's normalised exemplar features (C, D), on the CPU; zero rows for classes without exemplars.

        The exemplars' features are computed on the model's device, by every process alike.
        """
        stored = self.memory_.read()
        was_training = model.training
        model.eval()
        try:
            inputs = self.rehearsal_.inputs(stored, device=distributed.module_device(model))
            features = F.normalize(model.features(inputs).float(), dim=1).cpu()
        finally:
            model.train(was_training)
        n_classes = max(self._knowledge().n_classes, int(stored.y.max()) + 1)
        sums = torch.zeros(n_classes, features.shape[1]).index_add_(0, stored.y, features)
        return F.normalize(sums, dim=1)

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """:class:`NearestMeanOfExemplars` once there are exemplars; before that, ``model``."""
        if self.means_ is None:
            return model
        width = max(len(self.means_), int(getattr(model, "n_outputs", None) or 0))
        classifier = NearestMeanOfExemplars(model, self.means_, width)
        return classifier.train(model.training)

    def state_dict(self) -> dict[str, Any]:
        """Exemplars, teacher weights, what it knew, the scenario and the class means."""
        return {**super().state_dict(), "means": self.means_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the teacher is rebuilt at the next ``before_experience``."""
        super().load_state_dict(state)
        self.means_ = state["means"]
