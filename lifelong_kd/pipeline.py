"""The one loop over experiences: every run (plain, lifelong compression, Avalanche engine) is this loop.

A run is a list of **members**, each a model evaluated after every experience by its own
:class:`~lifelong_kd.evaluation.evaluator.Evaluator`:

* a plain run has one member, ``model``, trained with its strategy;
* lifelong compression has a teacher (trained, or loaded and fixed), students trained with
  :class:`~lifelong_kd.strategies.compress.Compress` from a frozen snapshot of the teacher
  (``Member.teacher``), and copies derived from the teacher's snapshot after each
  experience (pruned, int8-quantised: ``Member.derive``), see :mod:`lifelong_kd.compression_run`.

A **trainer** trains one member on one experience: :class:`LoopTrainer` (our minibatch loop,
:mod:`lifelong_kd.train`) or Avalanche's template (``integrations.avalanche.AvalancheTrainer``).

For each experience, in this order: every trained member is seeded from ``(seed,
experience index)`` (:func:`seed_everything`, the only place a step is seeded), trained by
the trainer, then every member is evaluated; the run folder is saved (checkpoint first,
everything else derived from it, :mod:`lifelong_kd.run_folder`), then the loggers receive the
reports. Training and evaluation run inside :func:`precision_scope` (the only place the
precision is entered): ``--precision bf16`` covers a member's strategy hooks, minibatches and
evaluation; int8-quantised members are evaluated in float32 (their kernels take float32).

Resume: the checkpoint holds every member's model, strategy and evaluator state and its
reports; because each experience reseeds every random source, a resumed run ends with the
same numbers as an uninterrupted one. The loggers are told where the run continues
(``first_step``) and receive the last finished report again, so TensorBoard and the figures
hold exactly one entry per experience after any number of interruptions.

Devices and processes (:mod:`lifelong_kd.distributed`, docs/distributed.md): the run starts
in :func:`lifelong_kd.distributed.session` (the process group under torchrun, the device,
deterministic kernels), which is also where the models are moved to the device; everything
else follows the models. With several processes every process trains and evaluates its share;
only rank 0 opens the run folder, writes it and feeds the loggers. On resume rank 0 reads and
checks the checkpoint and sends it to the other processes, so all continue from the same
experience with the same state (the folder need not be on a shared file system). Checkpoints
hold CPU tensors: a run started on a GPU resumes on a CPU and the reverse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from lifelong_kd import distributed, threads
from lifelong_kd.data.stream import Experience, Stream
from lifelong_kd.evaluation.evaluator import Evaluator
from lifelong_kd.evaluation.report import EvalReport, json_safe
from lifelong_kd.loggers.base import Logger
from lifelong_kd.logs import heartbeat, log_experience, training_record
from lifelong_kd.run_folder import (
    CHECKPOINT,
    RESULTS,
    MemberLog,
    ResumeError,
    RunFolder,
    RunFolderError,
    differences,
    metrics_rows,
    open_run_folder,
    refuse_resume,
    results_document,
)
from lifelong_kd.strategies.base import Strategy
from lifelong_kd.teacher import freeze_copy
from lifelong_kd.train import NonFiniteLossError, TrainConfig, autocast, train_experience
from lifelong_kd.version import __version__, git_revision

__all__ = [
    "CHECKPOINT",
    "RESULTS",
    "VOLATILE_KEYS",
    "LoopTrainer",
    "Member",
    "ResumeError",
    "RunFolderError",
    "Trainer",
    "precision_scope",
    "run",
    "run_members",
    "seed_everything",
]

# Record keys that do not change a run's numbers: they may differ between a run and its resumption.
# (``strategy_options`` as typed are compared through the setup record: the strategies' full options.)
# ``device``, ``deterministic``, ``data_on_device``, ``fused_optimizer`` and ``compile`` say where and how a run computes:
# a checkpoint resumes on another device or kernel (numbers then agree to float rounding, docs/distributed.md).
VOLATILE_KEYS = frozenset(
    {"resume", "overwrite", "out", "progress", "quiet", "config_file", "tensorboard", "csv", "wandb", "download", "eval_batch_size", "strategy_options"}
    | {"figures_every"}
    | {"device", "deterministic", "data_on_device", "fused_optimizer", "compile", "threads"}
)
# TrainConfig fields left out of the setup record (compared on resume): they do not change the numbers.
UNRECORDED_TRAINING = ("progress", "eval_batch_size", "device", "deterministic", "data_on_device", "fused_optimizer", "compile")


def seed_everything(seed: int, experience_index: int = -1) -> None:
    """Seed torch's global generator from the run seed and the experience index (-1: model initialisation)."""
    torch.manual_seed(seed * 1_000_003 + experience_index + 1)


def precision_scope(precision: str, device: torch.device | None = None) -> AbstractContextManager:
    """The mixed-precision scope of a run on ``device`` (None: the CPU), see :func:`lifelong_kd.train.autocast`.

    ``fp32``: none; ``bf16``: bfloat16 autocast; ``fp16``: float16 autocast (CUDA).
    """
    return autocast(precision, (device or torch.device("cpu")).type)


@dataclass
class Member:
    """One model of a run, evaluated after every experience.

    Attributes:
        name: Its name: ``model`` in a plain run; the section name in ``results.json``
            and the folder ``models/<name>/`` when a run has several members.
        evaluator: Its own evaluator.
        model: The model (None for a derived member).
        strategy: The strategy it trains with; None: not trained (e.g. a loaded teacher).
        loggers: Receive its config and reports.
        teacher: Name of an earlier member whose frozen snapshot, taken after that member
            trained on the experience, the strategy receives through ``set_teacher`` while
            this member trains (lifelong compression's student).
        derive: Makes the evaluated model from ``source``'s snapshot after each experience
            and returns it with extra report fields (pruned and quantised copies).
        source: The member a derived member is made from.
        reference: An earlier member whose average accuracy at the same step is this
            member's reference accuracy ("accuracy kept").
        precision: Evaluation precision for this member (None: the run's; ``"fp32"`` for
            int8-quantised copies).
    """

    name: str
    evaluator: Evaluator
    model: nn.Module | None = None
    strategy: Strategy | None = None
    loggers: Sequence[Logger] = field(default_factory=tuple)
    teacher: str | None = None
    derive: Callable[[nn.Module], tuple[nn.Module, dict[str, Any]]] | None = None
    source: str | None = None
    reference: str | None = None
    precision: str | None = None

    @property
    def trained(self) -> bool:
        """Whether the loop trains this member."""
        return self.strategy is not None and self.model is not None


class Trainer(Protocol):
    """Trains one member on one experience (the loop seeds, times and evaluates around it)."""

    name: str

    def check(self, stream: Stream, config: TrainConfig) -> None:
        """Refuse settings this trainer cannot run, before anything is trained or written."""

    def train(self, model: nn.Module, strategy: Strategy, stream: Stream, experience: Experience, config: TrainConfig) -> dict[str, float]:
        """Run the strategy's hooks and train; returns ``{"train_seconds", "samples", ...}``."""


class LoopTrainer:
    """Our trainer: ``before_experience``, the minibatch loop of :mod:`lifelong_kd.train`, ``after_experience``."""

    name = "lifelong-kd"

    def check(self, stream: Stream, config: TrainConfig) -> None:
        """Every setting runs."""

    def train(
        self,
        model: nn.Module,
        strategy: Strategy,
        stream: Stream,
        experience: Experience,
        config: TrainConfig,
        on_step: Callable[[int, int], None] | None = None,
        optimizer_state: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Hooks and minibatches of one experience; ``on_step(iteration, total)`` after every optimiser step (continual evaluation).

        ``optimizer_state``: the state the optimiser starts from (``keep_optimizer``); the
        returned ``"optimizer_state"`` is the one it ends with.
        """
        strategy.before_experience(model, experience)
        try:
            stats = train_experience(model, strategy, stream, experience, config, on_step, optimizer_state)
        except NonFiniteLossError as error:
            hint = strategy.divergence_hint(config.optimizer, config.lr, config.momentum)
            if hint is None:
                raise
            raise NonFiniteLossError(f"{error} {hint}") from error
        strategy.after_experience(model, experience)
        return stats


def run(
    stream: Stream,
    model: nn.Module,
    strategy: Strategy,
    evaluator: Evaluator | None = None,
    loggers: Sequence[Logger] = (),
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    trainer: Trainer | None = None,
) -> dict[str, Any]:
    """Train ``model`` on every experience of ``stream`` with ``strategy``; evaluate after each.

    Args:
        stream: The benchmark stream.
        model: The model (a :class:`~lifelong_kd.models.Classifier` or compatible).
        strategy: The continual-learning strategy.
        evaluator: The evaluator (default: accuracy matrix and forgetting metrics).
        loggers: Receive the config and each :class:`EvalReport`.
        config: Training settings.
        out: Run folder; None keeps nothing on disk.
        resume: Continue the run in ``out`` (it must hold a checkpoint of the same setup).
        record: The run's configuration as plain values, stored in ``results.json``.
        overwrite: Replace the run ``out`` holds (without it, a folder holding a run is refused).
        trainer: Who trains each experience (default: :class:`LoopTrainer`).

    Returns:
        The ``results.json`` document.
    """
    config = config or TrainConfig()
    member = Member("model", evaluator or Evaluator(batch_size=config.eval_batch_size), model, strategy, tuple(loggers))
    return run_members(stream, [member], config, out, resume, record, overwrite=overwrite, trainer=trainer)


def run_members(
    stream: Stream,
    members: Sequence[Member],
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
    *,
    overwrite: bool = False,
    trainer: Trainer | None = None,
    primary: str | None = None,
) -> dict[str, Any]:
    """Run every member along ``stream`` (see the module docstring); returns the ``results.json`` document.

    Args:
        stream: The benchmark stream.
        members: The run's members, in training and evaluation order.
        config: Training settings, shared by every trained member.
        out: Run folder; None keeps nothing on disk.
        resume: Continue the run in ``out``.
        record: The run's configuration as plain values.
        overwrite: Replace the run ``out`` holds.
        trainer: Who trains each experience (default: :class:`LoopTrainer`).
        primary: The member whose document is the top level of ``results.json`` (default: the first).
    """
    if out is None and (resume or overwrite):
        raise ValueError("resume and overwrite need out=: the run folder to continue or replace.")
    config = config or TrainConfig()
    state = _Run(stream, members, config, record or {}, trainer or LoopTrainer(), primary or members[0].name)
    with distributed.session(state.device_request(), config.deterministic) as placement:
        state.place(placement)
        if out is None:
            return state.execute(None, None)
        if not placement.main:
            return state.execute(None, _received_start())
        return state.execute_main(Path(out), resume, overwrite)


def _received_start() -> dict[str, Any] | None:
    """On a process other than rank 0: the checkpoint rank 0 resumes from (None: a fresh run), or rank 0's error."""
    message, checkpoint = distributed.share((None, None))
    if message is not None:
        raise RunFolderError(f"rank 0 could not start the run: {message}")
    return checkpoint


def _check_members(members: Sequence[Member], primary: str) -> None:
    names = [m.name for m in members]
    if len(set(names)) != len(names) or primary not in names:
        raise ValueError(f"Member names must be unique and include the primary {primary!r}; got {names}.")
    for position, member in enumerate(members):
        earlier = set(names[:position])
        for role, name in (("teacher", member.teacher), ("source", member.source), ("reference", member.reference)):
            if name is not None and name not in earlier:
                raise ValueError(f"Member {member.name!r}: its {role} {name!r} must be an earlier member.")
        if (member.derive is None) == (member.model is None) or (member.derive is not None) != (member.source is not None):
            raise ValueError(f"Member {member.name!r} needs either a model, or derive and source.")


def _plain(value: Any) -> Any:
    """A JSON-like copy of a strategy option (objects become their type name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return type(value).__name__


def setup_record(stream: Stream, members: Sequence[Member], config: TrainConfig, trainer: Trainer) -> dict[str, Any]:
    """What determines a run's numbers, read off the objects: compared on resume, stored in ``results.json``.

    :data:`UNRECORDED_TRAINING` settings are left out: they do not change the numbers.
    """
    training = {k: v for k, v in asdict(config).items() if k not in UNRECORDED_TRAINING}
    described = {}
    for member in members:
        model = member.model
        described[member.name] = {
            "model": None if model is None else f"{type(model).__name__} ({sum(p.numel() for p in model.parameters())} parameters)",
            "strategy": None if member.strategy is None else member.strategy.name,
            "options": None if member.strategy is None else _plain(member.strategy.options()),
            "teacher": member.teacher,
            "source": member.source,
            "evaluator": member.evaluator.settings(),
        }
    stream_part = {
        "name": stream.name,
        "scenario": stream.scenario,
        "classes": stream.n_classes,
        "experiences": [{"classes": list(e.classes), "train": len(e.train), "test": len(e.test)} for e in stream],
    }
    return json_safe({"stream": stream_part, "training": training, "trainer": trainer.name, "members": described})


def _versions() -> dict[str, str | None]:
    """Library, torch and Python versions, and the library's git commit when it runs from a checkout (else None)."""
    import platform

    return {"lifelong_kd": __version__, "git": git_revision(), "torch": torch.__version__, "python": platform.python_version()}


class _Run:
    """The state of one run while the loop drives it."""

    def __init__(self, stream: Stream, members: Sequence[Member], config: TrainConfig, record: Mapping[str, Any], trainer: Trainer, primary: str) -> None:
        _check_members(members, primary)
        for member in members:
            if member.strategy is not None:
                member.strategy.check_stream(stream)
        trainer.check(stream, config)
        if trainer.name != LoopTrainer.name and any(m.trained and getattr(m.evaluator, "eval_every", None) for m in members):
            raise ValueError(f"Continual evaluation (--eval-every) runs inside our training loop, which --engine {trainer.name} does not use; drop --eval-every or use --engine lifelong-kd.")
        if trainer.name != LoopTrainer.name and (config.keep_optimizer or config.cross_entropy_classes != "all"):
            raise ValueError(f"--keep-optimizer and --cross-entropy-classes seen act in our training loop, which --engine {trainer.name} does not use; drop them or use --engine lifelong-kd.")
        self.stream, self.members, self.config, self.trainer, self.primary = stream, list(members), config, trainer, primary
        self.by_name = {m.name: m for m in members}
        self.record = json_safe(dict(record))
        self.setup = setup_record(stream, members, config, trainer)
        self.logs = {m.name: MemberLog() for m in members}
        self.placement = distributed.Placement(torch.device("cpu"))
        self.optimizer_states: dict[str, Any] = {}  # per trained member, with keep_optimizer: the state its next experience starts from

    # ------------------------------------------------------------------ placing

    def device_request(self) -> str:
        """The device the run asks for: the config's; ``auto`` means the CPU for a trainer other than ours (Avalanche's runs there)."""
        if self.trainer.name != LoopTrainer.name and self.config.device == "auto":
            return "cpu"
        return self.config.device

    def place(self, placement: distributed.Placement) -> None:
        """Check that the members can run where ``placement`` says, and move their models there."""
        if placement.device.type != "cpu" and self.trainer.name != LoopTrainer.name:
            raise distributed.DeviceError(f"--engine {self.trainer.name} trains on the CPU only; use --device cpu (or auto).")
        if placement.world_size > 1:
            self._check_data_parallel(placement)
        for member in self.members:
            distributed.check_precision(member.precision or self.config.precision, placement.device)
            if member.model is not None:
                member.model.to(placement.device)
        self.placement = placement

    def _check_data_parallel(self, placement: distributed.Placement) -> None:
        """Refuse what cannot run in several processes yet (another trainer than ours)."""
        if self.trainer.name != LoopTrainer.name:
            raise ValueError(f"--engine {self.trainer.name} runs in one process; start it without torchrun (or use our engine).")

    # ------------------------------------------------------------------ driving

    def execute_main(self, out: Path, resume: bool, overwrite: bool) -> dict[str, Any]:
        """Rank 0 (or the only process): open the folder, read the checkpoint, tell the other processes, run.

        A failure before the run starts is sent to the other processes too, so they stop
        with it instead of waiting.
        """
        shared = False
        try:
            with open_run_folder(out, resume=resume, overwrite=overwrite) as folder:
                checkpoint = self.saved(folder) if resume else None
                distributed.share((None, checkpoint))
                shared = True
                return self.execute(folder, checkpoint)
        except Exception as error:
            if not shared:
                distributed.share((str(error), None))
            raise

    def execute(self, folder: RunFolder | None, checkpoint: Mapping[str, Any] | None) -> dict[str, Any]:
        """Run the remaining experiences (after those ``checkpoint`` holds); returns the results document."""
        if checkpoint is not None:
            self.restore(checkpoint, folder)
        else:
            self.measure_initial()
        finished = self.logs[self.primary].finished
        try:
            self.start_loggers(finished)
            for experience in self.stream.experiences[finished:]:
                reports = self.step(experience)
                if folder is not None:
                    self.save(folder)
                for member in self.members:
                    for logger in self.loggers(member):
                        logger.log_report(reports[member.name])
                if self.placement.main:
                    log_experience(experience.index, len(self.stream), reports, {name: self.logs[name].timing[-1] for name in reports})
        finally:
            for member in self.members:
                for logger in self.loggers(member):
                    logger.close()
        return self.document()

    def loggers(self, member: Member) -> Sequence[Logger]:
        """The member's loggers in the process that writes (rank 0); none elsewhere."""
        return member.loggers if self.placement.main else ()

    def start_loggers(self, finished: int) -> None:
        """Give loggers the config; on resume, the last finished report again (see the module docstring)."""
        for member in self.members:
            log = self.logs[member.name]
            for logger in self.loggers(member):
                logger.log_config(self.record, first_step=max(finished - 1, 0))
                if finished:
                    logger.log_report(EvalReport.from_dict(log.reports[finished - 1]))

    def measure_initial(self) -> None:
        """A randomly initialised model's accuracy per experience (the FWT baseline)."""
        for member in self.members:
            if member.model is not None:
                with precision_scope(member.precision or self.config.precision, distributed.module_device(member.model)):
                    member.evaluator.measure_initial(member.model, self.stream)

    def step(self, experience: Experience) -> dict[str, EvalReport]:
        """Train every trained member on ``experience``, then evaluate every member."""
        snapshots: dict[str, nn.Module] = {}
        timings: dict[str, dict[str, float]] = {}
        for member in self.members:
            if member.trained:
                timings[member.name] = self.train(member, experience, snapshots)
        reports: dict[str, EvalReport] = {}
        for member in self.members:
            reports[member.name] = self.evaluate(member, experience.index, snapshots, reports, timings.get(member.name))
        return reports

    def snapshot(self, name: str, snapshots: dict[str, nn.Module]) -> nn.Module:
        """A frozen copy of member ``name``'s model as it is now (made once per step)."""
        if name not in snapshots:
            snapshots[name] = freeze_copy(self.by_name[name].model)
        return snapshots[name]

    def train(self, member: Member, experience: Experience, snapshots: dict[str, nn.Module]) -> dict[str, float]:
        """Seed, train one member on ``experience`` inside the precision scope; its timing."""
        seed_everything(self.config.seed, experience.index)
        teacher = self.snapshot(member.teacher, snapshots) if member.teacher else None
        if teacher is not None:
            member.strategy.set_teacher(teacher)
        start = time.perf_counter()
        try:
            on_step = member.evaluator.continual_callback(lambda: member.strategy.evaluation_model(member.model), self.stream, experience)
            with precision_scope(self.config.precision, self.placement.device):
                arguments = {"on_step": on_step} if on_step is not None else {}  # only our trainer takes these (checked in __init__)
                if self.config.keep_optimizer:
                    arguments["optimizer_state"] = self.optimizer_states.get(member.name)
                stats = self.trainer.train(member.model, member.strategy, self.stream, experience, self.config, **arguments)
        finally:
            if teacher is not None:
                member.strategy.set_teacher(None)
        snapshots.pop(member.name, None)
        loop_seconds = stats.get("train_seconds", 0.0)
        if self.config.keep_optimizer:
            self.optimizer_states[member.name] = stats.get("optimizer_state")
        return {
            "train_seconds": time.perf_counter() - start,
            "loop_seconds": loop_seconds,
            "samples": stats.get("samples", 0),
            "samples_per_second": stats.get("samples", 0) / max(loop_seconds, 1e-9),
            "mean_loss": stats.get("mean_loss"),
            "iterations": stats.get("iterations"),
            "loss_curve": stats.get("loss_curve"),
            "loss_terms": stats.get("loss_terms"),
            "loss_terms_curve": stats.get("loss_terms_curve"),
            **({"compile_seconds": stats["compile_seconds"]} if stats.get("compile_seconds") is not None else {}),  # --compile
        }

    def evaluate(
        self, member: Member, index: int, snapshots: dict[str, nn.Module], reports: Mapping[str, EvalReport], timing: Mapping[str, Any] | None
    ) -> EvalReport:
        """Evaluate one member after experience ``index`` and record its report."""
        extra: dict[str, Any] = {}
        timing = dict(timing or {"train_seconds": 0.0})
        if member.derive is not None:
            start = time.perf_counter()
            model, extra = member.derive(self.snapshot(member.source, snapshots))
            timing["train_seconds"] = time.perf_counter() - start
        else:
            model = member.strategy.evaluation_model(member.model) if member.strategy is not None else member.model
        reference = reports[member.reference].metrics["average_accuracy"] if member.reference else None
        described = f"evaluating {member.name} after experience {index + 1}/{len(self.stream)}"
        with precision_scope(member.precision or self.config.precision, distributed.module_device(model)), heartbeat(described, self.placement.main):
            report = member.evaluator.evaluate(model, self.stream, index, reference_accuracy=reference)
        training = training_record(timing, self.logs[member.name].timing[:index])  # the loss curve, at global iterations
        timing.pop("loss_curve", None)  # kept once, in the report
        timing.pop("loss_terms_curve", None)
        extra = {**extra, "training": training} if training else extra
        if extra:
            report = replace(report, extra=dict(extra))
        self.logs[member.name].add(report.to_dict(), {**timing, "eval_seconds": report.eval_seconds})
        return report

    # ------------------------------------------------------------------ state

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to resume (tensors and plain values: loads with ``weights_only=True``)."""
        members = {}
        for member in self.members:
            log = self.logs[member.name]
            members[member.name] = {
                "model": None if member.model is None else distributed.to_cpu(member.model.state_dict()),
                "strategy": None if member.strategy is None else distributed.to_cpu(member.strategy.state_dict()),
                "evaluator": member.evaluator.state_dict(),
                "reports": log.checkpoint_reports(),  # JSON text per report, encoded once (run_folder.MemberLog)
                "optimizer": distributed.to_cpu(self.optimizer_states[member.name]) if member.name in self.optimizer_states else None,
                "timing": log.timing,
            }
        return {"record": self.record, "setup": self.setup, "primary": self.primary, "members": members}

    def save(self, folder: RunFolder) -> None:
        """Write the checkpoint and the files derived from it; each report's JSON text is encoded once (``MemberLog.encoded``)."""
        checkpoint, document, rows = self.checkpoint(), self.document(), self.rows()
        folder.save(checkpoint, document, rows, self.encoded())

    def encoded(self) -> dict[int, str | list[str]]:
        """Every member's reports' JSON text by the report's ``id()`` (:meth:`lifelong_kd.run_folder.MemberLog.encoded`)."""
        return {key: text for log in self.logs.values() for key, text in log.encoded().items()}

    def saved(self, folder: RunFolder) -> dict[str, Any]:
        """``folder``'s checkpoint, after checking it holds this run."""
        checkpoint = folder.load_checkpoint()
        found = differences(_comparable(checkpoint.get("record", {})), _comparable(self.record))
        found += differences(checkpoint.get("setup", {}), self.setup, "setup")
        if found:
            raise refuse_resume(folder.path, found)
        return checkpoint

    def restore(self, checkpoint: Mapping[str, Any], folder: RunFolder | None) -> None:
        """Load the members' state from ``checkpoint`` (checked by :meth:`saved`); rewrite the folder's derived files."""
        where = folder.path / CHECKPOINT if folder is not None else "rank 0's checkpoint"
        for member in self.members:
            saved = checkpoint["members"][member.name]
            try:
                if member.model is not None:
                    member.model.load_state_dict(saved["model"])
                if member.strategy is not None:
                    member.strategy.load_state_dict(saved["strategy"])
                member.evaluator.load_state_dict(saved["evaluator"])
            except (RuntimeError, KeyError, TypeError, ValueError) as error:
                raise RunFolderError(f"{where} does not fit member {member.name!r} of this run ({error}); start anew with --overwrite.") from None
            self.logs[member.name] = MemberLog(saved["reports"], saved["timing"])
            if saved.get("optimizer") is not None:
                self.optimizer_states[member.name] = saved["optimizer"]
        if folder is not None:
            folder.write_derived(self.document(), self.rows(), self.encoded())

    def document(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        extras = {}
        for member in self.members:
            memory = getattr(member.strategy, "memory_", None)
            extras[member.name] = {"memory_bytes": int(memory.nbytes)} if memory is not None else {}
        document = results_document(self.record, self.logs, self.primary, extras)
        return {**document, "setup": {**self.setup, "versions": _versions(), "hardware": self.placement.describe(), "threads": threads.describe()}}

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """The ``metrics.jsonl`` files."""
        return metrics_rows(self.record, self.logs, self.primary)


def _comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json_safe(dict(record)).items() if k not in VOLATILE_KEYS}

