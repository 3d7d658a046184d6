"""Benchmark streams: label spaces per scenario, splits, permutations, real data sets."""

from __future__ import annotations

import pytest
import torch

from lifelong_kd.data import DataNotFoundError, StreamOptions, build_stream
from lifelong_kd.data.stream import model_inputs
from tests.conftest import requires_cifar10, requires_fashion, requires_mnist


def test_split_digits_task_scenario_uses_local_labels_and_one_head_per_experience():
    stream = build_stream("split-digits", StreamOptions(scenario="task"))
    assert len(stream) == 5 and stream.n_heads == 5 and stream.n_outputs == 2
    for k, experience in enumerate(stream):
        assert experience.task_id == k
        assert experience.classes == (2 * k, 2 * k + 1)
        assert set(experience.train.y.tolist()) == {0, 1}
        assert experience.train.x.dtype == torch.uint8 and experience.train.x.shape[1:] == (1, 8, 8)


def test_split_digits_class_scenario_numbers_labels_by_class_order_position():
    order = (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
    stream = build_stream("split-digits", StreamOptions(scenario="class", class_order=order))
    assert stream.n_heads == 1 and stream.n_outputs == 10
    assert stream[0].classes == (9, 8)
    assert set(stream[0].train.y.tolist()) == {0, 1}
    assert set(stream[4].test.y.tolist()) == {8, 9}
    assert all(e.task_id == 0 for e in stream)


def test_domain_scenario_shares_one_head_with_local_labels():
    stream = build_stream("split-digits", StreamOptions(scenario="domain"))
    assert stream.n_heads == 1 and stream.n_outputs == 2
    assert set(stream[3].train.y.tolist()) == {0, 1}


def test_split_samples_partition_the_dataset():
    stream = build_stream("split-digits")
    assert sum(len(e.train) for e in stream) + sum(len(e.test) for e in stream) == 1797


def test_impossible_split_names_the_divisors():
    with pytest.raises(ValueError, match="Cannot split 10 classes into 3"):
        build_stream("split-digits", StreamOptions(n_experiences=3))


def test_unknown_benchmark_lists_valid_names():
    with pytest.raises(ValueError, match="split-mnist"):
        build_stream("split-mnsit")


def test_bad_class_order_is_rejected():
    with pytest.raises(ValueError, match="permutation"):
        build_stream("split-digits", StreamOptions(class_order=(0, 1, 2)))


def test_permuted_digits_first_experience_is_unpermuted_and_others_differ():
    stream = build_stream("permuted-digits", StreamOptions(n_experiences=3, scenario="domain"))
    x0, _ = next(model_inputs(stream[0], "test", 16))
    x1, _ = next(model_inputs(stream[1], "test", 16))
    assert stream[0].transform.permutation is None
    assert not torch.equal(x0, x1)
    assert torch.allclose(x0.flatten(1).sort(1).values, x1.flatten(1).sort(1).values)


def test_permuted_class_scenario_offsets_labels_per_experience():
    stream = build_stream("permuted-digits", StreamOptions(n_experiences=3, scenario="class"))
    assert stream.n_classes == 30
    assert set(stream[2].train.y.tolist()) == set(range(20, 30))


def test_same_seed_gives_same_stream_and_subsample():
    a = build_stream("permuted-digits", StreamOptions(seed=3, train_size=100))
    b = build_stream("permuted-digits", StreamOptions(seed=3, train_size=100))
    c = build_stream("permuted-digits", StreamOptions(seed=4, train_size=100))
    assert len(a[1].train) == 100
    assert torch.equal(a[1].train.x, b[1].train.x) and torch.equal(a[1].transform.permutation, b[1].transform.permutation)
    assert not torch.equal(a[1].transform.permutation, c[1].transform.permutation)


def test_missing_mnist_says_where_it_looked_and_how_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"MNIST not found under .*--download"):
        build_stream("split-mnist", StreamOptions(data_root=tmp_path))


def test_missing_cifar10_lists_searched_paths(tmp_path):
    with pytest.raises(DataNotFoundError, match="cifar10-jpeg.tar.gz"):
        build_stream("split-cifar10", StreamOptions(data_root=tmp_path))


@requires_mnist
def test_real_split_mnist_has_the_full_mnist(data_root):
    stream = build_stream("split-mnist", StreamOptions(data_root=data_root))
    assert sum(len(e.train) for e in stream) == 60_000
    assert sum(len(e.test) for e in stream) == 10_000
    assert stream.input_shape == (1, 28, 28)
    x, _ = next(model_inputs(stream[0], "train", 512))
    assert abs(float(x.mean())) < 0.5  # normalised


@requires_mnist
def test_real_permuted_mnist_reuses_one_copy_of_the_pixels(data_root):
    stream = build_stream("permuted-mnist", StreamOptions(data_root=data_root, n_experiences=4))
    assert stream[0].train.x.data_ptr() == stream[3].train.x.data_ptr()
    assert len(stream[3].train) == 60_000


@requires_fashion
def test_real_split_fashion_mnist_loads(data_root):
    stream = build_stream("split-fashion-mnist", StreamOptions(data_root=data_root))
    assert sum(len(e.test) for e in stream) == 10_000


@requires_cifar10
def test_real_split_cifar10_loads_from_the_jpeg_archive(data_root):
    stream = build_stream("split-cifar10", StreamOptions(data_root=data_root))
    assert stream.input_shape == (3, 32, 32)
    assert [len(e.train) for e in stream] == [10_000] * 5
    assert [len(e.test) for e in stream] == [2_000] * 5
    assert stream[0].train.x.dtype == torch.uint8
    assert float(stream[0].train.x.float().std()) > 30  # real images, not blank
