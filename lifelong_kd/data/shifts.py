"""Named image corruptions at severities 1..5, applied to whole batches of tensors.

Distribution shift for robustness evaluation: :func:`corrupt` takes a float batch
``x`` of shape (B, C, H, W) with values in [0, 1] and returns a corrupted copy of the
same shape, dtype and device, again in [0, 1]. Randomness comes only from a
``torch.Generator`` seeded by ``seed`` (or passed in), so a call is deterministic.
Every corruption runs on the whole batch at once; per-sample random parameters (noise,
rotation direction, motion-blur angle, elastic displacement) are drawn as tensors.

Severity profiles
    Constants come from two published benchmarks and are picked per input by
    :func:`profile_for`: one channel selects ``"mnist"`` (MNIST-C, Mu & Gilmer 2019,
    28x28 gray; also used for Fashion-MNIST and the 8x8 scikit-learn digits), three
    channels select ``"cifar"`` (CIFAR-10-C, Hendrycks & Dietterich 2019, 32x32 RGB).
    Pass ``profile=`` to :func:`corrupt` to override. Constants given in pixels (blur
    sigma, disk radius, motion-blur length) are in pixels of the profile's reference size
    (28 or 32) and are multiplied by ``min(H, W) / reference`` so that an 8x8 digit is
    blurred like a 28x28 digit shrunk by 3.5 (so on 8x8 digits severity 1 of
    ``gaussian_blur`` and ``defocus_blur`` is sub-pixel, nearly the identity). Every
    convolution kernel is cut to an odd size no larger than the image.

Sources: CIFAR-10-C constants are those of ``make_cifar_c.py`` and MNIST-C constants are
those of ``corruptions.py`` in the authors' code (the released MNIST-C files fix one
severity per corruption; its code defines all five). Rotation for CIFAR and ``elastic``
for both profiles are our own choices, marked "ours".

CIFAR-10-C profile (``"cifar"``, reference size 32):

==============  ====================  ======================================================
corruption      constant              severity 1, 2, 3, 4, 5
==============  ====================  ======================================================
gaussian_noise  sigma                 .04 .06 .08 .09 .10
shot_noise      rate                  500 250 100 75 50
impulse_noise   amount                .01 .02 .03 .05 .07
speckle_noise   sigma                 .06 .10 .12 .16 .20
gaussian_blur   sigma (px)            .4 .6 .7 .8 1
defocus_blur    (radius, alias) (px)  (.3,.4) (.4,.5) (.5,.6) (1,.2) (1.5,.1)
motion_blur     (radius, sigma) (px)  (6,1) (6,1.5) (6,2) (8,2) (9,2.5)
zoom_blur       (max zoom, step)      (1.06,.01) (1.11,.01) (1.15,.01) (1.20,.01) (1.25,.01)
contrast        factor                .75 .5 .4 .3 .15
brightness      added to HSV value    .05 .10 .15 .20 .30
pixelate        scale                 .95 .90 .85 .75 .65
jpeg            quality               80 65 58 50 40
rotate (ours)   degrees               6 12 18 24 30
elastic (ours)  (rms, sigma) / side   (.02,.1) (.03,.1) (.04,.1) (.05,.1) (.06,.1)
==============  ====================  ======================================================

MNIST-C profile (``"mnist"``, reference size 28):

==============  ====================  ======================================================
corruption      constant              severity 1, 2, 3, 4, 5
==============  ====================  ======================================================
gaussian_noise  sigma                 .08 .12 .18 .26 .38
shot_noise      rate                  60 25 12 5 3
impulse_noise   amount                .03 .06 .09 .17 .27
speckle_noise   sigma                 .15 .20 .35 .45 .60
gaussian_blur   sigma (px)            1 2 3 4 6
defocus_blur    (radius, alias) (px)  (3,.1) (4,.5) (6,.5) (8,.5) (10,.5)
motion_blur     (radius, sigma) (px)  (10,3) (15,5) (15,8) (15,12) (20,15)
zoom_blur       (max zoom, step)      (1.11,.01) (1.15,.01) (1.20,.02) (1.24,.02) (1.30,.03)
contrast        factor                .4 .3 .2 .1 .05
brightness      added to HSV value    .1 .2 .3 .4 .5
pixelate        scale                 .60 .50 .40 .30 .25
jpeg            quality               25 18 15 10 7
rotate          degrees               11.46 22.92 34.38 45.84 57.30 (0.2, 0.4, .. 1.0 rad)
elastic (ours)  (rms, sigma) / side   (.02,.1) (.03,.1) (.04,.1) (.05,.1) (.06,.1)
==============  ====================  ======================================================

"(px)" marks constants in pixels at the reference size (scaled with the image);
"/ side" marks fractions of the image side.

How each corruption is computed, and where it departs from the original scripts:

- ``gaussian_noise``: ``x + sigma * N(0, 1)``. ``shot_noise``: ``Poisson(rate * x) / rate``.
  ``speckle_noise``: ``x + x * sigma * N(0, 1)``. ``impulse_noise``: each value (each
  channel separately, as in ``skimage.util.random_noise(mode="s&p")``) becomes 0 or 1
  with probability ``amount / 2`` each.
- ``gaussian_blur``: a Gaussian truncated at 4 sigma (``skimage.filters.gaussian``'s
  default) applied as two 1-D passes with reflected borders. Same result as
  ``torchvision.transforms.v2.functional.gaussian_blur`` but written as two small
  matrix products, because torchvision's 2-D convolution took 2.7 s per severity on
  10k MNIST images at MNIST-C's large sigmas.
- ``defocus_blur``: the benchmarks' anti-aliased disk kernel (a disk of the given radius,
  smoothed by a 3x3 Gaussian, 5x5 when the radius exceeds 8), reflected borders.
- ``motion_blur``: ImageMagick's one-sided motion blur as used by both benchmarks:
  ``2 * ceil(radius) + 1`` taps along a direction drawn uniformly in [-45, 45] degrees
  per image, Gaussian weights ``exp(-i^2 / (2 sigma^2))``. Taps are sampled bilinearly
  (ImageMagick rounds to whole pixels), taps lighter than 1e-3 of the first are dropped.
- ``zoom_blur``: mean of the image and its centre zooms by ``1, 1 + step, ..`` up to the
  max zoom (the values ``np.arange`` produced in the original scripts), bilinear.
  ``defocus_blur`` and ``zoom_blur`` on large batches of images up to 32x32 run as one
  dense (H*W, H*W) matrix product; that agrees with the direct path to float rounding
  (about 1e-7), so an image's result can differ in the last bits with the batch size.
- ``contrast``: ``torchvision``'s ``adjust_contrast``, a blend with the per-image mean.
  For RGB it blends with the mean of the grayscale image, where CIFAR-10-C uses
  per-channel means (a small colour difference); for one channel it is exact.
- ``brightness``: exactly the benchmarks' "add ``c`` to the HSV value channel": with H
  and S fixed, RGB is proportional to V, so each pixel is scaled by ``min(V + c, 1) / V``
  (gray ``c`` where V = 0). torchvision's ``adjust_brightness`` multiplies by a factor
  instead, which leaves black untouched, so it is not used.
- ``pixelate``: area-averaging down to ``int(size * scale)`` pixels, then nearest
  neighbour back up (PIL's BOX filter both ways, up to sub-pixel weights).
- ``jpeg``: ``torchvision.io.encode_jpeg`` / ``decode_jpeg`` (libjpeg) on the uint8
  image, like PIL's JPEG save in the original scripts.
- ``rotate``: ``torchvision``'s ``rotate`` (bilinear, black fill) by the angle of the
  severity, clockwise or counter-clockwise at random per image, as in MNIST-C.
- ``elastic`` (ours; both benchmarks' versions also add a random affine and are not
  monotone in severity): a displacement field of Gaussian noise smoothed with sigma
  ``0.1 * size``, rescaled to the given root-mean-square length, applied with
  ``grid_sample`` (bilinear, reflected borders). One field per image.
"""

import math
import warnings
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
import torch.nn.functional as nnf
from torch import Tensor

# torchvision is imported inside the three corruptions that use it: importing it loads
# torch._dynamo (about a second), which `import lifelong_kd` should not pay.

Level = float | tuple[float, ...]
"""One severity's constants: a number, or a tuple for multi-parameter corruptions."""

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
"""Valid severities, mildest first."""

PROFILES: tuple[str, ...] = ("mnist", "cifar")
"""Severity tables: MNIST-C (Mu & Gilmer 2019) and CIFAR-10-C (Hendrycks & Dietterich 2019)."""

REFERENCE_SIZE: Mapping[str, int] = MappingProxyType({"mnist": 28, "cifar": 32})
"""Image side, in pixels, at which each profile's pixel-valued constants were set."""

DEFAULT_SUITE: tuple[str, ...] = (
    "gaussian_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "pixelate",
    "jpeg",
    "rotate",
)
"""Fast representative subset: noise, blur, digital and geometric shifts. With
``benchmarks/shifts_speed.py``, all 5 severities on 10k MNIST test images took 2.6 s on
the 2-core reference CPU (9.4 s while other jobs loaded it about 3x); JPEG is the
largest share (1.5 s)."""

_TORCHVISION_CODEC_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"
"""Start of the DeprecationWarning torchvision 0.29 emits on every JPEG encode/decode."""

_DENSE_OPERATOR_PIXELS = 32 * 32
"""Largest H * W for which a non-separable linear corruption builds its dense matrix."""

_PIXEL_VALUED: frozenset[str] = frozenset({"gaussian_blur", "defocus_blur", "motion_blur"})
"""Corruptions whose constants are lengths in pixels at the profile's reference size."""

# CIFAR-10-C: Hendrycks & Dietterich 2019, "Benchmarking Neural Network Robustness to
# Common Corruptions and Perturbations", ICLR; constants of make_cifar_c.py.
_CIFAR10_C: Mapping[str, tuple[Level, ...]] = MappingProxyType(
    {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
        "motion_blur": ((6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)),
        "zoom_blur": ((1.06, 0.01), (1.11, 0.01), (1.15, 0.01), (1.20, 0.01), (1.25, 0.01)),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg": (80.0, 65.0, 58.0, 50.0, 40.0),
        # Ours (an assumption, not a published calibration): CIFAR-10-C has no
        # rotation; steps of 6 degrees up to 30, about half of MNIST-C's angles.
        "rotate": (6.0, 12.0, 18.0, 24.0, 30.0),
        # Ours: (rms displacement, smoothness sigma) as fractions of the image side.
        "elastic": ((0.02, 0.1), (0.03, 0.1), (0.04, 0.1), (0.05, 0.1), (0.06, 0.1)),
    }
)

# MNIST-C: Mu & Gilmer 2019, "MNIST-C: A Robustness Benchmark for Computer Vision",
# ICML workshop; constants of corruptions.py (google-research/mnist-c).
_MNIST_C: Mapping[str, tuple[Level, ...]] = MappingProxyType(
    {
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60.0, 25.0, 12.0, 5.0, 3.0),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1.0, 2.0, 3.0, 4.0, 6.0),
        "defocus_blur": ((3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)),
        "motion_blur": ((10.0, 3.0), (15.0, 5.0), (15.0, 8.0), (15.0, 12.0), (20.0, 15.0)),
        "zoom_blur": ((1.11, 0.01), (1.15, 0.01), (1.20, 0.02), (1.24, 0.02), (1.30, 0.03)),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg": (25.0, 18.0, 15.0, 10.0, 7.0),
        # MNIST-C rotates by 0.2, 0.4, .., 1.0 radians; stored here in degrees.
        "rotate": (11.459, 22.918, 34.377, 45.837, 57.296),
        "elastic": ((0.02, 0.1), (0.03, 0.1), (0.04, 0.1), (0.05, 0.1), (0.06, 0.1)),
    }
)


# --------------------------------------------------------------------------- helpers


def _largest_odd_at_most(size: int) -> int:
    """Returns the largest odd integer <= ``size`` (at least 1)."""
    return max(1, size if size % 2 == 1 else size - 1)


def _gaussian_kernel1d(sigma: float, max_size: int) -> Tensor:
    """Normalised 1-D Gaussian truncated at 4 sigma and cut to an odd size <= max_size.

    Args:
        sigma: Standard deviation in pixels (> 0).
        max_size: Largest allowed kernel length (the image side).

    Returns:
        Float64 tensor (K,) summing to 1, K odd.
    """
    half = int(4.0 * sigma + 0.5)
    size = min(2 * half + 1, _largest_odd_at_most(max_size))
    positions = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-(positions**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def _reflect(index: Tensor, size: int) -> Tensor:
    """Maps integer positions into [0, size) by mirror reflection without edge repeat."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _filter_matrix(kernel: Tensor, size: int) -> Tensor:
    """(size, size) matrix M such that ``signal @ M`` is the reflect-padded filtering.

    Args:
        kernel: 1-D odd-length kernel (K,), centred.
        size: Length of the signal.

    Returns:
        Float64 tensor (size, size); row = input position, column = output position.
    """
    half = (kernel.numel() - 1) // 2
    outputs = torch.arange(size).expand(kernel.numel(), size)
    offsets = torch.arange(-half, half + 1).unsqueeze(1)
    sources = _reflect(outputs + offsets, size)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    weights = kernel.unsqueeze(1).expand(-1, size)
    return matrix.index_put_((sources, outputs), weights, accumulate=True)


def _apply_separable(x: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """Applies a separable linear operator: ``rows.T @ x @ columns`` per image and channel.

    Args:
        x: Batch (B, C, H, W).
        rows: (H, H_out) operator along the height.
        columns: (W, W_out) operator along the width.

    Returns:
        Tensor (B, C, H_out, W_out) in x's dtype.
    """
    rows = rows.to(device=x.device, dtype=x.dtype)
    columns = columns.to(device=x.device, dtype=x.dtype)
    return torch.matmul(rows.t(), torch.matmul(x, columns))


def _gaussian_filter(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of a batch (B, C, H, W) with reflected borders (two 1-D passes)."""
    height, width = x.shape[-2:]
    rows = _filter_matrix(_gaussian_kernel1d(sigma, height), height)
    columns = _filter_matrix(_gaussian_kernel1d(sigma, width), width)
    return _apply_separable(x, rows, columns)


def _uniform(shape: tuple[int, ...], x: Tensor, generator: torch.Generator) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` on x's device and dtype."""
    return torch.rand(shape, generator=generator, device=x.device, dtype=x.dtype)


def _normal(shape: tuple[int, ...], x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal draws of ``shape`` on x's device and dtype."""
    return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)


def _identity_grid(x: Tensor) -> Tensor:
    """Sampling grid (B, H, W, 2) that reproduces x under ``grid_sample``."""
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).expand(x.shape[0], 2, 3)
    return nnf.affine_grid(theta, list(x.shape), align_corners=False)


def _apply_linear(x: Tensor, linear: Callable[[Tensor], Tensor]) -> Tensor:
    """Applies a linear map that treats every image and channel alike.

    On images of at most ``_DENSE_OPERATOR_PIXELS`` pixels, when the batch holds more
    images than a unit-image basis (so building the matrix costs less than it saves),
    the map is first turned into its (H*W, H*W) matrix by applying it to the unit
    images, then used as one large matrix product: for 10k CIFAR images this was 5x
    faster than a loop over 26 zooms, for 10k MNIST images 4x faster than a 25x25
    convolution.

    Args:
        x: Batch (B, C, H, W).
        linear: Maps (N, 1, H, W) to (N, 1, H, W), linearly, in the input's dtype.

    Returns:
        Tensor of x's shape and dtype.
    """
    height, width = x.shape[-2:]
    pixels = height * width
    flat = x.reshape(-1, 1, height, width)
    if pixels > _DENSE_OPERATOR_PIXELS or flat.shape[0] <= pixels:
        return linear(flat).reshape(x.shape)
    basis = torch.eye(pixels, dtype=x.dtype, device=x.device)
    operator = linear(basis.reshape(pixels, 1, height, width)).reshape(pixels, pixels)
    return (x.reshape(-1, pixels) @ operator).reshape(x.shape)


# ----------------------------------------------------------------------- corruptions


def _gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Additive Gaussian noise: ``x + sigma * N(0, 1)``."""
    return x + sigma * _normal(tuple(x.shape), x, generator)


def _shot_noise(x: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    """Poisson (photon) noise: ``Poisson(rate * x) / rate``; smaller rate is noisier."""
    return torch.poisson(x * rate, generator=generator) / rate


def _impulse_noise(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Salt and pepper: each value becomes 0 or 1 with probability amount / 2 each."""
    draws = _uniform(tuple(x.shape), x, generator)
    salted = torch.where(draws < amount, torch.ones_like(x), x)
    return torch.where(draws < amount / 2, torch.zeros_like(x), salted)


def _speckle_noise(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Multiplicative Gaussian noise: ``x + x * sigma * N(0, 1)``."""
    return x + x * sigma * _normal(tuple(x.shape), x, generator)


def _gaussian_blur(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (truncated at 4 sigma)."""
    return _gaussian_filter(x, sigma)


def _disk_kernel(radius: float, alias_sigma: float, max_size: int) -> Tensor:
    """Anti-aliased disk kernel of the CIFAR-10-C / MNIST-C ``disk()`` helper.

    Args:
        radius: Disk radius in pixels.
        alias_sigma: Sigma of the Gaussian that smooths the disk's edge.
        max_size: Largest allowed kernel side (the image side).

    Returns:
        Float64 tensor (K, K), K odd and <= max_size, summing to 1.
    """
    alias_half = 1 if radius <= 8 else 2
    half = math.ceil(radius) + alias_half
    positions = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = (positions.unsqueeze(1) ** 2 + positions.unsqueeze(0) ** 2 <= radius**2).double()
    alias_positions = torch.arange(-alias_half, alias_half + 1, dtype=torch.float64)
    alias = torch.exp(-(alias_positions**2) / (2 * alias_sigma**2))
    alias = torch.outer(alias, alias)
    kernel = nnf.conv2d(disk[None, None], alias[None, None], padding=alias_half)[0, 0]
    keep = min(half, _largest_odd_at_most(max_size) // 2)
    kernel = kernel[half - keep : half + keep + 1, half - keep : half + keep + 1]
    return kernel / kernel.sum()


def _defocus_blur(x: Tensor, level: Level, generator: torch.Generator) -> Tensor:
    """Convolution with an anti-aliased disk (out-of-focus lens), reflected borders."""
    radius, alias_sigma = level
    kernel = _disk_kernel(radius, alias_sigma, min(x.shape[-2:]))
    half = (kernel.shape[0] - 1) // 2

    def convolve(images: Tensor) -> Tensor:
        padded = nnf.pad(images, (half, half, half, half), mode="reflect") if half else images
        return nnf.conv2d(padded, kernel.to(device=images.device, dtype=images.dtype)[None, None])

    return _apply_linear(x, convolve)


def _motion_taps(radius: float, sigma: float) -> Tensor:
    """ImageMagick motion-blur weights for taps 0, 1, .. (negligible tail dropped)."""
    steps = torch.arange(2 * math.ceil(radius) + 1, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2.0 * sigma**2))
    weights = weights[weights >= 1e-3]
    return weights / weights.sum()


def _motion_blur(x: Tensor, level: Level, generator: torch.Generator) -> Tensor:
    """One-sided motion blur along a random direction in [-45, 45] degrees per image."""
    radius, sigma = level
    height, width = x.shape[-2:]
    angles = torch.deg2rad(_uniform((x.shape[0],), x, generator) * 90.0 - 45.0)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=x.device, dtype=x.dtype)
    step = torch.stack((torch.cos(angles), torch.sin(angles)), dim=1) * scale
    step = step[:, None, None, :]
    grid = _identity_grid(x)
    out = torch.zeros_like(x)
    for tap, weight in enumerate(_motion_taps(radius, sigma).tolist()):
        shifted = nnf.grid_sample(
            x, grid + tap * step, mode="bilinear", padding_mode="border", align_corners=False
        )
        out = out + weight * shifted
    return out


def _zoom_matrix(size: int, zoom: float) -> Tensor:
    """(size, size) bilinear centre-zoom operator (row: input, column: output position).

    Output pixel centre ``i + 0.5`` samples the input at ``c + (i + 0.5 - c) / zoom``
    with ``c = size / 2``, as ``grid_sample`` with ``align_corners=False`` would.
    """
    if size == 1:
        return torch.ones(1, 1, dtype=torch.float64)
    centre = size / 2
    outputs = torch.arange(size)
    positions = centre + (outputs + 0.5 - centre) / zoom - 0.5
    positions = positions.double().clamp(0.0, size - 1.0)
    low = positions.floor().long().clamp(max=size - 2)
    fraction = positions - low
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.index_put_((low, outputs), 1.0 - fraction, accumulate=True)
    return matrix.index_put_((low + 1, outputs), fraction, accumulate=True)


def _zoom_blur(x: Tensor, level: Level, generator: torch.Generator) -> Tensor:
    """Mean of the image and centre zooms 1, 1 + step, .. up to the max zoom."""
    max_zoom, step = level
    zooms = [1.0 + step * k for k in range(round((max_zoom - 1.0) / step) + 1)]
    height, width = x.shape[-2:]
    operators = [(_zoom_matrix(height, zoom), _zoom_matrix(width, zoom)) for zoom in zooms]

    def mean_of_zooms(images: Tensor) -> Tensor:
        zoomed = [_apply_separable(images, rows, columns) for rows, columns in operators]
        return (images + sum(zoomed)) / (len(zooms) + 1)

    return _apply_linear(x, mean_of_zooms)


def _contrast(x: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """Blend with the per-image mean: ``factor * x + (1 - factor) * mean``."""
    import torchvision.transforms.v2.functional as tvf

    return tvf.adjust_contrast(x, factor)


def _brightness(x: Tensor, amount: float, generator: torch.Generator) -> Tensor:
    """Adds ``amount`` to the HSV value channel (V = max over channels), clipped at 1."""
    value = x.amax(dim=1, keepdim=True)
    brighter = (value + amount).clamp(max=1.0)
    ratio = brighter / value.clamp(min=torch.finfo(x.dtype).tiny)
    return torch.where(value > 0, x * ratio, brighter.expand_as(x))


def _box_matrix(size: int, reduced: int) -> Tensor:
    """(size, reduced) area-averaging matrix: column j averages its share of the input."""
    edges = torch.arange(reduced + 1, dtype=torch.float64) * (size / reduced)
    starts = torch.arange(size, dtype=torch.float64).unsqueeze(1)
    overlap = torch.minimum(starts + 1, edges[1:]) - torch.maximum(starts, edges[:-1])
    overlap = overlap.clamp(min=0.0)
    return overlap / overlap.sum(dim=0, keepdim=True)


def _nearest_matrix(reduced: int, size: int) -> Tensor:
    """(reduced, size) nearest-neighbour upsampling matrix (pixel-centre aligned)."""
    sources = ((torch.arange(size) + 0.5) * reduced / size).floor().long()
    return nnf.one_hot(sources.clamp(max=reduced - 1), reduced).t().double()


def _pixelate_matrix(size: int, scale: float) -> Tensor:
    """(size, size) operator: box-downsample to ``int(size * scale)``, nearest back up."""
    reduced = max(1, int(size * scale))
    return _box_matrix(size, reduced) @ _nearest_matrix(reduced, size)


def _pixelate(x: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """Blocky resampling: shrink by ``scale`` with a box filter, enlarge by nearest."""
    height, width = x.shape[-2:]
    return _apply_separable(x, _pixelate_matrix(height, scale), _pixelate_matrix(width, scale))


def _jpeg(x: Tensor, quality: float, generator: torch.Generator) -> Tensor:
    """Round trip through libjpeg at ``quality`` (1..100) on the uint8 image."""
    import torchvision.io as tvio

    images = (x * 255.0).round().clamp(0, 255).to(torch.uint8).cpu()
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec (not a
        # dependency); they still work in the tested releases (README, Quickstart).
        warnings.filterwarnings("ignore", _TORCHVISION_CODEC_DEPRECATION, DeprecationWarning)
        encoded = tvio.encode_jpeg(list(images), quality=int(quality))
        decoded = torch.stack(tvio.decode_jpeg(encoded))
    return decoded.to(device=x.device, dtype=x.dtype) / 255.0


def _rotate(x: Tensor, degrees: float, generator: torch.Generator) -> Tensor:
    """Rotation by ``degrees`` about the centre, direction random per image, black fill."""
    import torchvision.transforms.v2.functional as tvf

    clockwise = _uniform((x.shape[0],), x, generator) < 0.5
    mode = tvf.InterpolationMode.BILINEAR
    left = tvf.rotate(x, degrees, interpolation=mode)
    right = tvf.rotate(x, -degrees, interpolation=mode)
    return torch.where(clockwise[:, None, None, None], right, left)


def _elastic(x: Tensor, level: Level, generator: torch.Generator) -> Tensor:
    """Smooth random displacement field per image (rubber-sheet warp), bilinear."""
    rms_fraction, sigma_fraction = level
    batch, _, height, width = x.shape
    side = min(height, width)
    noise = _normal((batch, 2, height, width), x, generator)
    noise = _gaussian_filter(noise, sigma_fraction * side)
    rms = noise.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
    pixels = noise / rms * (rms_fraction * side)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=x.device, dtype=x.dtype)
    grid = _identity_grid(x) + pixels.permute(0, 2, 3, 1) * scale
    return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


Corruption = Callable[[Tensor, Level, torch.Generator], Tensor]
"""A corruption: (batch (B, C, H, W), one severity's constants, generator) -> batch."""

_CORRUPTIONS: Mapping[str, Corruption] = MappingProxyType(
    {
        "gaussian_noise": _gaussian_noise,
        "shot_noise": _shot_noise,
        "impulse_noise": _impulse_noise,
        "speckle_noise": _speckle_noise,
        "gaussian_blur": _gaussian_blur,
        "defocus_blur": _defocus_blur,
        "motion_blur": _motion_blur,
        "zoom_blur": _zoom_blur,
        "contrast": _contrast,
        "brightness": _brightness,
        "pixelate": _pixelate,
        "jpeg": _jpeg,
        "rotate": _rotate,
        "elastic": _elastic,
    }
)


# ------------------------------------------------------------------------ public API


def corruption_names() -> tuple[str, ...]:
    """Returns the names accepted by :func:`corrupt`, in a fixed order."""
    return tuple(_CORRUPTIONS)


def severity_table(profile: str) -> Mapping[str, tuple[Level, ...]]:
    """Returns a profile's constants: name -> five severities' constants (read-only).

    Args:
        profile: ``"mnist"`` (MNIST-C) or ``"cifar"`` (CIFAR-10-C).

    Raises:
        ValueError: If ``profile`` is not one of :data:`PROFILES`.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    return _MNIST_C if profile == "mnist" else _CIFAR10_C


def profile_for(x: Tensor) -> str:
    """Picks the severity profile for a batch (B, C, H, W): one channel -> "mnist", else "cifar"."""
    return "mnist" if x.shape[1] == 1 else "cifar"


def _check_name(name: str) -> None:
    """Raises ValueError naming the valid corruptions unless ``name`` is one of them."""
    if name not in _CORRUPTIONS:
        raise ValueError(
            f"unknown corruption {name!r}; valid names: {', '.join(corruption_names())}"
        )


def _check_severity(severity: int) -> None:
    """Raises ValueError unless ``severity`` is an integer in 1..5."""
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(
            f"severity must be an integer in 1..5 (valid: {', '.join(map(str, SEVERITIES))}), "
            f"got {severity!r}"
        )


def _check_batch(x: Tensor) -> None:
    """Raises ValueError unless x is a floating (B, C, H, W) tensor with 1 or 3 channels."""
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(
            f"x must have shape (B, C, H, W) with C in (1, 3), got {tuple(x.shape)}; "
            "add a batch dimension with unsqueeze(0)."
        )
    if not x.is_floating_point():
        raise ValueError(
            f"x must be a float tensor with values in [0, 1], got {x.dtype}; "
            "convert uint8 images with x.float() / 255."
        )


def severity_level(name: str, severity: int, x: Tensor, profile: str = "auto") -> Level:
    """Returns the constants used for ``name`` at ``severity`` on batches shaped like ``x``.

    Pixel-valued constants are scaled by ``min(H, W) / REFERENCE_SIZE[profile]``.

    Args:
        name: A corruption name from :func:`corruption_names`.
        severity: 1 (mildest) to 5.
        x: A batch (B, C, H, W); only its shape is used.
        profile: ``"auto"`` (:func:`profile_for`), ``"mnist"`` or ``"cifar"``.

    Raises:
        ValueError: On an unknown name, profile or a severity outside 1..5.
    """
    _check_name(name)
    _check_severity(severity)
    chosen = profile_for(x) if profile == "auto" else profile
    level = severity_table(chosen)[name][severity - 1]
    if name not in _PIXEL_VALUED:
        return level
    scale = min(x.shape[-2:]) / REFERENCE_SIZE[chosen]
    return tuple(value * scale for value in level) if isinstance(level, tuple) else level * scale


def corrupt(
    x: Tensor,
    name: str,
    severity: int,
    seed: int = 0,
    *,
    profile: str = "auto",
    generator: torch.Generator | None = None,
) -> Tensor:
    """Applies corruption ``name`` at ``severity`` to every image of a batch.

    Args:
        x: Float batch (B, C, H, W), C in (1, 3), values in [0, 1]. Not modified.
        name: One of :func:`corruption_names` (see the module docstring's table).
        severity: 1 (mildest) to 5 (strongest).
        seed: Seeds a fresh ``torch.Generator`` on x's device; ignored if ``generator``
            is given. Same seed, same output.
        profile: ``"auto"`` picks constants by channel count (:func:`profile_for`);
            ``"mnist"`` or ``"cifar"`` forces MNIST-C or CIFAR-10-C constants.
        generator: Optional generator on x's device to draw from instead of ``seed``.

    Returns:
        Tensor of x's shape, dtype and device, values in [0, 1].

    Raises:
        ValueError: On an unknown name or profile, a severity outside 1..5, or a batch
            that is not a float (B, C, H, W) tensor with 1 or 3 channels.
    """
    _check_batch(x)
    level = severity_level(name, severity, x, profile)
    if x.numel() == 0:
        return x.clone()
    if generator is None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        out = _CORRUPTIONS[name](x, level, generator)
    return out.clamp(0.0, 1.0).to(x.dtype)


def parse_shifts(spec: str) -> tuple[str, ...]:
    """Parses a command-line list of corruptions.

    Args:
        spec: ``"default"`` (:data:`DEFAULT_SUITE`), ``"all"`` (every corruption),
            ``"none"`` or ``""`` (no shift), or comma-separated names such as
            ``"gaussian_noise,rotate"`` (duplicates are dropped, order kept).

    Returns:
        Tuple of validated corruption names.

    Raises:
        ValueError: On an unknown or empty name, listing the valid ones.
    """
    keyword = spec.strip().lower()
    if keyword == "default":
        return DEFAULT_SUITE
    if keyword == "all":
        return corruption_names()
    if keyword in ("none", ""):
        return ()
    names = tuple(part.strip() for part in spec.split(","))
    for name in names:
        _check_name(name)
    return tuple(dict.fromkeys(names))
