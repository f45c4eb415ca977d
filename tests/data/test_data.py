"""Loading datasets, splitting them, binarizing them, and the errors when they are missing."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch

from pvae.cli import as_flags
from pvae.data import DataNotFoundError, binarize, dequantize, fixed_eval_set, load_data, load_images, resolve_data_dir

FAKE_TRAIN_SIZE, FAKE_TEST_SIZE = 600, 200  # the sizes conftest.fake_mnist_root writes


def read_raw_images(path: Path) -> torch.Tensor:
    """An uncompressed IDX image file parsed by hand (16-byte header), ``(N, 784)`` uint8."""
    raw = path.read_bytes()
    return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).reshape(-1, 784)


def test_load_fake_mnist_splits(fake_mnist_root: Path) -> None:
    """The last val_size training images are validation, the first train_size of the rest training."""
    data = load_data("mnist", fake_mnist_root, val_size=100, train_size=300)
    assert data.train.shape == (300, 784), f"train {tuple(data.train.shape)}"
    assert data.val.shape == (100, 784), f"val {tuple(data.val.shape)}"
    assert data.test.shape == (FAKE_TEST_SIZE, 784), f"test {tuple(data.test.shape)}"
    assert (data.x_dim, data.image_shape) == (784, (28, 28)), f"x_dim {data.x_dim}, image_shape {data.image_shape}"
    assert data.train_labels.shape == (300,) and data.val_labels.shape == (100,) and data.test_labels.shape == (200,)
    assert data.train.dtype == torch.float32, f"dtype {data.train.dtype}"
    raw = read_raw_images(fake_mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").float() / 255
    torch.testing.assert_close(data.train, raw[:300], rtol=0, atol=0)
    torch.testing.assert_close(data.val, raw[FAKE_TRAIN_SIZE - 100 :], rtol=0, atol=0)
    torch.testing.assert_close(data.train_labels, torch.arange(300) % 10, rtol=0, atol=0)
    for name, x in (("train", data.train), ("val", data.val), ("test", data.test)):
        assert 0 <= x.min() and x.max() <= 1, f"{name} values span [{x.min()}, {x.max()}], expected [0, 1]"
    grey = ((data.train > 0) & (data.train < 1)).float().mean().item()
    assert grey > 0.01, f"only {grey:.4f} of the pixels are grey levels: binarization would have nothing to do"


def test_load_all_remaining_images_by_default(fake_mnist_root: Path) -> None:
    """train_size=None keeps every training image that is not held out."""
    data = load_data("mnist", fake_mnist_root, val_size=150)
    assert data.train.shape[0] == FAKE_TRAIN_SIZE - 150, f"train has {data.train.shape[0]} images"


@pytest.mark.parametrize("val_size", [-1, FAKE_TRAIN_SIZE, FAKE_TRAIN_SIZE + 1])
def test_val_size_out_of_range(fake_mnist_root: Path, val_size: int) -> None:
    """val_size outside [0, N - 1] is refused with a message naming it and its range."""
    with pytest.raises(ValueError, match=rf"val_size must be in \[0, {FAKE_TRAIN_SIZE - 1}\].*got {val_size}"):
        load_data("mnist", fake_mnist_root, val_size=val_size)


@pytest.mark.parametrize("train_size", [0, -5, FAKE_TRAIN_SIZE - 100 + 1])
def test_train_size_out_of_range(fake_mnist_root: Path, train_size: int) -> None:
    """train_size outside [1, N - val_size] is refused with a message naming it and its range."""
    with pytest.raises(ValueError, match=rf"train_size must be in \[1, {FAKE_TRAIN_SIZE - 100}\].*got {train_size}"):
        load_data("mnist", fake_mnist_root, val_size=100, train_size=train_size)


def test_unknown_dataset_is_refused(fake_mnist_root: Path) -> None:
    """A dataset name outside DATASETS is refused with the known names."""
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*mnist"):
        load_images("cifar", fake_mnist_root, train=True)


@pytest.mark.parametrize(
    "error",
    [OSError("disk full"), urllib.error.URLError("no route to host"), RuntimeError("Error downloading")],
    ids=["OSError", "URLError", "RuntimeError"],
)
def test_missing_dataset_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Absent files and a failed download give DataNotFoundError naming the folder and both fixes."""
    from torchvision import datasets

    def fail(self: object) -> None:
        raise error

    monkeypatch.setattr(datasets.MNIST, "download", fail)
    with pytest.raises(DataNotFoundError) as info:
        load_data("mnist", tmp_path, val_size=10)
    message = str(info.value)
    for needed in (str(tmp_path / "MNIST" / "raw"), f"data_dir='{tmp_path}'", f"PVAE_DATA_DIR={tmp_path}",
                   "network access", str(error)):
        assert needed in message, f"{needed!r} is missing from the message: {message}"
    # the command line says the same with its flag
    assert f"--data-dir {tmp_path} or set PVAE_DATA_DIR={tmp_path}" in as_flags(message), as_flags(message)


def test_resolve_data_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data directory is the argument, else $PVAE_DATA_DIR, else $XDG_CACHE_HOME/pvae/data, else ~/.cache."""
    monkeypatch.setenv("PVAE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("PVAE_DATA_DIR")
    assert resolve_data_dir() == tmp_path / "xdg" / "pvae" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "pvae" / "data"
    assert resolve_data_dir("~/data") == tmp_path / "home" / "data", "a leading ~ should be expanded"


def test_binarize_is_reproducible_from_its_seed() -> None:
    """The same seed gives the same 0/1 draw, another seed a different one."""
    x = torch.rand(50, 784, generator=torch.Generator().manual_seed(0))
    a, b, c = binarize(x, seed=3), binarize(x, seed=3), binarize(x, seed=4)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c), "seeds 3 and 4 gave the same binarization"
    assert set(a.unique().tolist()) == {0.0, 1.0}, f"values {a.unique().tolist()}"
    assert a.shape == x.shape and a.dtype == x.dtype, f"shape {tuple(a.shape)}, dtype {a.dtype}"


def test_binarize_mean_is_the_grey_level() -> None:
    """Each pixel is Bernoulli(grey level): the mean of many draws matches, and 0 and 1 stay put."""
    n = 200_000
    x = torch.full((n,), 0.3)
    mean = binarize(x, seed=0).mean().item()
    stderr = math.sqrt(0.3 * 0.7 / n)
    assert abs(mean - 0.3) < 5 * stderr, f"mean {mean:.5f} vs 0.3 (5 standard errors = {5 * stderr:.5f})"
    ends = torch.tensor([0.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(binarize(ends, seed=1), ends, rtol=0, atol=0)


def test_binarize_fake_images_mean(fake_mnist_root: Path) -> None:
    """Binarized images keep the grey images' average ink within a few standard errors."""
    x = load_data("mnist", fake_mnist_root, val_size=100).train
    x_bin = binarize(x, seed=5)
    # independent Bernoullis: Var(mean) = sum p(1 - p) / n^2
    stderr = (x * (1 - x)).sum().sqrt().item() / x.numel()
    gap = (x_bin.mean() - x.mean()).item()
    assert abs(gap) < 5 * stderr, f"binary mean - grey mean = {gap:.5f}, 5 standard errors = {5 * stderr:.5f}"


def test_fixed_eval_set_ignores_grey_levels_only_for_none() -> None:
    """Evaluation images are one fixed binarization, the same on every call; 'none' keeps grey levels."""
    x = torch.rand(20, 784, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fixed_eval_set(x, "dynamic"), fixed_eval_set(x, "static"), rtol=0, atol=0)
    assert set(fixed_eval_set(x, "dynamic").unique().tolist()) == {0.0, 1.0}
    assert fixed_eval_set(x, "none") is x, "binarization 'none' should return the grey images unchanged"


def test_dequantized_levels_are_never_0_or_1_and_uniform_in_their_bins() -> None:
    """dequantize puts each level k / 255 uniformly in [k, k + 1) / 256, strictly inside (0, 1), even for
    a million draws at the two ends; the evaluation draw is one fixed draw."""
    x = torch.tensor([0.0, 1.0, 128 / 255]).repeat(400_000)
    y = dequantize(x, torch.Generator().manual_seed(3))
    assert bool(((y > 0) & (y < 1)).all()), f"min {y.min().item()}, max {y.max().item()}"
    offset = y * 256 - (x * 255).round()  # u, uniform on [0, 1]
    assert bool(((offset >= 0) & (offset <= 1)).all())
    torch.testing.assert_close(offset.double().mean(), torch.tensor(0.5, dtype=torch.float64), atol=2e-3, rtol=0)
    torch.testing.assert_close(offset.double().var(), torch.tensor(1 / 12, dtype=torch.float64), atol=1e-3, rtol=0)
    assert torch.equal(fixed_eval_set(x, "none", dequantized=True), fixed_eval_set(x, "none", dequantized=True))
    assert not torch.equal(dequantize(x), dequantize(x)), "fresh draws must differ"


def test_val_size_0_keeps_every_training_image(fake_mnist_root: Path) -> None:
    """load_data(val_size=0) trains on all images and gives an empty (0, 784) validation split."""
    data = load_data("mnist", fake_mnist_root, val_size=0)
    assert data.train.shape == (FAKE_TRAIN_SIZE, 784) and data.val.shape == (0, 784), (data.train.shape, data.val.shape)
    assert data.val_labels.shape == (0,)
