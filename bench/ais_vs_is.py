"""log p(x) of a trained model by importance sampling and by annealed importance sampling (AIS), and
bidirectional Monte Carlo (BDMC) bounds on images simulated from it.

1. On the first ``--num-images`` test images (binarized once, seed 0, as ``pvae evaluate`` does):
   importance sampling with K = ``--num-samples`` draws of the guide (pvae.inference.importance) and AIS from the
   guide with T = ``--steps``, L = ``--leapfrog``, C = ``--chains`` (pvae.inference.ais, sigmoid schedule, HMC),
   their means, standard errors and seconds, and the paired difference AIS - IS image by image. Both
   are stochastic lower bounds on log p(x); the higher is the tighter (up to noise).
2. On ``--bdmc-images`` images simulated from the model (z ~ p(z), x ~ p(x|z)): forward AIS (a
   stochastic lower bound) and reverse AIS from the z that generated each image (a stochastic upper
   bound), at each T of ``--bdmc-steps``; the width of the sandwich bounds the error of any estimate
   between them on that data. IS with K draws is shown on the same images for reference.

Wu, Burda, Salakhutdinov & Grosse (2017), "On the Quantitative Analysis of Decoder-Based Generative
Models", compare the IWAE bound (importance sampling with the encoder) against AIS for MNIST VAEs; look
up their table beside the difference printed here (it is not copied into this script).

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/ais_vs_is.py --run RUN --num-images 1000 \\
        --num-samples 5000 --steps 500 --leapfrog 10 --chains 1 --bdmc-images 100 --bdmc-steps 10 100 500

``--smoke`` shrinks every size so that the script runs in seconds (a check that it works, e.g. on fake
data with ``--data-dir``); a run folder is still needed.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import pyro
import torch
from torch import Tensor

from pvae import open_run
from pvae.data import fixed_eval_set
from pvae.inference.ais import AISSettings, ais_estimate, bdmc, simulate_data
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, importance_estimate
from pvae.inference.traces import check_data_support
from pvae.protocol import label_mode
from pvae.runs.folder import resolve_device


def paired(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean of a - b over images and its standard error."""
    d = a - b
    return d.mean().item(), (d.std() / math.sqrt(d.numel())).item() if d.numel() > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run folder (pvae train --out DIR)")
    parser.add_argument("--num-images", type=int, default=1000, help="test images for IS vs AIS")
    parser.add_argument("--num-samples", type=int, default=5000, help="K, importance samples per image")
    parser.add_argument("--steps", type=int, default=500, help="T, AIS steps on the test images")
    parser.add_argument("--leapfrog", type=int, default=10, help="L, leapfrog steps per HMC transition")
    parser.add_argument("--chains", type=int, default=1, help="C, AIS chains per image")
    parser.add_argument("--step-size", type=float, default=0.01, help="initial HMC step size")
    parser.add_argument("--bdmc-images", type=int, default=100, help="simulated images for BDMC (0: skip)")
    parser.add_argument("--bdmc-steps", type=int, nargs="+", default=[10, 100, 500], help="T values for BDMC")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="(chain or particle, image) pairs per pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a check that the script runs)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.smoke:
        args.num_images, args.num_samples, args.steps, args.leapfrog, args.chains = 10, 20, 5, 2, 2
        args.bdmc_images, args.bdmc_steps = 6, [2, 5]
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    pyro.set_rng_seed(args.seed)
    run = open_run(args.run, device=device, data_dir=args.data_dir)
    model, config = run.model, run.config
    if label_mode(model) != "none":
        raise SystemExit(f"this benchmark is for models without labels; the run's model is {config.model!r}")
    x = fixed_eval_set(run.data.test, config.binarization, config.dequantize)[: args.num_images]
    check_data_support(model, x)
    ais_settings = dict(num_leapfrog=args.leapfrog, num_chains=args.chains, step_size=args.step_size,
                        chunk_size=args.chunk_size)
    out: dict[str, object] = {"run": args.run, "model": config.model, "epochs": int(run.state["epoch"]),
                              "num_images": len(x), "threads": torch.get_num_threads(), "device": str(device)}

    with pyro.validation_enabled(False):  # the support was checked above; see pvae.runs.evaluate
        tic = time.perf_counter()
        is_est = importance_estimate(model.model, model.guide, x, num_samples=args.num_samples,
                                     chunk_size=args.chunk_size)
        is_seconds = time.perf_counter() - tic
        ais_est = ais_estimate(model.model, model.guide, x, settings=AISSettings(num_steps=args.steps, **ais_settings))
    diff, diff_se = paired(ais_est.log_px, is_est.log_px)
    print(f"{config.model} model of {args.run} ({out['epochs']} epochs); first {len(x)} test images; "
          f"{torch.get_num_threads()} threads on {device}")
    print(f"{'estimator':<44} {'log p(x)':>9} {'stderr':>7} {'seconds':>9}")
    print(f"{f'IS, K={args.num_samples}':<44} {is_est.log_px_mean:9.3f} {is_est.log_px_stderr:7.3f} {is_seconds:9.1f}")
    label = f"AIS, T={args.steps} sigmoid, L={args.leapfrog}, C={args.chains}"
    print(f"{label:<44} {ais_est.log_px_mean:9.3f} {ais_est.log_px_stderr:7.3f} {ais_est.seconds:9.1f}")
    print(f"AIS - IS = {diff:+.3f} +- {diff_se:.3f} nats per image (paired); AIS higher on "
          f"{(ais_est.log_px > is_est.log_px).double().mean().item():.1%} of images; IS's mean ESS "
          f"{is_est.ess.mean().item():.1f} of {args.num_samples}; AIS acceptance "
          f"{ais_est.acceptance_rate.nanmean().item():.2f}, final step size {ais_est.step_size.mean().item():.4f}")
    # No figure of Wu et al. (2017) is printed beside this one: their MNIST VAEs have other observation
    # models and budgets, so a number quoted here would not be like for like (docs/numbers.md says so).
    out.update(is_log_px=is_est.log_px_mean, is_log_px_stderr=is_est.log_px_stderr, is_seconds=is_seconds,
               is_num_samples=args.num_samples, ais=ais_est.summary(), ais_minus_is=diff, ais_minus_is_stderr=diff_se)

    if args.bdmc_images > 0:
        placeholder = torch.zeros(args.bdmc_images, x.shape[1], device=device, dtype=x.dtype)
        data = simulate_data(model.model, placeholder)
        with pyro.validation_enabled(False):
            tic = time.perf_counter()
            sim_is = importance_estimate(model.model, model.guide, data.x, num_samples=args.num_samples,
                                         chunk_size=args.chunk_size)
            sim_is_seconds = time.perf_counter() - tic
            print(f"\nBDMC on {args.bdmc_images} images simulated from the model (z ~ p(z), x ~ p(x|z)); "
                  f"L={args.leapfrog}, C={args.chains}, sigmoid schedule")
            print(f"{'T':>6} {'lower (fwd)':>12} {'upper (rev)':>12} {'gap':>8} {'stderr':>7} {'seconds':>9}")
            rows = []
            for steps in args.bdmc_steps:
                result = bdmc(model.model, model.guide, data, settings=AISSettings(num_steps=steps, **ais_settings))
                seconds = result.forward.seconds + result.reverse.seconds
                print(f"{steps:6d} {result.forward.log_px_mean:12.3f} {result.reverse.log_px_mean:12.3f} "
                      f"{result.gap_mean:8.3f} {result.gap_stderr:7.3f} {seconds:9.1f}")
                rows.append({"num_steps": steps, **result.summary()})
        print(f"IS, K={args.num_samples} on the same images: {sim_is.log_px_mean:.3f} +- {sim_is.log_px_stderr:.3f} "
              f"({sim_is_seconds:.1f} s)")
        out.update(bdmc=rows, bdmc_is_log_px=sim_is.log_px_mean, bdmc_is_seconds=sim_is_seconds)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
