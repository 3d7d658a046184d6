"""Experience Replay (Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning")."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.memory import ReplayMemory
from lifelong_kd.strategies import rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import require_experience


class ER(Strategy):
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

    @property
    def memory_(self) -> ReplayMemory:
        """The replay memory (reservoir)."""
        return self.rehearsal_.memory

    def check_stream(self, stream: Stream) -> None:
        """Validate the options; remember the stream's transforms."""
        super().check_stream(stream)
        rehearsal.check_replay_batch_size(self.replay_batch_size)
        self.rehearsal_.check_stream(stream)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Reseed the replay generator for this experience."""
        self._experience = experience
        self.rehearsal_.begin(experience)

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """The union-mean correction above (zero while the memory is empty); then store the batch."""
        experience = require_experience(self._experience)
        share = rehearsal.locate(batch)
        loss = output.logits.new_zeros(())
        if len(self.memory_):
            size = rehearsal.replay_size(self.replay_batch_size, share)
            replayed = self.rehearsal_.replay(size, rehearsal.replay_augmented(batch), batch.x.device, share=share)
            current, memory = share.size, len(replayed.drawn)
            replay_ce = rehearsal.replayed_term(share, replayed, lambda inputs, _: F.cross_entropy(model(inputs.x, inputs.task_id), inputs.y), loss)
            loss = memory / (current + memory) * (replay_ce - F.cross_entropy(output.logits, batch.y))
        self.rehearsal_.add(batch, experience, share=share)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The memory."""
        return {"memory": self.rehearsal_.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rehearsal_.load_state_dict(state["memory"])
