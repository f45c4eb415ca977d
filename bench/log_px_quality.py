"""Test log-likelihood of the one- and two-layer models trained with the ELBO and with the IWAE bound,
beside Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders", Table 1.

``--models vae`` is pvae's default, the architecture of Burda et al.'s one-stochastic-layer model:
784-200-200-50 tanh MLPs, Bernoulli likelihood, N(0, I) prior, diagonal Gaussian guide;
``--models hierarchical`` their two-layer model (z1: 100 and z2: 50 units, [200, 200] and [100, 100]
hidden widths); dynamically binarized MNIST.
Each objective (``trace``: the ELBO; ``iwae:5``, ``iwae:50``) trains from the same seed for the same
number of epochs; then log p(x) of the test images (binarized once, seed 0) is estimated by importance
sampling with K = ``--num-samples`` draws of the guide, alongside the ELBO from the same draws, their
gap (an estimate of KL(q(z|x) || p(z|x))), the mean effective sample size and the active units.

Burda et al. trained for 3,280 passes over all 60,000 training images; a CPU budget of a few epochs is
far from that, so the table shows where a short run stands, not a reproduction. The budget (epochs,
training images, seconds, device) is printed with the results.

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/log_px_quality.py --epochs 5 --train-size 10000 \\
        --num-images 10000 --num-samples 5000 [--models vae hierarchical] [--objectives trace iwae:5 iwae:50]

A run folder per objective is kept under ``--out-dir`` and reused when it already holds the same
configuration trained to the end, so the estimation can be repeated without training again.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import pyro
import torch

from pvae import TrainConfig, load_data, train
from pvae.data import fixed_eval_set
from pvae.devices import resolve_device
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, importance_estimate
from pvae.inference.traces import check_data_support
from pvae.runs.evaluate import active_units_by_site
from pvae.runs.folder import load_run, rebuild_model

# Burda et al. (2016), Table 1, test NLL in nats (lower is better), K = 5000: (model, objective) -> NLL.
BURDA_NLL = {("vae", "trace"): 86.76, ("vae", "iwae:50"): 84.78,
             ("hierarchical", "trace"): 85.33, ("hierarchical", "iwae:50"): 82.90}


def trained(model: str, objective: str, args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, TrainConfig, dict]:
    """The run of one (model, objective): trained now, or reused when its folder holds this configuration, finished."""
    out = Path(args.out_dir) / (objective.replace(":", "-") if model == "vae" else f"{model}-{objective.replace(':', '-')}")
    config = TrainConfig(model=model, objective=objective, epochs=args.epochs, train_size=args.train_size, seed=args.seed,
                         val_size=args.val_size,
                         batch_size=args.batch_size, lr=args.lr, device=str(device), out=str(out),
                         data_dir=args.data_dir)
    if (out / "checkpoint.pt").exists():
        saved, state = load_run(out, map_location=device)
        if saved == config and int(state["epoch"]) == config.epochs:
            print(f"{model} {objective}: reusing {out}", flush=True)
            return rebuild_model(saved, state, device), saved, state
    print(f"{model} {objective}: training {config.epochs} epochs on {config.train_size or 'all'} images into {out}", flush=True)
    train(config, overwrite=True, progress=False)
    saved, state = load_run(out, map_location=device)
    return rebuild_model(saved, state, device), saved, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vae"], choices=("vae", "hierarchical"))
    parser.add_argument("--objectives", nargs="+", default=["trace", "iwae:5", "iwae:50"])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs, the same for every objective")
    parser.add_argument("--train-size", type=int, default=10_000, help="training images (default 10,000; 0: all)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-size", type=int, default=TrainConfig.val_size)
    parser.add_argument("--num-images", type=int, default=10_000, help="test images for log p(x) (default: all)")
    parser.add_argument("--num-samples", type=int, default=5000, help="K, importance samples per test image")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--out-dir", default="runs/bench-quality")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.train_size = args.train_size or None

    device = resolve_device(args.device)
    rows = []
    for model_name, objective in [(m, o) for m in args.models for o in args.objectives]:
        vae, config, state = trained(model_name, objective, args, device)
        data = load_data(config.dataset, args.data_dir, val_size=config.val_size, device=device)
        x_test = fixed_eval_set(data.test, config.binarization)
        x = x_test[: args.num_images]
        check_data_support(vae, x)
        pyro.set_rng_seed(args.seed)
        tic = time.perf_counter()
        with pyro.validation_enabled(False):  # support checked above; see pvae.runs.evaluate
            est = importance_estimate(vae.model, vae.guide, x, num_samples=args.num_samples, chunk_size=args.chunk_size)
        seconds = time.perf_counter() - tic
        row = {
            "model": model_name,
            "objective": objective,
            "epochs": config.epochs,
            "train_images": state["num_data"],
            "train_seconds": sum(m["seconds"] for m in state["metrics"]),
            "test_images": len(x),
            "num_samples": args.num_samples,
            "log_px": est.log_px_mean,
            "log_px_stderr": est.log_px_stderr,
            "elbo": est.elbo.mean().item(),
            "kl_gap": est.kl_gap.mean().item(),
            "ess_mean": est.ess.mean().item(),
            "active_units": active_units_by_site(vae, x_test),
            "estimate_seconds": seconds,
            "burda_nll": BURDA_NLL.get((model_name, objective)),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    head = (f"{'model':<12} {'objective':<9} {'epochs':>6} {'train s':>8} {'test ELBO':>10} {'log p(x)':>17} {'NLL':>7} "
            f"{'KL gap':>7} {'ESS':>7} {'Burda NLL':>9}  active units")
    print(f"\ndevice {device} ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads; "
          f"test images {rows[0]['test_images']}, K = {args.num_samples}; nats per image")
    print(head)
    for r in rows:
        burda = f"{r['burda_nll']:.2f}" if r["burda_nll"] is not None else "-"
        print(f"{r['model']:<12} {r['objective']:<9} {r['epochs']:>6} {r['train_seconds']:>8.0f} {r['elbo']:>10.2f} "
              f"{r['log_px']:>9.2f} ± {r['log_px_stderr']:.2f} {-r['log_px']:>7.2f} {r['kl_gap']:>7.2f} "
              f"{r['ess_mean']:>7.1f} {burda:>9}  {r['active_units']}")
    print(f"Burda et al. (2016), Table 1, same architectures, 3,280 passes over 60,000 images. "
          f"Here: {rows[0]['train_images']} training images, {args.epochs} epochs, batch {args.batch_size}, "
          f"lr {args.lr} (cosine schedule).")
    out = Path(args.out_dir) / "quality.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
