"""Figures of a run: what the model learned, as plain matplotlib files (PNG, and PDF on request).

* training curves (:func:`plot_training_curves`);
* test images beside reconstructions, samples from the prior, interpolations in latent space;
* the latent space: posterior means coloured by label (:func:`plot_latent_space`) and, for m <= 2,
  the decoded manifold (:func:`plot_manifold`; Kingma & Welling 2014, Figure 4);
* for m <= 2, the true posterior p(z|x), normalized on a grid, beside q(z|x) (:func:`plot_posteriors`);
* per image, the ELBO against log p(x) and the importance sampler's effective sample size, from a
  run's ``per_image.csv`` (:func:`plot_elbo_vs_log_px`, :func:`plot_ess_histogram`).

Plotting lives here and never inside the training loop; every ``plot_*`` function takes a model or
numbers, writes one figure and returns the PNG's path (with ``pdf=True`` a PDF is written beside
it). :func:`plot_run` draws them all for a run folder, as ``pvae plot RUN`` does. All log-densities
are in nats. Figures are ``matplotlib.figure.Figure`` objects, never pyplot's global state, so
importing pvae leaves a notebook's or script's matplotlib backend alone.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from pvae.data import ImageData, fixed_eval_set
from pvae.evaluate import elbo_terms
from pvae.guides import central_value
from pvae.models import VAE
from pvae.predictive import generate, reconstruct
from pvae.protocol import GraphicalModel, label_mode

__all__ = [
    "DPI",
    "PosteriorGrid",
    "RunFigures",
    "posterior_on_grid",
    "plot_training_curves",
    "plot_reconstructions",
    "plot_samples",
    "plot_interpolations",
    "plot_latent_space",
    "plot_manifold",
    "plot_posteriors",
    "plot_elbo_vs_log_px",
    "plot_ess_histogram",
    "read_per_image_csv",
    "plot_run",
    "save_run_figures",
]

# 150 dots per inch: lines and 8-point labels stay crisp in print. Image mosaics get 3 figure
# pixels per image pixel (PIXEL_SCALE / DPI inches each).
DPI = 150
PIXEL_SCALE = 3
TITLE_INCHES = 0.4
PER_IMAGE_CSV = "per_image.csv"


def _save(fig: Figure, path: str | Path, pdf: bool) -> Path:
    path = Path(path)
    fig.savefig(path)
    if pdf:
        fig.savefig(path.with_suffix(".pdf"))
    return path


def _grid(images: Tensor, image_shape: tuple[int, int], rows: int) -> Tensor:
    """``(rows * cols, x_dim)`` in [0, 1] -> one ``(rows * H, cols * W)`` mosaic, row-major."""
    h, w = image_shape
    n = images.shape[0]
    cols = n // rows
    imgs = images[: rows * cols].reshape(rows, cols, h, w).detach().cpu()
    return imgs.permute(0, 2, 1, 3).reshape(rows * h, cols * w)


def _save_image(mosaic: Tensor, path: str | Path, title: str, pdf: bool = False) -> Path:
    """A mosaic at :data:`PIXEL_SCALE` figure pixels per image pixel, with a title strip on top."""
    height, width = mosaic.shape
    inches = PIXEL_SCALE / DPI
    fig = Figure(figsize=(width * inches, height * inches + TITLE_INCHES), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, height * inches / (height * inches + TITLE_INCHES)))
    ax.imshow(mosaic.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    fig.text(0.5, 1 - 0.5 * TITLE_INCHES / (height * inches + TITLE_INCHES), title, ha="center", va="center",
             fontsize=8)
    return _save(fig, path, pdf)


def plot_training_curves(
    metrics: Sequence[dict[str, float]], path: str | Path, *, log_px: float | None = None, pdf: bool = False
) -> Path:
    """Train and validation ELBO (nats per image, higher is better) against epoch, and the test
    set's log p(x) as a horizontal line when it has been estimated.

    :param metrics: rows of ``metrics.csv`` (``epoch``, ``train_elbo``, ``val_elbo``).
    :param log_px: mean test log p(x) in nats, e.g. from ``evaluation.json``.
    """
    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(5, 3.5), dpi=DPI)
    ax = fig.subplots()
    ax.plot(epochs, [m["train_elbo"] for m in metrics], "o-", label="train ELBO (running mean)")
    ax.plot(epochs, [m["val_elbo"] for m in metrics], "s-", label="validation ELBO")
    if log_px is not None:
        ax.axhline(log_px, color="k", ls="--", lw=1, label=f"test log p(x) ≈ {log_px:.2f}")
        values = [m[k] for m in metrics for k in ("train_elbo", "val_elbo") if math.isfinite(m[k])] + [log_px]
        span = max(values) - min(values) or 1.0
        ax.set_ylim(min(values) - 0.05 * span, max(values) + 0.08 * span)  # keep the line off the frame
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, pdf)


def plot_reconstructions(
    vae: GraphicalModel, x: Tensor, image_shape: tuple[int, int], path: str | Path, n: int = 10, *,
    y: Tensor | None = None, pdf: bool = False
) -> Path:
    """Top row: test images x; bottom row: E[x | latents = their central values under q]
    (:func:`pvae.predictive.reconstruct`). :param x: ``(>= n, x_dim)``; :param y: their labels, for
    a model conditioned on them."""
    x = x[:n]
    mosaic = _grid(torch.cat([x, reconstruct(vae, x, None if y is None else y[:n])]), image_shape, rows=2)
    return _save_image(mosaic, path, "top: test images   bottom: reconstructions E[x | z = mean of q(z|x)]", pdf)


def plot_samples(
    vae: GraphicalModel, image_shape: tuple[int, int], path: str | Path, n: int = 64, *, pdf: bool = False
) -> Path:
    """Means of the image site for ``floor(sqrt(n))**2`` draws of the latents from the model's prior,
    in a square (a model conditioned on labels: row r has class r mod C)."""
    rows = int(n**0.5)
    y = None
    if label_mode(vae) == "observed":
        y = torch.arange(rows, device=next(vae.parameters()).device).repeat_interleave(rows) % vae.num_classes  # type: ignore[attr-defined]
    return _save_image(_grid(generate(vae, rows * rows, y), image_shape, rows=rows), path,
                       "E[x | latents], latents ~ their prior", pdf)


@torch.no_grad()
def plot_interpolations(
    vae: VAE, x: Tensor, image_shape: tuple[int, int], path: str | Path, *, steps: int = 10, pdf: bool = False
) -> Path:
    """Walks in latent space between pairs of test images: one row per pair (x[0], x[1]), (x[2], x[3]), ...

    Each row shows image a, then E[x|z] for ``steps`` points z on the straight line from the mean of
    q(z|a) to the mean of q(z|b) (:func:`~pvae.guides.central_value`), then image b.

    :param x: ``(2 * pairs, x_dim)``.
    """
    if x.shape[0] < 2 or steps < 2:
        raise ValueError(f"expected at least 2 images and 2 steps, got {x.shape[0]} images and steps={steps}")
    pairs = x.shape[0] // 2
    a, b = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
    loc_a, loc_b = central_value(vae.posterior(a)), central_value(vae.posterior(b))
    t = torch.linspace(0, 1, steps, device=x.device)[:, None, None]  # (steps, 1, 1)
    z = (1 - t) * loc_a + t * loc_b  # (steps, pairs, z_dim)
    between = vae.likelihood(vae.decoder(z)).mean  # (steps, pairs, x_dim)
    rows = torch.cat([a[None], between, b[None]]).transpose(0, 1).reshape(-1, x.shape[1])
    title = "left, right: test images   between: E[x|z] along the line joining their posterior means"
    return _save_image(_grid(rows, image_shape, rows=pairs), path, title, pdf)


@torch.no_grad()
def plot_latent_space(vae: VAE, x: Tensor, labels: Tensor, path: str | Path, *, pdf: bool = False) -> Path:
    """Posterior means E_q[z|x] of images (:func:`~pvae.guides.central_value`), coloured by their labels.

    m = 1: z against the label (jittered); m = 2: the plane itself; m > 2: the first two principal
    components of the means (the title says so, with the share of variance each explains).

    :param x: ``(N, x_dim)``; :param labels: ``(N,)`` integer classes.
    """
    if labels.shape != x.shape[:1]:
        raise ValueError(f"expected one label per image, shape ({x.shape[0]},), got {tuple(labels.shape)}")
    loc = central_value(vae.posterior(x)).double().cpu()
    labels = labels.cpu()
    fig = Figure(figsize=(5.5, 4.5), dpi=DPI)
    ax = fig.subplots()
    if vae.z_dim == 1:
        jitter = 0.15 * torch.randn(len(labels), generator=torch.Generator().manual_seed(0))
        xs, ys = loc[:, 0], labels.double() + jitter
        ax.set_xlabel("$z$ (posterior mean)")
        ax.set_ylabel("label (jittered)")
        title = "q(z|x) means, m = 1"
    elif vae.z_dim == 2:
        xs, ys = loc[:, 0], loc[:, 1]
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        title = "q(z|x) means, m = 2"
    else:
        centred = loc - loc.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        share = (s**2 / (s**2).sum()).tolist()
        pcs = centred @ v[:2].T
        xs, ys = pcs[:, 0], pcs[:, 1]
        ax.set_xlabel(f"principal component 1 ({100 * share[0]:.0f}% of variance)")
        ax.set_ylabel(f"principal component 2 ({100 * share[1]:.0f}% of variance)")
        title = f"q(z|x) means, m = {vae.z_dim}: first two principal components"
    points = ax.scatter(xs.numpy(), ys.numpy(), c=labels.numpy(), cmap="tab10", s=4, alpha=0.7,
                        vmin=-0.5, vmax=9.5, rasterized=True)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, pdf)


def _normal_quantiles(n: int) -> Tensor:
    # Equally spaced probabilities through the standard normal's inverse CDF, as in Kingma & Welling
    # (2014), Figure 4: the grid is dense where the N(0, I) prior puts its mass.
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.distributions.Normal(0.0, 1.0).icdf(u)


@torch.no_grad()
def plot_manifold(vae: VAE, image_shape: tuple[int, int], path: str | Path, *, n: int = 20, pdf: bool = False) -> Path:
    """The learned data manifold: E[x|z] on a grid of z (m = 2: n x n, z_1 across and z_2 upwards;
    m = 1: one row of n), the grid being the N(0, 1) quantiles of equally spaced probabilities."""
    if vae.z_dim > 2:
        raise ValueError(f"the manifold figure needs a 1- or 2-dimensional latent space, got z_dim={vae.z_dim}")
    q = _normal_quantiles(n).to(dtype=torch.float32, device=next(vae.parameters()).device)
    if vae.z_dim == 1:
        z, rows = q[:, None], 1
    else:
        z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row: largest z_2
        z, rows = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1), n
    images = vae.likelihood(vae.decoder(z)).mean
    title = ("E[x|z] on a grid of z = Φ⁻¹(u), u equally spaced in (0, 1)"
             + ("²; z₁ grows to the right, z₂ upwards" if vae.z_dim == 2 else "; z grows to the right"))
    return _save_image(_grid(images, image_shape, rows=rows), path, title, pdf)


@dataclass(frozen=True)
class PosteriorGrid:
    """The exact posterior p(z|x) of one image on a regular grid (m = 1 or 2).

    ``axes``: m tensors of grid-cell centres, each ``(G,)``; ``log_density``: log p(z|x) at the cell
    centres, shape ``(G,)`` for m = 1 and ``(G, G)`` indexed ``[i_2, i_1]`` for m = 2 (rows follow
    z_2, as ``imshow`` expects); ``log_px``: log p(x) = log sum_cells p(x, z) * cell volume, in nats.
    """

    axes: tuple[Tensor, ...]
    log_density: Tensor
    log_px: float


@torch.no_grad()
def posterior_on_grid(
    vae: VAE, x: Tensor, bounds: Sequence[tuple[float, float]] | None = None, size: int = 100, *, chunk: int = 4096
) -> PosteriorGrid:
    """p(z|x) = p(z) p(x|z) / p(x) for one image, with p(x) summed over a grid of cells.

    .. math::

        \\log p(x) \\approx \\log \\sum_j p(x, z_j)\\, \\Delta, \\qquad
        \\log p(z_j \\mid x) = \\log p(x, z_j) - \\log p(x)

    over cell centres z_j of volume Delta. The grid must cover the posterior's mass and its cells be
    small beside the posterior's width; then the sum is accurate to well under 0.01 nats for m <= 2
    (a reference for importance sampling's estimate).

    :param x: one image ``(x_dim,)``.
    :param bounds: ``(low, high)`` per latent dimension; ``None``: a box around the mass of p(z|x),
        found on a coarse grid spanning the bulk of p(z) and of q(z|x).
    :param size: G, cells per dimension.
    """
    if vae.z_dim > 2:
        raise ValueError(f"the posterior is summed on a grid for z_dim 1 or 2 only, got z_dim={vae.z_dim}")
    if bounds is not None and len(bounds) != vae.z_dim:
        raise ValueError(f"expected one (low, high) per latent dimension, {vae.z_dim}, got {len(bounds)}")
    if x.shape != (vae.x_dim,):
        raise ValueError(f"expected one image of shape ({vae.x_dim},), got {tuple(x.shape)}")
    if bounds is None:
        bounds = _posterior_bounds(vae, x, vae.posterior(x))
    axes = tuple(
        torch.linspace(lo, hi, size + 1, dtype=torch.float64, device=x.device).add(0.5 * (hi - lo) / size)[:-1]
        for lo, hi in bounds
    )
    log_volume = sum(math.log((hi - lo) / size) for lo, hi in bounds)
    mesh = torch.meshgrid(*reversed(axes), indexing="ij")  # last latent dimension varies slowest
    z = torch.stack([m.reshape(-1) for m in reversed(mesh)], dim=-1).to(x.dtype)  # (G^m, m)
    log_joint = torch.cat([
        vae.prior().log_prob(zc) + vae.likelihood(vae.decoder(zc)).log_prob(x) for zc in z.split(chunk)
    ]).double()
    log_px = torch.logsumexp(log_joint, 0) + log_volume
    shape = (size,) * vae.z_dim
    return PosteriorGrid(axes=axes, log_density=(log_joint - log_px).reshape(shape), log_px=float(log_px))


def _posterior_bounds(vae: VAE, x: Tensor, q: torch.distributions.Distribution) -> list[tuple[float, float]]:
    """A box holding p(z|x)'s mass: where a coarse grid finds density within e^-14 of the largest,
    widened by a coarse cell and by q's own bulk. The coarse grid starts on the bulk of p(z) and of
    q(z|x) and grows while the posterior's mass reaches its edge."""
    prior_draws = vae.prior().sample((4000,)).double().cpu()
    q_draws = q.sample((4000,)).double().cpu()
    q_lo, q_hi = q_draws.quantile(0.0005, dim=0), q_draws.quantile(0.9995, dim=0)
    lo = torch.minimum(prior_draws.quantile(0.001, dim=0), q_lo).tolist()
    hi = torch.maximum(prior_draws.quantile(0.999, dim=0), q_hi).tolist()
    size = 48
    for _ in range(6):
        coarse = posterior_on_grid(vae, x, list(zip(lo, hi)), size=size)
        keep = coarse.log_density >= coarse.log_density.max() - 14
        # z_d runs along tensor dimension m - 1 - d of log_density (see PosteriorGrid)
        occupied = [
            (keep.any(dim=others) if others else keep).nonzero().squeeze(-1)
            for d in range(vae.z_dim)
            for others in [tuple(i for i in range(vae.z_dim) if i != vae.z_dim - 1 - d)]
        ]
        grown = False
        for d, idx in enumerate(occupied):
            width = hi[d] - lo[d]
            if int(idx.min()) == 0:
                lo[d], grown = lo[d] - width / 2, True
            if int(idx.max()) == size - 1:
                hi[d], grown = hi[d] + width / 2, True
        if not grown:
            break
    bounds = []
    for d, (axis, idx) in enumerate(zip(coarse.axes, occupied)):
        step = float(axis[1] - axis[0])
        low = min(float(axis[idx.min()]) - step, float(q_lo[d]))
        high = max(float(axis[idx.max()]) + step, float(q_hi[d]))
        bounds.append((low, high))
    return bounds


@torch.no_grad()
def plot_posteriors(
    vae: VAE, x: Tensor, image_shape: tuple[int, int], path: str | Path, *, size: int = 100, elbo_samples: int = 1000,
    pdf: bool = False,
) -> Path:
    """For each image: the image, the true posterior p(z|x) (normalized on a grid) with q(z|x)'s
    contours drawn over it, and q(z|x) alone on the same axes (m = 2); for m = 1, both densities as
    curves on one axis. Each row's title gives log p(x) (grid), the ELBO (Monte Carlo) and their gap
    KL(q(z|x) || p(z|x)), in nats.

    :param x: a few images ``(n, x_dim)``, one row each.
    :param size: grid cells per latent dimension; :param elbo_samples: draws of z for each ELBO.
    """
    if vae.z_dim > 2:
        raise ValueError(f"the true posterior is drawn on a grid for z_dim 1 or 2 only, got z_dim={vae.z_dim}")
    elbo = elbo_terms(vae, x, num_samples=elbo_samples).elbo
    n, m = x.shape[0], vae.z_dim
    panels = 3 if m == 2 else 2
    fig = Figure(figsize=(1.2 + 3.0 * (panels - 1), 2.6 * n), dpi=DPI)
    axs = fig.subplots(n, panels, squeeze=False, gridspec_kw={"width_ratios": [1.0] + [2.5] * (panels - 1)})
    for i in range(n):
        q = vae.posterior(x[i])
        grid = posterior_on_grid(vae, x[i], size=size)
        axes = [a.to(x.dtype) for a in grid.axes]
        mesh = torch.meshgrid(*reversed(axes), indexing="ij")
        z = torch.stack([t.reshape(-1) for t in reversed(mesh)], dim=-1)  # (G^m, m), as in posterior_on_grid
        log_q = q.log_prob(z).reshape(grid.log_density.shape).double().cpu()
        p_density, q_density = grid.log_density.exp().cpu().numpy(), log_q.exp().numpy()
        gap = grid.log_px - float(elbo[i])
        axs[i, 0].imshow(x[i].reshape(image_shape).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axs[i, 0].axis("off")
        axs[i, 0].set_title(f"test image {i + 1}", fontsize=8)
        axs[i, 1].set_title(f"log p(x) = {grid.log_px:.2f} (grid),  ELBO = {float(elbo[i]):.2f}\n"
                            f"gap = KL(q || p(z|x)) = {gap:.2f} nats", fontsize=8, loc="left")
        if m == 1:
            z1 = axes[0].cpu().numpy()
            ax = axs[i, 1]
            ax.fill_between(z1, p_density, color="C0", alpha=0.3, label="p(z|x), true")
            ax.plot(z1, q_density, "C1--", label="q(z|x)")
            ax.set_xlabel("$z$")
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
            continue
        z1, z2 = (a.cpu().numpy() for a in axes)
        h1, h2 = z1[1] - z1[0], z2[1] - z2[0]  # cell widths: imshow's extent is the cells' outer edges
        extent = (z1[0] - h1 / 2, z1[-1] + h1 / 2, z2[0] - h2 / 2, z2[-1] + h2 / 2)
        panels_2d = ((axs[i, 1], p_density, "p(z|x), true\ndashed: q(z|x)"), (axs[i, 2], q_density, "q(z|x)"))
        for ax, density, name in panels_2d:
            ax.imshow(density, origin="lower", extent=extent, aspect="auto", cmap="Blues")
            ax.text(0.03, 0.95, name, transform=ax.transAxes, va="top", fontsize=8)
            ax.set_xlabel("$z_1$")
            ax.set_ylabel("$z_2$")
        # q's contours at densities e^-1/2, e^-2, e^-9/2 of its peak (1, 2, 3 sd for a Gaussian) drawn
        # over the true posterior: where they miss its mass is the KL gap.
        peak = float(log_q.max())
        axs[i, 1].contour(z1, z2, log_q.numpy(), levels=[peak - 4.5, peak - 2.0, peak - 0.5], colors="C1",
                          linestyles="--", linewidths=1)
    fig.tight_layout()
    return _save(fig, path, pdf)


def read_per_image_csv(path: str | Path) -> dict[str, Tensor]:
    """The columns of a ``per_image.csv`` (one row per test image) as float64 tensors ``(N,)``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} holds no rows")
    return {key: torch.tensor([float(r[key]) for r in rows], dtype=torch.float64) for key in rows[0]}


def plot_elbo_vs_log_px(elbo: Tensor, log_px: Tensor, path: str | Path, *, pdf: bool = False) -> Path:
    """Per-image ELBO against the importance-sampling estimate of log p(x), with the line ELBO = log p(x);
    a point's height below the line is its KL(q(z|x) || p(z|x)). :param elbo, log_px: ``(N,)``, nats."""
    if elbo.shape != log_px.shape:
        raise ValueError(f"expected elbo and log_px of one shape, got {tuple(elbo.shape)} and {tuple(log_px.shape)}")
    e, lp = elbo.double().cpu(), log_px.double().cpu()
    fig = Figure(figsize=(4.5, 4.5), dpi=DPI)
    ax = fig.subplots()
    ax.scatter(lp.numpy(), e.numpy(), s=4, alpha=0.5, rasterized=True)
    span = [float(torch.minimum(e.min(), lp.min())), float(torch.maximum(e.max(), lp.max()))]
    ax.plot(span, span, "k--", lw=1, label="ELBO = log p(x)")
    ax.set_xlabel("log p(x), importance sampling (nats)")
    ax.set_ylabel("ELBO (nats)")
    ax.set_title(f"{len(e)} images; mean gap log p(x) - ELBO = {float((lp - e).mean()):.2f} nats", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, pdf)


def plot_ess_histogram(ess: Tensor, path: str | Path, *, num_samples: int | None = None, pdf: bool = False) -> Path:
    """Histogram of the per-image effective sample size of the importance weights (1 <= ESS <= K).

    :param ess: ``(N,)``; :param num_samples: K, marked on the axis when given.
    """
    fig = Figure(figsize=(5, 3.5), dpi=DPI)
    ax = fig.subplots()
    ax.hist(ess.double().cpu().numpy(), bins=40, color="C0")
    if num_samples is not None:
        ax.axvline(num_samples, color="k", ls="--", lw=1, label=f"K = {num_samples}")
        ax.legend(fontsize=8)
    ax.set_xlabel("effective sample size of the importance weights")
    ax.set_ylabel("images")
    ax.set_title(f"median ESS {float(ess.double().median()):.1f}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, pdf)


@dataclass
class RunFigures:
    """What :func:`plot_run` wrote, and the figures it skipped with the reason for each."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plot_run(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    pdf: bool = False,
    data_dir: str | None = None,
    device: str = "auto",
    num_latent_images: int = 5000,
    num_posterior_images: int = 4,
) -> RunFigures:
    """Every figure of a run folder, written into ``out`` (default: the run folder).

    Reads ``config.json`` and the checkpoint (with its per-epoch metrics); ``evaluation.json`` (its
    ``log_px`` and ``num_samples`` K) and ``per_image.csv`` (columns ``elbo``, ``log_px``, ``ess``),
    which ``pvae evaluate RUN --num-samples K`` writes, when they exist.

    :param num_latent_images: test images in the latent-space scatter.
    :param num_posterior_images: test images in the true-posterior figure (m <= 2).
    """
    from pvae.data import load_data
    from pvae.runs import load_run, rebuild_model, resolve_device

    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    config, state = load_run(run_dir, map_location=dev)
    vae = rebuild_model(config, state, dev)
    data = load_data(config.dataset, data_dir if data_dir is not None else config.data_dir,
                     val_size=config.val_size, train_size=config.train_size, device=dev)
    x_test = fixed_eval_set(data.test, config.binarization)
    figures = RunFigures()
    evaluation_path = run_dir / "evaluation.json"
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
    log_px = evaluation.get("log_px")
    figures.files += [
        plot_training_curves(state["metrics"], out / "curves.png", log_px=log_px, pdf=pdf),
        plot_reconstructions(vae, x_test, data.image_shape, out / "reconstructions.png", pdf=pdf),
        plot_samples(vae, data.image_shape, out / "samples.png", pdf=pdf),
        plot_interpolations(vae, x_test[:8], data.image_shape, out / "interpolations.png", pdf=pdf),
        plot_latent_space(vae, x_test[:num_latent_images], data.test_labels[:num_latent_images],
                          out / "latent_space.png", pdf=pdf),
    ]
    if log_px is None:
        figures.skipped.append(f"log p(x) is not on the training curves: run pvae evaluate {run_dir} --num-samples K")
    if vae.z_dim <= 2:
        figures.files += [
            plot_manifold(vae, data.image_shape, out / "manifold.png", pdf=pdf),
            plot_posteriors(vae, x_test[:num_posterior_images], data.image_shape, out / "posteriors.png", pdf=pdf),
        ]
    else:
        figures.skipped.append(f"manifold.png and posteriors.png need z_dim <= 2 (this run has z_dim={vae.z_dim})")
    per_image = run_dir / PER_IMAGE_CSV
    if per_image.is_file():
        cols = read_per_image_csv(per_image)
        missing = {"elbo", "log_px", "ess"} - set(cols)
        if missing:
            figures.skipped.append(f"{per_image} lacks the columns {sorted(missing)}; no ELBO/log p(x) figures")
        else:
            k = evaluation.get("num_samples") if log_px is not None else None
            figures.files += [
                plot_elbo_vs_log_px(cols["elbo"], cols["log_px"], out / "elbo_vs_log_px.png", pdf=pdf),
                plot_ess_histogram(cols["ess"], out / "ess.png", num_samples=k, pdf=pdf),
            ]
    else:
        figures.skipped.append(f"elbo_vs_log_px.png and ess.png need {per_image}: run pvae evaluate {run_dir} --num-samples K")
    if pdf:
        figures.files += [p.with_suffix(".pdf") for p in list(figures.files)]
    return figures


def save_run_figures(
    out: str | Path, vae: GraphicalModel, data: ImageData, metrics: Sequence[dict[str, float]], binarization: str
) -> list[Path]:
    """Write ``curves.png``, ``reconstructions.png`` and ``samples.png`` into the run folder ``out``
    (what :func:`pvae.train` leaves; ``pvae plot RUN`` draws the rest)."""
    out = Path(out)
    vae.eval()
    x_test = fixed_eval_set(data.test[:10], binarization)
    return [
        plot_training_curves(metrics, out / "curves.png"),
        plot_reconstructions(vae, x_test, data.image_shape, out / "reconstructions.png", y=data.test_labels[:10]),
        plot_samples(vae, data.image_shape, out / "samples.png"),
    ]
