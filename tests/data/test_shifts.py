"""Tests for lifelong_kd.data.shifts: named corruptions at severities 1..5."""

import pytest
import torch
import torchvision.transforms.v2.functional as tvf

from lifelong_kd.data import shifts
from lifelong_kd.data.shifts import (
    DEFAULT_SUITE,
    SEVERITIES,
    _disk_kernel,
    _gaussian_kernel1d,
    corrupt,
    corruption_names,
    parse_shifts,
    profile_for,
    severity_level,
    severity_table,
)

NAMES = corruption_names()
SHAPES = ((4, 1, 28, 28), (4, 3, 32, 32), (4, 1, 8, 8))
RANDOM_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "motion_blur",
    "rotate",
    "elastic",
)
SPATIAL_AVERAGES = ("gaussian_blur", "defocus_blur", "motion_blur", "zoom_blur", "pixelate")


def smooth_blobs(batch: int, channels: int, size: int, seed: int = 1) -> torch.Tensor:
    """Natural-looking test images: sums of random Gaussian blobs, each scaled to [0, 1].

    Every image reaches exactly 0 and 1, so clipping bugs show up.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    rows, columns = grid.view(size, 1), grid.view(1, size)
    images = torch.zeros(batch, channels, size, size)
    for _ in range(6):
        draws = torch.rand(4, batch, channels, 1, 1, generator=generator)
        centre_row, centre_column, width, weight = draws
        width = (0.08 + 0.2 * width) * size
        distance = (rows - centre_row * size) ** 2 + (columns - centre_column * size) ** 2
        images += weight * torch.exp(-distance / (2 * width**2))
    images -= images.amin(dim=(2, 3), keepdim=True)
    return images / images.amax(dim=(2, 3), keepdim=True)


def mean_abs_change(name: str, severity: int, clean: torch.Tensor) -> float:
    """Mean absolute difference between the corrupted and the clean batch."""
    return (corrupt(clean, name, severity, seed=0) - clean).abs().mean().item()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape[1:])))
@pytest.mark.parametrize("severity", (1, 5))
@pytest.mark.parametrize("name", NAMES)
def test_every_corruption_keeps_shape_dtype_and_unit_range(name, severity, shape):
    clean = smooth_blobs(shape[0], shape[1], shape[2])
    corrupted = corrupt(clean, name, severity, seed=3)
    assert corrupted.shape == clean.shape
    assert corrupted.dtype == torch.float32
    assert corrupted.min() >= 0.0 and corrupted.max() <= 1.0
    assert torch.isfinite(corrupted).all()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_gives_identical_output_and_input_is_untouched(name):
    clean = smooth_blobs(3, 3, 32)
    copy = clean.clone()
    first = corrupt(clean, name, 3, seed=11)
    second = corrupt(clean, name, 3, seed=11)
    assert torch.equal(first, second)
    assert torch.equal(clean, copy)


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_different_seed_gives_different_output_for_random_corruptions(name):
    clean = smooth_blobs(16, 1, 28)
    assert not torch.equal(corrupt(clean, name, 3, seed=0), corrupt(clean, name, 3, seed=1))


@pytest.mark.parametrize("name", sorted(set(NAMES) - set(RANDOM_NAMES)))
def test_deterministic_corruptions_do_not_depend_on_seed(name):
    clean = smooth_blobs(3, 3, 32)
    assert torch.equal(corrupt(clean, name, 4, seed=0), corrupt(clean, name, 4, seed=99))


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_generator_argument_matches_the_same_seed(name):
    clean = smooth_blobs(4, 1, 28)
    generator = torch.Generator().manual_seed(5)
    from_generator = corrupt(clean, name, 2, generator=generator)
    assert torch.equal(from_generator, corrupt(clean, name, 2, seed=5))


@pytest.mark.parametrize("shape", SHAPES[:2], ids=("gray28", "rgb32"))
@pytest.mark.parametrize("name", NAMES)
def test_distance_from_clean_grows_with_severity(name, shape):
    clean = smooth_blobs(8, shape[1], shape[2])
    changes = [mean_abs_change(name, severity, clean) for severity in SEVERITIES]
    assert changes[-1] > changes[0], changes
    for milder, stronger in zip(changes, changes[1:]):
        assert stronger >= milder - 1e-3, changes


@pytest.mark.parametrize("name", NAMES)
def test_severity_five_changes_tiny_digits_more_than_severity_one(name):
    clean = smooth_blobs(8, 1, 8)
    assert mean_abs_change(name, 5, clean) > mean_abs_change(name, 1, clean)


@pytest.mark.parametrize("name", SPATIAL_AVERAGES + ("elastic",))
def test_blurs_and_resampling_keep_a_constant_image_constant(name):
    constant = torch.full((2, 3, 32, 32), 0.37)
    assert torch.allclose(corrupt(constant, name, 5), constant, atol=1e-5)


@pytest.mark.parametrize("name", ("defocus_blur", "zoom_blur"))
def test_dense_operator_path_matches_direct_path(name, monkeypatch):
    clean = smooth_blobs(30, 3, 16)  # 90 channel images > 16 * 16 pixels: dense path
    dense = corrupt(clean, name, 5)
    monkeypatch.setattr(shifts, "_DENSE_OPERATOR_PIXELS", 0)  # as for large images
    assert torch.allclose(corrupt(clean, name, 5), dense, atol=1e-5)


def test_gaussian_blur_matches_torchvision():
    clean = smooth_blobs(4, 1, 28)
    expected = tvf.gaussian_blur(clean, kernel_size=[9, 9], sigma=[1.0, 1.0])  # MNIST-C sev 1
    assert torch.allclose(corrupt(clean, "gaussian_blur", 1), expected, atol=1e-5)


def test_gaussian_noise_has_the_tabulated_standard_deviation():
    gray = torch.full((64, 3, 32, 32), 0.5)
    noise = corrupt(gray, "gaussian_noise", 1) - gray  # CIFAR-10-C sigma 0.04: never clipped
    assert noise.mean().abs() < 2e-3
    assert abs(noise.std().item() - 0.04) < 1e-3


def test_impulse_noise_sets_the_tabulated_fraction_to_black_or_white():
    gray = torch.full((64, 1, 28, 28), 0.5)
    corrupted = corrupt(gray, "impulse_noise", 5)  # MNIST-C amount 0.27
    black, white = (corrupted == 0).float().mean(), (corrupted == 1).float().mean()
    assert abs(black.item() - 0.135) < 0.01 and abs(white.item() - 0.135) < 0.01
    assert torch.all((corrupted == 0) | (corrupted == 1) | (corrupted == 0.5))


def test_grayscale_brightness_adds_the_constant_and_clips():
    clean = smooth_blobs(2, 1, 28)
    assert torch.allclose(corrupt(clean, "brightness", 3), (clean + 0.3).clamp(max=1.0))


def test_rgb_brightness_raises_hsv_value_and_keeps_hue_and_saturation():
    pixels = torch.tensor([[0.2, 0.1, 0.0], [0.0, 0.0, 0.0], [0.6, 0.3, 0.9]])
    x = pixels.t().reshape(1, 3, 1, 3)
    corrupted = corrupt(x, "brightness", 5).reshape(3, 3).t()  # CIFAR-10-C: V + 0.3
    expected = torch.tensor([[0.5, 0.25, 0.0], [0.3, 0.3, 0.3], [0.6, 0.3, 0.9]])
    expected[2] = pixels[2] / 0.9  # V would pass 1: clipped at 1, ratios kept
    assert torch.allclose(corrupted, expected, atol=1e-6)


def test_contrast_blends_with_the_image_mean():
    clean = smooth_blobs(3, 1, 28)
    mean = clean.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(corrupt(clean, "contrast", 1), 0.4 * clean + 0.6 * mean, atol=1e-6)


def test_pixelate_makes_constant_blocks_holding_the_block_mean():
    clean = smooth_blobs(2, 1, 28)
    corrupted = corrupt(clean, "pixelate", 2)  # MNIST-C scale 0.5: 28 -> 14 -> 28
    block_means = torch.nn.functional.avg_pool2d(clean, 2)
    expected = block_means.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert torch.allclose(corrupted, expected, atol=1e-6)


@pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning")
def test_jpeg_matches_torchvision_jpeg_on_uint8():
    clean = smooth_blobs(3, 3, 32)
    as_uint8 = (clean * 255).round().to(torch.uint8)
    expected = tvf.jpeg(as_uint8, quality=40).float() / 255  # CIFAR-10-C severity 5
    assert torch.allclose(corrupt(clean, "jpeg", 5), expected)


def test_rotate_turns_each_image_by_the_tabulated_angle_either_way():
    clean = smooth_blobs(16, 1, 28)
    corrupted = corrupt(clean, "rotate", 1)
    mode = tvf.InterpolationMode.BILINEAR
    left = tvf.rotate(clean, 11.459, interpolation=mode)
    right = tvf.rotate(clean, -11.459, interpolation=mode)
    is_left = torch.isclose(corrupted, left, atol=1e-6).flatten(1).all(dim=1)
    is_right = torch.isclose(corrupted, right, atol=1e-6).flatten(1).all(dim=1)
    assert torch.all(is_left | is_right) and is_left.any() and is_right.any()


@pytest.mark.parametrize("image_size", (8, 9, 28))
def test_kernels_are_odd_and_fit_the_image(image_size):
    gaussian = _gaussian_kernel1d(sigma=6.0, max_size=image_size)
    disk = _disk_kernel(radius=10.0, alias_sigma=0.5, max_size=image_size)
    for length in (gaussian.numel(), disk.shape[0], disk.shape[1]):
        assert length % 2 == 1 and length <= image_size
    assert torch.isclose(gaussian.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.isclose(disk.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_pixel_constants_scale_with_image_size_and_others_do_not():
    digits, mnist = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 28, 28)
    assert severity_level("gaussian_blur", 5, mnist) == 6.0
    assert severity_level("gaussian_blur", 5, digits) == pytest.approx(6.0 * 8 / 28)
    assert severity_level("defocus_blur", 5, digits) == pytest.approx((10 * 8 / 28, 0.5 * 8 / 28))
    assert severity_level("pixelate", 5, digits) == severity_level("pixelate", 5, mnist) == 0.25


def test_profile_follows_channel_count_and_can_be_forced():
    gray, rgb = smooth_blobs(2, 1, 28), smooth_blobs(2, 3, 32)
    assert (profile_for(gray), profile_for(rgb)) == ("mnist", "cifar")
    assert severity_level("jpeg", 1, gray) == 25 and severity_level("jpeg", 1, rgb) == 80
    forced = corrupt(gray, "contrast", 1, profile="cifar")
    assert torch.allclose(forced, tvf.adjust_contrast(gray, 0.75))


def test_tables_have_five_severities_for_every_corruption():
    for profile in ("mnist", "cifar"):
        table = severity_table(profile)
        assert set(table) == set(NAMES)
        assert all(len(levels) == 5 for levels in table.values())


def test_unknown_name_raises_and_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: gaussian_noise, .*rotate"):
        corrupt(smooth_blobs(1, 1, 8), "snow", 1)


@pytest.mark.parametrize("severity", (0, 6, -1, 2.0, True))
def test_severity_outside_one_to_five_raises(severity):
    with pytest.raises(ValueError, match=r"1\.\.5"):
        corrupt(smooth_blobs(1, 1, 8), "contrast", severity)


def test_unknown_profile_raises_and_lists_valid_profiles():
    with pytest.raises(ValueError, match="valid profiles: mnist, cifar"):
        corrupt(smooth_blobs(1, 1, 8), "contrast", 1, profile="imagenet")


@pytest.mark.parametrize(
    "bad_batch",
    (torch.zeros(1, 28, 28), torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8, dtype=torch.uint8)),
    ids=("no_batch_dim", "two_channels", "uint8"),
)
def test_malformed_batch_raises(bad_batch):
    with pytest.raises(ValueError, match="x must"):
        corrupt(bad_batch, "contrast", 1)


def test_empty_batch_is_returned_unchanged():
    empty = torch.zeros(0, 1, 28, 28)
    assert corrupt(empty, "jpeg", 3).shape == empty.shape


def test_parse_shifts_keywords():
    assert parse_shifts("default") == DEFAULT_SUITE
    assert parse_shifts(" ALL ") == NAMES
    assert parse_shifts("none") == () and parse_shifts("") == ()


def test_parse_shifts_validates_names_and_keeps_order_without_duplicates():
    assert parse_shifts("rotate, gaussian_noise,rotate") == ("rotate", "gaussian_noise")
    with pytest.raises(ValueError, match="unknown corruption 'fog'; valid names: "):
        parse_shifts("rotate,fog")
    with pytest.raises(ValueError, match="unknown corruption ''"):
        parse_shifts("rotate,,contrast")


def test_default_suite_is_a_subset_of_the_corruptions():
    assert set(DEFAULT_SUITE) <= set(NAMES) and len(DEFAULT_SUITE) == len(set(DEFAULT_SUITE))
