"""Shared fixtures: a clean, validated, seeded Pyro for every test, and a small fake MNIST on disk."""

from __future__ import annotations

import math
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyro
import pytest
import torch

FAKE_TRAIN_SIZE = 600
FAKE_TEST_SIZE = 200
IMAGE_SIDE = 28


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> Iterator[None]:
    """Run PyTorch on one thread, here and in the subprocesses tests start: the tests' models are
    small, where extra threads only add synchronisation (on a machine whose few cores are shared
    they slow everything down ~10x), and a subprocess must add in the same order as this process
    for its results to be bit-identical."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _fresh_pyro() -> None:
    """Every test starts from an empty param store, with argument validation on and seed 0."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if anything opens a URL (torchvision downloads through urllib): tests use local data only."""

    def refuse(url: object, *args: object, **kwargs: object) -> None:
        target = getattr(url, "full_url", url)
        raise AssertionError(f"a test tried to open {target}; tests must never use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _fake_images(n: int, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` 28x28 uint8 images: each a short thick stroke whose direction depends on its label,
    drawn with soft edges so that the images have grey levels as MNIST does."""
    coords = torch.arange(IMAGE_SIDE, dtype=torch.float32)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    angle = labels.float() * math.pi / 10 + 0.2 * torch.randn(n, generator=gen)
    centre = 14 + 3 * torch.randn(n, 2, generator=gen)
    t = torch.linspace(-7, 7, 15)  # points along the stroke
    py = centre[:, :1] + t * torch.sin(angle)[:, None]  # (n, 15)
    px = centre[:, 1:] + t * torch.cos(angle)[:, None]
    d2 = (yy[None, None] - py[..., None, None]) ** 2 + (xx[None, None] - px[..., None, None]) ** 2
    ink = torch.exp(-d2.min(dim=1).values / (2 * 1.2**2))  # (n, 28, 28), 1 on the stroke
    return (255 * ink).round().clamp(0, 255).to(torch.uint8)


def _write_idx(path: Path, data: torch.Tensor) -> None:
    """An uncompressed IDX file of unsigned bytes: magic 0x0000 0x08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    path.write_bytes(header + data.contiguous().numpy().tobytes())


@pytest.fixture(scope="session")
def fake_mnist_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding a small fake MNIST (600 train, 200 test images, labels 0..9) in
    torchvision's layout ``<root>/MNIST/raw/*-ubyte``."""
    root = tmp_path_factory.mktemp("fake_data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(1234)
    for split, n in (("train", FAKE_TRAIN_SIZE), ("t10k", FAKE_TEST_SIZE)):
        labels = torch.arange(n) % 10
        _write_idx(raw / f"{split}-images-idx3-ubyte", _fake_images(n, labels, gen))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", labels.to(torch.uint8))
    return root


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST's data directory (``$PVAE_DATA_DIR``); skips the test when it is absent."""
    env = os.environ.get("PVAE_DATA_DIR")
    if not env:
        pytest.skip("real MNIST needed: set PVAE_DATA_DIR to a folder holding MNIST/raw/*-ubyte")
    root = Path(env).expanduser()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST needed: {root / 'MNIST' / 'raw'} does not exist (PVAE_DATA_DIR={env})")
    return root
