"""Dark Experience Replay, DER and DER++ (Buzzega et al. 2020, "Dark Experience for General Continual Learning")."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd.data.stream import Batch
from lifelong_kd.memory import Stored
from lifelong_kd.strategies import rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import check_number

LOGITS = "logits"


def dark_replay(
    model: nn.Module,
    memory: rehearsal.Rehearsal,
    batch: Batch,
    size: int | None,
    alpha: float,
    beta: float,
    share: rehearsal.Share | None = None,
) -> Tensor:
    r"""``alpha * MSE(s(x_M), z_M) + beta * CE(s(x'_M), y'_M)`` on two independent draws from the memory.

    ``z_M`` are the logits stored with the samples (the model's own-head logits when they
    were inserted); ``beta = 0`` skips the second draw (DER). ``share``: this process's
    place in the global minibatch (None: :func:`~lifelong_kd.strategies.rehearsal.locate`);
    each process computes both terms on its part of each draw.
    """
    share = share or rehearsal.locate(batch)
    augment = rehearsal.replay_augmented(batch)
    count = rehearsal.replay_size(size, share)
    like = batch.x.new_zeros(())

    def matching(inputs: Batch, stored: Stored) -> Tensor:
        student = model(inputs.x, inputs.task_id)
        return alpha * F.mse_loss(student.float(), stored.extras[LOGITS].to(student.device))

    def labelled(inputs: Batch, _: Stored) -> Tensor:
        return beta * F.cross_entropy(model(inputs.x, inputs.task_id), inputs.y)

    loss = rehearsal.replayed_term(share, memory.replay(count, augment, batch.x.device, share=share), matching, like)
    if beta > 0:
        loss = loss + rehearsal.replayed_term(share, memory.replay(count, augment, batch.x.device, share=share), labelled, like)
    return loss


class _DarkReplayHooks:
    """What DER and DER++ add to :class:`~lifelong_kd.strategies.rehearsal.ReplayHooks` (a mixin listed before it).

    A reservoir memory of samples with their logits at insertion time; each class sets
    ``alpha``, ``replay_batch_size``, ``rehearsal_`` and ``_experience``, and DER++ ``beta``.
    """

    alpha: float
    replay_batch_size: int | None
    rehearsal_: rehearsal.Rehearsal
    replay_step: Callable[..., Tensor]

    def _label_weight(self) -> float:
        return float(getattr(self, "beta", 0.0))

    def check_options(self) -> None:
        """``alpha`` and ``beta`` are non-negative numbers."""
        check_number("alpha", self.alpha)
        check_number("beta", self._label_weight())

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """The replay terms (zero while the memory is empty); then store the batch with its logits."""

        def replay(share: rehearsal.Share) -> Tensor:
            return dark_replay(model, self.rehearsal_, batch, self.replay_batch_size, self.alpha, self._label_weight(), share)

        return self.replay_step(batch, output, replay, {LOGITS: output.logits.detach().float()})


class DER(_DarkReplayHooks, rehearsal.ReplayHooks, Strategy):
    r"""Dark Experience Replay: match the logits the model gave replayed samples when they were stored.

    .. math::
        L = \alpha\, \frac{1}{R K} \sum_{i \in M_R} \| s(x_i) - z_i \|_2^2

    over ``R`` distinct samples drawn from a reservoir memory (Vitter 1985) of every sample
    seen so far; ``z_i`` are the logits of the sample's own head when it was inserted
    (after the step's forward pass, on the student's view of the batch, as in Buzzega et
    al. 2020, Algorithm 1), ``K`` their width. Stored logits carry the model's "dark
    knowledge" about every class at the time, the regulariser is the L2 distance of
    logits (their Sec. 3). Zero while the memory is empty.

    Args:
        buffer_size: Samples kept in memory (200, the smallest budget of Buzzega et al. 2020).
        alpha: Weight of the logit-matching term (0.3: Buzzega et al. 2020's best on
            Seq-CIFAR-10 at every buffer size, mammoth ``utils/best_args.py``; their
            Seq-MNIST choice is 0.2 with buffer 200, 1.0 with 500).
        replay_batch_size: Samples replayed per step; None uses the current batch's size
            (mammoth's best arguments use the batch size).
    """

    name = "der"

    def __init__(
        self,
        buffer_size: int = 200,  # Buzzega et al. 2020, smallest budget
        alpha: float = 0.3,  # Buzzega et al. 2020, Seq-CIFAR-10 (mammoth best_args)
        replay_batch_size: int | None = None,  # the batch size (mammoth best_args: minibatch_size = batch_size)
    ) -> None:
        self.buffer_size = buffer_size
        self.alpha = alpha
        self.replay_batch_size = replay_batch_size
        self.rehearsal_ = rehearsal.Rehearsal(buffer_size, "reservoir")
        self._experience = None


class DERpp(_DarkReplayHooks, rehearsal.ReplayHooks, Strategy):
    r"""DER++: DER plus cross-entropy on the labels of a second, independent replayed minibatch.

    .. math::
        L = \alpha\, \mathrm{MSE}(s(x_M), z_M) + \beta\, \mathrm{CE}(s(x'_M), y'_M)

    (Buzzega et al. 2020, Eq. 6 and Algorithm 1): the stored labels correct logits that
    were stored before the model had learned their sample well.

    Args:
        buffer_size: Samples kept in memory (200, the smallest budget of Buzzega et al. 2020).
        alpha: Weight of the logit-matching term (0.1: Buzzega et al. 2020's best on
            Seq-CIFAR-10 with buffer 200, mammoth ``utils/best_args.py``; 0.2 with 500;
            Seq-MNIST: 0.2 with 200, 1.0 with 500).
        beta: Weight of the replayed cross-entropy (0.5: Seq-CIFAR-10, buffers 200 and 500;
            Seq-MNIST: 1.0 with 200, 0.5 with 500).
        replay_batch_size: Samples per replayed minibatch (each of the two); None uses the
            current batch's size.
    """

    name = "derpp"

    def __init__(
        self,
        buffer_size: int = 200,  # Buzzega et al. 2020, smallest budget
        alpha: float = 0.1,  # Buzzega et al. 2020, Seq-CIFAR-10 buffer 200 (mammoth best_args)
        beta: float = 0.5,  # same source
        replay_batch_size: int | None = None,  # the batch size (mammoth best_args)
    ) -> None:
        self.buffer_size = buffer_size
        self.alpha = alpha
        self.beta = beta
        self.replay_batch_size = replay_batch_size
        self.rehearsal_ = rehearsal.Rehearsal(buffer_size, "reservoir")
        self._experience = None
