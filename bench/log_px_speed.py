"""Seconds for log p(x) by importance sampling: pvae's estimator versus a hand-written batched PyTorch
estimator on the same trained network, and the one-image-at-a-time loop of other VAE code for scale.

All three compute log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), for the default model (784-200-200-50
tanh MLPs, Bernoulli likelihood, N(0, I) prior, diagonal Gaussian guide). pvae's estimator and the
hand-written one cut the work into the same chunks of (particle, image) pairs; the loop takes one
image at a time with its K particles in one batch and is timed on ``--loop-images`` images, then scaled
to ``--num-images``. pvae and hand-written are timed in alternation in one process, so machine noise
hits both alike: they alternate on blocks of ``--block-images`` images. The ratio pvae / hand-written
is the figure of merit (target <= 1.2); the median of the per-block ratios is the figure least moved
by bursts of load.

Kernel seconds in the output are page faults, mostly: glibc's malloc maps chunk-sized tensors afresh on
every pass until its mmap threshold has risen; pvae's estimator raises it once per process (see
``pvae.inference.importance``), which then serves the hand-written estimator in this process as well.

pvae's estimator runs as ``pvae evaluate`` runs it, with Pyro's argument validation off after the data's
support was checked (``--validate`` times it with validation on).

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/log_px_speed.py --run RUN \\
        [--num-images 10000] [--num-samples 5000] [--repeats 3]

Without ``--run`` it first trains a small model (10,000 images, 2 epochs) into ``--train-out``.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pvae import TrainConfig, load_data, train
from pvae.data import fixed_eval_set
from pvae.inference.importance import DEFAULT_CHUNK_SIZE, log_marginal_likelihood
from pvae.models import VAE
from pvae.runs.folder import load_run, rebuild_model, resolve_device


@torch.no_grad()
def hand_written_log_px(encoder: nn.Module, decoder: nn.Module, x: Tensor, num_samples: int, chunk_size: int) -> Tensor:
    """The estimator written directly in PyTorch, chunked as pvae's is: ``(N,)`` float64."""
    images = max(1, min(x.shape[0], chunk_size // num_samples))
    particles = math.ceil(num_samples / math.ceil(num_samples / chunk_size))  # equal chunks, as pvae's
    normal = torch.distributions.Normal
    out = []
    for xb in x.split(images):
        loc, scale = encoder(xb)
        lse = xb.new_full((xb.shape[0],), -math.inf, dtype=torch.float64)
        for start in range(0, num_samples, particles):
            z = normal(loc, scale).rsample((min(particles, num_samples - start),))  # (P, B, m)
            logits = decoder(z)
            log_px_z = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
            log_w = log_px_z + normal(0.0, 1.0).log_prob(z).sum(-1) - normal(loc, scale).log_prob(z).sum(-1)
            lse = torch.logaddexp(lse, log_w.double().logsumexp(0))
        out.append(lse - math.log(num_samples))
    return torch.cat(out)


def one_image_at_a_time_log_px(encoder: nn.Module, decoder: nn.Module, x: Tensor, num_samples: int) -> Tensor:
    """The loop found in other VAE code: for each image, K particles in one batch."""
    return torch.cat([hand_written_log_px(encoder, decoder, xi, num_samples, num_samples) for xi in x.split(1)])


def profile(estimators: dict[str, Callable[[], Tensor]]) -> None:
    """The PyTorch operators that take each estimator's time, by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for name, run in estimators.items():
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        print(f"\n{name}: {total / 1e6:.2f} s of operator time")
        for event in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]:
            print(f"  {event.key:<45} {event.self_cpu_time_total / total:6.1%}  ({event.count} calls)")


def trained_model(args: argparse.Namespace, device: torch.device) -> tuple[VAE, TrainConfig]:
    if args.run is not None:
        config, state = load_run(args.run, map_location=device)
        return rebuild_model(config, state, device), config
    config = TrainConfig(train_size=10_000, epochs=2, device=str(device), out=args.train_out, data_dir=args.data_dir)
    if (Path(args.train_out) / "checkpoint.pt").exists():
        config_saved, state = load_run(args.train_out, map_location=device)
        return rebuild_model(config_saved, state, device), config_saved
    return train(config, progress=False).vae.eval(), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder of the default model (else one is trained into --train-out)")
    parser.add_argument("--train-out", default="runs/bench-log-px", help="where to train the model without --run")
    parser.add_argument("--num-images", type=int, default=10_000, help="test images (default: all 10,000)")
    parser.add_argument("--num-samples", type=int, default=5000, help="K, importance samples per image")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="(particle, image) pairs per pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the images per estimator")
    parser.add_argument("--block-images", type=int, default=100, help="images per alternation block")
    parser.add_argument("--loop-images", type=int, default=20, help="images timed for the one-at-a-time loop")
    parser.add_argument("--validate", action="store_true", help="keep Pyro's validation on in pvae's estimator")
    parser.add_argument("--profile", action="store_true", help="only print where each estimator spends its time")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    vae, config = trained_model(args, device)
    data = load_data(config.dataset, args.data_dir, val_size=config.val_size, device=device)
    x = fixed_eval_set(data.test, config.binarization)[: args.num_images]
    vae.likelihood.check_support(x)
    k, chunk = args.num_samples, args.chunk_size

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def pvae_estimator(xb: Tensor) -> Tensor:
        with pyro.validation_enabled(args.validate):
            return log_marginal_likelihood(vae.model, vae.guide, xb, num_samples=k, chunk_size=chunk)

    def hand_estimator(xb: Tensor) -> Tensor:
        return hand_written_log_px(vae.encoder, vae.decoder, xb, k, chunk)

    estimators = {"pvae": pvae_estimator, "hand-written": hand_estimator}
    if args.profile:
        profile({name: (lambda run=run: run(x)) for name, run in estimators.items()})
        return
    # Each pass over the images alternates the two estimators block by block (blocks of --block-images),
    # so that a burst of load from other processes hits both alike and shows in a few blocks only.
    blocks = list(x.split(args.block_images))
    seconds = {name: [[0.0] * len(blocks) for _ in range(args.repeats)] for name in estimators}
    kernel_seconds = dict.fromkeys(estimators, 0.0)  # system CPU time: page faults of fresh memory, mostly
    log_px = {name: torch.empty(len(x), dtype=torch.float64) for name in estimators}
    for rep in range(args.repeats):
        first = 0
        for b, xb in enumerate(blocks):
            order = list(estimators) if (rep + b) % 2 == 0 else list(estimators)[::-1]
            for name in order:
                sync()
                tic, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
                log_px[name][first : first + len(xb)] = estimators[name](xb).cpu()
                sync()
                seconds[name][rep][b] = time.perf_counter() - tic
                kernel_seconds[name] += resource.getrusage(resource.RUSAGE_SELF).ru_stime - usage.ru_stime
            first += len(xb)
        totals = {name: sum(seconds[name][rep]) for name in estimators}
        print(f"pass {rep + 1}: pvae {totals['pvae']:8.2f} s, hand-written {totals['hand-written']:8.2f} s, "
              f"ratio {totals['pvae'] / totals['hand-written']:.3f}; mean log p(x) pvae {log_px['pvae'].mean():.3f}, "
              f"hand-written {log_px['hand-written'].mean():.3f} nats", flush=True)

    tic = time.perf_counter()
    loop_px = one_image_at_a_time_log_px(vae.encoder, vae.decoder, x[: args.loop_images], k)
    loop_seconds = (time.perf_counter() - tic) / len(loop_px) * len(x)

    total = {name: statistics.median(sum(s) for s in seconds[name]) for name in estimators}
    block_ratios = [p / h for ps, hs in zip(seconds["pvae"], seconds["hand-written"]) for p, h in zip(ps, hs)]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    p, h = total["pvae"], total["hand-written"]
    print(f"\ndevice {device}, {torch.get_num_threads()} threads; {len(x)} test images, K={k}, chunk {chunk} pairs; "
          f"{args.repeats} passes in blocks of {args.block_images} images; Pyro validation "
          f"{'on' if args.validate else 'off'} in pvae's")
    kernel = {name: t / args.repeats for name, t in kernel_seconds.items()}
    print(f"pvae                       {p:9.2f} s per pass (median)   ({len(x) * k / p / 1e6:.2f} M particles/s; "
          f"{kernel['pvae']:.2f} s of it in the kernel)")
    print(f"hand-written, batched      {h:9.2f} s                      ({kernel['hand-written']:.2f} s in the kernel)")
    print(f"one image at a time        {loop_seconds:9.2f} s   (timed on {len(loop_px)} images, scaled)")
    print(f"ratio pvae / hand-written = {p / h:.3f}; median over the {len(block_ratios)} blocks "
          f"{statistics.median(block_ratios):.3f} (target <= 1.2)")
    print(f"peak memory of this process (data included) {peak_gb:.2f} GB")

if __name__ == "__main__":
    main()
