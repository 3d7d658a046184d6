"""The strategy contract: hooks around an experience and an extra loss term.

The training loop owns the optimiser, the cross-entropy on the labels and the backward
pass; a strategy adds what makes a continual-learning method: state kept between
experiences (a frozen teacher, importance weights, caches) and an extra loss.
Learned state ends in ``_``; ``__init__`` only stores arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from lifelong_kd.data.stream import SCENARIOS, Batch, Experience, Stream


@dataclass(frozen=True)
class ModelOutput:
    """What one forward pass of the student gives a strategy, so no loss needs a second pass.

    Attributes:
        logits: Logits of each sample's own head (B, K); the loop's cross-entropy uses them.
        all_logits: Every head's logits (B, H, K) (H = 1 outside the task scenario).
        features: Penultimate features (B, D).
    """

    logits: Tensor
    all_logits: Tensor
    features: Tensor


class Strategy:
    """Base class with no-op hooks; a method overrides what it needs.

    Class attributes:
        name: Name used by the CLI and in reports.
        scenarios: Scenarios the method supports.
        model_head: The classifier head the method needs (``models.build_model(..., head=...)``):
            ``"linear"``, or ``"cosine"`` (LUCIR).
    """

    name: ClassVar[str] = "strategy"
    scenarios: ClassVar[frozenset[str]] = frozenset(SCENARIOS)
    model_head: ClassVar[str] = "linear"

    def check_stream(self, stream: Stream) -> None:
        """Raise ``ValueError`` when the stream's scenario is not supported."""
        if stream.scenario not in self.scenarios:
            raise ValueError(
                f"Strategy {self.name!r} does not support the {stream.scenario!r} scenario; "
                f"it supports: {', '.join(sorted(self.scenarios))}."
            )

    def train_experiences(self, stream: Stream, experience: Experience) -> list[Experience]:
        """Experiences whose training data the loop draws from (default: the current one)."""
        return [experience]

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called before training on ``experience``."""

    def transform_batch(self, batch: Batch) -> Batch:
        """The view of ``batch`` the student is trained on (default: ``batch`` itself).

        The loop calls it before the forward pass; :meth:`loss` still receives the batch as
        drawn, so a teacher can see the clean input while the student sees, e.g., a noised
        one (denoising distillation).
        """
        return batch

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """Extra loss term added to the loop's cross-entropy (default: zero).

        A method whose loss has several parts returns ``self.sum_terms({...}, output.logits)``,
        so that each part is recorded separately in the loss curves; a method that returns a
        plain tensor is recorded as one term named after it (this default: no term).

        Args:
            model: The student being trained.
            batch: The current batch, as drawn (before :meth:`transform_batch`).
            output: The student's forward pass on ``transform_batch(batch).x``.
        """
        return output.logits.new_zeros(())

    def divergence_hint(self, optimizer: str, lr: float, momentum: float) -> str | None:
        """Why the loss may have become non-finite, from this strategy's state, and the fix; None: nothing to say.

        Called by the loop when the loss became inf or nan; the sentence is added to the error.

        Args:
            optimizer: The run's optimiser name (``"sgd"`` or ``"adam"``).
            lr: Its learning rate.
            momentum: Its momentum (SGD).
        """
        return None

    def loss_scale(self) -> float:
        """Factor the loop multiplies the whole loss (cross-entropy + :meth:`loss`) by before the backward pass (default 1).

        A method whose loss is a weighted mean of the label term and its own, rather than their
        sum, returns the label term's weight here (LwF's ``weighting="convex"``: 1/k on
        experience k). Recorded losses are the unscaled sum.
        """
        return 1.0

    def sum_terms(self, terms: Mapping[str, Tensor], like: Tensor) -> Tensor:
        """The sum of this step's named loss parts (weights applied), recorded for the loss curves.

        The parts are kept detached until the loop reads them (:meth:`recorded_terms`), so
        recording costs no synchronisation with the device.

        Args:
            terms: ``{"distillation": alpha * kd, "feature": ...}``; empty: no extra loss this step.
            like: A tensor of the step (the zero of an empty sum is made like it).

        Returns:
            The parts added in their order (zero when there is none).
        """
        self._loss_terms = {name: value.detach() for name, value in terms.items()}
        total: Tensor | None = None
        for value in terms.values():
            total = value if total is None else total + value
        return like.new_zeros(()) if total is None else total

    def recorded_terms(self) -> dict[str, Tensor] | None:
        """The parts the last :meth:`loss` recorded with :meth:`sum_terms`, forgotten once read; None: it recorded none."""
        return self.__dict__.pop("_loss_terms", None)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Called after training on ``experience``, before evaluation."""

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """The model the evaluator measures after an experience (default: ``model`` itself).

        A method whose prediction rule differs from the trained network's own output
        (iCaRL's nearest mean of exemplars, BiC's bias-corrected logits) returns a module
        that applies it; the loop evaluates that module.
        """
        return model

    def state_dict(self) -> dict[str, Any]:
        """Learned state (tensors and plain values) needed to resume mid-stream."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def options(self) -> dict[str, Any]:
        """Constructor arguments, for the run's config record."""
        return {key: value for key, value in vars(self).items() if not key.endswith("_") and not key.startswith("_")}


def module_state(module: nn.Module | None) -> dict[str, Tensor] | None:
    """A detached copy of a module's state, or None."""
    if module is None:
        return None
    return {key: value.detach().clone() for key, value in module.state_dict().items()}

