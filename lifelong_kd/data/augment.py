"""Random augmentation of whole batches, each sample with its own random draw."""

from __future__ import annotations

import torch
from torch import Tensor


def random_crop_flip(x: Tensor, generator: torch.Generator, padding: int = 4, flip: bool = True) -> Tensor:
    """Random crop after zero padding, and random horizontal flip, per sample.

    The standard CIFAR augmentation (He et al. 2016), vectorised over the batch:
    torchvision's transforms draw one set of parameters per call, which would give
    every sample of a batch the same crop.

    Args:
        x: Batch (B, C, H, W), any dtype.
        generator: Source of randomness (keeps runs reproducible).
        padding: Zero padding on each side before cropping back to (H, W).
        flip: Also flip each sample horizontally with probability 1/2.

    Returns:
        Tensor of the same shape and dtype.
    """
    batch, channels, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch,), generator=generator)
    rows = (dy[:, None] + torch.arange(height))[:, None, :, None]
    cols = dx[:, None] + torch.arange(width)
    if flip:
        flipped = torch.rand(batch, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]
    samples = torch.arange(batch)[:, None, None, None]
    return padded[samples, torch.arange(channels)[None, :, None, None], rows, cols]
