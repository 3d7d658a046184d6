"""The Avalanche integration against the real Avalanche (no mocks).

Fast tests run on small tensor benchmarks (scikit-learn digits, shipped with
scikit-learn, turned into Avalanche benchmarks); real-MNIST tests are marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("avalanche", reason="avalanche-lib is not installed")

from avalanche.benchmarks.classic import PermutedMNIST, SplitMNIST
from avalanche.logging import TensorboardLogger
from avalanche.models import IncrementalClassifier, MTSimpleMLP, MultiHeadClassifier, MultiTaskModule, SimpleMLP
from avalanche.training import LearningWithoutForgetting
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.supervised import Naive
from torch import nn

from lifelong_kd.cli import main
from lifelong_kd.data.benchmarks import StreamOptions, build_stream
from lifelong_kd.data.stream import Stream
from lifelong_kd.integrations.avalanche import (
    AvalancheModel,
    LifelongKDMetric,
    LifelongKDPlugin,
    benchmark_from_stream,
    stream_from_benchmark,
)
from lifelong_kd.strategies import EWC, Finetune, LwF, MultiTeacher, Strategy
from lifelong_kd.teacher import is_frozen
from tests.conftest import requires_mnist

# (ReplayPlugin's DeprecationWarning cannot be silenced: Avalanche resets the filter itself.)
pytestmark = pytest.mark.filterwarnings("ignore:No loggers specified:UserWarning")


class MultiHeadMLP(MultiTaskModule):
    """One hidden layer and a MultiHeadClassifier; no dropout or batch-norm."""

    def __init__(self, input_size: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(input_size, hidden), nn.ReLU())
        self.classifier = MultiHeadClassifier(hidden)

    def forward(self, x: torch.Tensor, task_labels: torch.Tensor | int | None) -> torch.Tensor:
        return self.classifier(self.features(x), task_labels)


class PerTaskMLP(MultiHeadMLP):
    """Uses MultiTaskModule's default forward, which splits a minibatch by task."""

    forward = MultiTaskModule.forward

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.classifier(self.features(x), task_label)


def digits(scenario: str, n_experiences: int = 5) -> Stream:
    return build_stream("split-digits", StreamOptions(scenario=scenario, n_experiences=n_experiences))


def single_head(n_outputs: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return SimpleMLP(num_classes=n_outputs, input_size=64, hidden_size=64, drop_rate=0)


def naive(model: nn.Module, plugins: list, epochs: int = 1, metric: LifelongKDMetric | None = None) -> Naive:
    return Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
        train_mb_size=32,
        train_epochs=epochs,
        eval_mb_size=512,
        plugins=plugins,
        evaluator=EvaluationPlugin(*([metric] if metric else []), loggers=[]),
    )


def train_stream(benchmark, model: nn.Module, plugins: list, epochs: int) -> dict[str, float]:
    """Train on every experience; our evaluator's metrics after the last one."""
    metric = LifelongKDMetric(stream_from_benchmark(benchmark, splits=("test",)))
    template = naive(model, plugins, epochs, metric)
    for experience in benchmark.train_stream:
        template.train(experience)
    return metric.result()["metrics"]


def test_import_lifelong_kd_does_not_import_avalanche() -> None:
    code = "import sys, lifelong_kd; assert 'avalanche' not in sys.modules, 'avalanche imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lwf_plugin_trains_and_forgets_less_than_naive() -> None:
    benchmark = benchmark_from_stream(digits("domain"))
    alone = train_stream(benchmark, single_head(), [], epochs=5)
    with_lwf = train_stream(benchmark, single_head(), [LifelongKDPlugin(LwF(alpha=4.0))], epochs=5)
    assert with_lwf["learning_accuracy"] > 0.75
    assert with_lwf["average_accuracy"] >= alone["average_accuracy"]
    assert with_lwf["forgetting"] < 0.5 * alone["forgetting"]
    assert alone["forgetting"] > 0.15


def losses_on_one_batch(model: nn.Module, benchmark) -> tuple[torch.Tensor, torch.Tensor]:
    """Our plugin's extra loss and Avalanche's LearningWithoutForgetting on experience 1's first batch."""
    plugin = LifelongKDPlugin(LwF(temperature=2.0, alpha=1.0, scale_t2=False))
    template = naive(model, [plugin])
    first, second = benchmark.train_stream[0], benchmark.train_stream[1]
    template.train(first)
    reference = LearningWithoutForgetting(alpha=1.0, temperature=2.0)
    reference.post_adapt(template, first)
    with torch.no_grad():  # the student moves away from both (identical) teachers
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    template.experience = second
    template.model.train()
    template.model = template.model_adaptation()
    plugin.before_training_exp(template)
    template.mbatch = list(next(iter(torch.utils.data.DataLoader(second.dataset, batch_size=64))))
    plugin.before_forward(template)
    template.mb_output = template.forward()
    template.loss = torch.zeros(())
    plugin.before_backward(template)
    return template.loss, reference(template.mb_x, template.mb_output, template.model)


@pytest.mark.parametrize("scenario", ["domain", "class"])
def test_plugin_loss_equals_avalanche_lwf_single_head(scenario: str) -> None:
    stream = digits(scenario)
    ours, theirs = losses_on_one_batch(single_head(stream.n_outputs), benchmark_from_stream(stream))
    assert float(ours.detach()) > 1e-3
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_plugin_loss_equals_avalanche_lwf_multi_head() -> None:
    torch.manual_seed(0)
    ours, theirs = losses_on_one_batch(MultiHeadMLP(), benchmark_from_stream(digits("task")))
    assert float(ours.detach()) > 1e-3
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_teacher_is_frozen_in_eval_mode_unlike_avalanche_lwf() -> None:
    torch.manual_seed(0)
    benchmark = benchmark_from_stream(digits("task"))
    plugin = LifelongKDPlugin(LwF())
    template = naive(MTSimpleMLP(input_size=64, hidden_size=32), [plugin])
    template.train(benchmark.train_stream[0])
    reference = LearningWithoutForgetting()
    reference.post_adapt(template, benchmark.train_stream[0])
    assert is_frozen(plugin.strategy.teacher_)
    assert reference.prev_model.training  # Avalanche v0.6 keeps its teacher in train mode (dropout on)


def test_multi_head_model_with_replay_learns_every_task() -> None:
    torch.manual_seed(0)
    benchmark = benchmark_from_stream(digits("task"))
    plugins = [LifelongKDPlugin(LwF()), ReplayPlugin(mem_size=100)]
    metrics = train_stream(benchmark, MultiHeadMLP(), plugins, epochs=3)
    assert metrics["average_accuracy"] > 0.9


class GrowingMLP(nn.Module):
    """A single head that grows with the classes seen (Avalanche's IncrementalClassifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU())
        self.classifier = IncrementalClassifier(64, initial_out_features=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def test_growing_head_is_padded_to_the_benchmark_width() -> None:
    torch.manual_seed(0)
    benchmark = benchmark_from_stream(digits("class"))
    model = GrowingMLP()
    plugin = LifelongKDPlugin(LwF())
    metrics = train_stream(benchmark, model, [plugin], epochs=2)
    assert model.classifier.classifier.out_features == 10  # grew from 2
    assert plugin.strategy.knowledge_.n_classes == 10
    assert metrics["learning_accuracy"] > 0.8


def test_mixed_task_minibatches_reassemble_features_in_batch_order() -> None:
    torch.manual_seed(0)
    stream = digits("task", 5)
    benchmark = benchmark_from_stream(stream)
    model = PerTaskMLP(hidden=16)
    naive(model, [], epochs=1).train(benchmark.train_stream[:2])
    model.eval()
    adapter = AvalancheModel(model)
    x = torch.cat([stream[0].transform(stream[0].test.x[:5]), stream[1].transform(stream[1].test.x[:5])])
    task_id = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1, 1, 0])
    adapter.record(True)
    logits = model(x, task_id)  # one head call per task, on that task's samples
    output = adapter.output(x, logits, task_id, adapter.record(False))
    torch.testing.assert_close(output.features, adapter.features(x))
    torch.testing.assert_close(adapter.select(output.all_logits, task_id), logits)


@pytest.mark.parametrize("strategy", [Finetune(), MultiTeacher(), EWC(), LwF(feature_weight=0.1, noise="gaussian")], ids=lambda s: s.name)
def test_every_strategy_runs_inside_avalanche(strategy: Strategy) -> None:
    benchmark = benchmark_from_stream(digits("task", 5))
    torch.manual_seed(0)
    metrics = train_stream(benchmark, MTSimpleMLP(input_size=64, hidden_size=32), [LifelongKDPlugin(strategy)], epochs=1)
    assert metrics["average_accuracy"] > 0.6


def test_stream_round_trips_through_an_avalanche_benchmark() -> None:
    stream = digits("task")
    back = stream_from_benchmark(benchmark_from_stream(stream), mean=(0.3053,), std=(0.3759,))
    assert back.scenario == "task" and len(back) == len(stream) and back.n_outputs == stream.n_outputs
    for ours, theirs in zip(stream, back, strict=True):
        assert theirs.test.x.dtype == torch.uint8
        assert torch.equal(theirs.train.x, ours.train.x) and torch.equal(theirs.test.y, ours.test.y)
        assert theirs.task_id == ours.task_id
        torch.testing.assert_close(theirs.transform(theirs.test.x), ours.transform(ours.test.x))


def test_our_metrics_appear_in_avalanche_tensorboard_logger(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    benchmark = benchmark_from_stream(digits("domain", 5))
    metric = LifelongKDMetric(stream_from_benchmark(benchmark, splits=("test",)))
    logger = TensorboardLogger(tb_log_dir=str(tmp_path))
    model = single_head()
    template = Naive(
        model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        train_mb_size=32, evaluator=EvaluationPlugin(metric, loggers=[logger]),
    )
    for experience in benchmark.train_stream[:3]:
        template.train(experience)
    logger.writer.flush()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"LifelongKD/metrics/forgetting", "LifelongKD/metrics/average_accuracy", "LifelongKD/accuracy/exp000"} <= set(tags)
    assert [event.step for event in events.Scalars("LifelongKD/metrics/average_accuracy")] == [0, 1, 2]
    assert [event.step for event in events.Scalars("LifelongKD/metrics/forgetting")] == [1, 2]  # undefined at 0
    logger.writer.close()


def test_cli_engine_avalanche_matches_our_engine(tmp_path) -> None:
    common = ["run", "--benchmark", "split-digits", "--strategy", "lwf", "--epochs", "3", "--quiet",
              "--shifts", "none", "--no-tensorboard"]
    assert main([*common, "--engine", "avalanche", "--out", str(tmp_path / "avalanche")]) == 0
    assert main([*common, "--out", str(tmp_path / "ours")]) == 0
    theirs = json.loads((tmp_path / "avalanche" / "results.json").read_text())
    ours = json.loads((tmp_path / "ours" / "results.json").read_text())
    assert theirs["config"]["engine"] == "avalanche" and theirs["finished_experiences"] == 5
    assert abs(theirs["metrics"]["average_accuracy"] - ours["metrics"]["average_accuracy"]) < 0.05


def test_cli_engine_avalanche_runs_in_bf16_close_to_float32(tmp_path) -> None:
    common = ["run", "--benchmark", "split-digits", "--strategy", "lwf", "--epochs", "3", "--quiet",
              "--shifts", "none", "--no-tensorboard", "--engine", "avalanche"]
    assert main([*common, "--precision", "bf16", "--out", str(tmp_path / "bf16")]) == 0
    assert main([*common, "--out", str(tmp_path / "fp32")]) == 0
    low = json.loads((tmp_path / "bf16" / "results.json").read_text())
    full = json.loads((tmp_path / "fp32" / "results.json").read_text())
    assert low["config"]["precision"] == "bf16" and low["finished_experiences"] == 5
    assert low["accuracy_matrix"] != full["accuracy_matrix"]  # the bf16 arithmetic really ran
    assert abs(low["metrics"]["average_accuracy"] - full["metrics"]["average_accuracy"]) < 0.05


@pytest.mark.slow
@requires_mnist
def test_permuted_mnist_from_avalanche_is_a_uint8_stream(data_root: str) -> None:
    benchmark = PermutedMNIST(2, seed=0, dataset_root=data_root)
    stream = stream_from_benchmark(benchmark, "permuted-mnist", mean=(0.1307,), std=(0.3081,))
    assert stream.scenario == "domain" and stream.n_outputs == 10
    assert stream[1].train.x.dtype == torch.uint8 and stream[1].train.x.shape == (60000, 1, 28, 28)
    x, y, _ = benchmark.test_stream[1].dataset[7]
    torch.testing.assert_close(stream[1].transform(stream[1].test.x[7:8])[0], x)
    assert int(stream[1].test.y[7]) == y


@pytest.mark.slow
@requires_mnist
def test_lwf_plugin_on_split_mnist_multi_head_forgets_less_than_naive(data_root: str) -> None:
    def run(plugins: list) -> dict[str, float]:
        torch.manual_seed(0)
        benchmark = SplitMNIST(5, return_task_id=True, class_ids_from_zero_in_each_exp=True, seed=0, dataset_root=data_root)
        return train_stream(benchmark, MultiHeadMLP(784, 256), plugins, epochs=1)

    alone, with_lwf = run([]), run([LifelongKDPlugin(LwF())])
    assert with_lwf["average_accuracy"] > 0.95
    assert with_lwf["forgetting"] < alone["forgetting"]


def test_robustness_and_compression_are_emitted_as_avalanche_metric_values() -> None:
    from lifelong_kd.evaluation.evaluator import Evaluator

    benchmark = benchmark_from_stream(digits("domain", 5))
    stream = stream_from_benchmark(benchmark, splits=("test",), mean=(0.3053,), std=(0.3759,))
    evaluator = Evaluator(shifts=("gaussian_noise",), severities=(3,), robustness_samples=64)
    metric = LifelongKDMetric(stream, evaluator)
    template = naive(single_head(), [], metric=metric)
    for experience in benchmark.train_stream[:2]:
        template.train(experience)
    names = set(template.evaluator.get_last_metrics())
    assert any(name.startswith("LifelongKD/robustness/") for name in names)
    assert "LifelongKD/compression/model/parameters" in names
    assert "LifelongKD/metrics/forgetting" in names
