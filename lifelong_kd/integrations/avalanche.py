"""Avalanche integration: our strategies inside Avalanche, our data and metrics both ways.

This is the only module of the package that imports Avalanche (``import lifelong_kd``
never does); import it explicitly::

    from lifelong_kd.integrations.avalanche import LifelongKDPlugin

What it offers:

* :class:`LifelongKDPlugin`: an Avalanche ``SupervisedPlugin`` that drives any
  lifelong_kd :class:`~lifelong_kd.strategies.base.Strategy` (LwF and its variants,
  MultiTeacher, EWC) inside Avalanche's ``SupervisedTemplate`` strategies (``Naive``,
  alone or with other plugins such as ``ReplayPlugin``). Our ``before_experience`` /
  ``after_experience`` run at Avalanche's ``before_training_exp`` / ``after_training_exp``,
  and our extra loss is added to ``strategy.loss`` in ``before_backward``.
* :class:`AvalancheModel`: the Classifier interface (``features``/``heads``/``select``)
  over an Avalanche model, single-head or multi-head (``MultiTaskModule`` with a
  ``MultiHeadClassifier`` or any head with ``forward_single_task``).
* :func:`stream_from_benchmark` (an Avalanche benchmark as our
  :class:`~lifelong_kd.data.stream.Stream`) and :func:`benchmark_from_stream` (ours as
  an Avalanche benchmark).
* :class:`LifelongKDMetric`: our :class:`~lifelong_kd.evaluation.evaluator.Evaluator` as
  an Avalanche ``PluginMetric``, so forgetting (our definition), robustness and
  compression appear in ``EvaluationPlugin`` loggers (text, TensorBoard, ...).
* :class:`AvalancheTrainer`: Avalanche's template as a trainer of our one loop
  (``lifelong-kd run --engine avalanche``: checkpoints and resume like any run);
  :func:`run_avalanche` runs it.

The teacher is always frozen in eval mode (:func:`lifelong_kd.teacher.freeze_copy`);
Avalanche's own ``LearningWithoutForgetting`` (v0.6) deep-copies the model but leaves
the copy in train mode, so its teacher runs dropout and updates batch-norm statistics.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AvalancheNotInstalledError(ImportError, ValueError):
    """Avalanche (``avalanche-lib``) is missing: the ``[avalanche]`` extra was not installed.

    An ``ImportError``, and a ``ValueError`` so that the command line reports it as bad input
    (``--engine avalanche`` without the extra) in one paragraph, without a traceback.
    """


try:
    with warnings.catch_warnings():
        # Avalanche imports qpsolvers (for GEM, which this module does not use); without an
        # optional QP solver installed, qpsolvers warns at import on every run.
        warnings.filterwarnings("ignore", message="no QP solver found", category=UserWarning)
        from avalanche.benchmarks import dataset_benchmark
        from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
        from avalanche.core import SupervisedPlugin
        from avalanche.evaluation.metric_definitions import PluginMetric
        from avalanche.evaluation.metric_results import MetricValue
        from avalanche.models import MultiTaskModule
except ModuleNotFoundError as error:
    if (error.name or "").split(".")[0] != "avalanche":
        raise  # Avalanche is there but one of its own dependencies is not: Python's message names it
    raise AvalancheNotInstalledError(
        "the Avalanche integration (lifelong_kd.integrations.avalanche, --engine avalanche) needs "
        "Avalanche, which is not installed. Install the extra: pip install 'lifelong-kd[avalanche]' "
        "(from a checkout: pip install -e '.[avalanche]'), or use the default engine."
    ) from error

from lifelong_kd.data.stream import Batch, BatchTransform, Experience, Split, Stream
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.strategies.base import ModelOutput, Strategy

# Logit given to the padding units of heads narrower than the widest one: softmax gives
# them probability ~0 at any temperature we use, and it stays finite (no NaN in KL).
PAD_LOGIT = -1e4
# Names of the output module looked for when no ``head`` is given (Avalanche's models
# use ``classifier``; ours ``head``).
HEAD_NAMES = ("classifier", "head", "fc", "linear", "output")
# Samples per forward pass when copying an Avalanche data set into tensors.
COPY_BATCH_SIZE = 1024


# --------------------------------------------------------------------------- models


def find_head(model: nn.Module, head: str | None = None) -> str:
    """Name (dotted path) of ``model``'s output module, the one that maps features to logits.

    Args:
        model: An Avalanche or plain PyTorch classifier.
        head: Explicit name; None tries :data:`HEAD_NAMES`, then the last ``nn.Linear``.

    Raises:
        ValueError: No such module (the message lists the candidates).
    """
    names = dict(model.named_modules())
    if head is not None:
        if head not in names or head == "":
            raise ValueError(f"The model has no module {head!r}; its modules are: {', '.join(n for n in names if n)}.")
        return head
    for name in HEAD_NAMES:
        if name in names:
            return name
    linears = [name for name, module in names.items() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError("Cannot find the model's output layer: pass head='<module name>' (e.g. 'classifier').")
    return linears[-1]


class TaskAwareClassifier(MultiTaskModule):
    """One of our :class:`~lifelong_kd.models.Classifier` models as an Avalanche multi-task module.

    Avalanche passes task labels only to ``MultiTaskModule`` models; this wrapper hands
    them to ``Classifier.forward(x, task_id)``, so every scenario (one head per task, or
    one shared head) runs unchanged in Avalanche's templates.

    Args:
        classifier: A lifelong_kd Classifier (``features``/``heads``/``select``).
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: Tensor, task_labels: Tensor | int | None = None) -> Tensor:  # noqa: D102
        return self.classifier(x, task_labels)

    def forward_single_task(self, x: Tensor, task_label: int) -> Tensor:  # noqa: D102
        return self.classifier(x, task_label)


class AvalancheModel(nn.Module):
    """The Classifier interface over an Avalanche model, for our strategies and our loops.

    * ``features(x)``: the input of the output module (penultimate features, (B, D)),
      captured by a forward pre-hook during a full forward pass;
    * ``heads(features)``: every head's logits (B, H, K). For a ``MultiTaskModule`` head
      (e.g. ``MultiHeadClassifier``) head ``h`` is task ``h``'s ``forward_single_task``
      (tasks the model has not seen are padding); any other head is one head (H = 1);
    * ``select``/``forward``: each sample's own head, as :class:`~lifelong_kd.models.Classifier`.

    Heads narrower than ``n_outputs`` (or the widest head) are padded with
    :data:`PAD_LOGIT`. Set ``n_outputs`` when heads grow during the stream (Avalanche's
    ``IncrementalClassifier``) so a teacher and its student have the same width; the
    plugin sets it from the benchmark's number of classes.

    Supported: models whose output module takes the features as its only input tensor
    (``nn.Linear``, ``IncrementalClassifier``, ``MultiHeadClassifier``, any head with
    ``forward_single_task(features, task)``), and :class:`TaskAwareClassifier`. Models
    whose backbone itself depends on the task label are not (features are taken with the
    lowest known task).

    Args:
        model: The Avalanche model (not copied; the adapter shares its parameters).
        head: Name of the output module (see :func:`find_head`).
        n_outputs: Width every head is padded to (None: the widest head).
    """

    def __init__(self, model: nn.Module, head: str | None = None, n_outputs: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.n_outputs = n_outputs
        self.head_name = "classifier.head" if self.wrapped is not None else find_head(model, head)
        self._recording = False
        self._captured: list[Tensor] = []
        self.head_module().register_forward_pre_hook(self._capture)

    @property
    def wrapped(self) -> nn.Module | None:
        """Our Classifier when the model is a :class:`TaskAwareClassifier`, else None."""
        return self.model.classifier if isinstance(self.model, TaskAwareClassifier) else None

    def head_module(self) -> nn.Module:
        """The output module."""
        return self.model.get_submodule(self.head_name)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self._recording:
            self._captured.append(args[0])

    @property
    def multi_task(self) -> bool:
        """Whether the model takes task labels (a ``MultiTaskModule``)."""
        return isinstance(self.model, MultiTaskModule)

    def known_tasks(self) -> list[int]:
        """Task labels the model has been trained on (at least ``[0]``)."""
        known = getattr(self.head_module(), "known_train_tasks_labels", None) or getattr(self.model, "known_train_tasks_labels", None)
        return sorted(int(t) for t in known) if known else [0]

    def record(self, enabled: bool) -> list[Tensor]:
        """Start (True) or stop (False) capturing head inputs; returns and clears what was captured."""
        captured, self._captured, self._recording = self._captured, [], enabled
        return captured

    def raw_forward(self, x: Tensor, task_id: Tensor | int | None = None) -> Tensor:
        """The wrapped model's own output (Avalanche's ``avalanche_forward``)."""
        if self.multi_task:
            return self.model(x, self.known_tasks()[0] if task_id is None else task_id)
        return self.model(x)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, D): the input of the output module."""
        self.record(True)
        try:
            self.raw_forward(x)
        finally:
            captured = self.record(False)
        return captured[0]

    def heads(self, features: Tensor) -> Tensor:
        """Every head's logits from features: (B, D) -> (B, H, K), padded to a common width."""
        if self.wrapped is not None:
            return self.wrapped.heads(features)
        head = self.head_module()
        if not isinstance(head, MultiTaskModule):
            return self._pad([head(features)])
        known = set(self.known_tasks())
        outputs = [head.forward_single_task(features, t) if t in known else None for t in range(max(known) + 1)]
        return self._pad(outputs)

    def _pad(self, outputs: Sequence[Tensor | None]) -> Tensor:
        present = [o for o in outputs if o is not None]
        width = max([self.n_outputs or 0, *(o.shape[1] for o in present)])
        template = present[0]
        padded = [
            F.pad(o, (0, width - o.shape[1]), value=PAD_LOGIT) if o is not None else template.new_zeros(len(template), width)
            for o in outputs
        ]
        return torch.stack(padded, dim=1)

    def all_logits(self, x: Tensor) -> Tensor:
        """Every head's logits (B, H, K)."""
        return self.heads(self.features(x))

    def select(self, logits: Tensor, task_id: Tensor | int | None) -> Tensor:
        """Pick each sample's head from (B, H, K) logits -> (B, K); a task not seen yet gets zeros."""
        if logits.shape[1] == 1 and not (self.multi_task and isinstance(self.head_module(), MultiTaskModule)):
            return logits[:, 0]
        if task_id is None:
            raise ValueError("This model has one head per task: pass task_id.")
        needed = 1 + (task_id if isinstance(task_id, int) else int(task_id.max()))
        logits = F.pad(logits, (0, 0, 0, max(needed - logits.shape[1], 0)))
        if isinstance(task_id, int):
            return logits[:, task_id]
        return logits[torch.arange(len(logits)), task_id.long()]

    def forward(self, x: Tensor, task_id: Tensor | int | None = None) -> Tensor:
        """Each sample's own logits (B, K), padded like :meth:`heads`."""
        if self.wrapped is not None:
            return self.wrapped(x, task_id)
        return self.select(self.all_logits(x), task_id)

    def output(self, x: Tensor, logits: Tensor, task_id: Tensor, captured: Sequence[Tensor]) -> ModelOutput:
        """A :class:`ModelOutput` for a forward pass already run by Avalanche.

        Args:
            x: The minibatch inputs.
            logits: The model's output on ``x`` (Avalanche's ``mb_output``).
            task_id: Task labels (B,).
            captured: Head inputs captured during that forward pass; one call on the whole
                batch, or one call per task in ascending task order (``MultiTaskModule``'s
                default ``forward``). Anything else triggers a second feature pass.
        """
        features = self._reassemble(x, task_id, captured)
        return ModelOutput(logits, self.heads(features), features)

    def _reassemble(self, x: Tensor, task_id: Tensor, captured: Sequence[Tensor]) -> Tensor:
        if len(captured) == 1 and len(captured[0]) == len(x):
            return captured[0]
        tasks = torch.unique(task_id)
        if len(captured) != len(tasks) or sum(len(c) for c in captured) != len(x):
            return self.features(x)
        features = captured[0].new_empty(len(x), *captured[0].shape[1:])
        for task, part in zip(tasks, captured, strict=True):
            features[task_id == task] = part
        return features


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class IdentityTransform:
    """Batch transform for inputs that are already model inputs (float tensors of any shape)."""

    def to_unit(self, x: Tensor) -> Tensor:
        """The stored inputs as floats (no scaling)."""
        return x.float()

    def normalise(self, x: Tensor) -> Tensor:
        """Unchanged."""
        return x

    def __call__(self, x: Tensor) -> Tensor:
        return x.float()


class _SampleTransform:
    """Applies a batch transform to one sample (Avalanche transforms samples one by one)."""

    def __init__(self, transform: Callable[[Tensor], Tensor]) -> None:
        self.transform = transform

    def __call__(self, x: Tensor) -> Tensor:
        return self.transform(x.unsqueeze(0))[0]


def _task_label(experience: Any) -> int:
    labels = getattr(experience, "task_labels", None) or [0]
    return int(labels[0])


def _classes(experience: Any) -> tuple[int, ...]:
    classes = getattr(experience, "classes_in_this_experience", None)
    if classes is None:
        classes = experience.dataset.targets.uniques
    return tuple(sorted(int(c) for c in classes))


@torch.no_grad()
def dataset_tensors(dataset: Any, batch_size: int = COPY_BATCH_SIZE) -> tuple[Tensor, Tensor]:
    """Copy an Avalanche data set into ``(x, y)`` tensors, in order, with its eval transforms."""
    data = dataset.eval() if hasattr(dataset, "eval") else dataset
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    xs, ys = [], []
    for batch in loader:
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    return torch.cat(xs), torch.cat(ys).long()


def _stored(parts: Sequence[tuple[Tensor, Tensor]], mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[list[Split], Any]:
    """Splits holding unit-range images (``uint8`` when exact) and the transform that normalises them.

    Undoes the benchmark's per-channel normalisation when ``mean``/``std`` are given for
    image batches (N, C, H, W); otherwise keeps Avalanche's inputs as they are.
    """
    if mean is None or std is None or any(x.dim() != 4 for x, _ in parts):
        return [Split(x, y) for x, y in parts], IdentityTransform()
    shape = (1, -1, 1, 1)
    units = [x * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape) for x, _ in parts]
    if all(bool(((u * 255.0 - (u * 255.0).round()).abs() < 1e-3).all()) for u in units):
        stored = [(u * 255.0).round().clamp(0, 255).to(torch.uint8) for u in units]
        return [Split(x, y) for x, (_, y) in zip(stored, parts, strict=True)], BatchTransform(tuple(mean), tuple(std), scale=True)
    return [Split(u, y) for u, (_, y) in zip(units, parts, strict=True)], BatchTransform(tuple(mean), tuple(std), scale=False)


def placeholder_split(dataset: Any) -> Split:
    """A split with the real labels and zero-copy zero inputs (for strategies that only read labels)."""
    y = torch.as_tensor(list(dataset.targets), dtype=torch.long)
    x = dataset[0][0] if len(y) else torch.zeros(1)
    return Split(torch.zeros_like(torch.as_tensor(x)).unsqueeze(0).expand(len(y), *x.shape), y)


def experience_from_avalanche(
    train: Any,
    test: Any | None = None,
    index: int | None = None,
    materialize: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Experience:
    """Our :class:`Experience` from an Avalanche training experience (and its test experience).

    Args:
        train: Avalanche training experience.
        test: Matching test experience (None: an empty test split).
        index: Position in the stream (default ``train.current_experience``).
        materialize: Copy the training inputs (eval transforms) into tensors; False keeps
            the labels only, with zero inputs (enough for LwF/MultiTeacher without head
            warm-up; EWC's Fisher needs the real inputs).
        mean: Per-channel mean of the benchmark's normalisation, to store unit-range data.
        std: Per-channel standard deviation of that normalisation.
    """
    index = int(train.current_experience) if index is None else index
    parts = [dataset_tensors(train.dataset)] if materialize else []
    parts += [dataset_tensors(test.dataset)] if test is not None else []
    splits, transform = _stored(parts, mean, std)
    train_split = splits.pop(0) if materialize else placeholder_split(train.dataset)
    test_split = splits.pop(0) if test is not None else Split(train_split.x[:0], train_split.y[:0])
    return Experience(index, _task_label(train), train_split, test_split, _classes(train), transform)


def infer_scenario(experiences: Sequence[Any]) -> str:
    """``"task"`` with several task labels, ``"domain"`` when every experience has the same classes, else ``"class"``."""
    if len({_task_label(e) for e in experiences}) > 1:
        return "task"
    if len({_classes(e) for e in experiences}) == 1:
        return "domain"
    return "class"


def _relabel(experience: Experience, mapping: Mapping[int, int]) -> Experience:
    lookup = torch.full((1 + max(mapping),), -1, dtype=torch.long)
    for label, new in mapping.items():
        lookup[label] = new
    train, test = experience.train, experience.test
    return replace(experience, train=Split(train.x, lookup[train.y]), test=Split(test.x, lookup[test.y]))


def stream_from_benchmark(
    benchmark: Any,
    name: str = "avalanche",
    scenario: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    splits: Sequence[str] = ("train", "test"),
) -> Stream:
    """An Avalanche benchmark (``PermutedMNIST``, ``SplitMNIST``, ``SplitCIFAR10``, ...) as our Stream.

    Every sample is read once through Avalanche (eval transforms, i.e. no augmentation)
    and kept as tensors. With the benchmark's normalisation given (``mean``/``std``),
    inputs are stored in unit range (``uint8`` when exact) and the stream's batch
    transform normalises them again: the model sees the same numbers, and our
    corruptions (robustness) apply to unit-range images as they expect.

    Labels follow our convention (``data.stream``): local labels ``0..k-1`` (position in
    the experience's sorted classes) in the task and domain scenarios, class-order
    position in the class scenario; ``Experience.classes`` keeps Avalanche's labels.

    Args:
        benchmark: An Avalanche benchmark with ``train_stream`` and ``test_stream``.
        name: Stream name for reports.
        scenario: ``"task"``, ``"domain"`` or ``"class"`` (None: :func:`infer_scenario`).
        mean: Per-channel mean of the benchmark's normalisation (MNIST: 0.1307).
        std: Per-channel standard deviation (MNIST: 0.3081).
        splits: Splits to copy; leaving out ``"train"`` keeps labels only (for evaluation).
    """
    train_stream, test_stream = list(benchmark.train_stream), list(benchmark.test_stream)
    if len(train_stream) != len(test_stream):
        raise ValueError("The benchmark needs one test experience per training experience.")
    scenario = scenario or infer_scenario(train_stream)
    experiences = [
        experience_from_avalanche(train, test if "test" in splits else None, k, "train" in splits, mean, std)
        for k, (train, test) in enumerate(zip(train_stream, test_stream, strict=True))
    ]
    order = list(dict.fromkeys(c for e in experiences for c in e.classes))
    if scenario == "class":
        experiences = [_relabel(e, {c: order.index(c) for c in e.classes}) for e in experiences]
    else:
        experiences = [_relabel(e, {c: i for i, c in enumerate(e.classes)}) for e in experiences]
    input_shape = tuple(experiences[0].test.x.shape[1:] if len(experiences[0].test) else experiences[0].train.x.shape[1:])
    n_classes = len(order) if scenario != "domain" else max(len(e.classes) for e in experiences)
    return Stream(name, scenario, tuple(experiences), n_classes, input_shape)


def benchmark_from_stream(stream: Stream) -> Any:
    """Our Stream as an Avalanche benchmark (same tensors, same transforms, task labels kept).

    Each experience becomes an Avalanche tensor data set whose per-sample transform is
    the experience's batch transform, so Avalanche's templates see exactly the inputs our
    trainer sees (Avalanche then loads and transforms them one sample at a time).
    """

    def dataset(experience: Experience, split: Split) -> Any:
        return _make_taskaware_tensor_classification_dataset(
            split.x, split.y, transform=_SampleTransform(experience.transform), task_labels=experience.task_id
        )

    train = [dataset(e, e.train) for e in stream]
    test = [dataset(e, e.test) for e in stream]
    return dataset_benchmark(train, test)


# --------------------------------------------------------------------------- plugin


class LifelongKDPlugin(SupervisedPlugin):
    """Drive a lifelong_kd strategy inside an Avalanche ``SupervisedTemplate`` (two lines)::

        plugin = LifelongKDPlugin(LwF(temperature=2.0, alpha=1.0))
        Naive(model=model, optimizer=optimizer, plugins=[plugin, ReplayPlugin(500)], ...)

    Mapping of hooks: Avalanche ``before_training_exp`` (after the model's adaptation)
    -> our ``before_experience``; ``before_forward`` -> ``transform_batch`` (the student's
    view, e.g. denoising); ``before_backward`` -> ``strategy.loss += ours``;
    ``after_training_exp`` -> our ``after_experience`` (the teacher snapshot).

    The extra loss reuses Avalanche's forward pass: the student's features are captured
    at the output module's input, and old heads are computed from them (one matmul per
    head), so there is no second backbone pass. Teacher outputs are computed online
    (batches are marked ``augmented``): Avalanche's minibatches carry no stable sample
    index, so per-sample teacher caches do not apply.

    Args:
        strategy: Any lifelong_kd strategy.
        scenario: ``"task"``, ``"domain"`` or ``"class"`` (None: inferred from the benchmark).
        head: Name of the model's output module (None: found, see :func:`find_head`).
        n_outputs: Width heads are padded to (None: the benchmark's number of classes).
        materialize: Copy each training experience into tensors for the strategy's hooks
            (needed by EWC's Fisher and LwF's head warm-up; LwF/MultiTeacher without
            warm-up only read labels, so ``False`` saves the copy).
    """

    def __init__(
        self,
        strategy: Strategy,
        scenario: str | None = None,
        head: str | None = None,
        n_outputs: int | None = None,
        materialize: bool = True,
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.scenario = scenario
        self.head = head
        self.n_outputs = n_outputs
        self.materialize = materialize
        self.model_: AvalancheModel | None = None
        self.experience_: Experience | None = None
        self.stream_checked_ = False
        self._clean_batch: Batch | None = None

    def adapter(self, model: nn.Module) -> AvalancheModel:
        """The Classifier view of ``model`` (made once per model object)."""
        if self.model_ is None or self.model_.model is not model:
            self.model_ = AvalancheModel(model, self.head, self.n_outputs)
        return self.model_

    def _check_stream(self, experience: Any) -> None:
        origin = list(getattr(experience, "origin_stream", None) or [experience])
        scenario = self.scenario or infer_scenario(origin)
        if self.n_outputs is None:
            benchmark = getattr(experience, "benchmark", None)
            self.n_outputs = getattr(benchmark, "n_classes", None)
        placeholder = Split(torch.zeros(0), torch.zeros(0, dtype=torch.long))
        experiences = tuple(Experience(k, _task_label(e), placeholder, placeholder, _classes(e)) for k, e in enumerate(origin))
        self.strategy.check_stream(Stream("avalanche", scenario, experiences, 1 + max(max(e.classes) for e in experiences), (1,)))
        if not self.materialize and getattr(self.strategy, "warmup_iterations", 0):
            raise ValueError("Head warm-up reads the training inputs: use LifelongKDPlugin(..., materialize=True).")
        self.stream_checked_ = True

    def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Our ``before_experience`` on the adapted model."""
        if not self.stream_checked_:
            self._check_stream(strategy.experience)
        model = self.adapter(strategy.model)
        self.experience_ = experience_from_avalanche(strategy.experience, materialize=self.materialize)
        self.strategy.before_experience(model, self.experience_)

    def _batch(self, strategy: Any) -> Batch:
        x, y = strategy.mb_x, strategy.mb_y
        task_id = strategy.mbatch[-1] if len(strategy.mbatch) >= 3 else torch.zeros_like(y)
        # No position in the experience is known: index -1 (memory strategies then store batch.x).
        return Batch(x, y, task_id.long(), torch.full_like(y, -1), augmented=True)

    def before_forward(self, strategy: Any, **kwargs: Any) -> None:
        """Record head inputs; give the student ``transform_batch``'s view of the batch."""
        self._clean_batch = self._batch(strategy)
        view = self.strategy.transform_batch(self._clean_batch)
        if view.x is not self._clean_batch.x:
            strategy.mbatch[0] = view.x
        self.adapter(strategy.model).record(True)

    def before_backward(self, strategy: Any, **kwargs: Any) -> None:
        """Add our strategy's extra loss to Avalanche's."""
        model = self.adapter(strategy.model)
        captured = model.record(False)
        batch = self._clean_batch or self._batch(strategy)
        output = model.output(strategy.mb_x, strategy.mb_output, batch.task_id, captured)
        strategy.loss += self.strategy.loss(model, batch, output)
        self._clean_batch = None

    def after_training_exp(self, strategy: Any, **kwargs: Any) -> None:
        """Our ``after_experience`` (LwF: snapshot the teacher)."""
        self.adapter(strategy.model).record(False)
        self.strategy.after_experience(self.adapter(strategy.model), self.experience_)


# --------------------------------------------------------------------------- metrics


def flatten_report(report: EvalReport, prefix: str = "LifelongKD") -> dict[str, float]:
    """Every finite number of a report, named ``prefix/metrics/forgetting``, ``prefix/robustness/...``."""
    values: dict[str, float] = {}

    def visit(name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                visit(f"{name}/{key}", item)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) != float("inf"):
            values[name] = float(value)

    visit(f"{prefix}/metrics", report.metrics)
    visit(f"{prefix}/robustness", report.robustness or {})
    visit(f"{prefix}/compression", report.compression or {})
    for j, accuracy in enumerate(report.accuracy):
        values[f"{prefix}/accuracy/exp{j:03d}"] = float(accuracy)
    return values


class LifelongKDMetric(PluginMetric[dict]):
    """Our evaluator as an Avalanche metric: after each training experience, evaluate and emit.

    At Avalanche's ``after_training_exp`` the model is evaluated on every experience of
    ``stream`` with our :class:`Evaluator` (accuracy row, forgetting by our definition,
    BWT, robustness and compression when the evaluator measures them), and every number
    is emitted as a ``MetricValue`` named ``LifelongKD/...`` at x = experience index,
    which ``EvaluationPlugin`` forwards to its loggers (``TensorboardLogger``, ...).

    Args:
        stream: Our stream holding the test data (:func:`stream_from_benchmark` with
            ``splits=("test",)`` for an Avalanche benchmark).
        evaluator: Our evaluator (default: accuracy matrix and forgetting metrics).
        head: Name of the model's output module, for :class:`AvalancheModel`.
    """

    def __init__(self, stream: Stream, evaluator: Evaluator | None = None, head: str | None = None) -> None:
        super().__init__()
        self.stream = stream
        self.evaluator = evaluator or Evaluator()
        self.head = head
        self.reports_: list[EvalReport] = []
        self._adapter: AvalancheModel | None = None

    def result(self) -> dict:
        """The latest report as a dict (empty before the first experience)."""
        return self.reports_[-1].to_dict() if self.reports_ else {}

    def reset(self) -> None:
        """Reports are cumulative over the stream: nothing to reset per phase."""

    def _model(self, model: nn.Module) -> AvalancheModel:
        if self._adapter is None or self._adapter.model is not model:
            self._adapter = AvalancheModel(model, self.head, self.stream.n_outputs)
        return self._adapter

    def before_training(self, strategy: Any) -> None:
        """Record a randomly initialised model's accuracy once (the FWT baseline)."""
        if self.evaluator.initial_ is None:
            self.evaluator.measure_initial(self._model(strategy.model), self.stream)

    def after_training_exp(self, strategy: Any) -> list[MetricValue]:
        """Evaluate after training experience ``k`` and emit every number."""
        step = int(strategy.experience.current_experience)
        report = self.evaluator.evaluate(self._model(strategy.model), self.stream, step)
        self.reports_ = [*self.reports_[:step], report]
        return [MetricValue(self, name, value, step) for name, value in flatten_report(report).items()]

    def __str__(self) -> str:
        return "LifelongKD"


# --------------------------------------------------------------------------- engine


class AvalancheTrainer:
    """Avalanche's ``Naive`` template with our plugin, as a trainer of the one loop (``--engine avalanche``).

    :func:`lifelong_kd.pipeline.run` seeds each experience, times it, evaluates with our
    :class:`Evaluator`, checkpoints and resumes exactly as with our own trainer; only the
    minibatches come from Avalanche: the same stream (as an Avalanche benchmark), model and
    optimiser settings, with a fresh optimiser per experience as in our loop. Avalanche's
    DataLoader draws its own shuffles (from the generator the loop seeds), so the numbers
    match our trainer's statistically, not bit for bit; a resumed Avalanche run matches an
    uninterrupted one exactly.

    Args:
        loggers: Avalanche loggers (e.g. ``TensorboardLogger``) given to the template's
            ``EvaluationPlugin`` (our loggers receive our reports from the loop).
    """

    name = "avalanche"

    def __init__(self, loggers: Sequence[Any] = ()) -> None:
        self.loggers = tuple(loggers)
        self.template_: Any = None
        self.benchmark_: Any = None

    def check(self, stream: Stream, config: Any) -> None:
        """Avalanche's template trains whole epochs without our augmentation."""
        if config.augment or config.iterations is not None:
            raise ValueError("--engine avalanche supports --epochs only (no --augment, no --iterations).")
        if config.precision == "bf16-master":
            raise ValueError("--precision bf16-master keeps bfloat16 weight copies in our training loop, which --engine avalanche does not use; use --precision bf16 (the same numbers) or --engine lifelong-kd.")

    def _template(self, model: nn.Module, strategy: Strategy, stream: Stream, config: Any) -> Any:
        if self.template_ is None:
            with torch.random.fork_rng():  # building the template must not shift the loop's seeds
                self.benchmark_ = benchmark_from_stream(stream)
                self.template_ = _naive(model, LifelongKDPlugin(strategy, scenario=stream.scenario), stream, config, self.loggers)
        return self.template_

    def train(self, model: nn.Module, strategy: Strategy, stream: Stream, experience: Experience, config: Any) -> dict[str, float]:
        """Train ``experience`` through ``template.train`` (our hooks run inside, as plugin callbacks)."""
        from lifelong_kd.train import make_optimizer

        template = self._template(model, strategy, stream, config)
        template.optimizer = make_optimizer(model, unfused(config))
        start = time.perf_counter()
        template.train(self.benchmark_.train_stream[experience.index], num_workers=0)
        return {"train_seconds": time.perf_counter() - start, "samples": len(experience.train) * config.epochs}


def run_avalanche(
    stream: Stream,
    model: nn.Module,
    strategy: Strategy,
    evaluator: Evaluator,
    config: Any,
    out: str | Path | None = None,
    record: Mapping[str, Any] | None = None,
    loggers: Sequence[Any] = (),
    avalanche_loggers: Sequence[Any] = (),
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """:func:`lifelong_kd.pipeline.run` with :class:`AvalancheTrainer` (``lifelong-kd run --engine avalanche``).

    Returns:
        The ``results.json`` document, as :func:`lifelong_kd.pipeline.run` returns it.
    """
    from lifelong_kd.pipeline import run

    trainer = AvalancheTrainer(avalanche_loggers)
    return run(stream, model, strategy, evaluator, loggers, config, out, resume, record, overwrite=overwrite, trainer=trainer)


def unfused(config: Any) -> Any:
    """``config`` with torch's default optimiser step, for Avalanche's templates.

    Avalanche resets and edits the optimiser's state (``update_optimizer``), and torch's fused
    SGD needs a momentum buffer for every parameter once any has one
    (:func:`lifelong_kd.train.start_momentum`).
    """
    return replace(config, fused_optimizer=False)


def _naive(model: nn.Module, plugin: LifelongKDPlugin, stream: Stream, config: Any, loggers: Sequence[Any]) -> Any:
    """Avalanche's ``Naive`` template around our Classifier, with our plugin (no Avalanche metrics)."""
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    from lifelong_kd.models import inference_batch_size
    from lifelong_kd.train import make_optimizer

    with warnings.catch_warnings():  # "No loggers specified": our loop evaluates and logs
        warnings.filterwarnings("ignore", message="No loggers specified")
        return Naive(
            model=TaskAwareClassifier(model), optimizer=make_optimizer(model, unfused(config)), criterion=nn.CrossEntropyLoss(),
            train_mb_size=config.batch_size, train_epochs=config.epochs,
            eval_mb_size=config.eval_batch_size or inference_batch_size(model, stream.input_shape),
            plugins=[plugin], evaluator=EvaluationPlugin(loggers=list(loggers)),
        )


__all__ = [
    "AvalancheModel",
    "AvalancheTrainer",
    "IdentityTransform",
    "LifelongKDMetric",
    "LifelongKDPlugin",
    "TaskAwareClassifier",
    "benchmark_from_stream",
    "experience_from_avalanche",
    "find_head",
    "flatten_report",
    "infer_scenario",
    "run_avalanche",
    "stream_from_benchmark",
]
