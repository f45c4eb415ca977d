"""Per-image ELBO of a trained VAE and its two parts, and the ``evaluate`` step of a run folder.

.. math::

    \\mathrm{ELBO}(x) = \\underbrace{E_{q(z|x)}[\\log p(x|z)]}_{\\text{reconstruction}}
                      - \\underbrace{KL(q(z|x) \\,\\|\\, p(z))}_{\\text{kl}}

The KL term is computed in closed form when Pyro/PyTorch know it for the (guide, prior) pair and by
Monte Carlo from the same draws otherwise.
"""

from __future__ import annotations

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
from pvae.data import EVAL_BINARIZATION_SEED, fixed_eval_set, load_data
from pvae.model import VAE
from pvae.runs import load_run, rebuild_model, resolve_device

__all__ = ["ElboTerms", "elbo_terms", "evaluate_run", "format_table"]


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
    if x.ndim != 2 or x.shape[1] != vae.x_dim:
        raise ValueError(f"expected images of shape (N, {vae.x_dim}), got {tuple(x.shape)}")
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
) -> dict[str, Any]:
    """Evaluate a run folder's model on a split and write ``<run_dir>/evaluation.json``.

    :param split: ``test`` or ``val``; images are binarized once with a fixed seed (unless the run
        used ``binarization none``), so every run is measured on the same images.
    :param num_samples: draws of z per image for the reconstruction term (and the KL when it has
        no closed form).
    :param data_dir: where the data is, when not where the run found it.
    :returns: the JSON's content: per-image means in nats (``elbo``, ``reconstruction``, ``kl``),
        ``elbo_stderr`` (standard error of the mean over images), ``split``, ``binarization``, ...
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    run_dir = Path(run_dir)
    dev = resolve_device(device)
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
        "epoch": int(state["epoch"]),
        "seconds": time.perf_counter() - tic,
    }
    atomic_write_text(run_dir / "evaluation.json", json.dumps(result, indent=2))
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation, in nats per image."""
    rows = [
        ("ELBO (higher is better)", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f}"),
        ("  E_q[log p(x|z)]", f"{result['reconstruction']:.3f}"),
        ("  KL(q(z|x) || p(z))" + (" (analytic)" if result["kl_analytic"] else " (Monte Carlo)"), f"{result['kl']:.3f}"),
    ]
    seed = result["eval_binarization_seed"]
    binarized = "grey levels" if seed is None else f"binarized once (seed {seed})"
    head = f"{result['dataset']} {result['split']} set, {result['num_images']} images, {binarized}"
    width = max(len(r[0]) for r in rows)
    return "\n".join([head, "nats per image:"] + [f"  {k:<{width}}  {v}" for k, v in rows])
