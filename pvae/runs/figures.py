"""A run's figures: what training leaves in the run folder, what ``pvae plot RUN`` draws, and
``pvae sample RUN``; each opens the run (:func:`pvae.runs.folder.open_run`) and calls the plain
figure functions of :mod:`pvae.views.plots`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from pvae.data import ImageData, fixed_eval_set
from pvae.devices import forked_rng, resolve_device
from pvae.inference.quadrature import grid_site
from pvae.protocol import GraphicalModel, label_mode, num_classes
from pvae.runs.folder import open_run
from pvae.views.plots import (
    PER_IMAGE_CSV,
    plot_class_grid,
    plot_elbo_vs_log_px,
    plot_ess_histogram,
    plot_interpolations,
    plot_latent_space,
    plot_manifold,
    plot_posteriors,
    plot_reconstructions,
    plot_samples,
    plot_training_curves,
    read_per_image_csv,
)

__all__ = ["RunFigures", "plot_run", "sample_run", "save_run_figures"]


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
    seed: int = 0,
) -> RunFigures:
    """Every figure of a run folder that its model allows, written into ``out`` (default: the run
    folder); each figure it leaves out is named in ``skipped`` with the reason.

    Reads ``config.json`` and the checkpoint (with its per-epoch metrics); ``evaluation.json`` (its
    ``log_px`` and ``num_samples`` K) and ``per_image.csv`` (columns ``elbo``, ``log_px``, ``ess``),
    which ``pvae evaluate RUN --num-samples K`` writes, when they exist. The class grid needs a model
    with labels; the manifold and the true posteriors a model without labels and with one continuous
    latent site of 1 or 2 dimensions.

    :param num_latent_images: test images in the latent-space scatter.
    :param num_posterior_images: test images in the true-posterior figure.
    :param seed: seeds every draw (samples, class grid, posterior bounds), so the figures are the
        same each time; the caller's random state is left as it was.
    """
    dev = resolve_device(device)
    with forked_rng(dev):
        torch.manual_seed(seed)
        return _plot_run(run_dir, out, pdf, data_dir, dev, num_latent_images, num_posterior_images)


def _plot_run(
    run_dir: str | Path, out: str | Path | None, pdf: bool, data_dir: str | None, device: torch.device,
    num_latent_images: int, num_posterior_images: int,
) -> RunFigures:
    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run = open_run(run_dir, device=device, data_dir=data_dir)
    model, data = run.model, run.data
    x_test = fixed_eval_set(data.test, run.config.binarization, run.config.dequantize)
    # A model conditioned on labels is given the test labels; M2's guide chooses them itself.
    y_test = data.test_labels if label_mode(model) == "observed" else None

    def first(k: int) -> Tensor | None:
        return None if y_test is None else y_test[:k]

    figures = RunFigures()
    evaluation_path = run_dir / "evaluation.json"
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
    log_px = evaluation.get("log_px")
    figures.files += [
        plot_training_curves(run.state["metrics"], out / "curves.png", log_px=log_px, pdf=pdf),
        plot_reconstructions(model, x_test, data.image_shape, out / "reconstructions.png", y=first(10), pdf=pdf),
        plot_samples(model, data.image_shape, out / "samples.png", pdf=pdf),
        plot_interpolations(model, x_test[:8], data.image_shape, out / "interpolations.png", y=first(8), pdf=pdf),
        plot_latent_space(model, x_test[:num_latent_images], data.test_labels[:num_latent_images],
                          out / "latent_space.png", first(num_latent_images), pdf=pdf),
    ]
    if log_px is None:
        figures.skipped.append(f"log p(x) is not on the training curves: run pvae evaluate {run_dir} --num-samples K")
    if label_mode(model) == "none":
        figures.skipped.append("class_grid.png: the model takes no labels")
    else:
        figures.files.append(plot_class_grid(model, data.image_shape, out / "class_grid.png", pdf=pdf))
    try:
        grid_site(model)
    except ValueError as why:
        figures.skipped.append(f"manifold.png and posteriors.png need a model without labels and with one "
                               f"continuous latent site of 1 or 2 dimensions: {why}")
    else:
        figures.files += [
            plot_manifold(model, data.image_shape, out / "manifold.png", pdf=pdf),
            plot_posteriors(model, x_test[:num_posterior_images], data.image_shape, out / "posteriors.png", pdf=pdf),
        ]
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


def sample_run(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    label: int | None = None,
    num: int = 64,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
) -> Path:
    """Draw ``num`` samples from a run's trained model into ``samples.png`` (as :func:`~pvae.views.plots.plot_samples`),
    or with ``label`` all of that class into ``samples_label{label}.png``, in ``out`` (default: the
    run folder). The draws come from their own random stream, seeded by ``seed``: the same seed gives
    the same figure, and the caller's streams are left as they were.

    :param label: a class in 0..C-1, for a model with labels (M2: y is observed at it).
    :raises ValueError: for a label given to a model without labels, or outside 0..C-1.
    """
    if num < 1:
        raise ValueError(f"expected num >= 1 samples, got {num}")
    dev = resolve_device(device)
    run = open_run(run_dir, device=dev, data_dir=data_dir)
    model = run.model
    y = None
    if label is not None:
        if label_mode(model) == "none":
            raise ValueError("this run's model takes no labels; drop --label")
        classes_count = num_classes(model)
        if not 0 <= label < classes_count:
            raise ValueError(f"expected a label in 0..{classes_count - 1} (the model's classes), got {label}")
        y = torch.full((num,), label, dtype=torch.long, device=dev)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = "samples.png" if label is None else f"samples_label{label}.png"
    with forked_rng(dev):
        torch.manual_seed(seed)
        return plot_samples(model, run.data.image_shape, out / name, num, y=y)


def save_run_figures(
    out: str | Path, vae: GraphicalModel, data: ImageData, metrics: Sequence[dict[str, float]], binarization: str
) -> list[Path]:
    """Write ``curves.png``, ``reconstructions.png`` and ``samples.png`` into the run folder ``out``
    (what :func:`pvae.train <pvae.runs.train.train>` leaves, for any model; ``pvae plot RUN`` draws the rest)."""
    out = Path(out)
    vae.eval()
    x_test = fixed_eval_set(data.test[:10], binarization)
    y_test = data.test_labels[:10] if label_mode(vae) == "observed" else None
    return [
        plot_training_curves(metrics, out / "curves.png"),
        plot_reconstructions(vae, x_test, data.image_shape, out / "reconstructions.png", y=y_test),
        plot_samples(vae, data.image_shape, out / "samples.png"),
    ]
