"""Compression measurements on tiny models whose sizes and FLOPs are counted by hand."""

import math
import warnings

import pytest
import torch
from torch import nn

from lifelong_kd.evaluation import compression
from lifelong_kd.evaluation.compression import CompressionStats


def _mlp(hidden: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, hidden), nn.ReLU(), nn.Linear(hidden, 5))


class _TwoHeads(nn.Module):
    """Shared trunk with one head per task, called as ``model(x, task_id)``."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(10, 20)
        self.heads = nn.ModuleList([nn.Linear(20, 5), nn.Linear(20, 3)])

    def forward(self, x: torch.Tensor, task_id: int = 0) -> torch.Tensor:
        return self.heads[task_id](torch.relu(self.trunk(x)))


def test_count_parameters_of_small_mlp() -> None:
    # Linear(10, 20): 10*20 + 20 = 220 ; Linear(20, 5): 20*5 + 5 = 105 ; total 325
    assert compression.count_parameters(_mlp(20)) == 325


def test_flops_of_small_mlp_count_a_multiply_add_as_two() -> None:
    # 2 * (10*20 + 20*5) = 2 * 300 = 600 (bias additions and ReLU count 0)
    assert compression.flops_per_sample(_mlp(20), (10,)) == 600


def test_flops_of_conv2d() -> None:
    # Conv2d(1, 4, 3) on 1x8x8 -> output 4x6x6; each output: 1*3*3 = 9 multiply-adds
    # 2 * 4 * 1 * 9 * 6 * 6 = 2592
    assert compression.flops_per_sample(nn.Conv2d(1, 4, 3), (1, 8, 8)) == 2 * 4 * 1 * 9 * 6 * 6


def test_flops_pass_forward_kwargs_to_the_model() -> None:
    # task 1: trunk 10*20 + head 20*3 = 260 multiply-adds -> 520 FLOPs
    assert compression.flops_per_sample(_TwoHeads(), (10,), {"task_id": 1}) == 520


def test_measurements_restore_each_modules_training_flag() -> None:
    model = _mlp(20).train()
    model[2].eval()
    compression.flops_per_sample(model, (10,))
    compression.latency_seconds(model, (10,), batch_size=4, min_run_time=0.01)
    assert model.training and model[0].training and not model[2].training


def test_state_bytes_hold_at_least_four_bytes_per_parameter() -> None:
    assert compression.state_bytes(_mlp(20)) >= 4 * 325


def test_quantized_model_is_smaller_than_fp32_for_a_big_linear() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    # int8 weights: about a quarter of the 4 * 68362 fp32 bytes
    assert compression.quantized_bytes(model) < compression.state_bytes(model) / 2


def test_quantization_does_not_modify_the_model_or_leak_warnings() -> None:
    model = _mlp(20).train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compression.quantized_bytes(model)
    assert type(model[0]) is nn.Linear and type(model[2]) is nn.Linear
    assert model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])


def test_quantized_bytes_is_none_without_linear_layers() -> None:
    assert compression.quantized_bytes(nn.Conv2d(1, 4, 3)) is None


def test_latency_is_positive() -> None:
    latency = compression.latency_seconds(_TwoHeads(), (10,), 32, {"task_id": 0}, 0.02)
    assert latency > 0.0


@pytest.mark.parametrize(("keyword", "value"), [("batch_size", 0), ("min_run_time", 0.0)])
def test_latency_rejects_non_positive_arguments(keyword: str, value: float) -> None:
    with pytest.raises(ValueError, match=keyword):
        compression.latency_seconds(_mlp(20), (10,), **{keyword: value})


def test_measure_fills_every_field() -> None:
    stats = compression.measure(_mlp(20), (10,), batch_size=8, min_run_time=0.02)
    assert stats.parameters == 325
    assert stats.flops_per_sample == 600
    assert stats.state_bytes >= 4 * 325
    assert stats.quantized_bytes is not None
    assert stats.latency_seconds is not None and stats.latency_seconds > 0.0


def test_ratios_of_identical_models_are_one() -> None:
    stats = compression.measure(_mlp(20), (10,), time_latency=False)
    ratios = compression.compression_ratios(stats, stats, 0.8, 0.8)
    for key in ("parameter_ratio", "bytes_ratio", "flops_ratio", "accuracy_kept"):
        assert ratios[key] == 1.0
    assert "latency_ratio" not in ratios


def test_ratios_against_a_twice_wider_reference_exceed_one() -> None:
    wide = compression.measure(_mlp(40), (10,), time_latency=False)
    narrow = compression.measure(_mlp(20), (10,), time_latency=False)
    ratios = compression.compression_ratios(wide, narrow)
    # params: (10*40 + 40 + 40*5 + 5) / 325 = 645 / 325 ; FLOPs: 2*(400 + 200) / 600 = 2
    assert ratios["parameter_ratio"] == pytest.approx(645 / 325)
    assert ratios["flops_ratio"] == pytest.approx(2.0)
    assert ratios["bytes_ratio"] > 1.0


def test_ratios_from_hand_made_stats() -> None:
    reference = CompressionStats(200, 1000, 300, 400, 0.02)
    evaluated = CompressionStats(100, 500, 125, 100, 0.01)
    ratios = compression.compression_ratios(reference, evaluated, 0.5, 0.45)
    # 200/100, 1000/500, fp32 1000 / int8 125, 400/100, 0.02/0.01, 0.45/0.5
    assert ratios == pytest.approx(
        {
            "parameter_ratio": 2.0,
            "bytes_ratio": 2.0,
            "quantized_bytes_ratio": 8.0,
            "flops_ratio": 4.0,
            "latency_ratio": 2.0,
            "accuracy_kept": 0.9,
        }
    )


def test_ratios_omit_missing_measurements_and_give_nan_for_zero_denominators() -> None:
    reference = CompressionStats(10, 100, None, 50, None)
    evaluated = CompressionStats(5, 50, None, 0, None)
    ratios = compression.compression_ratios(reference, evaluated)
    assert set(ratios) == {"parameter_ratio", "bytes_ratio", "flops_ratio"}
    assert math.isnan(ratios["flops_ratio"])
