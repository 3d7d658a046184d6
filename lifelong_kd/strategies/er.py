"""Experience Replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning")."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd.data.stream import Batch, Experience
from lifelong_kd.strategies import rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy


class ER(rehearsal.ReplayHooks, Strategy):
    r"""Experience replay: train on the current minibatch together with one drawn from a reservoir memory.

    Every step draws ``R`` distinct samples from the memory (before the current batch is
    inserted), and the loop's cross-entropy on the current ``B`` samples becomes the mean
    cross-entropy over the union of both batches (Chaudhry et al. 2019, Algorithm 1; the
    ER of mammoth, Buzzega et al. 2020). This term is the difference:

    .. math::
        L = \frac{R}{B + R}\big(\mathrm{CE}(s(x_M), y_M) - \mathrm{CE}(s(x), y)\big),
        \qquad L_{CE} + L = \frac{B\,\mathrm{CE}(s(x), y) + R\,\mathrm{CE}(s(x_M), y_M)}{B + R}

    (the two batches go through the model in two forward passes, so batch-norm sees them
    separately). After the step's loss, the current batch is offered to the memory, a
    reservoir (Vitter 1985) over every sample seen so far. Zero while the memory is empty.
    With several processes ``B`` and ``R`` are the global minibatch's and the replayed
    one's sizes; each process replays its part (:mod:`lifelong_kd.strategies.rehearsal`).

    Args:
        buffer_size: Samples kept in memory (200, the smallest budget of Buzzega et al. 2020).
        replay_batch_size: Samples replayed per step; None uses the current batch's size
            (Chaudhry et al. 2019 and mammoth's best arguments use equal sizes).
    """

    name = "er"

    def __init__(
        self,
        buffer_size: int = 200,  # Buzzega et al. 2020, smallest of their budgets (200, 500, 5120)
        replay_batch_size: int | None = None,  # equal to the batch size (Chaudhry et al. 2019)
    ) -> None:
        self.buffer_size = buffer_size
        self.replay_batch_size = replay_batch_size
        self.rehearsal_ = rehearsal.Rehearsal(buffer_size, "reservoir")
        self._experience: Experience | None = None

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """The union-mean correction above (zero while the memory is empty); then store the batch."""

        def union_correction(share: rehearsal.Share) -> Tensor:
            size = rehearsal.replay_size(self.replay_batch_size, share)
            replayed = self.rehearsal_.replay(size, rehearsal.replay_augmented(batch), batch.x.device, share=share)
            current, memory = share.size, len(replayed.drawn)
            like = output.logits.new_zeros(())
            replay_ce = rehearsal.replayed_term(share, replayed, lambda inputs, _: F.cross_entropy(model(inputs.x, inputs.task_id), inputs.y), like)
            return memory / (current + memory) * (replay_ce - F.cross_entropy(output.logits, batch.y))

        return self.replay_step(batch, output, union_correction)
