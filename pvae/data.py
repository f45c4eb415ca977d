"""Image datasets as single tensors on the training device, with their binarizations.

MNIST, Fashion-MNIST and KMNIST are read through torchvision's dataset classes, which download the
files when they are absent (and the network is up). The data directory is, in order: the
``data_dir`` argument (``--data-dir``), ``$PVAE_DATA_DIR``, ``$XDG_CACHE_HOME/pvae/data`` (by default
``~/.cache/pvae/data``); torchvision keeps each set under ``<data_dir>/<ClassName>/raw/``.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "BINARIZATIONS",
    "DataNotFoundError",
    "ImageData",
    "resolve_data_dir",
    "load_images",
    "load_data",
    "binarize",
]

# name -> torchvision.datasets class name (torchvision is imported only when data is loaded: it is slow to import)
DATASETS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
Binarization = Literal["dynamic", "static", "none"]
BINARIZATIONS: tuple[str, ...] = ("dynamic", "static", "none")
# Debian's dataset-fashion-mnist package installs the gzipped IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
# Evaluation sets are binarized once with this seed, whatever the run's seed, so that numbers from
# different runs are measured on the very same binary images.
EVAL_BINARIZATION_SEED = 0


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are absent and could not be downloaded."""


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$PVAE_DATA_DIR``, else the user's cache directory."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if env := os.environ.get("PVAE_DATA_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pvae" / "data"


def _read_idx(path: Path) -> Tensor:
    """Read a (possibly gzipped) IDX file of unsigned bytes into a uint8 tensor of its shape."""
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    if data.numel() != torch.Size(dims).numel():
        raise ValueError(f"{path} is truncated: expected {dims} bytes of pixels, got {data.numel()}")
    return data.reshape(dims)


def load_images(name: str, data_dir: str | os.PathLike[str] | None = None, *, train: bool) -> tuple[Tensor, Tensor]:
    """One split of a dataset as tensors.

    :param name: a key of :data:`DATASETS`.
    :param train: the training split (True) or the test split (False).
    :returns: ``images`` uint8 ``(N, H, W)`` and ``labels`` int64 ``(N,)``.
    :raises DataNotFoundError: when the files are absent and the download fails.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    from torchvision import datasets

    cls = getattr(datasets, DATASETS[name])
    root = resolve_data_dir(data_dir)
    split = "train" if train else "t10k"
    if name == "fashion-mnist" and not (root / cls.__name__ / "raw").is_dir() and DEBIAN_FASHION_MNIST.is_dir():
        images = _read_idx(DEBIAN_FASHION_MNIST / f"{split}-images-idx3-ubyte.gz")
        labels = _read_idx(DEBIAN_FASHION_MNIST / f"{split}-labels-idx1-ubyte.gz")
        return images, labels.long()
    try:
        ds = cls(root=str(root), train=train, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError
        raise DataNotFoundError(
            f"{name} was not found under {root / cls.__name__ / 'raw'} and downloading it failed ({err}). "
            f"Either put the four IDX files there (torchvision's layout) and pass --data-dir {root} or set "
            f"PVAE_DATA_DIR={root}, or run once on a machine with network access so torchvision can download them."
        ) from err
    return ds.data, ds.targets.long()


@dataclass(frozen=True)
class ImageData:
    """A dataset's three splits as grey levels in [0, 1], flattened, on one device.

    ``train``, ``val``, ``test``: ``(N_split, x_dim)`` float32; ``*_labels``: ``(N_split,)`` int64;
    ``image_shape``: ``(H, W)`` for pictures.
    """

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    train_labels: Tensor
    val_labels: Tensor
    test_labels: Tensor
    image_shape: tuple[int, int]

    @property
    def x_dim(self) -> int:
        return self.train.shape[1]


def load_data(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_size: int,
    train_size: int | None = None,
    device: torch.device | str = "cpu",
) -> ImageData:
    """Load a dataset, hold out the last ``val_size`` training images for validation, and keep the
    first ``train_size`` of the rest (all when ``None``) for training.
    """
    train_images, train_labels = load_images(name, data_dir, train=True)
    test_images, test_labels = load_images(name, data_dir, train=False)
    n = train_images.shape[0]
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n - 1}] for {name} ({n} training images), got {val_size}")
    n_fit = n - val_size
    if train_size is not None and not 1 <= train_size <= n_fit:
        raise ValueError(
            f"train_size must be in [1, {n_fit}] ({n} training images minus val_size={val_size}), got {train_size}"
        )
    keep = n_fit if train_size is None else train_size

    def grey(images: Tensor) -> Tensor:
        return images.reshape(images.shape[0], -1).to(device=device, dtype=torch.float32).div_(255.0)

    return ImageData(
        name=name,
        train=grey(train_images[:keep]),
        val=grey(train_images[n_fit:]),
        test=grey(test_images),
        train_labels=train_labels[:keep].to(device),
        val_labels=train_labels[n_fit:].to(device),
        test_labels=test_labels.to(device),
        image_shape=(int(train_images.shape[1]), int(train_images.shape[2])),
    )


def binarize(x: Tensor, seed: int) -> Tensor:
    """One Bernoulli draw of every pixel: x_bin ~ Bernoulli(x), reproducible from ``seed``.

    :param x: grey levels in [0, 1], any shape. :returns: 0/1 float tensor of the same shape and device.
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def fixed_eval_set(x: Tensor, binarization: str) -> Tensor:
    """The evaluation version of a split: binarized once with a fixed seed unless ``binarization`` is ``none``."""
    return x if binarization == "none" else binarize(x, EVAL_BINARIZATION_SEED)
