"""Per-image ELBO of a trained VAE and its two parts, and the ``evaluate`` step of a run folder.

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{E_{q(z|x)}[\\log p(x|z)]}_{\\text{reconstruction}}
                      - \\underbrace{KL(q(z|x) \\,\\|\\, p(z))}_{\\text{kl}}

The KL term is computed in closed form when Pyro/PyTorch know it for the (guide, prior) pair and by
Monte Carlo from the same draws otherwise.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro import poutine
from torch import Tensor
from torch.distributions import kl_divergence

from pvae.checkpoint import atomic_write_text
from pvae.importance import DEFAULT_CHUNK_SIZE, active_units, importance_estimate
from pvae.data import EVAL_BINARIZATION_SEED, check_images, fixed_eval_set, load_data
from pvae.model import VAE
from pvae.runs import EVALUATION, PER_IMAGE, forked_rng, load_run, rebuild_model, resolve_device

__all__ = ["ElboTerms", "elbo_terms", "evaluate_run", "format_table", "PER_IMAGE", "PER_IMAGE_FIELDS"]

PER_IMAGE_FIELDS = ("index", "label", "elbo", "log_px", "kl_gap", "ess", "pareto_k")


@dataclass(frozen=True)
class ElboTerms:
    """Per-image estimates, each ``(N,)``, in nats: ``elbo = reconstruction - kl`` (higher is better)."""

    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    kl_is_analytic: bool


@torch.no_grad()
def elbo_terms(vae: VAE, x: Tensor, *, num_samples: int = 1, batch_size: int = 1000) -> ElboTerms:
    """Estimate ELBO(x), E_q[log p(x|z)] and KL(q(z|x) || p(z)) image by image.

    :param x: images ``(N, x_dim)``.
    :param num_samples: draws of z ~ q(z|x) per image, averaged.
    :param batch_size: images per chunk (memory is ``O(batch_size * num_samples * x_dim)``).
    :returns: per-image terms, unaffected by the plate's minibatch scale.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    check_images(x, vae.x_dim)
    recon, kl, analytic = [], [], True
    for xb in x.split(batch_size):
        # The particles plate sits left of the data plate, so every image gets num_samples draws.
        with pyro.plate("particles", num_samples, dim=-2):
            guide_tr = poutine.trace(vae.guide).get_trace(xb)
            model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(xb)
        q_z, p_z, z = guide_tr.nodes["z"]["fn"], model_tr.nodes["z"]["fn"], guide_tr.nodes["z"]["value"]
        recon.append(model_tr.nodes["x"]["fn"].log_prob(xb).mean(0))
        try:
            kl.append(kl_divergence(q_z, p_z).mean(0))
        except NotImplementedError:
            analytic = False
            kl.append((q_z.log_prob(z) - p_z.log_prob(z)).mean(0))
    reconstruction, kl_t = torch.cat(recon), torch.cat(kl)
    return ElboTerms(reconstruction - kl_t, reconstruction, kl_t, analytic)


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    num_samples: int = 1,
    data_dir: str | None = None,
    device: str = "auto",
    num_samples_log_px: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate a run folder's model on a split and write ``<run_dir>/evaluation.json``.

    :param split: ``test`` or ``val``; images are binarized once with a fixed seed (unless the run
        used ``binarization none``), so every run is measured on the same images.
    :param num_samples: draws of z per image for the reconstruction term (and the KL when it has
        no closed form).
    :param data_dir: where the data is, when not where the run found it.
    :param num_samples_log_px: K; when given, also estimate log p(x) of every image by importance
        sampling with K draws of the guide (:func:`pvae.importance.importance_estimate`) and write
        ``<run_dir>/per_image.csv`` (index, label, elbo, log_px, kl_gap, ess, pareto_k per image).
        ``None``: no log p(x) (it costs K times the ELBO).
    :param chunk_size: most (particle, image) pairs per pass of the estimator; bounds its memory.
    :param seed: seeds the draws of z, so that evaluating a run twice gives the same numbers (on
        the same device and chunk size); the caller's random state is left as it was.
    :returns: the JSON's content: per-image means in nats (``elbo``, ``reconstruction``, ``kl``),
        ``elbo_stderr`` (standard error of the mean over images), ``split``, ``binarization``, ...;
        with ``num_samples_log_px`` also ``log_px`` and ``log_px_stderr``, ``num_samples`` (K),
        ``elbo_is`` (the ELBO from the same K draws), ``kl_gap`` (``log_px - elbo_is``, an estimate of
        E_x KL(q(z|x) || p(z|x)) >= 0) and ``kl_gap_stderr``, ``ess_mean``, ``pareto_k_mean`` and
        ``pareto_k_above_0_7`` (fraction of images whose estimate is unreliable), ``active_units``
        (Burda et al. 2016: units with Cov_x E_q[z] > 0.01) and ``log_px_seconds``.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    # Seeded: the same run evaluated twice gives the same numbers. The model's rebuild and the draws
    # of z use the global generators; forked_rng gives them back to the caller as they were.
    with forked_rng(dev):
        torch.manual_seed(seed)
        config, state = load_run(run_dir, map_location=dev)
        vae = rebuild_model(config, state, dev)
        data = load_data(
            config.dataset, data_dir if data_dir is not None else config.data_dir,
            val_size=config.val_size, train_size=config.train_size, device=dev,
        )
        x = fixed_eval_set(data.test if split == "test" else data.val, config.binarization)
        if len(x) == 0:
            raise ValueError(f"the {split} split of this run is empty (val_size=0); evaluate on --split test")
        vae.likelihood.check_support(x)
        tic = time.perf_counter()
        terms = elbo_terms(vae, x, num_samples=num_samples)
        result: dict[str, Any] = {
            "split": split,
            "dataset": config.dataset,
            "binarization": config.binarization,
            # the evaluation images are one fixed Bernoulli draw, the same for every run
            "eval_binarization_seed": None if config.binarization == "none" else EVAL_BINARIZATION_SEED,
            "num_images": len(x),
            "elbo": terms.elbo.mean().item(),
            "elbo_stderr": (terms.elbo.std() / math.sqrt(len(x))).item(),
            "reconstruction": terms.reconstruction.mean().item(),
            "kl": terms.kl.mean().item(),
            "kl_analytic": terms.kl_is_analytic,
            "elbo_samples": num_samples,
            "seed": seed,
            "epoch": int(state["epoch"]),
            "seconds": time.perf_counter() - tic,
        }
        if num_samples_log_px is not None:
            labels = data.test_labels if split == "test" else data.val_labels
            result.update(_log_px_evaluation(vae, x, labels, num_samples_log_px, chunk_size, run_dir / PER_IMAGE))
    atomic_write_text(run_dir / EVALUATION, json.dumps(result, indent=2))
    return result


def _log_px_evaluation(
    vae: VAE, x: Tensor, labels: Tensor, num_samples: int, chunk_size: int, csv_path: Path
) -> dict[str, Any]:
    """log p(x) by importance sampling, its diagnostics, and the per-image table at ``csv_path``."""
    tic = time.perf_counter()
    # The data's support was checked above; Pyro's validation would re-check every chunk's decoder
    # output, a full extra pass over the largest tensor, and find nothing new.
    with pyro.validation_enabled(False):
        est = importance_estimate(vae.model, vae.guide, x, num_samples=num_samples, chunk_size=chunk_size, pareto_k=True)
    seconds = time.perf_counter() - tic
    assert est.pareto_k is not None
    gap, n = est.kl_gap, len(x)
    rows = zip(range(n), labels.tolist(), est.elbo.tolist(), est.log_px.tolist(), gap.tolist(), est.ess.tolist(),
               est.pareto_k.tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_IMAGE_FIELDS)
    writer.writerows([i, label, *(f"{v:.6f}" for v in values)] for i, label, *values in rows)
    atomic_write_text(csv_path, buf.getvalue())
    return {
        "log_px": est.log_px_mean,
        "log_px_stderr": est.log_px_stderr,
        "num_samples": num_samples,
        "elbo_is": est.elbo.mean().item(),
        "kl_gap": gap.mean().item(),
        "kl_gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "ess_mean": est.ess.mean().item(),
        "pareto_k_mean": est.pareto_k.mean().item(),
        "pareto_k_above_0_7": (est.pareto_k > 0.7).double().mean().item(),
        "active_units": active_units(vae.guide, x) if n > 1 else None,
        "log_px_seconds": seconds,
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation, in nats per image."""
    rows = [
        ("ELBO (higher is better)", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f}"),
        ("  E_q[log p(x|z)]", f"{result['reconstruction']:.3f}"),
        ("  KL(q(z|x) || p(z))" + (" (analytic)" if result["kl_analytic"] else " (Monte Carlo)"), f"{result['kl']:.3f}"),
    ]
    if "log_px" in result:
        k = result["num_samples"]
        rows += [
            (f"log p(x), importance sampling, K={k}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f}"),
            (f"  ELBO from the same {k} draws", f"{result['elbo_is']:.3f}"),
            ("  KL(q(z|x) || p(z|x)) = log p(x) - ELBO", f"{result['kl_gap']:.3f} ± {result['kl_gap_stderr']:.3f}"),
            ("  effective sample size (mean)", f"{result['ess_mean']:.1f} of {k}"),
            ("  Pareto k-hat (mean; share > 0.7)", f"{result['pareto_k_mean']:.2f}; {result['pareto_k_above_0_7']:.1%}"),
            ("active units (Cov_x E_q[z] > 0.01)", f"{result['active_units']}"),
            ("seconds for log p(x)", f"{result['log_px_seconds']:.1f}"),
        ]
    seed = result["eval_binarization_seed"]
    binarized = "grey levels" if seed is None else f"binarized once (seed {seed})"
    head = f"{result['dataset']} {result['split']} set, {result['num_images']} images, {binarized}"
    width = max(len(r[0]) for r in rows)
    return "\n".join([head, "nats per image:"] + [f"  {k:<{width}}  {v}" for k, v in rows])
