"""Lifelong compression: a small student distilled from a large continual teacher along the stream."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd import distributed, losses
from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.strategies import distill
from lifelong_kd.strategies.base import ModelOutput, Strategy, module_state
from lifelong_kd.strategies.distill import Knowledge
from lifelong_kd.teacher import freeze_copy, is_frozen

TEACHER_HEADS = ("all", "current")


class Compress(Strategy):
    r"""Train a small student on the stream from a large teacher, its own snapshot and the labels.

    On experience ``k`` the loss of a batch is

    .. math::
        w_y\,\mathrm{CE}(s_k, y)
        + w_t\,\mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big)[\times T^2]
        + w_h\, d(P f_s, f_t)
        + w_o\,\mathrm{KL}\big(\mathrm{softmax}(o/T)\,\|\,\mathrm{softmax}(s'/T)\big)[\times T^2]

    * (a) the **large teacher** ``t`` (any model with ``features``/``heads``, e.g. a
      :class:`~lifelong_kd.models.Classifier` trained in the same run by another strategy,
      or loaded from a finished run) gives soft targets on every head it has learned up to
      and including experience ``k`` (task scenario; seen classes in the class scenario;
      the shared head in the domain scenario) and, with ``hint_weight > 0``, its
      penultimate features ``f_t``, matched by the student's features through a learned
      linear projection ``P`` (FitNets hints, Romero et al. 2015; learned even when the
      widths are equal);
    * (b) the student's **own snapshot** ``o`` from the end of experience ``k-1`` gives
      soft targets on the old heads only (LwF, Li & Hoiem 2016); ``s'`` is the student's
      output restricted to them;
    * (c) the **labels**: the training loop adds ``CE`` with weight 1; this strategy adds
      ``(label_weight - 1) * CE`` so the total label weight is ``label_weight``.

    The composing code (:mod:`lifelong_kd.compression_run`) hands the large teacher over
    with :meth:`set_teacher` before each experience; the strategy never trains it and
    never imports the training loop. Without a teacher (or with ``teacher_weight = 0`` and
    ``hint_weight = 0``) the strategy is LwF self-distillation: "the student trained alone".

    Both teachers are frozen, so when batches are not augmented their outputs on the
    experience's training split are computed once and looked up by ``Batch.index``;
    augmented batches get online teacher forwards on the same view.

    The projection ``P`` is not part of the student (it would change the student's size),
    so the loop's optimiser does not see it: the strategy owns an SGD optimiser for it and
    steps it at the start of the next :meth:`loss` call, when the loop's backward pass has
    filled its gradients (and once more in :meth:`after_experience`).

    Args:
        temperature: Softmax temperature T of both distillation terms (2, Li & Hoiem
            2016; Hinton et al. 2015 use 1..20).
        teacher_weight: ``w_t``, weight of the large teacher's soft targets (1, Hinton
            et al. 2015 weight soft and hard targets comparably when ``scale_t2``).
        hint_weight: ``w_h``, weight of the feature hint (0: off; Romero et al. 2015 use a
            separate hint stage, we add it as a term).
        hint_distance: ``"mse"``, ``"l2"`` or ``"cosine"`` (see ``losses.feature_distance``).
        hint_lr: SGD learning rate of the projection ``P`` (0.01, the loop's default lr).
        self_weight: ``w_o``, weight of LwF self-distillation from the student's previous
            snapshot on old heads (1, Li & Hoiem 2016's lambda_o).
        label_weight: ``w_y``, total weight of the cross-entropy on the labels (1, Hinton
            et al. 2015 keep the hard-target term).
        scale_t2: Multiply both KL terms by T^2 (True, Hinton et al. 2015: keeps soft-target
            gradients comparable to the hard-target ones across temperatures).
        teacher_heads: Which heads the large teacher's soft targets cover in the task
            scenario: ``"all"`` it has learned (old heads too), or ``"current"`` (the new
            task's head only; old heads are left to self-distillation). Other scenarios
            have one head, so both values are the same there.
    """

    name = "compress"

    def __init__(
        self,
        temperature: float = 2.0,  # Li & Hoiem 2016
        teacher_weight: float = 1.0,  # Hinton et al. 2015 (soft and hard targets, T^2-scaled)
        hint_weight: float = 0.0,  # off; FitNets hints (Romero et al. 2015) when > 0
        hint_distance: str = "mse",  # FitNets' L2 hint loss (Romero et al. 2015)
        hint_lr: float = 0.01,  # the loop's default learning rate
        self_weight: float = 1.0,  # Li & Hoiem 2016 (lambda_o = 1)
        label_weight: float = 1.0,  # Hinton et al. 2015 keep the hard-target loss
        scale_t2: bool = True,  # Hinton et al. 2015
        teacher_heads: str = "all",  # every head the teacher learned (our choice; see docs/results.md)
    ) -> None:
        self.temperature = temperature
        self.teacher_weight = teacher_weight
        self.hint_weight = hint_weight
        self.hint_distance = hint_distance
        self.hint_lr = hint_lr
        self.self_weight = self_weight
        self.label_weight = label_weight
        self.scale_t2 = scale_t2
        self.teacher_heads = teacher_heads
        self.scenario_: str | None = None
        self.big_teacher_: nn.Module | None = None
        self.snapshot_: nn.Module | None = None
        self.knowledge_: Knowledge | None = None
        self.projection_: nn.Module | None = None
        self.cache_: dict[str, list[Tensor] | None] = {}
        self._experience: Experience | None = None
        self._snapshot_state: dict[str, Tensor] | None = None
        self._projection_state: dict[str, Tensor] | None = None
        self._projection_optimizer: torch.optim.Optimizer | None = None
        self._check_options()

    def _check_options(self) -> None:
        """Raise ``ValueError`` naming the first option out of its range (at construction, before any data is loaded)."""
        distill.check_temperature(self.temperature)
        if self.hint_distance not in losses.FEATURE_DISTANCE_KINDS:
            raise ValueError(f"hint_distance must be one of {', '.join(losses.FEATURE_DISTANCE_KINDS)}, got {self.hint_distance!r}.")
        if self.teacher_heads not in TEACHER_HEADS:
            raise ValueError(f"teacher_heads must be one of {', '.join(TEACHER_HEADS)}, got {self.teacher_heads!r}.")
        for key in ("teacher_weight", "hint_weight", "hint_lr", "self_weight", "label_weight"):
            distill.check_number(key, getattr(self, key))

    def check_stream(self, stream: Stream) -> None:
        """Check the scenario and record it (the options were checked at construction)."""
        super().check_stream(stream)
        self.scenario_ = stream.scenario

    def set_teacher(self, teacher: nn.Module | None) -> None:
        """Hand over the large teacher for the next experience (frozen; None: no teacher).

        Raises:
            ValueError: If ``teacher`` is not frozen (make it with ``teacher.freeze_copy``).
        """
        if teacher is not None and not is_frozen(teacher):
            raise ValueError("The large teacher must be frozen: pass lifelong_kd.teacher.freeze_copy(model).")
        self.big_teacher_, self.cache_ = teacher, {}

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Rebuild a restored snapshot and projection, drop the caches."""
        self._experience, self.cache_ = experience, {}
        if self.snapshot_ is None and self._snapshot_state is not None:
            self.snapshot_ = distill.rebuild_teacher(model, self._snapshot_state)

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """Extra label, teacher, hint and self-distillation terms (see the class docstring), each recorded by name."""
        self._step_projection()
        terms: dict[str, Tensor] = {}
        if self.label_weight != 1.0:
            terms["labels"] = (self.label_weight - 1.0) * F.cross_entropy(output.logits, batch.y)
        if self._uses_teacher():
            known = self._teacher_knowledge()
            targets = self._outputs("teacher", batch, lambda x: self._teacher_targets(x, known), self.big_teacher_)
            if self.teacher_weight > 0:
                terms["teacher"] = self.teacher_weight * self._kd(known.select(output.all_logits), targets[0])
            if self.hint_weight > 0:
                projected = self._projection(output.features, targets[1])(output.features)
                terms["hint"] = self.hint_weight * losses.feature_distance(projected, targets[1], self.hint_distance)
        if self.snapshot_ is not None and self.knowledge_ is not None and self.self_weight > 0:
            targets = self._outputs("snapshot", batch, self._snapshot_targets, self.snapshot_)
            terms["self_distillation"] = self.self_weight * self._kd(self.knowledge_.select(output.all_logits), targets[0])
        return self.sum_terms(terms, output.logits)

    def _kd(self, student: Tensor, teacher: Tensor) -> Tensor:
        return losses.kd_kl(student, teacher, self.temperature, self.scale_t2)

    def _uses_teacher(self) -> bool:
        return self.big_teacher_ is not None and (self.teacher_weight > 0 or self.hint_weight > 0)

    def _teacher_knowledge(self) -> Knowledge:
        """What the large teacher is distilled on: everything learned up to the current experience."""
        experience = distill.require_experience(self._experience)
        learned = (self.knowledge_ or Knowledge(distill.require_scenario(self.scenario_))).learn(experience)
        if self.teacher_heads == "current" and learned.scenario == "task":
            return replace(learned, heads=(experience.task_id,))
        return learned

    def _outputs(self, key: str, batch: Batch, targets: Any, teacher: nn.Module) -> list[Tensor]:
        """A teacher's outputs for ``batch``: cached per experience (one cache per ``key``), or online if augmented."""
        values, self.cache_[key] = distill.lookup_targets(batch, targets, self.cache_.get(key), self._experience, teacher)
        return values

    @torch.no_grad()
    def _teacher_targets(self, x: Tensor, known: Knowledge) -> list[Tensor]:
        features = self.big_teacher_.features(x)
        logits = known.select(self.big_teacher_.heads(features))
        return [logits, features] if self.hint_weight > 0 else [logits]

    @torch.no_grad()
    def _snapshot_targets(self, x: Tensor) -> list[Tensor]:
        return [self.knowledge_.select(self.snapshot_.all_logits(x))]

    def _projection(self, student_features: Tensor, teacher_features: Tensor) -> nn.Module:
        """The learned projection student width -> teacher width (made on first use, on the student's device).

        Raises:
            ValueError: Under float16 autocast: the loop scales the loss for float16 and the
                projection's own optimiser would step with scaled gradients.
        """
        device = student_features.device
        if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16:
            raise ValueError("compress with hint_weight > 0 does not run with --precision fp16 (its projection would step with loss-scaled gradients); use bf16 or fp32.")
        if self.projection_ is None:
            # Its initial weights come from torch's global generator: the same in every process.
            self.projection_ = nn.Linear(student_features.shape[1], teacher_features.shape[1])
            if self._projection_state is not None:
                self.projection_.load_state_dict(self._projection_state)
        self.projection_.to(device)
        if self._projection_optimizer is None:
            self._projection_optimizer = torch.optim.SGD(self.projection_.parameters(), lr=self.hint_lr)
        return self.projection_

    def _step_projection(self) -> None:
        """Apply the gradient the loop's backward pass left on the projection, then clear it.

        The projection is trained outside the loop's ``DistributedDataParallel`` module, so with
        several processes its gradients are averaged here (every process steps alike).
        """
        if self._projection_optimizer is None:
            return
        if any(p.grad is not None for p in self.projection_.parameters()):
            distributed.average_gradients(self.projection_.parameters())
            self._projection_optimizer.step()
        self._projection_optimizer.zero_grad(set_to_none=True)

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Snapshot the student as the next experience's self-teacher; drop the caches."""
        self._step_projection()
        self.knowledge_ = (self.knowledge_ or Knowledge(distill.require_scenario(self.scenario_))).learn(experience)
        self.snapshot_, self._snapshot_state, self.cache_ = freeze_copy(model), None, {}
        self._projection_optimizer = None

    def state_dict(self) -> dict[str, Any]:
        """Snapshot weights, knowledge, projection and scenario (the large teacher is the caller's)."""
        snapshot = distill.teacher_state(self.snapshot_) if self.snapshot_ is not None else self._snapshot_state
        projection = module_state(self.projection_) if self.projection_ is not None else self._projection_state
        knowledge = self.knowledge_.to_state() if self.knowledge_ is not None else None
        return {"snapshot": snapshot, "projection": projection, "knowledge": knowledge, "scenario": self.scenario_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the snapshot is rebuilt at the next ``before_experience``."""
        self.snapshot_, self.projection_, self._projection_optimizer, self.cache_ = None, None, None, {}
        self._snapshot_state, self._projection_state = state["snapshot"], state["projection"]
        self.knowledge_ = Knowledge.from_state(state["knowledge"]) if state["knowledge"] is not None else None
        self.scenario_ = state["scenario"] or self.scenario_
