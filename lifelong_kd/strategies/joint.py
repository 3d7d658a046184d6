"""Joint training: the upper bound that trains on every experience seen so far."""

from __future__ import annotations

from lifelong_kd.data.stream import Experience, Stream
from lifelong_kd.strategies.base import Strategy


class Joint(Strategy):
    """Train experience k on the union of experiences 0..k ("Joint" / offline upper bound).

    The loop draws its minibatches from the concatenated training splits (same number of
    iterations or epochs per step as the other strategies; van de Ven et al. 2019 report
    this upper bound as "Joint"), with cross-entropy only. Not a continual method: it
    stores all past data.
    """

    name = "joint"

    def train_experiences(self, stream: Stream, experience: Experience) -> list[Experience]:
        """Experiences 0..k of ``stream`` when training experience k."""
        return list(stream.experiences[: experience.index + 1])
