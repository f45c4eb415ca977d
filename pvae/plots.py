"""Figures of a run: training curves, reconstructions and samples from the prior (PNG, matplotlib).

Plotting lives here and never inside the training loop; every function takes a model or numbers
and writes one file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from pvae.data import ImageData, fixed_eval_set  # noqa: E402
from pvae.model import VAE  # noqa: E402

__all__ = ["plot_training_curves", "plot_reconstructions", "plot_samples", "save_run_figures"]


def _grid(images: Tensor, image_shape: tuple[int, int], rows: int) -> Tensor:
    """``(n, x_dim)`` in [0, 1] -> one ``(rows * H, cols * W)`` mosaic."""
    h, w = image_shape
    n = images.shape[0]
    cols = n // rows
    imgs = images[: rows * cols].reshape(rows, cols, h, w).cpu()
    return imgs.permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def plot_training_curves(metrics: Sequence[dict[str, float]], path: str | Path) -> Path:
    """Train and validation ELBO (nats per image, higher is better) against epoch."""
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot(epochs, [m["train_elbo"] for m in metrics], "o-", label="train ELBO (running)")
    ax.plot(epochs, [m["val_elbo"] for m in metrics], "s-", label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_reconstructions(vae: VAE, x: Tensor, image_shape: tuple[int, int], path: str | Path, n: int = 10) -> Path:
    """Top row: test images x; bottom row: E[x | z = mean of q(z|x)]."""
    x = x[:n]
    mosaic = _grid(torch.cat([x, vae.reconstruct(x)]), image_shape, rows=2)
    return _save_image(mosaic, path, "top: test images   bottom: reconstructions")


def plot_samples(vae: VAE, image_shape: tuple[int, int], path: str | Path, n: int = 64) -> Path:
    """Means of p(x|z) for n draws z ~ p(z)."""
    rows = int(n**0.5)
    return _save_image(_grid(vae.generate(rows * rows), image_shape, rows=rows), path, "samples: E[x|z], z ~ p(z)")


def _save_image(mosaic: Tensor, path: str | Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / 40, mosaic.shape[0] / 40 + 0.4), dpi=120)
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def save_run_figures(
    out: str | Path, vae: VAE, data: ImageData, metrics: Sequence[dict[str, float]], binarization: str
) -> list[Path]:
    """Write ``curves.png``, ``reconstructions.png`` and ``samples.png`` into the run folder ``out``."""
    out = Path(out)
    vae.eval()
    x_test = fixed_eval_set(data.test[:10], binarization)
    return [
        plot_training_curves(metrics, out / "curves.png"),
        plot_reconstructions(vae, x_test, data.image_shape, out / "reconstructions.png"),
        plot_samples(vae, data.image_shape, out / "samples.png"),
    ]
