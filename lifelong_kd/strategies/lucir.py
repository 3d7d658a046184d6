"""LUCIR (Hou et al. 2019, "Learning a Unified Classifier Incrementally via Rebalancing")."""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lifelong_kd import distributed
from lifelong_kd.data.stream import Batch, Experience
from lifelong_kd.models import CosineLinear
from lifelong_kd.strategies import distill, rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import check_number


def cosine_head(model: nn.Module) -> CosineLinear:
    """The model's :class:`~lifelong_kd.models.CosineLinear` head, or a clear error."""
    head = getattr(model, "head", None)
    if head is None and hasattr(model, "head_module"):  # the Avalanche adapter
        head = model.head_module()
    if not isinstance(head, CosineLinear):
        raise ValueError(
            "LUCIR needs a cosine-normalised classifier: build the model with "
            "lifelong_kd.build_model(spec, input_shape, n_heads, n_outputs, head='cosine') (the command line "
            "does this for --strategy lucir); under Avalanche, wrap such a model in TaskAwareClassifier."
        )
    return head


def margin_ranking(cosines: Tensor, labels: Tensor, old: int, margin: float, hard_negatives: int) -> Tensor:
    r"""LUCIR's inter-class separation (Hou et al. 2019, Eq. 8) on the samples of old classes.

    .. math::
        L = \frac{1}{|O| K} \sum_{i \in O} \sum_{k=1}^{K} \max\big(0,\ m - \bar\theta_{y_i}(x_i) + \bar\theta_{k}(x_i)\big)

    ``O``: samples whose label is an old class (< ``old``); ``theta_bar_{y_i}``: cosine to the
    ground-truth class; ``theta_bar_k``: the ``K`` highest cosines among the new classes
    (``old..``): the hard negatives. Zero when the batch holds no old-class sample.

    Args:
        cosines: Cosine scores of the seen classes (N, n_seen), without the scale sigma.
        labels: Labels (N,).
        old: Number of old classes.
        margin: m.
        hard_negatives: K (at most the number of new classes is used).
    """
    hard = labels < old
    if not bool(hard.any()) or cosines.shape[1] <= old:
        return cosines.new_zeros(())
    truth = cosines[hard].gather(1, labels[hard, None])
    negatives = cosines[hard, old:].topk(min(hard_negatives, cosines.shape[1] - old), dim=1).values
    return F.relu(margin - truth + negatives).mean()


class LUCIR(rehearsal.ExemplarHooks, rehearsal.ReplayHooks, Strategy):
    r"""LUCIR: cosine-normalised classifier, less-forget feature distillation, margin ranking, herding exemplars.

    Each step trains on the current minibatch and ``R`` exemplars (herding memory, as iCaRL)
    with (Hou et al. 2019, Eq. 9)

    .. math::
        L = \mathrm{CE}\big(\sigma \cos(f, w)_{<n}, y\big)
          + \lambda \frac{1}{N}\sum_i \big(1 - \cos(f(x_i), f^*(x_i))\big)
          + \lambda_{mr} L_{mr}

    over the ``N = B + R`` samples: the cross-entropy of the cosine classifier over the ``n``
    classes seen so far *replaces* the loop's (the term returned subtracts it);
    ``f^*`` are the features of the frozen snapshot taken at the end of the previous
    experience ("less-forget" constraint, Eq. 6), with the adaptive weight
    ``lambda = lambda_base * sqrt(n_old / n_new)`` (Eq. 7); ``L_mr`` is
    :func:`margin_ranking` (Eq. 8). While old classes exist, their classifier weights are
    frozen (as in the authors' code: a gradient hook zeroes their rows; ``sigma`` learns).

    The model needs a :class:`~lifelong_kd.models.CosineLinear` head
    (``build_model(..., head="cosine")``, which also removes the penultimate ReLU, Sec. 4.1);
    :attr:`model_head` tells the composing code. The evaluator measures the cosine
    classifier over the seen classes (the paper's "CNN" result).
    Class-incremental scenario only. Not included: the optional class-balanced finetuning.

    Args:
        buffer_size: Exemplars kept in memory (200 as ER and DER; Hou et al. keep 20 per class).
        lambda_base: Base weight of the less-forget constraint (5 on CIFAR-100, Hou et al. 2019, Sec. 4.1).
        margin: Margin m of the ranking loss (0.5, Sec. 4.1).
        hard_negatives: Number K of new classes used as hard negatives (2, Sec. 4.1).
        ranking_weight: Weight of the margin ranking loss (1, the authors' code).
        replay_batch_size: Exemplars replayed per step; None: their expected share of a
            minibatch drawn from the experience and the memory together (as iCaRL).
    """

    name = "lucir"
    scenarios = frozenset({"class"})
    model_head = "cosine"

    def __init__(
        self,
        buffer_size: int = 200,  # as ER, DER and iCaRL (Hou et al. 2019: 20 per class)
        lambda_base: float = 5.0,  # Hou et al. 2019, Sec. 4.1 (CIFAR-100)
        margin: float = 0.5,  # Hou et al. 2019, Sec. 4.1
        hard_negatives: int = 2,  # Hou et al. 2019, Sec. 4.1 (K)
        ranking_weight: float = 1.0,  # the authors' code (lamb_mr in FACIL)
        replay_batch_size: int | None = None,  # exemplars' share of the union, as iCaRL
    ) -> None:
        self.buffer_size = buffer_size
        self.lambda_base = lambda_base
        self.margin = margin
        self.hard_negatives = hard_negatives
        self.ranking_weight = ranking_weight
        self.replay_batch_size = replay_batch_size
        self.init_exemplars(buffer_size)
        self._freeze: RemovableHandle | None = None

    def check_options(self) -> None:
        """``lambda_base``, ``margin`` and ``ranking_weight`` are non-negative numbers; ``hard_negatives`` a positive integer."""
        for name in ("lambda_base", "margin", "ranking_weight"):
            check_number(name, getattr(self, name))
        if isinstance(self.hard_negatives, bool) or not isinstance(self.hard_negatives, int) or self.hard_negatives < 1:
            raise ValueError(f"hard_negatives must be a positive integer (K = 2 in Hou et al. 2019), got {self.hard_negatives!r}.")

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Check the head; reseed; rebuild a restored teacher; freeze the old classes' weights."""
        head = cosine_head(model)
        super().before_experience(model, experience)
        self._release()
        old = self.knowledge_.n_classes if self.knowledge_ is not None else 0
        if old > 0:
            keep = torch.ones(head.weight.shape[0], 1, device=head.weight.device)
            keep[:old] = 0
            self._freeze = head.weight.register_hook(lambda grad: grad * keep)

    def _release(self) -> None:
        if self._freeze is not None:
            self._freeze.remove()
            self._freeze = None

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """LUCIR's objective on the batch and replayed exemplars, minus the loop's cross-entropy."""
        experience = distill.require_experience(self._experience)
        distilling = self.teacher_ is not None and self.knowledge_ is not None
        old = self.knowledge_.n_classes if distilling else 0
        share = rehearsal.locate(batch, [int((batch.y < old).sum())] if distilling and distributed.world_size() > 1 else [])
        features, logits, labels, inputs = [output.features], [output.logits], [batch.y], [batch.x]
        drawn = batch.y[:0].cpu()
        replayed = self.replay_exemplars(batch, share, experience)
        if replayed is not None:
            drawn = replayed.drawn.y
            if len(replayed.batch.y):
                replay_features = model.features(replayed.batch.x)
                features.append(replay_features)
                logits.append(model.select(model.heads(replay_features), replayed.batch.task_id))
                labels.append(replayed.batch.y)
                inputs.append(replayed.batch.x)
        features, labels = torch.cat(features), torch.cat(labels)
        active, total = self._active_classes, share.size + len(drawn)
        classification = share.weigh(F.cross_entropy(torch.cat(logits)[:, :active], labels), len(labels), total)
        loss = classification - F.cross_entropy(output.logits, batch.y)
        if distilling:
            loss = loss + self._old_class_terms(model, features, labels, torch.cat(inputs), share, drawn)
        return loss

    def _old_class_terms(self, model: nn.Module, features: Tensor, labels: Tensor, inputs: Tensor, share: rehearsal.Share, drawn: Tensor) -> Tensor:
        """Less-forget distillation and margin ranking (each process's part of them, weighed by ``share``; ``drawn``: every replayed label)."""
        old, active = self.knowledge_.n_classes, self._active_classes
        with torch.no_grad():
            teacher_features = self.teacher_.features(inputs)
        weight = self.lambda_base * math.sqrt(old / max(active - old, 1))
        less_forget = (1 - F.cosine_similarity(features.float(), teacher_features.float(), dim=1)).mean()
        less_forget = share.weigh(less_forget, len(labels), share.size + len(drawn))
        cosines = cosine_head(model).cosine(features)[:, :active]
        ranking = margin_ranking(cosines.float(), labels, old, self.margin, self.hard_negatives)
        if share.processes > 1:  # a mean over the old-class samples of every process
            ranking = share.weigh(ranking, int((labels < old).sum()), share.totals[0] + int((drawn < old).sum()))
        return weight * less_forget + self.ranking_weight * ranking

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Unfreeze, snapshot the teacher, choose this experience's exemplars by herding."""
        self._release()
        self.remember(model, experience)

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """The cosine classifier's scores over the classes seen so far."""
        if self.knowledge_ is None:
            return model
        return rehearsal.SeenClassOutputs(model, self.knowledge_.n_classes).train(model.training)
