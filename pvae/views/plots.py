"""Figures of a run: what the model learned, as plain matplotlib files (PNG, and PDF on request).

Every figure reads what it needs from the model's traces (which sites are latent, which continuous,
which holds the images; :mod:`pvae.inference.traces`, :mod:`pvae.inference.predictive`), so it draws any graphical model
of :mod:`pvae.models` or one of your own:

* training curves (:func:`plot_training_curves`);
* test images beside reconstructions, samples from the prior, interpolations in latent space;
* the latent space: central values under the guide coloured by label, one panel per continuous
  latent site (:func:`plot_latent_space`);
* for a model with labels, the class grid: one row per class, the style shared down each column
  (:func:`plot_class_grid`);
* for a model of one continuous latent site of 1 or 2 dimensions and no labels, the decoded
  manifold (:func:`plot_manifold`; Kingma & Welling 2014, Figure 4) and the true posterior p(z|x),
  normalized on a grid, beside q(z|x) (:func:`plot_posteriors`);
* per image, the ELBO against log p(x) and the importance sampler's effective sample size, from a
  run's ``per_image.csv`` (:func:`plot_elbo_vs_log_px`, :func:`plot_ess_histogram`);
* across runs, test log p(x) against training epochs beside published numbers
  (:func:`plot_log_px_curves`).

Plotting lives here and never inside the training loop; every ``plot_*`` function takes a model or
numbers, writes one figure and returns the PNG's path (with ``pdf=True`` a PDF is written beside
it). :func:`pvae.runs.figures.plot_run` draws them all for a run folder, as ``pvae plot RUN`` does, and
:func:`pvae.runs.figures.sample_run` draws samples of a run (``pvae sample RUN``). All log-densities are in nats.
Figures are ``matplotlib.figure.Figure`` objects, never pyplot's global state, so importing pvae
leaves a notebook's or script's matplotlib backend alone.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from torch import Tensor

from pvae.inference.elbo import elbo_terms
from pvae.inference.predictive import (
    central_latents,
    continuous_latents,
    decode,
    generate,
    prior_trace,
    reconstruct,
)
from pvae.inference.quadrature import PosteriorGrid, grid_site, guide_distribution, posterior_on_grid
from pvae.inference.traces import is_discrete, latent_sites
from pvae.protocol import GraphicalModel, label_mode, num_classes

__all__ = [
    "DPI",
    "PosteriorGrid",
    "grid_site",
    "posterior_on_grid",
    "plot_training_curves",
    "plot_reconstructions",
    "plot_samples",
    "plot_interpolations",
    "plot_latent_space",
    "plot_class_grid",
    "plot_manifold",
    "plot_posteriors",
    "plot_elbo_vs_log_px",
    "plot_ess_histogram",
    "plot_log_px_curves",
    "read_per_image_csv",
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
    (:func:`pvae.inference.predictive.reconstruct`).

    :param x: ``(>= n, x_dim)``.
    :param y: their labels, for a model conditioned on them.
    """
    x = x[:n]
    mosaic = _grid(torch.cat([x, reconstruct(vae, x, None if y is None else y[:n])]), image_shape, rows=2)
    title = "top: test images   bottom: reconstructions E[x | latents = central values under q]"
    return _save_image(mosaic, path, title, pdf)


def plot_samples(
    vae: GraphicalModel, image_shape: tuple[int, int], path: str | Path, n: int = 64, *, y: Tensor | None = None,
    pdf: bool = False,
) -> Path:
    """Means of the image site for ``n`` draws of the latents from the model's prior, row by row in
    ``floor(sqrt(n))`` rows (the last one padded with black).

    :param y: the class of each draw ``(n,)``, for a model with labels; ``None``: for a model
        conditioned on labels row r has class r mod C, for M2 y is drawn from its prior too.
    """
    if n < 1:
        raise ValueError(f"expected n >= 1 samples, got {n}")
    rows = math.isqrt(n)
    cols = -(-n // rows)
    device = _device(vae)
    if y is None and label_mode(vae) == "observed":
        y = (torch.arange(n, device=device) // cols) % num_classes(vae)
    if y is not None and y.shape != (n,):
        raise ValueError(f"expected one class per sample, shape ({n},), got {tuple(y.shape)}")
    images = generate(vae, n, y, device=device)
    images = torch.cat([images, images.new_zeros(rows * cols - n, images.shape[1])])
    classes = None if y is None else y.unique()
    given = f", y = {int(classes[0])}" if classes is not None and len(classes) == 1 else ""
    title = f"E[x | latents{given}], latents ~ their prior"
    return _save_image(_grid(images, image_shape, rows=rows), path, title, pdf)


def _device(model: GraphicalModel) -> torch.device:
    return next(model.parameters()).device


def _dtype(model: GraphicalModel) -> torch.dtype:
    return next(model.parameters()).dtype


@torch.no_grad()
def plot_interpolations(
    vae: GraphicalModel, x: Tensor, image_shape: tuple[int, int], path: str | Path, *, y: Tensor | None = None,
    steps: int = 10, pdf: bool = False,
) -> Path:
    """Walks in latent space between pairs of test images: one row per pair (x[0], x[1]), (x[2], x[3]), ...

    Each row shows image a, then the mean of the image site at ``steps`` points on the straight line
    from the central values of a's latents under the guide to b's
    (:func:`~pvae.inference.predictive.continuous_latents`), every continuous latent site moving at once,
    then image b. A label stays image a's along the row (the label y given for a model conditioned
    on it, or the class M2's guide chooses for a): the walk changes the style, not the class.

    :param x: ``(2 * pairs, x_dim)``.
    :param y: their labels ``(2 * pairs,)``, for a model that takes them.
    """
    if x.shape[0] < 2 or steps < 2:
        raise ValueError(f"expected at least 2 images and 2 steps, got {x.shape[0]} images and steps={steps}")
    pairs = x.shape[0] // 2
    a, b = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
    y_a = None if y is None else y[0 : 2 * pairs : 2]
    y_b = None if y is None else y[1 : 2 * pairs : 2]
    start, end = central_latents(vae, a, y_a), central_latents(vae, b, y_b)
    moving = continuous_latents(vae, a, y_a).keys()
    if not moving:
        raise ValueError("the model's guide has no continuous latent site to interpolate")
    t = torch.linspace(0, 1, steps, device=x.device)
    values = {}
    for name, va in start.items():
        if name in moving:
            tt = t.reshape(steps, *([1] * va.dim())).to(va.dtype)
            line = (1 - tt) * va + tt * end[name]  # (steps, pairs, ...)
        else:  # a discrete latent (M2's class): image a's, the whole row
            line = va.expand(steps, *va.shape)
        values[name] = line.reshape(steps * pairs, *va.shape[1:])
    between = decode(vae, values, steps * pairs, None if y_a is None else y_a.repeat(steps), device=x.device)
    between = between.reshape(steps, pairs, -1)
    rows = torch.cat([a[None], between, b[None]]).transpose(0, 1).reshape(-1, x.shape[1])
    title = "left, right: test images   between: E[x | latents] along the line joining their central values under q"
    return _save_image(_grid(rows, image_shape, rows=pairs), path, title, pdf)


@torch.no_grad()
def plot_latent_space(
    vae: GraphicalModel, x: Tensor, labels: Tensor, path: str | Path, y: Tensor | None = None, *, pdf: bool = False
) -> Path:
    """Central values under the guide (:func:`~pvae.inference.predictive.continuous_latents`) of the images'
    latents, coloured by their labels: one panel per continuous latent site, titled with its name
    (a two-layer model: z1 and z2).

    A site of 1 dimension: its value against the label (jittered); 2: the plane itself; more: the
    first two principal components of the values (the axes say so, with the share of variance each
    explains).

    :param x: ``(N, x_dim)``.
    :param labels: ``(N,)`` integer classes, for the colours.
    :param y: labels the model is given, for a model that takes them (M2: ``None`` lets q(y|x) choose).
    """
    if labels.shape != x.shape[:1]:
        raise ValueError(f"expected one label per image, shape ({x.shape[0]},), got {tuple(labels.shape)}")
    values = continuous_latents(vae, x, y)
    if not values:
        raise ValueError("the model's guide has no continuous latent site to draw")
    labels = labels.cpu()
    fig = Figure(figsize=(5.5 * len(values), 4.5), dpi=DPI)
    axs = fig.subplots(1, len(values), squeeze=False)[0]
    for ax, (name, value) in zip(axs, values.items()):
        loc = value.reshape(x.shape[0], -1).double().cpu()
        dim = loc.shape[1]
        if dim == 1:
            jitter = 0.15 * torch.randn(len(labels), generator=torch.Generator().manual_seed(0))
            xs, ys = loc[:, 0], labels.double() + jitter
            ax.set_xlabel(f"{name} (central value under q)")
            ax.set_ylabel("label (jittered)")
            title = f"{name}: central values under q, 1 dimension"
        elif dim == 2:
            xs, ys = loc[:, 0], loc[:, 1]
            ax.set_xlabel(f"{name}, dimension 1")
            ax.set_ylabel(f"{name}, dimension 2")
            title = f"{name}: central values under q, 2 dimensions"
        else:
            centred = loc - loc.mean(0)
            _, s, v = torch.linalg.svd(centred, full_matrices=False)
            share = (s**2 / (s**2).sum()).tolist()
            pcs = centred @ v[:2].T
            xs, ys = pcs[:, 0], pcs[:, 1]
            ax.set_xlabel(f"principal component 1 ({100 * share[0]:.0f}% of variance)")
            ax.set_ylabel(f"principal component 2 ({100 * share[1]:.0f}% of variance)")
            title = f"{name}: central values under q, {dim} dimensions: first two principal components"
        points = ax.scatter(xs.numpy(), ys.numpy(), c=labels.numpy(), cmap="tab10", s=4, alpha=0.7,
                            vmin=-0.5, vmax=9.5, rasterized=True)
        fig.colorbar(points, ax=ax, ticks=range(10), label="label")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, pdf)


@torch.no_grad()
def plot_class_grid(
    model: GraphicalModel, image_shape: tuple[int, int], path: str | Path, *, styles: int = 10, pdf: bool = False
) -> Path:
    """What the label does, the style held fixed: row y holds the mean of the image site for class y
    at ``styles`` draws of the continuous latents from their prior, the same draws in every row.

    For a model conditioned on labels y is passed as its argument; for M2 the model's discrete
    latent site (its y) is conditioned on each class.

    :returns: a mosaic of C rows and ``styles`` columns (C = ``model.num_classes``).
    :raises ValueError: for a model that takes no labels.
    """
    mode = label_mode(model)
    if mode == "none":
        raise ValueError("the class grid needs a model with labels; this one takes none")
    if styles < 1:
        raise ValueError(f"expected styles >= 1, got {styles}")
    classes_count = num_classes(model)
    device = _device(model)
    classes = torch.arange(classes_count, device=device).repeat_interleave(styles)  # row-major: y, then style
    given = torch.zeros(styles, dtype=torch.long, device=device) if mode == "observed" else None
    trace = prior_trace(model, styles, given)
    latents = {name: trace.nodes[name] for name in latent_sites(trace)}
    values = {name: site["value"].repeat(classes_count, *([1] * (site["value"].dim() - 1)))
              for name, site in latents.items() if not is_discrete(site)}
    names = ", ".join(values) or "latents"
    discrete = [name for name, site in latents.items() if is_discrete(site)]
    y = classes
    if mode == "semi-supervised" and len(discrete) == 1:
        values[discrete[0]], y = classes, None  # M2's y as the latent site it is, set to each class
    images = decode(model, values, classes_count * styles, y, device=device)
    title = f"rows: y = 0..{classes_count - 1}, columns: {names} ~ p({names})"
    return _save_image(_grid(images, image_shape, rows=classes_count), path, title, pdf)


def _normal_quantiles(n: int) -> Tensor:
    # Equally spaced probabilities through the standard normal's inverse CDF, as in Kingma & Welling
    # (2014), Figure 4: the grid is dense where the N(0, I) prior puts its mass.
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.distributions.Normal(0.0, 1.0).icdf(u)


@torch.no_grad()
def plot_manifold(vae: GraphicalModel, image_shape: tuple[int, int], path: str | Path, *, n: int = 20,
                  pdf: bool = False) -> Path:
    """The learned data manifold: the image site's mean on a grid of values of the model's one latent
    site (2 dimensions: n x n, the first across and the second upwards; 1: one row of n), the grid
    being the N(0, 1) quantiles of equally spaced probabilities.

    :raises ValueError: for a model that :func:`~pvae.inference.quadrature.grid_site` refuses.
    """
    site, event = grid_site(vae)
    m = math.prod(event)
    q = _normal_quantiles(n).to(dtype=_dtype(vae), device=_device(vae))
    if m == 1:
        z, rows = q[:, None], 1
    else:
        z2, z1 = torch.meshgrid(q.flip(0), q, indexing="ij")  # top row: largest second coordinate
        z, rows = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=-1), n
    images = decode(vae, {site: z.reshape(-1, *event)}, z.shape[0])
    title = (f"E[x|{site}] on a grid of {site} = Φ⁻¹(u), u equally spaced in (0, 1)"
             + (f"²; {site}₁ grows to the right, {site}₂ upwards" if m == 2 else f"; {site} grows to the right"))
    return _save_image(_grid(images, image_shape, rows=rows), path, title, pdf)


@torch.no_grad()
def plot_posteriors(
    vae: GraphicalModel, x: Tensor, image_shape: tuple[int, int], path: str | Path, *, size: int = 100,
    elbo_samples: int = 1000, pdf: bool = False,
) -> Path:
    """For each image: the image, the true posterior p(z|x) (normalized on a grid) with q(z|x)'s
    contours drawn over it, and q(z|x) alone on the same axes (m = 2); for m = 1, both densities as
    curves on one axis. z is the model's one latent site (:func:`~pvae.inference.quadrature.grid_site`), q its distribution in
    the guide's trace. Each row's title gives log p(x) (grid), the ELBO (Monte Carlo) and their gap
    KL(q(z|x) || p(z|x)), in nats.

    :param x: a few images ``(n, x_dim)``, one row each.
    :param size: grid cells per latent dimension.
    :param elbo_samples: draws of z for each ELBO.
    :raises ValueError: for a model that :func:`~pvae.inference.quadrature.grid_site` refuses.
    """
    site, event = grid_site(vae, like=x)
    elbo = elbo_terms(vae, x, num_samples=elbo_samples).elbo
    n, m = x.shape[0], math.prod(event)
    panels = 3 if m == 2 else 2
    fig = Figure(figsize=(1.2 + 3.0 * (panels - 1), 2.6 * n), dpi=DPI)
    axs = fig.subplots(n, panels, squeeze=False, gridspec_kw={"width_ratios": [1.0] + [2.5] * (panels - 1)})
    for i in range(n):
        q = guide_distribution(vae, site, x[i])
        grid = posterior_on_grid(vae, x[i], size=size)
        axes = [a.to(x.dtype) for a in grid.axes]
        mesh = torch.meshgrid(*reversed(axes), indexing="ij")
        z = torch.stack([t.reshape(-1) for t in reversed(mesh)], dim=-1)  # (G^m, m), as in posterior_on_grid
        log_q = q.log_prob(z.reshape(-1, *event)).reshape(grid.log_density.shape).double().cpu()
        p_density, q_density = grid.log_density.exp().cpu().numpy(), log_q.exp().numpy()
        gap = grid.log_px - float(elbo[i])
        axs[i, 0].imshow(x[i].reshape(image_shape).cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axs[i, 0].axis("off")
        axs[i, 0].set_title(f"test image {i + 1}", fontsize=8)
        axs[i, 1].set_title(f"log p(x) = {grid.log_px:.2f} (grid),  ELBO = {float(elbo[i]):.2f}\n"
                            f"gap = KL(q || p({site}|x)) = {gap:.2f} nats", fontsize=8, loc="left")
        if m == 1:
            z1 = axes[0].cpu().numpy()
            ax = axs[i, 1]
            ax.fill_between(z1, p_density, color="C0", alpha=0.3, label=f"p({site}|x), true")
            ax.plot(z1, q_density, "C1--", label=f"q({site}|x)")
            ax.set_xlabel(site)
            ax.set_ylabel("density")
            ax.legend(fontsize=7)
            continue
        z1, z2 = (a.cpu().numpy() for a in axes)
        h1, h2 = z1[1] - z1[0], z2[1] - z2[0]  # cell widths: imshow's extent is the cells' outer edges
        extent = (z1[0] - h1 / 2, z1[-1] + h1 / 2, z2[0] - h2 / 2, z2[-1] + h2 / 2)
        panels_2d = ((axs[i, 1], p_density, f"p({site}|x), true\ndashed: q({site}|x)"),
                     (axs[i, 2], q_density, f"q({site}|x)"))
        for ax, density, name in panels_2d:
            ax.imshow(density, origin="lower", extent=extent, aspect="auto", cmap="Blues")
            ax.text(0.03, 0.95, name, transform=ax.transAxes, va="top", fontsize=8)
            ax.set_xlabel(f"{site}, dimension 1")
            ax.set_ylabel(f"{site}, dimension 2")
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
    a point's height below the line is its KL(q(z|x) || p(z|x)).

    :param elbo: ``(N,)``, nats.
    :param log_px: ``(N,)``, nats.
    """
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


def plot_log_px_curves(
    curves: Mapping[str, Sequence[dict[str, float]]],
    path: str | Path,
    *,
    references: Mapping[str, float] | None = None,
    until: int | None = None,
    pdf: bool = False,
) -> Path:
    """Test log p(x) against training epochs (log scale) for one or more runs, with its standard error
    as error bars, and published results as horizontal lines: a learning curve beside a paper's table.

    :param curves: a label per run -> its points, each with ``epoch``, ``log_px`` (nats per image,
        higher is better) and optionally ``log_px_stderr``; e.g. ``curve.json``'s ``curve`` as
        written by ``bench/converged.py iwae``.
    :param references: a label -> a published log p(x) in nats (i.e. minus the paper's nll).
    :param until: the epoch axis reaches this far, e.g. the full schedule's 3,280 epochs, so that a
        curve cut short shows how much of its budget it had.
    """
    if not curves or any(len(points) == 0 for points in curves.values()):
        raise ValueError("expected at least one curve, each with at least one point (epoch, log_px)")
    fig = Figure(figsize=(5.5, 3.8), dpi=DPI)
    ax = fig.subplots()
    for i, (label, points) in enumerate(curves.items()):
        ax.errorbar([p["epoch"] for p in points], [p["log_px"] for p in points],
                    yerr=[p.get("log_px_stderr", 0.0) for p in points], fmt="o-", ms=4, capsize=2,
                    color=f"C{i}", label=label)
    for j, (label, value) in enumerate((references or {}).items()):
        ax.axhline(value, color=f"C{len(curves) + j}", ls="--", lw=1, label=label)
    values = [p["log_px"] + sign * p.get("log_px_stderr", 0.0) for points in curves.values() for p in points
              for sign in (-1, 1)] + list((references or {}).values())
    span = max(values) - min(values) or 1.0
    ax.set_ylim(min(values) - 0.05 * span, max(values) + 0.05 * span)  # keep bars and lines off the frame
    last = max([p["epoch"] for points in curves.values() for p in points] + [until or 0])
    ax.set_xscale("log")
    ax.set_xlim(0.8, 1.25 * last)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("epoch (log scale)")
    ax.set_ylabel("test log p(x), nats per image")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, pdf)


def plot_ess_histogram(ess: Tensor, path: str | Path, *, num_samples: int | None = None, pdf: bool = False) -> Path:
    """Histogram of the per-image effective sample size of the importance weights (1 <= ESS <= K).

    :param ess: ``(N,)``.
    :param num_samples: K, marked on the axis when given.
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
