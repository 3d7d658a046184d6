"""Raw data sources: load whole data sets into memory as tensors.

Every loader returns ``(train, test)`` as :class:`~lifelong_kd.data.stream.Split` with
``uint8`` images (N, C, H, W) and int64 labels. Real data sets come from a torchvision
root (``--data-root``), are downloaded by torchvision when ``download=True`` and the
network allows, and CIFAR-10 can also be read from an image-folder tree or a ``.tar.gz``
of one (``train/<class>/*.jpg``, ``test/<class>/*.jpg``). The default stream needs no
download at all: scikit-learn ships the 8x8 digits.
"""

from __future__ import annotations

import hashlib
import math
import os
import tarfile
from pathlib import Path

import torch
from torch import Tensor

from lifelong_kd.data.stream import Split
from lifelong_kd.files import save_torch_atomic

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class DataNotFoundError(FileNotFoundError):
    """A data set is not where we looked; the message says where and how to fix it."""


class DataDamagedError(ValueError):
    """A data file is there but cannot be read; the message names it and says how to fix it."""


# Element type code of an idx file (the MNIST format) -> bytes per element (LeCun et al.'s idx spec).
IDX_ELEMENT_BYTES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def default_data_root() -> Path:
    """``$LIFELONG_KD_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("LIFELONG_KD_DATA", "data"))


def cache_dir() -> Path:
    """Where decoded image archives are cached (``$XDG_CACHE_HOME/lifelong_kd``)."""
    base = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    return Path(base) / "lifelong_kd"


def load_digits(test_fraction: float = 0.3, seed: int = 0) -> tuple[Split, Split]:
    """scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), no download.

    Pixel values 0..16 are scaled to 0..255 ``uint8``. The train/test split is
    stratified and fixed by ``seed``.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = torch.from_numpy(bunch.images).mul(255.0 / 16.0).round().clamp(0, 255).to(torch.uint8)
    labels = torch.from_numpy(bunch.target).long()
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    train_idx, test_idx = torch.tensor(sorted(train_idx)), torch.tensor(sorted(test_idx))
    images = images.unsqueeze(1)
    return Split(images[train_idx], labels[train_idx]), Split(images[test_idx], labels[test_idx])


def _torchvision_split(dataset_cls: type, root: Path, train: bool, download: bool) -> Split:
    dataset = dataset_cls(root=str(root), train=train, download=download)
    data = dataset.data
    images = torch.as_tensor(data)
    if images.ndim == 3:
        images = images.unsqueeze(1)
    else:  # CIFAR stores (N, H, W, C) numpy arrays
        images = images.permute(0, 3, 1, 2).contiguous()
    return Split(images.to(torch.uint8), torch.as_tensor(dataset.targets, dtype=torch.long))


def load_torchvision(name: str, root: str | Path, download: bool = False) -> tuple[Split, Split]:
    """Load ``MNIST``, ``FashionMNIST``, ``CIFAR10`` or ``CIFAR100`` from a torchvision root.

    Raises:
        DataNotFoundError: The files are not under ``root`` and ``download`` is off (or failed).
        DataDamagedError: The files are there but cannot be read (a damaged idx header, a truncated file).
    """
    import torchvision.datasets as tvd

    dataset_cls = getattr(tvd, name)
    root = Path(root)
    try:
        return _torchvision_split(dataset_cls, root, True, download), _torchvision_split(dataset_cls, root, False, download)
    except (AssertionError, KeyError, IndexError, ValueError, RuntimeError, OSError) as error:
        # torchvision's idx reader asserts on a bad header and fails to reshape a truncated file
        damaged = _damaged(name, root, error)
        if damaged is not None:
            raise damaged from None
        hint = "check your network connection" if download else "pass --download to fetch it"
        raise DataNotFoundError(
            f"{name} not found under {root.resolve()} (torchvision layout, e.g. {root / name / 'raw'}). "
            f"Point --data-root at the folder that holds it, or {hint}. ({error})"
        ) from error


def idx_problem(path: Path) -> str | None:
    """What is wrong with an idx file (MNIST's format: ``00 00 <type> <dims>``, big-endian sizes, data), or None."""
    with path.open("rb") as handle:
        header = handle.read(4)
        if len(header) < 4 or header[:2] != b"\0\0" or header[2] not in IDX_ELEMENT_BYTES or not 1 <= header[3] <= 3:
            return f"its header {header.hex(' ')!r} is not an idx header (00 00 <type> <1-3 dimensions>)"
        sizes = [int.from_bytes(handle.read(4), "big") for _ in range(header[3])]
    expected = 4 + 4 * len(sizes) + IDX_ELEMENT_BYTES[header[2]] * math.prod(sizes)
    actual = path.stat().st_size
    return None if actual == expected else f"it has {actual:,} bytes where its header announces {expected:,} (truncated or damaged)"


def _damaged(name: str, root: Path, error: BaseException) -> DataDamagedError | None:
    """The error for a torchvision data set whose files exist but cannot be read (naming the damaged idx
    files), or None when ``error`` means the files are missing."""
    raw = root / name / "raw"
    problems = [(path, idx_problem(path)) for path in sorted(raw.glob("*-ubyte")) if path.is_file()]
    named = "; ".join(f"{path} is damaged: {problem}" for path, problem in problems if problem)
    if not named and isinstance(error, (RuntimeError, OSError)):
        return None
    where = named or f"the {name} files under {raw} cannot be read ({type(error).__name__}: {error})"
    return DataDamagedError(
        f"{where}. Delete the damaged file(s) and fetch {name} again (--download, or copy the files from a good source), "
        "or point --data-root at an intact copy."
    )


def _decode_images(blobs: list[bytes]) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image

    tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
    return torch.stack([decode_image(t, mode=ImageReadMode.RGB) for t in tensors])


def _collect_members(entries: list[tuple[str, bytes]]) -> tuple[Split, Split]:
    """Group (path, bytes) pairs of ``<split>/<class>/<file>`` into train/test splits."""
    parts: dict[str, list[tuple[str, str, bytes]]] = {"train": [], "test": []}
    for path, blob in entries:
        pieces = Path(path).parts
        if len(pieces) >= 3 and pieces[-3] in parts and path.lower().endswith(IMAGE_SUFFIXES):
            parts[pieces[-3]].append((pieces[-2], pieces[-1], blob))
    classes = sorted({cls for items in parts.values() for cls, _, _ in items})
    if not parts["train"] or not parts["test"]:
        raise DataNotFoundError("image tree has no train/<class>/*.jpg and test/<class>/*.jpg files")
    splits = []
    for name in ("train", "test"):
        items = sorted(parts[name], key=lambda item: (item[0], item[1]))
        labels = torch.tensor([classes.index(cls) for cls, _, _ in items], dtype=torch.long)
        splits.append(Split(_decode_images([blob for _, _, blob in items]), labels))
    return splits[0], splits[1]


def _read_tree(folder: Path) -> list[tuple[str, bytes]]:
    return [(str(p.relative_to(folder)), p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()]


def _read_tar(archive: Path) -> list[tuple[str, bytes]]:
    entries = []
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                if handle is not None:
                    entries.append((member.name, handle.read()))
    return entries


def load_image_tree(path: str | Path, use_cache: bool = True) -> tuple[Split, Split]:
    """Load an image-folder tree or a ``.tar.gz`` of one into uint8 tensors.

    Class ids follow the sorted class-folder names (for CIFAR-10 this is the
    canonical label order). Decoded tensors are cached under :func:`cache_dir`,
    keyed by the source's path, size and modification time.
    """
    path = Path(path)
    key = hashlib.sha1(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    cached = cache_dir() / f"images-{key}.pt"
    if use_cache and cached.exists():
        state = torch.load(cached, weights_only=True)
        return Split(state["train_x"], state["train_y"]), Split(state["test_x"], state["test_y"])
    entries = _read_tar(path) if path.is_file() else _read_tree(path)
    train, test = _collect_members(entries)
    if use_cache:
        save_torch_atomic({"train_x": train.x, "train_y": train.y, "test_x": test.x, "test_y": test.y}, cached)
    return train, test


def cifar10_candidates(root: Path) -> list[Path]:
    """Places searched for an image-folder copy of CIFAR-10 under ``root``."""
    return [
        root / "cifar10-jpeg" / "cifar10-jpeg.tar.gz",
        root / "cifar10-jpeg",
        root / "cifar10.tar.gz",
        root / "cifar10",
        root,
    ]


def load_cifar10(root: str | Path, download: bool = False) -> tuple[Split, Split]:
    """CIFAR-10 from a torchvision root, an image-folder tree, or a ``.tar.gz`` of one.

    ``root`` may itself be the archive or the tree. Order tried: torchvision's
    ``cifar-10-batches-py`` under ``root``, then :func:`cifar10_candidates`, then a
    torchvision download when ``download`` is set.
    """
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        return load_torchvision("CIFAR10", root)
    if root.is_file():
        return load_image_tree(root)
    for candidate in cifar10_candidates(root):
        is_tree = candidate.is_dir() and (candidate / "train").is_dir() and (candidate / "test").is_dir()
        if (candidate.is_file() and candidate.name.endswith((".tar.gz", ".tgz", ".tar"))) or is_tree:
            return load_image_tree(candidate)
    if download:
        return load_torchvision("CIFAR10", root, download=True)
    searched = ", ".join(str(p) for p in [root / "cifar-10-batches-py", *cifar10_candidates(root)])
    raise DataNotFoundError(
        f"CIFAR-10 not found; searched {searched}. Point --data-root at a torchvision root or at an "
        "image tree / .tar.gz with train/<class>/*.jpg and test/<class>/*.jpg, or pass --download."
    )
