"""What every memory strategy (ER, DER, DER++, iCaRL, ...) must do, on real training runs.

* class-IL split-digits: each one ends clearly above fine-tuning (which ends near 1/5);
* the same seed gives the same memory and the same numbers;
* state_dict survives ``torch.load(weights_only=True)``, and a run resumed after
  experience k ends bit-identical to an uninterrupted one;
* unsupported scenarios are refused with a clear error;
* the stored samples are the stream's own (uint8) samples with their labels.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch

from lifelong_kd import Evaluator, TrainConfig, build_model, run
from lifelong_kd.data.stream import Stream
from lifelong_kd.pipeline import seed_everything
from lifelong_kd.strategies import DER, ER, LUCIR, BiC, DERpp, Finetune, ICaRL, Strategy
from lifelong_kd.train import train_experience
from tests.helpers import CrashAfter
from tests.strategies.helpers import digits, small_model

# 100 training samples per experience, 5 epochs of 16: fine-tuning ends at 0.10-0.19 average
# accuracy (class-IL), every memory strategy with 200 samples at 0.75-0.86 (two seeds).
CONFIG = TrainConfig(epochs=5, batch_size=16, lr=0.05, progress=False)
BUFFER = 200
FACTORIES: dict[str, Callable[[], Strategy]] = {
    "er": lambda: ER(buffer_size=BUFFER),
    "der": lambda: DER(buffer_size=BUFFER),
    "derpp": lambda: DERpp(buffer_size=BUFFER),
    "icarl": lambda: ICaRL(buffer_size=BUFFER),
    "lucir": lambda: LUCIR(buffer_size=BUFFER),
    "bic": lambda: BiC(buffer_size=BUFFER),
}
ALL_SCENARIOS = {"er", "der", "derpp"}


def _model(strategy: Strategy, stream: Stream, seed: int = 0) -> torch.nn.Module:
    """The tests' small MLP, with the head the strategy needs (LUCIR: cosine)."""
    seed_everything(seed)
    return build_model("mlp:32", stream.input_shape, stream.n_heads, stream.n_outputs, head=strategy.model_head)


def _evaluator() -> Evaluator:
    return Evaluator(shifts=(), compression=False)


def _train(model: torch.nn.Module, strategy: Strategy, stream: Stream, experiences: range, config: TrainConfig = CONFIG) -> None:
    """What pipeline.run does for ``experiences``, minus evaluation."""
    for index in experiences:
        seed_everything(config.seed, index)
        strategy.before_experience(model, stream[index])
        train_experience(model, strategy, stream, stream[index], config)
        strategy.after_experience(model, stream[index])


def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _outputs(strategy: Strategy, model: torch.nn.Module, stream: Stream) -> torch.Tensor:
    """What the evaluator would see on every test set."""
    module = strategy.evaluation_model(model)
    module.eval()
    with torch.no_grad():
        return torch.cat([module(e.transform(e.test.x), e.task_id) for e in stream])


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_class_incremental_accuracy_is_far_above_finetune(name):
    stream = digits("class")
    finetune = run(stream, small_model(stream), Finetune(), _evaluator(), config=CONFIG)["metrics"]["average_accuracy"]
    strategy = FACTORIES[name]()
    results = run(stream, _model(strategy, stream), strategy, _evaluator(), config=CONFIG)
    accuracy = results["metrics"]["average_accuracy"]
    assert finetune < 0.25
    assert accuracy > finetune + 0.4, f"{name}: {accuracy:.3f} vs finetune {finetune:.3f}"
    assert 0 < len(strategy.memory_) <= BUFFER


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_same_seed_gives_the_same_memory_and_numbers(name):
    stream = digits("class")
    runs = []
    for _ in range(2):
        strategy = FACTORIES[name]()
        model = _model(strategy, stream)
        strategy.check_stream(stream)
        _train(model, strategy, stream, range(3))
        runs.append((strategy.memory_.state_dict(), _outputs(strategy, model, stream)))
    (memory_a, out_a), (memory_b, out_b) = runs
    assert torch.equal(memory_a["x"], memory_b["x"]) and torch.equal(memory_a["y"], memory_b["y"])
    assert torch.equal(out_a, out_b)


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("scenario", ["class", "task"])
def test_resume_after_experience_k_is_bit_identical(name, scenario):
    if scenario not in FACTORIES[name]().scenarios:
        pytest.skip(f"{name} does not support the {scenario} scenario")
    stream = digits(scenario)
    whole = FACTORIES[name]()
    whole_model = _model(whole, stream)
    whole.check_stream(stream)
    _train(whole_model, whole, stream, range(len(stream)))

    first = FACTORIES[name]()
    first_model = _model(first, stream)
    first.check_stream(stream)
    _train(first_model, first, stream, range(2))
    strategy_state, model_state = _round_trip(first.state_dict()), _round_trip(first_model.state_dict())
    resumed = FACTORIES[name]()
    resumed_model = _model(resumed, stream, seed=7)  # fresh objects, other init
    resumed_model.load_state_dict(model_state)
    resumed.check_stream(stream)
    resumed.load_state_dict(strategy_state)
    _train(resumed_model, resumed, stream, range(2, len(stream)))

    for key, value in whole_model.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[key]), key
    assert torch.equal(whole.memory_.x_, resumed.memory_.x_)
    assert torch.equal(_outputs(whole, whole_model, stream), _outputs(resumed, resumed_model, stream))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_run_killed_after_an_experience_resumes_from_its_folder_to_the_same_numbers(name, tmp_path):
    stream = digits("class")
    whole = FACTORIES[name]()
    full = run(stream, _model(whole, stream), whole, _evaluator(), config=CONFIG, out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        cut = FACTORIES[name]()
        run(stream, _model(cut, stream), cut, _evaluator(), loggers=[CrashAfter(1)], config=CONFIG, out=tmp_path / "cut")
    resumed_strategy = FACTORIES[name]()
    resumed = run(stream, _model(resumed_strategy, stream, seed=5), resumed_strategy, _evaluator(), config=CONFIG,
                  out=tmp_path / "cut", resume=True)
    assert resumed["accuracy_matrix"] == full["accuracy_matrix"]
    assert torch.equal(resumed_strategy.memory_.x_, whole.memory_.x_)
    assert resumed_strategy.memory_.nbytes == whole.memory_.nbytes > 0


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_stored_samples_are_the_streams_own_with_their_labels(name):
    stream = digits("class")
    strategy = FACTORIES[name]()
    model = _model(strategy, stream)
    strategy.check_stream(stream)
    _train(model, strategy, stream, range(2), TrainConfig(epochs=1, batch_size=16, augment=True, progress=False))
    memory = strategy.memory_
    assert memory.x_.dtype == torch.uint8
    for x, y, experience in zip(memory.x_, memory.y_, memory.experience_, strict=True):
        train = stream[int(experience)].train
        matches = (train.x == x).flatten(1).all(1)  # un-augmented copies of real samples
        assert matches.any() and bool((train.y[matches] == y).all())


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_unsupported_scenarios_are_refused_and_supported_ones_run(name):
    for scenario in ("task", "domain", "class"):
        stream = digits(scenario)
        strategy = FACTORIES[name]()
        if scenario in strategy.scenarios:
            results = run(stream, _model(strategy, stream), strategy, _evaluator(), config=TrainConfig(epochs=1, batch_size=32, progress=False))
            assert results["finished_experiences"] == len(stream)
        else:
            with pytest.raises(ValueError, match=f"does not support the '{scenario}' scenario"):
                strategy.check_stream(stream)
    assert (name in ALL_SCENARIOS) == (FACTORIES[name]().scenarios == {"task", "domain", "class"})


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_options_are_the_constructor_arguments(name):
    strategy = FACTORIES[name]()
    assert strategy.options()["buffer_size"] == BUFFER
    assert not any(key.endswith("_") for key in strategy.options())


@pytest.mark.filterwarnings("ignore:No loggers specified:UserWarning")
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_runs_in_an_avalanche_naive_pipeline_and_beats_naive_class_il(name):
    """Avalanche's Naive template with our plugin; accuracy of what the strategy evaluates (iCaRL: its NME)."""
    pytest.importorskip("avalanche", reason="avalanche-lib is not installed")
    from avalanche.models import SimpleMLP
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import Naive

    from lifelong_kd.evaluation.evaluator import accuracy
    from lifelong_kd.integrations.avalanche import AvalancheModel, LifelongKDPlugin, TaskAwareClassifier, benchmark_from_stream

    stream = digits("class")
    benchmark = benchmark_from_stream(stream)
    final, plugin = {}, LifelongKDPlugin(FACTORIES[name]())
    for key, plugins in (("naive", []), (name, [plugin])):
        torch.manual_seed(0)
        if plugins and plugin.strategy.model_head != "linear":  # LUCIR: our model with its cosine head
            model = TaskAwareClassifier(_model(plugin.strategy, stream))
        else:
            model = SimpleMLP(num_classes=10, input_size=64, hidden_size=32, drop_rate=0)
        template = Naive(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), train_mb_size=16,
            train_epochs=5, eval_mb_size=512, plugins=plugins, evaluator=EvaluationPlugin(loggers=[]),
        )
        for experience in benchmark.train_stream:
            template.train(experience, num_workers=0)
        evaluated = plugin.strategy.evaluation_model(plugin.adapter(model)) if plugins else AvalancheModel(model)
        final[key] = sum(accuracy(evaluated, experience) for experience in stream) / len(stream)
    memory = plugin.strategy.memory_
    assert memory.x_.is_floating_point() and len(memory) == BUFFER  # Avalanche's model inputs
    assert final[name] > final["naive"] + 0.25, final
