"""The IDX digit sets (MNIST, Fashion-MNIST, KMNIST) as single tensors on the training device.

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

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "DataNotFoundError",
    "ImageData",
    "resolve_data_dir",
    "load_images",
    "load_data",
    "check_images",
]

#: name -> torchvision.datasets class name (torchvision is imported only when data is loaded: it is slow to import)
DATASETS: dict[str, str] = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
# Debian's dataset-fashion-mnist package installs the gzipped IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


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
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:  # gzip raises these on a corrupt or cut-off archive
        raise ValueError(f"{path} cannot be read ({err}); replace it with an intact copy") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or len(raw) < 4 + 4 * raw[3]:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; expected MNIST-style *-ubyte files")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = raw[4 + 4 * ndim :]
    if len(body) != torch.Size(dims).numel():
        raise ValueError(f"{path} is truncated or padded: its header says {dims} ({torch.Size(dims).numel()} bytes), "
                         f"it holds {len(body)} bytes; replace it with an intact copy")
    if not body:
        return torch.zeros(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def load_images(name: str, data_dir: str | os.PathLike[str] | None = None, *, train: bool) -> tuple[Tensor, Tensor]:
    """One split of a dataset as tensors.

    Files already on disk (uncompressed or gzipped IDX in torchvision's layout, or Debian's
    Fashion-MNIST) are read directly; otherwise torchvision downloads them first.

    :param name: a key of :data:`DATASETS`.
    :param train: the training split (True) or the test split (False).
    :returns: ``images`` uint8 ``(N, H, W)`` and ``labels`` int64 ``(N,)``.
    :raises DataNotFoundError: when the files are absent and the download fails.
    :raises ValueError: when a file is not IDX, is truncated, or holds an empty or mis-shaped set.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    root = resolve_data_dir(data_dir)
    raw = root / DATASETS[name] / "raw"
    split = "train" if train else "t10k"
    stems = (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte")
    if name == "fashion-mnist" and not raw.is_dir() and DEBIAN_FASHION_MNIST.is_dir():
        raw = DEBIAN_FASHION_MNIST
    if _find(raw, stems[0]) is None or _find(raw, stems[1]) is None:
        _download(name, root, raw)
    images, labels = (_read_idx(_find(raw, stem) or raw / stem) for stem in stems)
    _check_split(images, labels, f"{name} ({split}) under {raw}")
    return images, labels.long()


def _find(raw: Path, stem: str) -> Path | None:
    for candidate in (raw / stem, raw / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download(name: str, root: Path, raw: Path) -> None:
    from torchvision import datasets  # slow to import; only needed to download

    try:
        for train in (True, False):
            getattr(datasets, DATASETS[name])(root=str(root), train=train, download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError
        reason = " ".join(str(err).split())  # torchvision's message spans lines; keep the error one line
        raise DataNotFoundError(
            f"{name} was not found under {raw} and downloading it failed ({reason}). "
            f"Either put the four IDX files there (torchvision's layout) and pass data_dir='{root}' or set "
            f"PVAE_DATA_DIR={root}, or run once on a machine with network access so torchvision can download them."
        ) from err


def _check_split(images: Tensor, labels: Tensor, where: str) -> None:
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(f"{where}: expected images as uint8 of shape (N, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{where}: the dataset is empty; expected at least one image")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{where}: expected {images.shape[0]} labels, got shape {tuple(labels.shape)}")


def check_images(x: Tensor, x_dim: int) -> None:
    """Refuse data a VAE cannot take: not a float tensor of shape ``(N, x_dim)`` with N >= 1, or non-finite values.

    :raises ValueError: naming what was expected and what was found.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise ValueError(f"expected images as a floating-point tensor, got {type(x).__name__} {getattr(x, 'dtype', '')}; "
                         "convert with x.float() (and divide 8-bit pixels by 255)")
    if x.ndim != 2 or x.shape[1] != x_dim:
        raise ValueError(f"expected images of shape (N, {x_dim}), got {tuple(x.shape)}; flatten each image with x.reshape(len(x), -1)")
    if x.shape[0] == 0:
        raise ValueError("expected at least one image, got an empty tensor")
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"the images hold NaN or infinite pixels (first affected images: {rows}); clean or drop them")


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

    x_dim = int(train_images.shape[1] * train_images.shape[2])

    def grey(images: Tensor) -> Tensor:
        # x_dim spelled out: an empty split (val_size=0) has no size to infer a -1 from
        return images.reshape(images.shape[0], x_dim).to(device=device, dtype=torch.float32).div_(255.0)

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
