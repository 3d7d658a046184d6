"""Batched crop + flip: each sample gets its own draw, shapes and pixels are kept."""

import torch

from lifelong_kd.data.augment import random_crop_flip


def test_crop_flip_keeps_shape_dtype_and_draws_per_sample():
    x = torch.arange(16 * 3 * 8 * 8, dtype=torch.float32).view(16, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    shifts = {tuple(out[i, 0].flatten()[:3].tolist()) for i in range(16)}
    assert len(shifts) > 1


def test_zero_padding_crop_without_flip_is_identity():
    x = torch.rand(4, 1, 6, 6)
    assert torch.equal(random_crop_flip(x, torch.Generator().manual_seed(0), padding=0, flip=False), x)


def test_same_generator_seed_gives_same_views():
    x = torch.rand(8, 3, 8, 8)
    a = random_crop_flip(x, torch.Generator().manual_seed(5))
    b = random_crop_flip(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_flip_only_mirrors_rows():
    x = torch.rand(64, 1, 5, 5)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=0)
    mirrored = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(64)])
    same = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
    assert bool((mirrored | same).all()) and 10 < int(mirrored.sum()) < 54
