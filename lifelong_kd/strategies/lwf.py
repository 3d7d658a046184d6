"""Learning without Forgetting (Li & Hoiem 2016): the previous model is the teacher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lifelong_kd import losses
from lifelong_kd.data.stream import Batch, Experience, Stream
from lifelong_kd.strategies import distill
from lifelong_kd.strategies.base import ModelOutput, Strategy
from lifelong_kd.strategies.distill import Knowledge
from lifelong_kd.teacher import freeze_copy

# Teacher logit of the current experience's classes with ``zero_new_classes``: softmax gives
# exactly 0 in float32 at any temperature used in practice, and the KL term stays finite.
ZERO_PROBABILITY_LOGIT = -1e9
# How the distillation joins the cross-entropy (LwF's ``weighting``).
WEIGHTINGS = ("added", "convex")
# How the KL is averaged (LwF's ``kd_reduction``, named as torch's ``kl_div`` reductions).
KD_REDUCTIONS = ("batchmean", "mean")


class LwF(Strategy):
    r"""Learning without Forgetting: distil the end-of-previous-experience model on the new inputs.

    From the second experience on, the snapshot taken at the end of experience ``k-1`` is a
    frozen teacher, and the loop's cross-entropy on experience ``k`` is joined by

    .. math::
        \alpha_k\, \mathrm{KL}\big(\mathrm{softmax}(t/T) \,\|\, \mathrm{softmax}(s/T)\big)\,[\times T^2]
        + \beta\, d(f_s, f_t) + \gamma\, H(\mathrm{softmax}(s_k))

    where ``s``/``t`` are the student's/teacher's logits on what the teacher knew: every old
    head (task scenario, mean over heads), the classes seen so far (class scenario), or the
    shared head (domain scenario); ``f`` are penultimate features and ``s_k`` the student's
    logits on the current task. The KL has the same gradients as the soft cross-entropy of
    Li & Hoiem (Eq. 2), and is exactly zero when student and teacher agree. On the first
    experience there is no teacher and the strategy adds exactly zero.

    The teacher is frozen, so when batches are not augmented its outputs on the
    experience's training split are computed once (inference, large batches) and looked up
    by ``Batch.index``; augmented batches get an online teacher forward on the same view.
    With denoising (``noise`` not ``"none"``) the teacher sees the clean input and the
    student (cross-entropy included) a noised copy, from the second experience on.

    Args:
        temperature: Softmax temperature T (2, Li & Hoiem 2016; van de Ven et al. 2019).
        alpha: Weight of the distillation term: one number (1, Li & Hoiem's lambda_o), or one
            value per experience (the first is unused). van de Ven et al. 2019 weight
            CE by 1/k and distillation by 1 - 1/k on task k (1-based), which with Adam is
            ``alpha = [0, 1, 2, 3, ...]`` (ratio (k-1)).
        scale_t2: Multiply the KL by T^2 (Hinton et al. 2015). False as in Li & Hoiem 2016
            and Avalanche; van de Ven et al. 2019 scale by T^2.
        warmup_iterations: Steps training only the head on the new experience (cross-entropy,
            backbone frozen) before joint training, from the second experience on; Li & Hoiem
            warm up to convergence, 0 (off) as in van de Ven et al. 2019 and Avalanche.
        warmup_lr: SGD learning rate of the warm-up (0.01, our choice for MNIST-size MLPs).
        feature_weight: Weight of the feature distance to the teacher (0: off; feature
            "hints", Romero et al. 2015).
        feature_distance: ``"mse"``, ``"l2"`` or ``"cosine"`` (see ``losses.feature_distance``).
        entropy_weight: Weight of the entropy of the student's current-task predictions:
            positive sharpens them (Grandvalet & Bengio 2005), negative is a confidence
            penalty (Pereyra et al. 2017); 0 (off).
        noise: Student-side input noise for denoising distillation: ``"none"``,
            ``"gaussian"`` or ``"dropout"`` (masking noise, Vincent et al. 2008).
        noise_level: Gaussian standard deviation (normalised input units) or drop probability.
        zero_new_classes: Class scenario only: the student's distilled softmax also covers the
            current experience's classes, with teacher probability 0 for them, as in van de Ven
            et al. 2019's code (their class-IL LwF). False distils the seen classes only.
        weighting: How the terms join the cross-entropy CE on experience k (1-based).
            ``"added"``: CE + alpha_k * KD (Li & Hoiem 2016). ``"convex"``: CE / k + (1 - 1/k) *
            alpha_k * KD, van de Ven et al. 2019's code with ``alpha = 1`` (the strategy adds
            (k - 1) * alpha_k * KD and the loop scales the whole loss by 1/k, :meth:`loss_scale`).
            With a fresh Adam per experience the two differ only through Adam's epsilon
            (``alpha = [0, 1, 2, ...]`` added equals convex with alpha 1); with the optimiser
            state kept across experiences (``--keep-optimizer``) the loss scale matters.
        kd_reduction: ``"batchmean"``: the KL summed over the distilled classes, averaged over
            rows (the KL's definition; Hinton et al. 2015). ``"mean"``: averaged over the classes
            too, i.e. divided by their number, as van de Ven et al.'s code computed it until its
            fix of 2019-05-17 ("summation over classes was omitted", commit 26f00db), a month
            after the paper's first version (arXiv 1904.07734v1, 2019-04-15).
    """

    name = "lwf"

    def __init__(
        self,
        temperature: float = 2.0,  # Li & Hoiem 2016
        alpha: float | Sequence[float] = 1.0,  # Li & Hoiem 2016 (lambda_o = 1)
        scale_t2: bool = False,  # Li & Hoiem 2016 and Avalanche: no T^2
        warmup_iterations: int = 0,  # off, as van de Ven et al. 2019 and Avalanche
        warmup_lr: float = 0.01,
        feature_weight: float = 0.0,
        feature_distance: str = "mse",  # FitNets hint loss (Romero et al. 2015)
        entropy_weight: float = 0.0,
        noise: str = "none",
        noise_level: float = 0.1,
        zero_new_classes: bool = False,  # seen classes only; True: van de Ven et al. 2019's code
        weighting: str = "added",  # Li & Hoiem 2016; "convex": van de Ven et al. 2019's code
        kd_reduction: str = "batchmean",  # the KL; "mean": van de Ven et al.'s code before 2019-05-17
    ) -> None:
        self.temperature = temperature
        self.alpha = alpha
        self.scale_t2 = scale_t2
        self.warmup_iterations = warmup_iterations
        self.warmup_lr = warmup_lr
        self.feature_weight = feature_weight
        self.feature_distance = feature_distance
        self.entropy_weight = entropy_weight
        self.noise = noise
        self.noise_level = noise_level
        self.zero_new_classes = zero_new_classes
        self.weighting = weighting
        self.kd_reduction = kd_reduction
        self.scenario_: str | None = None
        self.teacher_: nn.Module | None = None
        self.knowledge_: Knowledge | None = None
        self.cache_: list[Tensor] | None = None
        self._experience: Experience | None = None
        self._active_classes = 0
        self._teacher_state: dict[str, Tensor] | None = None
        self._check_options()

    def check_stream(self, stream: Stream) -> None:
        """Check the scenario and one ``alpha`` per experience, and record the scenario."""
        super().check_stream(stream)
        distill.check_alpha(self.alpha, len(stream))
        self.scenario_ = stream.scenario

    def _check_options(self) -> None:
        """Raise ``ValueError`` naming the first option out of its range (at construction, before any data is loaded)."""
        distill.check_temperature(self.temperature)
        distill.check_alpha(self.alpha, 0)
        distill.check_noise(self.noise, self.noise_level)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if self.kd_reduction not in KD_REDUCTIONS:
            raise ValueError(f"kd_reduction must be one of {', '.join(KD_REDUCTIONS)}, got {self.kd_reduction!r}.")
        if self.feature_distance not in losses.FEATURE_DISTANCE_KINDS:
            kinds = ", ".join(losses.FEATURE_DISTANCE_KINDS)
            raise ValueError(f"feature_distance must be one of {kinds}, got {self.feature_distance!r}.")
        if not (isinstance(self.warmup_iterations, int) and self.warmup_iterations >= 0):
            raise ValueError(f"warmup_iterations must be a non-negative integer, got {self.warmup_iterations!r}.")
        distill.check_number("warmup_lr", self.warmup_lr)
        distill.check_number("feature_weight", self.feature_weight)
        distill.check_number("entropy_weight", self.entropy_weight, minimum=None)
        distill.check_number("noise_level", self.noise_level)

    def before_experience(self, model: nn.Module, experience: Experience) -> None:
        """Rebuild a restored teacher, drop the old cache, warm up the new head."""
        self._experience, self.cache_ = experience, None
        self._active_classes = (self.knowledge_ or Knowledge(distill.require_scenario(self.scenario_))).learn(experience).n_classes
        if self.teacher_ is None and self._teacher_state is not None:
            self.teacher_ = distill.rebuild_teacher(model, self._teacher_state)
        if self.teacher_ is not None and self.warmup_iterations > 0:
            distill.warm_up_head(model, experience, self.warmup_iterations, self.warmup_lr)

    def transform_batch(self, batch: Batch) -> Batch:
        """The noised student view when denoising (and a teacher exists), else ``batch``."""
        if self.noise == "none" or self.teacher_ is None:
            return batch
        return distill.noised(batch, self.noise, self.noise_level)

    def loss(self, model: nn.Module, batch: Batch, output: ModelOutput) -> Tensor:
        """Distillation (+ feature and entropy terms, each recorded by name) from the second experience on; else zero."""
        if self.teacher_ is None or self.knowledge_ is None:
            return self.sum_terms({}, output.logits)
        targets = self.teacher_outputs(batch)
        index = distill.require_experience(self._experience).index
        alpha = distill.alpha_for(self.alpha, index) * (index if self.weighting == "convex" else 1)
        student, teacher = self._distilled(output.all_logits, targets[0])
        kd = losses.kd_kl(student, teacher, self.temperature, self.scale_t2)
        if self.kd_reduction == "mean":  # averaged over the distilled classes as well
            kd = kd / student.shape[-1]
        terms = {"distillation": alpha * kd}
        if self.feature_weight > 0:
            terms["feature"] = self.feature_weight * losses.feature_distance(output.features, targets[1], self.feature_distance)
        if self.entropy_weight != 0:
            terms["entropy"] = self.entropy_weight * losses.entropy(output.logits)
        return self.sum_terms(terms, output.logits)

    def loss_scale(self) -> float:
        """1/k on experience k (1-based) with ``weighting="convex"`` once there is a teacher; else 1."""
        if self.weighting != "convex" or self.teacher_ is None or self._experience is None:
            return 1.0
        return 1.0 / (self._experience.index + 1)

    def _distilled(self, all_logits: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
        """Student and teacher logits the KL compares (see ``zero_new_classes``)."""
        if not (self.zero_new_classes and self.knowledge_.scenario == "class"):
            return self.knowledge_.select(all_logits), teacher
        new = self._active_classes - teacher.shape[1]
        return all_logits[:, 0, : self._active_classes], F.pad(teacher, (0, new), value=ZERO_PROBABILITY_LOGIT)

    def teacher_outputs(self, batch: Batch) -> list[Tensor]:
        """The teacher's selected logits (and features) for ``batch``: cached, or online if augmented."""
        values, self.cache_ = distill.lookup_targets(batch, self._targets, self.cache_, self._experience, self.teacher_)
        return values

    @torch.no_grad()
    def _targets(self, x: Tensor) -> list[Tensor]:
        """What the loss needs from the teacher: selected logits, plus features if weighted."""
        features = self.teacher_.features(x)
        logits = self.knowledge_.select(self.teacher_.heads(features))
        return [logits, features] if self.feature_weight > 0 else [logits]

    def after_experience(self, model: nn.Module, experience: Experience) -> None:
        """Snapshot the trained model as the next experience's teacher."""
        self.knowledge_ = (self.knowledge_ or Knowledge(distill.require_scenario(self.scenario_))).learn(experience)
        self.teacher_, self._teacher_state, self.cache_ = freeze_copy(model), None, None

    def state_dict(self) -> dict[str, Any]:
        """Teacher weights (a state dict), what it knew, and the scenario."""
        teacher = distill.teacher_state(self.teacher_) if self.teacher_ is not None else self._teacher_state
        knowledge = self.knowledge_.to_state() if self.knowledge_ is not None else None
        return {"teacher": teacher, "knowledge": knowledge, "scenario": self.scenario_}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the teacher is rebuilt at the next ``before_experience``."""
        self.teacher_, self.cache_ = None, None
        self._teacher_state = state["teacher"]
        self.knowledge_ = Knowledge.from_state(state["knowledge"]) if state["knowledge"] is not None else None
        self.scenario_ = state["scenario"] or self.scenario_
