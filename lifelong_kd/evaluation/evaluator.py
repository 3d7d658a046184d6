"""The evaluator: one accuracy-matrix row per experience, robustness and compression.

``Evaluator.evaluate(model, stream, step)`` returns an :class:`EvalReport`; every metric
in it is a pure function of the matrices the evaluator keeps (see ``docs/metrics.md``).

Evaluation runs on the evaluated model's device (test batches move there). With several
processes (:mod:`lifelong_kd.distributed`) each process evaluates its contiguous part of
every test set and the correct counts are summed, so every process gets the accuracies one
process would; the compression measurements (latency) are taken by rank 0 and shared.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from lifelong_kd import distributed
from lifelong_kd.data.stream import Experience, Stream
from lifelong_kd.evaluation import compression, metrics
from lifelong_kd.evaluation.compression import CompressionStats
from lifelong_kd.evaluation.continual import PROBE_SAMPLES, ContinualEvaluation
from lifelong_kd.evaluation.instruments import InstrumentTracker
from lifelong_kd.evaluation.report import EvalReport
from lifelong_kd.evaluation.robustness import RobustnessProbe
from lifelong_kd.models import inference_batch_size

# The parts of evaluation timed separately (Evaluator.seconds_).
EVALUATION_PARTS = ("initial", "clean", "instruments", "robustness", "compression", "continual")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode and restore its train/eval flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.inference_mode()
def correct_predictions(model: nn.Module, experience: Experience, batch_size: int = 1024, rows: slice | None = None) -> int:
    """How many test samples of ``experience`` (rows ``rows``; None: all) ``model`` classifies correctly, on the model's device."""
    test = experience.test
    rows = rows if rows is not None else slice(0, len(test))
    device = distributed.module_device(model)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model):
        for start in range(rows.start, rows.stop, batch_size):
            stop = min(start + batch_size, rows.stop)
            logits = model(experience.transform(distributed.to_device(test.x[start:stop], device)), experience.task_id)
            correct += (logits.argmax(1) == test.y[start:stop].to(device)).sum()
    return int(correct)


def accuracy(model: nn.Module, experience: Experience, batch_size: int = 1024) -> float:
    """Accuracy of ``model`` on ``experience``'s whole test set (its own head in the task scenario), in this process."""
    return correct_predictions(model, experience, batch_size) / max(len(experience.test), 1)


@torch.inference_mode()
def predictions(
    model: nn.Module, experience: Experience, batch_size: int = 1024, rows: slice | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Predicted labels of the test samples ``rows`` (None: all) of ``experience`` (its own head in the task scenario), on the CPU.

    ``out``: a CPU long tensor of ``rows``' length to write them into (returned), so that the
    results of many test sets do not each allocate between the batches' large transient
    buffers (see :meth:`Evaluator.predict`).
    """
    test = experience.test
    rows = rows if rows is not None else slice(0, len(test))
    device = distributed.module_device(model)
    out = torch.empty(rows.stop - rows.start, dtype=torch.long) if out is None else out
    with eval_mode(model):
        for start in range(rows.start, rows.stop, batch_size):
            stop = min(start + batch_size, rows.stop)
            inputs = distributed.to_device(test.x[start:stop], device)
            out[start - rows.start : stop - rows.start] = model(experience.transform(inputs), experience.task_id).argmax(1).cpu()
    return out


class Evaluator:
    """Evaluates a model on every experience of a stream after each training step.

    Args:
        batch_size: Samples per inference batch; None picks one per model
            (:func:`lifelong_kd.models.inference_batch_size`: 1024 for MLPs, 32-64 for ConvNets).
        forgetting_definition: ``"max"`` (Chaudhry et al. 2018, ours) or ``"avalanche"``.
        shifts: Corruption names for robustness (empty: no robustness evaluation).
        severities: Corruption severities (1..5).
        robustness_samples: Test samples per experience under each corruption (None: all).
        reference: Reference (teacher) model for compression ratios; None measures the
            evaluated model against itself (ratios of 1, as in self-distillation).
        reference_accuracy: The reference's final average accuracy, for "accuracy kept".
        compression: Measure parameters, bytes, FLOPs and latency.
        seed: Seed of the robustness subsample and corruptions.
        model_stats: Precomputed compression stats of the evaluated model, for models
            ``compression.measure`` cannot count (int8-quantised copies, see
            ``evaluation.posthoc.quantized_stats``); None measures the model.
        reference_stats: Precomputed compression stats of ``reference`` (several evaluators
            sharing one reference measure it once); None measures ``reference``.
        probe: The corrupted test sets to evaluate on (several evaluators of one run share
            one probe, so the sets are built once); None builds one from ``shifts``,
            ``severities``, ``robustness_samples`` and ``seed`` when ``shifts`` is not empty.
        instruments: Per-class accuracy and forgetting, the confusion matrix and negative
            flips, from the predictions the accuracy row is computed from (no extra pass).
        drift_samples: Probe samples of representation drift (linear CKA of the penultimate
            features between snapshots; one small extra forward pass); 0 or None: off.
        eval_every: Continual evaluation (De Lange et al. 2023): accuracy on a probe of every
            seen experience every K training iterations (:meth:`continual_callback`); None: off.
        probe_samples: Test samples per experience in the continual-evaluation probe.
        robustness_every: When the robustness suite runs: after every K-th experience
            (experiences K-1, 2K-1, ...) and always after the final one; 1 (default): after
            every experience; None: after the final experience only. Reports of the other
            experiences carry no robustness part; corrupted forgetting needs the suite after
            every experience so far and is None otherwise (see ``docs/metrics.md``).

    Attributes:
        seconds_: Wall seconds spent so far in each part of evaluation: ``initial`` (the
            randomly initialised model's row), ``clean`` (the accuracy rows), ``instruments``,
            ``robustness`` (building the corrupted sets included), ``compression`` and
            ``continual`` (probes during training); read by ``benchmarks/eval_cost.py``.
    """

    def __init__(
        self,
        batch_size: int | None = None,
        forgetting_definition: str = "max",
        shifts: Sequence[str] = (),
        severities: Sequence[int] = (1, 2, 3, 4, 5),
        robustness_samples: int | None = 256,
        reference: nn.Module | None = None,
        reference_accuracy: float | None = None,
        compression: bool = True,
        seed: int = 0,
        model_stats: CompressionStats | None = None,
        reference_stats: CompressionStats | None = None,
        probe: RobustnessProbe | None = None,
        instruments: bool = True,
        drift_samples: int | None = 512,
        eval_every: int | None = None,
        probe_samples: int | None = PROBE_SAMPLES,
        robustness_every: int | None = 1,
    ) -> None:
        if robustness_every is not None and (isinstance(robustness_every, bool) or not isinstance(robustness_every, int) or robustness_every < 1):
            raise ValueError(f"robustness_every must be a positive number of experiences (1: after every one) or None (the final one only), got {robustness_every!r}.")
        self.batch_size = batch_size
        self.forgetting_definition = forgetting_definition
        self.shifts = tuple(shifts)
        self.severities = tuple(severities)
        self.robustness_samples = robustness_samples
        self.reference = reference
        self.reference_accuracy = reference_accuracy
        self.compression = compression
        self.seed = seed
        self.model_stats = model_stats
        self.reference_stats = reference_stats
        self.rows_: list[list[float]] = []
        self.robustness_every = robustness_every
        self.corrupted_rows_: list[list[float] | None] = []  # None: the suite did not run after that experience
        self.seconds_: dict[str, float] = dict.fromkeys(EVALUATION_PARTS, 0.0)
        self.initial_: list[float] | None = None
        self.compression_stats_: dict[str, Any] | None = None
        self.probe = probe
        self.instruments = instruments
        self.drift_samples = drift_samples if instruments else None
        self.tracker_ = InstrumentTracker(self.drift_samples, seed, forgetting_definition) if instruments else None
        self.eval_every = eval_every
        self.probe_samples = probe_samples
        self.continual_ = ContinualEvaluation(eval_every, probe_samples, seed, batch_size) if eval_every else None
        if probe is None and self.shifts:
            self.probe = RobustnessProbe(self.shifts, self.severities, robustness_samples, seed, batch_size)

    def row(self, model: nn.Module, stream: Stream) -> list[float]:
        """Accuracy on every experience's test set (with several processes each counts its part; one sum)."""
        batch_size = self.batch_size or inference_batch_size(model, stream.input_shape)
        counts = torch.tensor([correct_predictions(model, e, batch_size, distributed.shard(len(e.test))) for e in stream])
        counts = distributed.all_reduce_sum(counts).tolist()
        return [count / max(len(experience.test), 1) for count, experience in zip(counts, stream, strict=True)]

    def predict(self, model: nn.Module, stream: Stream) -> list[torch.Tensor]:
        """Predicted labels on every experience's whole test set (each process predicts its part; the parts are gathered)."""
        batch_size = self.batch_size or inference_batch_size(model, stream.input_shape)
        shards = [distributed.shard(len(e.test)) for e in stream]
        sizes = [shard.stop - shard.start for shard in shards]
        # One tensor for every test set's predictions, allocated before any forward. Kept results
        # allocated one by one between the batches' freed multi-megabyte buffers fragment the
        # C heap: on a 50-experience stream the evaluation's peak RSS grew by about 120 MB
        # (benchmarks/long_stream.py, per-phase peaks), with the live heap flat.
        local = torch.empty(sum(sizes), dtype=torch.long)
        parts = local.split(sizes)
        for experience, shard, part in zip(stream, shards, parts, strict=True):
            predictions(model, experience, batch_size, shard, out=part)
        return [distributed.all_gather_rows(part, len(e.test)) for part, e in zip(parts, stream, strict=True)]

    def continual_callback(self, model_of: Callable[[], nn.Module], stream: Stream, experience: Experience) -> Callable[[int, int], None] | None:
        """The training loop's per-iteration callback for continual evaluation (None when it is off).

        Args:
            model_of: Gives the module to evaluate as it is now (e.g. the strategy's evaluation model).
            stream: The stream.
            experience: The experience about to be trained.
        """
        if self.continual_ is None:
            return None
        self.continual_.begin(experience.index)

        def on_step(iteration: int, total: int) -> None:
            if self.continual_.due(iteration, total):
                model = model_of()
                with eval_mode(model), record_function("lkd.evaluate.continual"), self._timed("continual"):
                    self.continual_.measure(model, stream, experience.index, iteration, total)

        return on_step

    def measure_initial(self, model: nn.Module, stream: Stream) -> None:
        """Record a randomly initialised model's accuracy per experience (the FWT baseline)."""
        with self._timed("initial"):
            self.initial_ = self.row(model, stream)

    @contextmanager
    def _timed(self, part: str) -> Iterator[None]:
        """Add the block's wall seconds to :attr:`seconds_` ``[part]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds_[part] += time.perf_counter() - start

    def robustness_due(self, step: int, n_experiences: int) -> bool:
        """Whether the robustness suite runs after experience ``step`` of ``n_experiences`` (see ``robustness_every``)."""
        if self.probe is None:
            return False
        if step == n_experiences - 1:
            return True
        return self.robustness_every is not None and (step + 1) % self.robustness_every == 0

    def evaluate(self, model: nn.Module, stream: Stream, step: int, reference_accuracy: float | None = None) -> EvalReport:
        """Evaluate after training experience ``step``; appends row ``step`` of R.

        Args:
            model: The model to evaluate.
            stream: The stream whose test sets are measured.
            step: Index of the experience just trained.
            reference_accuracy: The reference's average accuracy at this step, for
                "accuracy kept" (None: the constructor's ``reference_accuracy``).
        """
        start = time.perf_counter()
        with eval_mode(model):
            with record_function("lkd.evaluate.clean"), self._timed("clean"):
                predicted = self.predict(model, stream) if self.tracker_ is not None else None
                row = self.row(model, stream) if predicted is None else [float((p == e.test.y).sum()) / max(len(e.test), 1) for p, e in zip(predicted, stream)]
                self.rows_ = self.rows_[:step] + [row]
            summary = metrics.summarize(self.rows_, self.initial_, self.forgetting_definition)
            with record_function("lkd.evaluate.instruments"), self._timed("instruments"):
                batch_size = (self.batch_size or inference_batch_size(model, stream.input_shape)) if self.tracker_ is not None else 0
                instruments = self.tracker_.update(model, stream, step, predicted, batch_size) if self.tracker_ is not None else None
            curve = self.continual_.curve(step, len(stream)) if self.continual_ is not None else None
            with record_function("lkd.evaluate.robustness"), self._timed("robustness"):
                robustness = self._robustness(model, stream, step)
            with record_function("lkd.evaluate.compression"), self._timed("compression"):
                sizes = self._compression(model, stream, summary["average_accuracy"], reference_accuracy)
        return EvalReport(
            step=step,
            accuracy_matrix=tuple(tuple(r) for r in self.rows_),
            metrics=summary,
            initial_accuracy=tuple(self.initial_) if self.initial_ is not None else None,
            robustness=robustness,
            compression=sizes,
            eval_seconds=time.perf_counter() - start,
            instruments=instruments,
            continual=curve,
            stability=self.continual_.stability(curve) if self.continual_ is not None else None,
        )

    def _robustness(self, model: nn.Module, stream: Stream, step: int) -> dict[str, Any] | None:
        """The robustness part of the report after ``step``; None when the suite does not run then (:meth:`robustness_due`).

        ``corrupted_accuracy_matrix`` holds the rows of the experiences after which the suite
        ran (``corrupted_steps``); corrupted forgetting is the forgetting formula on it when the
        suite ran after every experience so far, else None (an unmeasured row may hold the maximum).
        """
        rows = self.corrupted_rows_[:step] + [None] * max(0, step - len(self.corrupted_rows_))
        if not self.robustness_due(step, len(stream)):
            self.corrupted_rows_ = [*rows, None]
            return None
        result = self.probe.evaluate(model, stream, step)
        self.corrupted_rows_ = [*rows, list(result.pop("corrupted_row"))]
        measured = [index for index, row in enumerate(self.corrupted_rows_) if row is not None]
        result["corrupted_accuracy_matrix"] = [list(self.corrupted_rows_[index]) for index in measured]
        result["corrupted_steps"] = measured
        dense = len(measured) == step + 1
        result["corrupted_forgetting"] = metrics.forgetting(self.corrupted_rows_, definition=self.forgetting_definition) if dense else None
        result["severities"] = list(self.severities)
        return result

    def _compression(self, model: nn.Module, stream: Stream, average_accuracy: float, reference_accuracy: float | None) -> dict[str, Any] | None:
        if not self.compression:
            return None
        if self.compression_stats_ is None:
            self.compression_stats_ = distributed.on_main(lambda: self._measure(model, stream))
        evaluated, reference = self.compression_stats_["model"], self.compression_stats_["reference"]
        if self.reference is None:
            reference_accuracy = average_accuracy
        elif reference_accuracy is None:
            reference_accuracy = self.reference_accuracy
        ratios = compression.compression_ratios(reference, evaluated, reference_accuracy, average_accuracy)
        return {"model": _stats_dict(evaluated), "reference": _stats_dict(reference), "ratios": ratios}

    def _measure(self, model: nn.Module, stream: Stream) -> dict[str, CompressionStats]:
        """Compression stats of the model and the reference, both on the model's device (latency compares like with like)."""
        kwargs = {"task_id": 0}
        evaluated = self.model_stats or compression.measure(model, stream.input_shape, forward_kwargs=kwargs)
        if self.reference is None or self.reference_stats is not None:
            return {"model": evaluated, "reference": self.reference_stats or evaluated}
        reference, device = self.reference, distributed.module_device(model)
        if distributed.module_device(reference) != device:  # a copy: the reference may be another member's model
            reference = copy.deepcopy(reference).to(device)
        return {"model": evaluated, "reference": compression.measure(reference, stream.input_shape, forward_kwargs=kwargs)}

    def settings(self) -> dict[str, Any]:
        """What this evaluator measures (plain values; the run's resume check compares them)."""
        return {
            "forgetting_definition": self.forgetting_definition,
            "shifts": list(self.shifts),
            "severities": list(self.severities),
            "robustness_samples": self.robustness_samples,
            "seed": self.seed,
            "compression": self.compression,
            "reference": self.reference is not None,
            "instruments": self.instruments,
            "drift_samples": self.drift_samples,
            "eval_every": self.eval_every,
            "probe_samples": self.probe_samples if self.eval_every else None,
            **({"robustness_every": self.robustness_every} if self.robustness_every != 1 else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        """Rows measured so far and the initial accuracies."""
        state = {"rows": [list(r) for r in self.rows_], "corrupted_rows": [None if r is None else list(r) for r in self.corrupted_rows_], "initial": self.initial_}
        if self.tracker_ is not None:
            state["instruments"] = self.tracker_.state_dict()
        if self.continual_ is not None:
            state["continual"] = self.continual_.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.rows_ = [list(r) for r in state["rows"]]
        self.corrupted_rows_ = [None if r is None else list(r) for r in state.get("corrupted_rows", [])]
        self.initial_ = state["initial"]
        if self.tracker_ is not None:
            self.tracker_.load_state_dict(state.get("instruments", {}))
        if self.continual_ is not None:
            self.continual_.load_state_dict(state.get("continual", {}))


def _stats_dict(stats: Any) -> dict[str, Any]:
    return {name: getattr(stats, name) for name in stats.__dataclass_fields__}
