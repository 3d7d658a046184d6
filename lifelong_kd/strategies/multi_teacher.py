"""Multi-teacher distillation: every earlier snapshot is a teacher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lifelong_kd import losses
from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.strategies import distill
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import Knowledge
from lifelong_kd.teacher import freeze_copy

COMBINE_MODES = ("each", "average")


class MultiTeacher(Strategy):
    r"""Distil from the snapshots taken at the end of *every* earlier experience.

    Snapshot ``j`` (taken after experience ``j``) knows heads 0..j (task scenario), the
    classes seen up to ``j`` (class scenario) or the shared head (domain scenario). With
    ``combine="each"`` the loss is the mean over teachers of the LwF term, each teacher on
    what it knew:

    .. math:: \alpha_k \frac{1}{k} \sum_{j<k} \mathrm{KL}_T(t_j \,\|\, s|_{j})\,[\times T^2]

    With ``combine="average"`` the teachers' logits are averaged element-wise (each output
    over the teachers that know it) and distilled once on what the latest teacher knew. With
    one earlier experience both equal :class:`~lifelong_kd.strategies.lwf.LwF`. Teacher
    outputs are cached per experience when batches are not augmented (as in LwF).

    Memory and time: every teacher is a full copy of the model, kept in memory and in the
    checkpoint, and each one runs a forward pass over every training sample of the next
    experience, so without a cap both grow linearly with the number of experiences seen.
    ``max_teachers=N`` keeps the ``N`` most recent snapshots (``k`` in the formula above then
    runs over the last ``N`` earlier experiences): memory, checkpoint size and teacher
    passes stay bounded. What a dropped teacher knew is still distilled through the later
    snapshots, which learnt from it.

    Args:
        temperature: Softmax temperature T (2, Li & Hoiem 2016).
        alpha: Distillation weight: a number or one value per experience.
        scale_t2: Multiply the KL by T^2 (Hinton et al. 2015); False as in Li & Hoiem 2016.
        combine: ``"each"`` (one KL per teacher) or ``"average"`` (KL to the averaged logits).
        max_teachers: Keep at most this many teachers, the most recent; None: every earlier snapshot.
    """

    name = "multi-teacher"

    def __init__(
        self,
        temperature: float = 2.0,  # Li & Hoiem 2016
        alpha: float | Sequence[float] = 1.0,  # Li & Hoiem 2016 (lambda_o = 1)
        scale_t2: bool = False,  # Li & Hoiem 2016 and Avalanche: no T^2
        combine: str = "each",
        max_teachers: int | None = None,  # every earlier snapshot, as the method is defined; a number bounds memory on long streams
    ) -> None:
        self.temperature = temperature
        self.alpha = alpha
        self.scale_t2 = scale_t2
        self.combine = combine
        self.max_teachers = max_teachers
        self.scenario_: str | None = None
        self.teachers_: list[nn.Module] = []
        self.knowledge_: list[Knowledge] = []
        self.cache_: list[Tensor] | None = None
        self._experience: Experience | None = None
        self._teacher_states: list[dict[str, Tensor]] = []
        self._check_options()

    def _check_options(self) -> None:
        """Raise ``ValueError`` naming the first option out of its range (at construction, before any data is loaded)."""
        distill.check_temperature(self.temperature)
        distill.check_alpha(self.alpha, 0)
        if self.combine not in COMBINE_MODES:
            raise ValueError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {self.combine!r}.")
        if self.max_teachers is not None and (isinstance(self.max_teachers, bool) or not isinstance(self.max_teachers, int) or self.max_teachers < 1):
            raise ValueError(f"max_teachers must be a positive number of teachers (e.g. 5) or None for every earlier snapshot, got {self.max_teachers!r}.")

    def check_stream(self, stream: Stream) -> None:
        """Check the scenario and one ``alpha`` per experience, and record the scenario."""
        super().check_stream(stream)
        distill.check_alpha(self.alpha, len(stream))
        self.scenario_ = stream.scenario

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Rebuild restored teachers; drop the old cache."""
        self._experience, self.cache_ = experience, None
        if self._teacher_states:
            self.teachers_ = [distill.rebuild_teacher(model, state) for state in self._teacher_states]
            self._teacher_states = []

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """Distillation from every earlier snapshot (zero on the first experience)."""
        if not self.teachers_:
            return self.sum_terms({}, output.logits)
        targets = self.teacher_outputs(batch)
        alpha = distill.alpha_for(self.alpha, distill.require_experience(self._experience).index)
        knowledge = self.knowledge_ if self.combine == "each" else self.knowledge_[-1:]
        terms = [
            losses.kd_kl(known.select(output.all_logits), target, self.temperature, self.scale_t2)
            for known, target in zip(knowledge, targets, strict=True)
        ]
        return self.sum_terms({"distillation": alpha * torch.stack(terms).mean()}, output.logits)

    def teacher_outputs(self, batch: Batch) -> list[Tensor]:
        """Per-teacher (``each``) or averaged (``average``) targets: cached, or online if augmented."""
        values, self.cache_ = distill.lookup_targets(batch, self._targets, self.cache_, self._experience, self.teachers_[-1])
        return values

    @torch.no_grad()
    def _targets(self, x: Tensor) -> list[Tensor]:
        outputs = [known.select(teacher.all_logits(x)) for teacher, known in zip(self.teachers_, self.knowledge_, strict=True)]
        if self.combine == "average":
            return [distill.average_targets(outputs, self.knowledge_[-1].scenario)]
        return outputs

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Add the trained model as one more teacher; beyond ``max_teachers``, drop the oldest."""
        previous = self.knowledge_[-1] if self.knowledge_ else Knowledge(distill.require_scenario(self.scenario_))
        self.knowledge_.append(previous.learn(experience))
        self.teachers_.append(freeze_copy(model))
        if self.max_teachers is not None:
            self.knowledge_, self.teachers_ = self.knowledge_[-self.max_teachers :], self.teachers_[-self.max_teachers :]
        self.cache_ = None

    def state_dict(self) -> dict[str, Any]:
        """Every teacher's weights (state dicts), what each knew, and the scenario."""
        teachers = [distill.teacher_state(t) for t in self.teachers_] or list(self._teacher_states)
        return {"teachers": teachers, "knowledge": [k.to_state() for k in self.knowledge_], "scenario": self.scenario_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; teachers are rebuilt at the next ``before_experience``."""
        self.teachers_, self.cache_ = [], None
        self._teacher_states = list(state["teachers"])
        self.knowledge_ = [Knowledge.from_state(k) for k in state["knowledge"]]
        self.scenario_ = state["scenario"] or self.scenario_
