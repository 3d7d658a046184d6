"""BiC (Wu et al. 2019, "Large Scale Incremental Learning"): bias correction fitted on held-out samples."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd import distributed, losses
from lifelong_kd.data.stream import Batch, Experience, Split, Stream
from lifelong_kd.strategies import distill, rehearsal
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import check_number, check_temperature

# Minibatch of the bias-correction fit (mammoth iterates its validation loader in minibatches).
BIAS_BATCH_SIZE = 128


def fit_bias_correction(
    logits: Tensor, labels: Tensor, start: int, stop: int, epochs: int, lr: float, generator: torch.Generator
) -> Tensor:
    r"""BiC's stage 2 (Wu et al. 2019, Eq. 5): fit ``scale, shift`` of the new classes' logits by cross-entropy.

    .. math::
        q_k = \alpha\, o_k + \beta \ \ (\text{new classes } k \in [start, stop)), \qquad q_k = o_k \ \text{otherwise}

    minimising ``CE(q, y)`` on the held-out validation samples with Adam, starting from
    ``alpha = 1, beta = 0``; the network is frozen (its logits are computed once).

    The loss is convex in ``(alpha, beta)`` (cross-entropy of logits affine in them), so the
    fit should reach its minimum. Adam moves each parameter by at most about ``lr`` per step,
    and a held-out set of a few exemplars per class is one minibatch: ``epochs`` steps in all.
    Measured on split-CIFAR-10 (convnet:16 budget, buffer 200, seed 0; the four fits of one
    run): with lr 0.001 and 250 epochs every fit stopped at ``alpha ~ 0.76, beta ~ -0.24``
    (held-out cross-entropy 1.66-3.83, old classes 0% correct); with lr 0.1 it ends within
    0.004 of the minimum found by L-BFGS (1.29-3.03; ``beta`` -1.5 to -4.4, old classes
    19-50% correct on the held-out samples).

    Args:
        logits: The network's logits on the validation samples over the seen classes (N, n_seen).
        labels: Labels (N,).
        start: First new-class unit.
        stop: One past the last new-class unit.
        epochs: Passes over the validation samples.
        lr: Adam's learning rate.
        generator: Source of the minibatch order.

    Returns:
        ``tensor([alpha, beta])``.
    """
    correction = torch.tensor([1.0, 0.0], requires_grad=True)
    optimizer = torch.optim.Adam([correction], lr=lr)
    logits = logits.detach().float()
    with torch.enable_grad():
        for _ in range(epochs):
            for rows in torch.randperm(len(labels), generator=generator).split(BIAS_BATCH_SIZE):
                loss = F.cross_entropy(rehearsal.corrected(logits[rows], correction, start, stop), labels[rows])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return correction.detach()


class BiC(rehearsal.ExemplarHooks, rehearsal.ReplayHooks, Strategy):
    r"""BiC: distillation with exemplars, then a two-parameter bias correction of the new classes' logits.

    **Stage 1** (Wu et al. 2019, Eq. 1-3): each step trains on the current minibatch and
    ``R`` exemplars (herding memory, as iCaRL) with

    .. math::
        L = \lambda\, L_d + (1 - \lambda)\, \mathrm{CE}(s_{<n}, y), \qquad
        L_d = -\sum_{k < n_{old}} \mathrm{softmax}(\hat t / T)_k \log \mathrm{softmax}(s_{<n_{old}} / T)_k,
        \qquad \lambda = \frac{n_{old}}{n}

    over the ``n`` classes seen so far, where ``t_hat`` are the bias-corrected logits of the
    frozen snapshot from the end of the previous experience. This *replaces* the loop's
    cross-entropy (the term returned subtracts it).

    **Validation split** (their Sec. 4.2): from the second experience on, ``v`` samples of
    every class are held out of stage 1, ``v = round(validation_fraction * buffer_size / n)``
    (at least 1): the last ``v`` exemplars of every old class in memory, and ``v`` random
    training samples of every new class (the loop trains on the rest, through
    :meth:`train_experiences`).

    **Stage 2** (Eq. 5, :func:`fit_bias_correction`): after training, ``alpha, beta`` of the
    new classes' logits are fitted on the balanced held-out set; old classes' logits are left
    unchanged. The evaluator measures the corrected logits over the seen classes
    (:meth:`evaluation_model`); only the latest correction is applied, as in the paper
    (earlier ones shaped the targets the model was distilled to).

    Class-incremental scenario only. Under Avalanche's templates the held-out new-class
    samples are trained on too (the plugin cannot remove samples from Avalanche's data set).

    Args:
        buffer_size: Exemplars kept in memory (200 as ER, DER and iCaRL; Wu et al. keep 2,000
            on CIFAR-100 and 20,000 on ImageNet-1000).
        temperature: Distillation temperature T (2, Wu et al. 2019, Sec. 4.1).
        validation_fraction: Share of each class's exemplars held out for the bias
            correction (0.1: Wu et al.'s train:validation split of 9:1; mammoth ``valset_split``).
        bias_epochs: Passes of Adam over the held-out set in stage 2 (250, mammoth ``bic_epochs``).
        bias_lr: Adam's learning rate in stage 2 (0.1, ours, measured; see :func:`fit_bias_correction`).
            Mammoth's 0.001 suits its held-out set (10% of the experience's data and memory,
            ~1,000 images in minibatches of 32: ~8,000 steps); ours is a few exemplars per class, one
            minibatch, so 250 epochs are 250 steps, and Adam moves a parameter by at most about
            ``lr`` per step: at 0.001 the fit stopped at scale 0.76, shift -0.24 on split-CIFAR-10
            (old classes 0%) where the minimum lies at shifts of -1.8 to -4.9.
        replay_batch_size: Exemplars replayed per step; None: their expected share of a
            minibatch drawn from the experience and the memory together (as iCaRL).
    """

    name = "bic"
    scenarios = frozenset({"class"})

    def __init__(
        self,
        buffer_size: int = 200,  # as ER, DER and iCaRL (Wu et al. 2019: 2,000 on CIFAR-100)
        temperature: float = 2.0,  # Wu et al. 2019, Sec. 4.1
        validation_fraction: float = 0.1,  # Wu et al. 2019 (train:validation 9:1); mammoth valset_split
        bias_epochs: int = 250,  # mammoth bic_epochs
        bias_lr: float = 0.1,  # ours: reaches the minimum in 250 one-minibatch epochs (mammoth's 0.001 does not)
        replay_batch_size: int | None = None,  # exemplars' share of the union, as iCaRL
    ) -> None:
        self.buffer_size = buffer_size
        self.temperature = temperature
        self.validation_fraction = validation_fraction
        self.bias_epochs = bias_epochs
        self.bias_lr = bias_lr
        self.replay_batch_size = replay_batch_size
        self.init_exemplars(buffer_size)
        self.correction_: Tensor | None = None
        self.corrected_range_: tuple[int, int] = (0, 0)
        self._held_out = torch.zeros(0, dtype=torch.long)
        self._validation = torch.zeros(0, dtype=torch.bool)
        self._part: tuple[Experience, Experience] | None = None

    def check_options(self) -> None:
        """``temperature``, ``bias_lr``, ``validation_fraction`` and ``bias_epochs`` are in range."""
        check_temperature(self.temperature)
        check_number("bias_lr", self.bias_lr)
        if not (isinstance(self.validation_fraction, (int, float)) and 0 < self.validation_fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1) (0.1 in Wu et al. 2019), got {self.validation_fraction!r}.")
        if isinstance(self.bias_epochs, bool) or not isinstance(self.bias_epochs, int) or self.bias_epochs < 0:
            raise ValueError(f"bias_epochs must be a non-negative integer, got {self.bias_epochs!r}.")

    def _old_classes(self) -> int:
        return self.knowledge_.n_classes if self.knowledge_ is not None else 0

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Reseed; rebuild a restored teacher; hold out the validation samples of every class."""
        super().before_experience(model, experience)
        self._held_out, self._part = torch.zeros(0, dtype=torch.long), None
        self._validation = torch.zeros(len(self.memory_), dtype=torch.bool)
        if self._old_classes() > 0 and len(self.memory_):
            per_class = max(1, round(self.validation_fraction * self.buffer_size / self._active_classes))
            self._validation = self.memory_.last_of_each_group(per_class)
            self._held_out = self._hold_out(experience, per_class)

    def _hold_out(self, experience: Experience, per_class: int) -> Tensor:
        """``per_class`` random training samples of every class of ``experience`` (sorted positions)."""
        labels = experience.train.y
        parts = [rows[torch.randperm(len(rows), generator=self.rehearsal_.generator)[:per_class]]
                 for rows in (torch.nonzero(labels == label).flatten() for label in torch.unique(labels))]
        return torch.sort(torch.cat(parts)).values if parts else torch.zeros(0, dtype=torch.long)

    def train_experiences(self, stream: Stream, experience: Experience) -> list[Experience]:
        """The experience without its held-out validation samples."""
        return [self._training_part(experience)]

    def _training_part(self, experience: Experience) -> Experience:
        """``experience`` without the held-out samples (made once per experience: every step asks for its size)."""
        if len(self._held_out) == 0 or self._experience is None or experience.index != self._experience.index:
            return experience
        if self._part is None or self._part[0] is not experience:
            keep = torch.ones(len(experience.train), dtype=torch.bool)
            keep[self._held_out] = False
            self._part = (experience, replace(experience, train=Split(experience.train.x[keep], experience.train.y[keep])))
        return self._part[1]

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """Stage 1 on the batch and replayed (non-held-out) exemplars, minus the loop's cross-entropy."""
        experience = distill.require_experience(self._experience)
        share = rehearsal.locate(batch)
        candidates = torch.nonzero(~self._validation).flatten() if len(self._validation) else torch.arange(len(self.memory_))
        replayed = self.replay_exemplars(batch, share, self._training_part(experience), candidates)
        logits, labels, inputs, drawn = rehearsal.with_replayed(model, batch, output, replayed)
        union, total = len(labels), share.size + drawn
        old, active = self._old_classes(), self._active_classes
        weight = old / active
        loss = (1 - weight) * share.weigh(F.cross_entropy(logits[:, :active], labels), union, total) - F.cross_entropy(output.logits, batch.y)
        if self.teacher_ is not None and old > 0:
            distillation = losses.soft_cross_entropy(logits[:, :old], self._teacher_logits(inputs), self.temperature)
            loss = loss + weight * share.weigh(distillation, union, total)
        return loss

    @torch.no_grad()
    def _teacher_logits(self, x: Tensor) -> Tensor:
        """The snapshot's bias-corrected logits of the old classes."""
        logits = self.teacher_(x).float()
        if self.correction_ is not None:
            logits = rehearsal.corrected(logits, self.correction_, *self.corrected_range_)
        return logits[:, : self._old_classes()]

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Fit the bias correction on the held-out samples, snapshot the teacher, choose exemplars by herding."""
        old, active = self._old_classes(), self._active_classes
        if old > 0 and len(self._held_out):
            logits, labels = self._validation_logits(model, experience)
            self.correction_ = fit_bias_correction(logits[:, :active], labels, old, active, self.bias_epochs, self.bias_lr, self.rehearsal_.generator)
            self.corrected_range_ = (old, active)
        self.remember(model, experience)
        self._held_out, self._validation, self._part = torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool), None

    @torch.no_grad()
    def _validation_logits(self, model: nn.Module, experience: Experience) -> tuple[Tensor, Tensor]:
        """The network's logits (eval mode, on its device; returned on the CPU) and the labels of the held-out exemplars and new samples.

        Every process computes them alike (the held-out set is small), so the fitted correction is the same everywhere.
        """
        device = distributed.module_device(model)
        stored = self.memory_.read(torch.nonzero(self._validation).flatten())
        new = experience.transform(distributed.to_device(experience.train.x[self._held_out], device))
        x = torch.cat([self.rehearsal_.inputs(stored, device=device), new])
        labels = torch.cat([stored.y, experience.train.y[self._held_out]])
        was_training = model.training
        model.eval()
        try:
            logits = torch.cat([model(part, 0).float() for part in x.split(BIAS_BATCH_SIZE)])
        finally:
            model.train(was_training)
        return logits.cpu(), labels

    def evaluation_model(self, model: nn.Module) -> nn.Module:
        """The bias-corrected logits over the classes seen so far."""
        if self.knowledge_ is None:
            return model
        outputs = rehearsal.SeenClassOutputs(model, self.knowledge_.n_classes, self.correction_, *self.corrected_range_)
        return outputs.train(model.training)

    def state_dict(self) -> dict[str, Any]:
        """Exemplars, teacher weights, what it knew, the scenario and the bias correction."""
        return {**super().state_dict(), "correction": self.correction_, "corrected_range": list(self.corrected_range_)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the teacher is rebuilt at the next ``before_experience``."""
        super().load_state_dict(state)
        self.correction_ = state["correction"]
        start, stop = state["corrected_range"]
        self.corrected_range_ = (int(start), int(stop))
