"""The loop and the pipeline: determinism, resume after a crash, NaN handling, run folder."""

from __future__ import annotations

import json

import pytest
import torch

from lifelong_kd import Evaluator, Finetune, LwF, StreamOptions, TrainConfig, build_model, build_stream, run
from lifelong_kd.pipeline import CHECKPOINT, ResumeError, seed_everything
from lifelong_kd.train import NonFiniteLossError, TrainingSet
from tests.helpers import CrashAfter

CONFIG = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False)


def _stream(scenario: str = "class"):
    return build_stream("split-digits", StreamOptions(scenario=scenario, train_size=120))


def _model(stream):
    seed_everything(0)
    return build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)


def test_same_seed_gives_the_same_numbers():
    stream = _stream()
    a = run(stream, _model(stream), Finetune(), config=CONFIG)
    b = run(stream, _model(stream), Finetune(), config=CONFIG)
    assert a["accuracy_matrix"] == b["accuracy_matrix"]


def test_finetune_in_class_scenario_forgets(tmp_path):
    stream = _stream()
    results = run(stream, _model(stream), Finetune(), config=CONFIG, out=tmp_path)
    matrix = results["accuracy_matrix"]
    assert matrix[0][0] > 0.9
    assert matrix[-1][0] < 0.5  # catastrophic forgetting of the first experience
    assert results["metrics"]["forgetting"] > 0.4


def test_run_folder_holds_results_and_a_weights_only_checkpoint(tmp_path):
    stream = _stream()
    run(stream, _model(stream), Finetune(), config=CONFIG, out=tmp_path, record={"benchmark": "split-digits"})
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["finished_experiences"] == 5
    assert len(results["accuracy_matrix"]) == 5 and len(results["accuracy_matrix"][0]) == 5
    assert all(0.0 <= v <= 1.0 for row in results["accuracy_matrix"] for v in row)
    assert {"average_accuracy", "forgetting"} <= set(results["metrics"])
    assert results["timing"]["train_seconds"] > 0 and results["timing"]["eval_seconds"] > 0
    checkpoint = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    member = checkpoint["members"]["model"]
    assert set(member) >= {"model", "strategy", "evaluator", "reports", "timing"}
    assert len(member["reports"]) == 5 and checkpoint["record"] == {"benchmark": "split-digits"}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"config": {"benchmark": "split-digits"}}
    assert [json.loads(line)["step"] for line in lines[1:]] == [0, 1, 2, 3, 4]


def test_run_killed_after_second_experience_resumes_to_the_same_matrix(tmp_path):
    stream = _stream()
    full = run(stream, _model(stream), Finetune(), config=CONFIG, out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(stream, _model(stream), Finetune(), loggers=[CrashAfter(1)], config=CONFIG, out=tmp_path / "cut")
    partial = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert partial["finished_experiences"] == 2
    fresh_model = build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs)  # unseeded: restored
    resumed = run(stream, fresh_model, Finetune(), config=CONFIG, out=tmp_path / "cut", resume=True)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert resumed["metrics"] == full["metrics"]


def test_resume_with_different_config_is_refused(tmp_path):
    stream = _stream()
    run(stream, _model(stream), Finetune(), config=CONFIG, out=tmp_path, record={"lr": 0.05})
    with pytest.raises(ResumeError, match=r"lr: 0.05 in the folder, 0.1 now"):
        run(stream, _model(stream), Finetune(), config=CONFIG, out=tmp_path, resume=True, record={"lr": 0.1})


@pytest.mark.parametrize(
    "change,named",
    [
        ({"strategy": LwF()}, "setup.members.model.strategy: 'finetune' in the folder, 'lwf' now"),
        ({"config": TrainConfig(epochs=3, batch_size=32, lr=0.01, progress=False)}, "setup.training.lr: 0.05 in the folder, 0.01 now"),
    ],
)
def test_python_api_resume_refuses_another_strategy_or_lr_and_names_it(tmp_path, change, named):
    stream = _stream()
    with pytest.raises(KeyboardInterrupt):
        run(stream, _model(stream), Finetune(), loggers=[CrashAfter(0)], config=CONFIG, out=tmp_path)
    arguments = {"strategy": Finetune(), "config": CONFIG, **change}
    with pytest.raises(ResumeError) as error:
        run(stream, _model(stream), arguments["strategy"], config=arguments["config"], out=tmp_path, resume=True)
    assert named in str(error.value)


def test_resume_ignores_options_that_do_not_change_the_numbers(tmp_path):
    stream = _stream()
    with pytest.raises(KeyboardInterrupt):
        run(stream, _model(stream), Finetune(), loggers=[CrashAfter(0)], config=CONFIG, out=tmp_path, record={"lr": 0.05, "quiet": False, "tensorboard": True})
    quiet = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=True, eval_batch_size=7)
    resumed = run(stream, _model(stream), Finetune(), config=quiet, out=tmp_path, resume=True, record={"lr": 0.05, "quiet": True, "tensorboard": False})
    assert resumed["finished_experiences"] == 5


class NanAtExperience(Finetune):
    """Returns a NaN loss from a given experience on."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.current_ = -1

    def before_experience(self, model, experience):
        self.current_ = experience.index

    def loss(self, model, batch, output):
        value = float("nan") if self.current_ >= self.index else 0.0
        return output.logits.new_tensor(value)


def test_nan_loss_stops_the_run_and_keeps_finished_experiences(tmp_path):
    stream = _stream()
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        run(stream, _model(stream), NanAtExperience(2), config=CONFIG, out=tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["finished_experiences"] == 2


def test_training_set_over_several_experiences_returns_each_samples_own_labels_and_task():
    stream = _stream("task")
    data = TrainingSet(list(stream.experiences[:3]), augment=False, generator=torch.Generator().manual_seed(0))
    assert data.size == sum(len(e.train) for e in stream.experiences[:3])
    index = torch.tensor([0, len(stream[0].train), data.size - 1])
    batch = data.batch(index)
    assert batch.task_id.tolist() == [0, 1, 2]
    assert batch.y[2] == stream[2].train.y[-1]


def test_iterations_mode_runs_exactly_that_many_batches():
    stream = _stream()
    results = run(stream, _model(stream), Finetune(), config=TrainConfig(iterations=7, batch_size=16, progress=False))
    assert [t["samples"] for t in results["timing"]["per_experience"]] == [7 * 16] * 5


def test_evaluator_records_initial_accuracy_for_forward_transfer():
    stream = _stream()
    results = run(stream, _model(stream), Finetune(), evaluator=Evaluator(), config=CONFIG)
    assert len(results["initial_accuracy"]) == 5
    assert "forward_transfer" in results["metrics"]


@pytest.mark.parametrize(
    "kwargs,message",
    [({"lr": -1.0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"optimizer": "rmsprop"}, "optimizer"), ({"epochs": 0}, "epochs")],
)
def test_bad_training_numbers_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_unknown_precision_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, bf16-master, fp16"):
        TrainConfig(precision="fp8")


class _RecordingLwF(LwF):
    """LwF that records the dtypes the loop hands it."""

    def __init__(self) -> None:
        super().__init__(temperature=2.0, alpha=1.0)
        self.dtypes: set[tuple[torch.dtype, torch.dtype]] = set()

    def loss(self, model, batch, output):
        value = super().loss(model, batch, output)
        self.dtypes.add((output.logits.dtype, value.dtype))
        return value


def test_bf16_runs_the_model_in_bfloat16_keeps_losses_float32_and_is_reproducible():
    stream = _stream("task")
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, progress=False, precision="bf16")
    strategy = _RecordingLwF()
    a = run(stream, _model(stream), strategy, config=config)
    b = run(stream, _model(stream), _RecordingLwF(), config=config)
    fp32 = run(stream, _model(stream), _RecordingLwF(), config=CONFIG)
    assert {logits for logits, _ in strategy.dtypes} == {torch.bfloat16}
    assert (torch.bfloat16, torch.float32) in strategy.dtypes  # the distillation term, from the second experience
    assert a["accuracy_matrix"] == b["accuracy_matrix"]
    assert a["accuracy_matrix"] != fp32["accuracy_matrix"]  # bf16 really changed the arithmetic
    assert abs(a["metrics"]["average_accuracy"] - fp32["metrics"]["average_accuracy"]) < 0.05
    assert min(a["accuracy_matrix"][i][i] for i in range(len(stream))) > 0.85
