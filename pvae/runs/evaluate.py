"""The ``evaluate`` step of a run folder: the test set's ELBO and its terms per latent site
(:mod:`pvae.inference.elbo`) and log p(x) by importance sampling, AIS or BDMC, for any graphical
model (read from its traces), written to ``evaluation.json`` and ``per_image.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer.inspect import get_model_relations
from torch import Tensor
from torch.distributions import kl_divergence

from pvae.runs.checkpoint import atomic_write_text
from pvae.inference.elbo import ElboTerms, active_units_by_site, classify, elbo_terms
from pvae.data import EVAL_BINARIZATION_SEED, check_images, fixed_eval_set
from pvae.devices import forked_rng, resolve_device
from pvae.distributed import SINGLE, World, current_world
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, importance_estimate, latent_activity
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs.folder import EVALUATION, PER_IMAGE, default_checkpoint, open_run
from pvae.runs.sharding import by_blocks
from pvae.inference.traces import (
    enumerated_sites,
    image_site,
    is_discrete,
    label_site,
    latent_sites,
    observed_sites,
    per_image,
    site_log_prob,
    trace_pair,
)

__all__ = [
    "evaluate_run",
    "bits_per_dim",
    "format_table",
    "PER_IMAGE",
    "PER_IMAGE_FIELDS",
    "METHODS",
    "BDMC_CSV",
]

PER_IMAGE_FIELDS = ("index", "label", "elbo", "log_px", "kl_gap", "ess", "pareto_k")
#: How ``evaluate_run`` estimates log p(x): importance sampling, AIS, or the BDMC sandwich.
METHODS = ("is", "ais", "bdmc")
#: BDMC's per-image bounds on the simulated images.
BDMC_CSV = "bdmc.csv"
#: Most images per block of an AIS evaluation (fewer when chunk_size / chains is smaller): its draws
#: are seeded per block (pvae.runs.sharding), and a distributed evaluation deals the blocks to its processes.
AIS_BLOCK_IMAGES = 1000


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    num_images: int | None = None,
    elbo_samples: int = 1,
    num_samples: int | None = None,
    method: str = "is",
    num_steps: int | None = None,
    num_leapfrog: int = 10,
    num_chains: int = 1,
    bdmc_images: int = 100,
    data_dir: str | None = None,
    device: str = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Evaluate a run folder's model on a split and write ``<run_dir>/evaluation.json``.

    :param split: ``test`` or ``val``; images are binarized once with a fixed seed (unless the run
        used ``binarization none``), so every run is measured on the same images.
    :param num_images: evaluate the split's first this many images (when not given, all of them).
    :param elbo_samples: draws of the latents per image for the reconstruction term (and each KL
        term without a closed form); ``pvae evaluate --elbo-samples``.
    :param num_samples: K (``pvae evaluate --num-samples``); when given, also estimate log p(x) of every image by importance
        sampling with K draws of the guide (:func:`pvae.inference.importance.importance_estimate`) and write
        ``<run_dir>/per_image.csv`` (index, label, elbo, log_px, kl_gap, ess, pareto_k per image).
        Not given: no log p(x) (it costs K times the ELBO).
    :param method: how log p(x) is estimated: ``is`` (importance sampling with K = ``num_samples``),
        ``ais`` (annealed importance sampling with HMC from the guide, :func:`pvae.inference.ais.ais_estimate`,
        on the split's images; per-image rows in ``per_image.csv``), or ``bdmc`` (forward and reverse
        AIS on ``bdmc_images`` images simulated from the model, :func:`pvae.inference.ais.bdmc`: a lower and an
        upper bound on their log p(x); per-image rows in ``bdmc.csv``).
    :param num_steps: T, the annealing steps of ``ais`` and ``bdmc`` (e.g. 500).
    :param num_leapfrog: L, leapfrog steps per HMC transition.
    :param num_chains: C, chains per image, combined by log-mean-exp.
    :param bdmc_images: how many images ``bdmc`` simulates.
    :param data_dir: where the data is, when not where the run found it.
    :param chunk_size: most (particle, image) pairs per pass of the estimator; bounds its memory.
    :param seed: seeds the draws of z, so that evaluating a run twice gives the same numbers (on
        the same device and chunk size); the caller's random state is left as it was. The draws of
        log p(x) are seeded per block of images from the block's first image (:mod:`pvae.runs.sharding`),
        so that under ``torchrun`` (the blocks dealt to the processes, the results gathered on
        rank 0, which alone writes) the numbers are those of one process whatever their number.
    :param progress: show the images done and the time left while log p(x) is estimated; when not
        given, only when stderr is a terminal.
    :param checkpoint: the checkpoint file to evaluate; when not given, ``best.pt`` where early
        stopping kept one, else ``checkpoint.pt`` (the last epoch). Another one (e.g. a kept
        ``checkpoint-EPOCH.pt``) writes its numbers to ``evaluation-checkpoint-EPOCH.json`` (and
        ``per_image-...csv``, ``bdmc-...csv``), leaving the run's own evaluation as it was.
    :returns: the JSON's content: per-image means in nats (``elbo``, ``reconstruction``, ``kl``),
        ``elbo_stderr`` (standard error of the mean over images), ``split``, ``binarization``, ...;
        with ``num_samples`` also ``log_px`` and ``log_px_stderr``, ``num_samples`` (K),
        ``elbo_is`` (the ELBO from the same K draws), ``kl_gap`` (``log_px - elbo_is``, an estimate of
        E_x KL(q(z|x) || p(z|x)) >= 0) and ``kl_gap_stderr``, ``ess_mean``, ``pareto_k_mean`` and
        ``pareto_k_above_0_7`` (fraction of images whose estimate is unreliable), ``active_units``
        (Burda et al. 2016: units with Cov_x E_q[z] > 0.01) and ``log_px_seconds``. Where the
        numbers are likelihoods of the 8-bit or binary images (see :func:`bits_per_dim`), also
        ``neg_elbo_bits_per_dim`` and, with ``num_samples``, ``nll_bits_per_dim`` (lower is better).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    _check_method(method, num_samples, num_steps, num_leapfrog, num_chains, bdmc_images)
    run_dir = Path(run_dir)
    world = current_world(device)  # under torchrun, the processes that share the estimate's images
    dev = world.device(resolve_device(device))
    default = default_checkpoint(run_dir)
    checkpoint = default if checkpoint is None else checkpoint
    # The run's own files describe its default checkpoint; another checkpoint's go beside them.
    suffix = "" if checkpoint == default else "-" + Path(checkpoint).stem
    evaluation_file, per_image_file, bdmc_file = (
        run_dir / f"{Path(name).stem}{suffix}{Path(name).suffix}" for name in (EVALUATION, PER_IMAGE, BDMC_CSV))
    # Seeded: the same run evaluated twice gives the same numbers. The model's rebuild and the draws
    # of z use the global generators; forked_rng gives them back to the caller as they were.
    with forked_rng(dev):
        torch.manual_seed(seed)
        run = open_run(run_dir, device=dev, data_dir=data_dir, checkpoint=checkpoint)
        config, model, data = run.config, run.model, run.data
        x = fixed_eval_set(data.test if split == "test" else data.val, config.binarization, config.dequantize)
        labels = data.test_labels if split == "test" else data.val_labels
        if len(x) == 0:
            raise ValueError(f"the {split} split of this run is empty (val_size=0); evaluate on --split test")
        if num_images is not None:
            if not 1 <= num_images <= len(x):
                raise ValueError(f"--num-images must be in [1, {len(x)}] for the {split} split, got {num_images}")
            x, labels = x[:num_images], labels[:num_images]
        mode = label_mode(model)
        # A class-conditional model is given each image's label; M2 sums its latent label out.
        args = (labels,) if mode == "observed" else ()
        from pvae.inference.traces import check_data_support

        check_data_support(model, x, *args)
        tic = time.perf_counter()
        terms = elbo_terms(model, x, *args, num_samples=elbo_samples)
        result: dict[str, Any] = {
            "split": split,
            "dataset": config.dataset,
            "model": config.model,
            "binarization": config.binarization,
            "dequantized": config.dequantize,
            # the evaluation images are one fixed Bernoulli draw, the same for every run
            "eval_binarization_seed": (EVAL_BINARIZATION_SEED if config.binarization != "none" or config.dequantize
                                       else None),
            "num_images": len(x),
            "elbo": terms.elbo.mean().item(),
            "elbo_stderr": (terms.elbo.std() / math.sqrt(len(x))).item() if len(x) > 1 else 0.0,
            "reconstruction": terms.reconstruction.mean().item(),
            "kl": terms.kl.mean().item(),
            "kl_analytic": terms.kl_is_analytic,
            "kl_by_site": {name: kl.mean().item() for name, kl in terms.kl_by_site.items()},
            "kl_analytic_by_site": terms.analytic_by_site,
            "conditioned_on_label": mode == "observed",
            "elbo_samples": elbo_samples,
            "seed": seed,
            "checkpoint": checkpoint,
            "epoch": int(run.state["epoch"]),
            "seconds": time.perf_counter() - tic,
        }
        site = label_site(model, x[:2], labels[:2]) if mode != "none" else None
        if site is not None:
            # M2's label is a latent of the test images: every number above sums it out exactly.
            result["label_site"] = site
            result["discrete_latents"] = "summed exactly (enumerated)"
            predicted = classify(model, x, site)
            result["classification_error"] = (predicted != labels).double().mean().item()
        show = sys.stderr.isatty() if progress is None else progress
        if method == "ais":
            assert num_steps is not None
            result.update(_ais_evaluation(model, x, labels, args, terms.elbo, per_image_file, num_steps=num_steps,
                                          num_leapfrog=num_leapfrog, num_chains=num_chains, chunk_size=chunk_size,
                                          progress=show and world.main, seed=seed, world=world))
        elif method == "bdmc":
            assert num_steps is not None
            # one stream of simulated images and chains: on rank 0, which gives its numbers to the others
            result.update(world.on_main(lambda: _bdmc_evaluation(
                model, x, labels, mode, bdmc_file, num_images=bdmc_images, num_steps=num_steps,
                num_leapfrog=num_leapfrog, num_chains=num_chains, chunk_size=chunk_size, progress=show)))
        elif num_samples is not None:
            # With a discrete latent summed out, the importance sampler's own bound from the same draws
            # is tighter than the ELBO (it sums y exactly): the gap to the ELBO is taken from elbo_terms.
            probe = trace_pair(model.model, model.guide, x[:2], *(a[:2] for a in args), enumerate_discrete=False).model
            discrete = any(is_discrete(probe.nodes[n]) for n in latent_sites(probe))
            result.update(_log_px_evaluation(model, x, labels, args, num_samples, chunk_size,
                                             per_image_file, elbo=terms.elbo if discrete else None,
                                             progress=show and world.main, seed=seed, world=world))
        result.update(_bits_per_dim(model, x, args, result, dequantized=config.dequantize))
        result["method"] = method if method != "is" or num_samples is not None else None
    # the files of this evaluation, in the run folder
    result["files"] = [evaluation_file.name] + ([bdmc_file.name] if method == "bdmc" else [per_image_file.name]
                                                if method == "ais" or num_samples is not None else [])
    if world.main:
        atomic_write_text(evaluation_file, json.dumps(result, indent=2))
    return result


def _check_method(method: str, num_samples: int | None, num_steps: int | None, num_leapfrog: int, num_chains: int,
                  bdmc_images: int) -> None:
    """Refuse settings that do not fit the method, in one line each, before anything is loaded."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of: {', '.join(METHODS)}")
    if method == "is":
        if num_steps is not None:
            raise ValueError("--steps sets the annealing of --method ais or bdmc; importance sampling takes --num-samples K")
        return
    if num_samples is not None:
        raise ValueError(f"--num-samples K is importance sampling's; --method {method} takes --steps T "
                         "(with --leapfrog L and --chains C)")
    if num_steps is None or num_steps < 1:
        given = "none" if num_steps is None else num_steps
        raise ValueError(f"--method {method} needs --steps T >= 1 annealing steps, e.g. --steps 500; got {given}")
    for name, value in (("--leapfrog", num_leapfrog), ("--chains", num_chains), ("--bdmc-images", bdmc_images)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _log_px_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, args: tuple[Tensor, ...], num_samples: int, chunk_size: int,
    csv_path: Path, *, elbo: Tensor | None = None, progress: bool = False, seed: int = 0, world: World = SINGLE,
) -> dict[str, Any]:
    """log p(x) (log p(x | y) given labels) by importance sampling, its diagnostics, and the
    per-image table at ``csv_path``.

    :param elbo: the per-image ELBO ``(N,)`` to take the gap to; ``None``: the ELBO from the
        sampler's own draws (which is the ELBO only when no discrete latent is summed out).
    """
    tic = time.perf_counter()
    # The data's support was checked above; Pyro's validation would re-check every chunk's decoder
    # output, a full extra pass over the largest tensor, and find nothing new.
    from tqdm.auto import tqdm  # only a long estimate needs it

    bar = tqdm(total=len(x), desc=f"log p(x), K={num_samples}", unit="image", disable=not progress, leave=False)
    with pyro.validation_enabled(False), bar:
        # blocks of the sampler's own chunk (chunk_size // K images), each seeded from its first image
        est = by_blocks(lambda xb, ab: importance_estimate(model.model, model.guide, xb, *ab, num_samples=num_samples,
                                                           chunk_size=chunk_size, pareto_k=True, progress=bar.update),
                        x, args, block=max(1, chunk_size // num_samples), seed=seed, world=world)
    seconds = time.perf_counter() - tic
    assert est.pareto_k is not None
    bound = est.elbo if elbo is None else elbo.to(est.log_px)
    gap, n = est.log_px - bound, len(x)
    rows = zip(range(n), labels.tolist(), bound.tolist(), est.log_px.tolist(), gap.tolist(), est.ess.tolist(),
               est.pareto_k.tolist())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(PER_IMAGE_FIELDS)
    writer.writerows([i, label, *(f"{v:.6f}" for v in values)] for i, label, *values in rows)
    if world.main:
        atomic_write_text(csv_path, buf.getvalue())
    by_site = active_units_by_site(model, x, *args) if n > 1 else {}
    return {
        "log_px": est.log_px_mean,
        "log_px_stderr": est.log_px_stderr,
        "num_samples": num_samples,
        "elbo_is": bound.mean().item(),
        "elbo_is_from": "the same draws" if elbo is None else "elbo_terms (a discrete latent is summed out)",
        "kl_gap": gap.mean().item(),
        "kl_gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "ess_mean": est.ess.mean().item(),
        "pareto_k_mean": est.pareto_k.mean().item(),
        "pareto_k_above_0_7": (est.pareto_k > 0.7).double().mean().item(),
        "active_units": sum(by_site.values()) if by_site else None,
        "active_units_by_site": by_site,
        "log_px_seconds": seconds,
    }


def _per_image_csv(path: Path, columns: dict[str, list[Any]]) -> None:
    """Write equal-length columns as CSV, floats with six decimals."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values()):
        writer.writerow([f"{v:.6f}" if isinstance(v, float) else v for v in row])
    atomic_write_text(path, buf.getvalue())


def _ais_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, args: tuple[Tensor, ...], elbo: Tensor, csv_path: Path, *,
    num_steps: int, num_leapfrog: int, num_chains: int, chunk_size: int, progress: bool, seed: int = 0,
    world: World = SINGLE,
) -> dict[str, Any]:
    """log p(x) of every image by AIS from the guide, its gap to the ELBO, and the per-image table."""
    from tqdm.auto import tqdm

    from pvae.inference.ais import ais_estimate

    bar = tqdm(total=len(x), desc=f"log p(x), AIS T={num_steps}", unit="image", disable=not progress, leave=False)
    with bar:
        est = by_blocks(lambda xb, ab: ais_estimate(model.model, model.guide, xb, *ab, num_steps=num_steps,
                                                    num_leapfrog=num_leapfrog, num_chains=num_chains,
                                                    chunk_size=chunk_size, progress=bar.update),
                        x, args, block=max(1, min(AIS_BLOCK_IMAGES, chunk_size // num_chains)), seed=seed,
                        world=world)
    gap, n = est.log_px - elbo.to(est.log_px), len(x)
    if world.main:
        _per_image_csv(csv_path, {"index": list(range(n)), "label": labels.tolist(), "elbo": elbo.tolist(),
                                  "log_px": est.log_px.tolist(), "kl_gap": gap.tolist(),
                                  "acceptance_rate": est.acceptance_rate.tolist(),
                                  "step_size": est.step_size.tolist()})
    by_site = active_units_by_site(model, x, *args) if n > 1 else {}
    return {
        **est.summary(),
        "kl_gap": gap.mean().item(),
        "kl_gap_stderr": (gap.std() / math.sqrt(n)).item() if n > 1 else 0.0,
        "active_units": sum(by_site.values()) if by_site else None,
        "active_units_by_site": by_site,
    }


def _bdmc_evaluation(
    model: GraphicalModel, x: Tensor, labels: Tensor, mode: str, csv_path: Path, *, num_images: int,
    num_steps: int, num_leapfrog: int, num_chains: int, chunk_size: int, progress: bool,
) -> dict[str, Any]:
    """Forward and reverse AIS on images simulated from the model: the sandwich of their log p(x).
    A class-conditional model simulates images of the split's first labels."""
    from tqdm.auto import tqdm

    from pvae.inference.ais import bdmc, simulate_data

    if mode == "observed" and num_images > len(labels):
        raise ValueError(f"--bdmc-images {num_images} needs as many labels to condition on; the split has "
                         f"{len(labels)}")
    args = (labels[:num_images],) if mode == "observed" else ()
    data = simulate_data(model.model, x.new_zeros((num_images, x.shape[1])), *args)
    bar = tqdm(total=2 * num_images, desc=f"BDMC, T={num_steps}", unit="image", disable=not progress, leave=False)
    with bar:
        result = bdmc(model.model, model.guide, data, *args, num_steps=num_steps, num_leapfrog=num_leapfrog,
                      num_chains=num_chains, chunk_size=chunk_size, progress=bar.update)
    _per_image_csv(csv_path, {"index": list(range(num_images)), "lower": result.lower.tolist(),
                              "upper": result.upper.tolist(), "gap": result.gap.tolist()})
    return result.summary()


def bits_per_dim(nats: float, num_dims: int, *, dequantized: bool = False) -> float:
    """A negative log-likelihood per image, in nats, as bits per dimension (lower is better).

    For a probability of discrete data (binary pixels, or a discretized likelihood of 8-bit levels)
    this is ``nats / (num_dims ln 2)``. For a density of dequantized 8-bit levels (values in (0, 1),
    :func:`pvae.data.dequantize`) the density is first turned into one of the levels 0..255 by adding
    ``num_dims ln 256``: bits per dimension are then comparable with the literature's (e.g. 8 for a
    uniform density), and bound the 8-bit data's own from above.

    :param nats: ``-log p(x)`` or ``-ELBO`` per image, in nats.
    :param num_dims: D, pixels per image (784 for MNIST).

    >>> round(bits_per_dim(0.0, 784, dequantized=True), 12)  # the uniform density on [0, 1]^D
    8.0
    >>> round(bits_per_dim(784 * math.log(2), 784), 12)
    1.0
    """
    offset = num_dims * math.log(256) if dequantized else 0.0
    return (nats + offset) / (num_dims * math.log(2))


def _bits_per_dim(
    model: GraphicalModel, x: Tensor, args: tuple[Tensor, ...], result: dict[str, Any], *, dequantized: bool
) -> dict[str, Any]:
    """``neg_elbo_bits_per_dim`` (and ``nll_bits_per_dim`` with log p(x)) where the run's numbers are
    likelihoods of its images: a probability of discrete pixels, or a density of dequantized ones.
    A density of grey levels that were not dequantized is no likelihood of the 8-bit data (it can
    grow without bound on them): nothing is added then."""
    few = x[:2]
    probe = trace_pair(model.model, model.guide, few, *(a[:2] for a in args), enumerate_discrete=False).model
    discrete = bool(probe.nodes[image_site(probe, few)]["fn"].support.is_discrete)
    if not (discrete or dequantized):
        return {}
    dims = int(x[0].numel())
    out = {"neg_elbo_bits_per_dim": bits_per_dim(-result["elbo"], dims, dequantized=dequantized and not discrete)}
    if "log_px" in result:
        out["nll_bits_per_dim"] = bits_per_dim(-result["log_px"], dims, dequantized=dequantized and not discrete)
    return out


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of an evaluation, in nats per image."""
    given = " | y" if result.get("conditioned_on_label") else ""
    rows = [
        ("ELBO (higher is better)", f"{result['elbo']:.3f} ± {result['elbo_stderr']:.3f}"),
        (f"  E_q[log p(x{given} | latents)]", f"{result['reconstruction']:.3f}"),
    ]
    analytic = result.get("kl_analytic_by_site", {})
    for name, kl in result.get("kl_by_site", {"z": result["kl"]}).items():
        how = "closed form" if analytic.get(name, result["kl_analytic"]) else "Monte Carlo"
        rows.append((f"  KL term of {name} ({how})", f"{kl:.3f}"))
    if "classification_error" in result:
        rows.append(("classification error of q(y|x)", f"{100 * result['classification_error']:.2f}%"))
    if result.get("method") == "ais":
        acc = result["ais_acceptance_rate_mean"]
        rows += [
            (f"log p(x{given}), AIS, T={result['ais_num_steps']}, L={result['ais_num_leapfrog']}, "
             f"C={result['ais_num_chains']}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f}"),
            ("  KL(q(z|x) || p(z|x)) = log p(x) - ELBO", f"{result['kl_gap']:.3f} ± {result['kl_gap_stderr']:.3f}"),
            ("  HMC acceptance rate (mean)", "n/a (T = 1)" if acc is None else f"{acc:.2f}"),
            ("seconds for log p(x)", f"{result['log_px_seconds']:.1f}"),
        ]
    elif result.get("method") == "bdmc":
        rows += [
            (f"BDMC on {result['bdmc_num_images']} simulated images, T={result['ais_num_steps']}", ""),
            ("  lower bound (forward AIS)", f"{result['bdmc_lower']:.3f} ± {result['bdmc_lower_stderr']:.3f}"),
            ("  upper bound (reverse AIS)", f"{result['bdmc_upper']:.3f} ± {result['bdmc_upper_stderr']:.3f}"),
            ("  gap = upper - lower", f"{result['bdmc_gap']:.3f} ± {result['bdmc_gap_stderr']:.3f}"),
            ("seconds (forward + reverse)", f"{result['bdmc_forward_seconds'] + result['bdmc_reverse_seconds']:.1f}"),
        ]
    elif "log_px" in result:
        k = result["num_samples"]
        rows += [
            (f"log p(x{given}), importance sampling, K={k}", f"{result['log_px']:.3f} ± {result['log_px_stderr']:.3f}"),
            (f"  ELBO from the same {k} draws" if result.get("elbo_is_from", "the same draws") == "the same draws"
             else "  ELBO (as above)", f"{result['elbo_is']:.3f}"),
            ("  KL(q(z|x) || p(z|x)) = log p(x) - ELBO", f"{result['kl_gap']:.3f} ± {result['kl_gap_stderr']:.3f}"),
            ("  effective sample size (mean)", f"{result['ess_mean']:.1f} of {k}"),
            ("  Pareto k-hat (mean; share > 0.7)", f"{result['pareto_k_mean']:.2f}; {result['pareto_k_above_0_7']:.1%}"),
            ("active units (Cov_x E_q[u] > 0.01)",
             ", ".join(f"{n}: {c}" for n, c in result.get("active_units_by_site", {}).items()) or "n/a"),
            ("seconds for log p(x)", f"{result['log_px_seconds']:.1f}"),
        ]
    bits = [(f"{label} in bits per dimension (lower is better)", f"{result[key]:.4f}")
            for key, label in (("neg_elbo_bits_per_dim", "-ELBO"), ("nll_bits_per_dim", "-log p(x)")) if key in result]
    seed = result["eval_binarization_seed"]
    if result.get("dequantized"):
        pixels = f"dequantized once (seed {seed})"
    else:
        pixels = "grey levels" if seed is None else f"binarized once (seed {seed})"
    head = f"{result['dataset']} {result['split']} set, {result['num_images']} images, {pixels}"
    width = max(len(r[0]) for r in rows + bits)
    lines = [head, "nats per image:"] + [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines + [f"  {k:<{width}}  {v}" for k, v in bits])
