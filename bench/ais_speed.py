"""Seconds for log p(x) by annealed importance sampling: pvae's estimator versus a hand-written batched
PyTorch AIS on the same trained network, and a one-chain-at-a-time loop for scale.

All three run the same algorithm (pvae.inference.ais): chains start at q(z|x), the sigmoid schedule of Wu et al.
(2017) with T steps, HMC transitions of L leapfrog steps with the gradients of log q and log p kept
apart (a new temperature costs no new pass), a step size per image adapted towards an acceptance rate
of 0.65 (x1.02 / x0.98 on a moving average of the acceptance rate), C chains per image, for the default
model (784-200-200-50 tanh MLPs, Bernoulli likelihood, N(0, I) prior, diagonal Gaussian guide).
pvae's estimator and the hand-written one cut the work into the same chunks of (chain, image) pairs.
The loop runs one chain of one image at a time, as reference implementations written for one batch
(lxuechen/BDMC, Wu et al.'s eval_gen) run when given one image and one chain per batch; it is timed on
``--loop-images`` images and scaled to ``--num-images``.

pvae and hand-written are timed in alternation in one process on blocks of ``--block-images`` images,
so machine noise hits both alike. The ratio pvae / hand-written is the figure of merit (target <= 1.2).
pvae's estimator runs as ``pvae evaluate`` would run it, with Pyro's argument validation off after the
data's support was checked.

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/ais_speed.py --run RUN \\
        [--num-images 200] [--steps 100] [--leapfrog 10] [--chains 4] [--repeats 2] --threads 1

Without ``--run`` it first trains a small model (10,000 images, 2 epochs) into ``--train-out``;
``--smoke`` shrinks every size so that the script runs in seconds (on fake data too, with ``--data-dir``).
"""

from __future__ import annotations

import argparse
import math
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
from pvae.inference.ais import AISSettings, ais_estimate
from pvae.inference.importance import DEFAULT_CHUNK_SIZE
from pvae.runs.folder import load_run, rebuild_model, resolve_device


def sigmoid_betas(num_steps: int, sharpness: float = 4.0) -> list[float]:
    """Wu et al.'s sigmoid schedule, beta_0 = 0 ... beta_T = 1."""
    if num_steps == 1:
        return [0.0, 1.0]
    g = [1 / (1 + math.exp(-sharpness * (2 * t / num_steps - 1))) for t in range(num_steps + 1)]
    return [(v - g[0]) / (g[-1] - g[0]) for v in g]


@torch.no_grad()
def hand_written_ais(encoder: nn.Module, decoder: nn.Module, x: Tensor, *, steps: int, leapfrog: int, chains: int,
                     chunk_size: int, step_size: float = 0.01, target: float = 0.65,
                     bounds: tuple[float, float] = (1e-4, 0.5)) -> Tensor:
    """AIS from q(z|x) to p(z|x) with HMC, written directly in PyTorch and chunked as pvae's is: ``(N,)`` float64."""
    betas = sigmoid_betas(steps)
    per_chunk = math.ceil(chains / math.ceil(chains / chunk_size))
    images = max(1, min(x.shape[0], chunk_size // per_chunk))
    out = []
    for xb in x.split(images):
        loc, scale = encoder(xb)  # (B, m)
        log_w_all = []
        for start in range(0, chains, per_chunk):
            c = min(per_chunk, chains - start)

            def evaluate(z: Tensor) -> tuple[Tensor, ...]:
                with torch.enable_grad():
                    z = z.detach().requires_grad_(True)
                    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
                    logits = decoder(z)
                    log_px_z = -F.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none").sum(-1)
                    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + log_px_z
                    (g_q,) = torch.autograd.grad(log_q.sum(), z, retain_graph=True)
                    (g_p,) = torch.autograd.grad(log_p.sum(), z)
                return z.detach(), log_q.detach(), log_p.detach(), g_q, g_p

            z, log_q, log_p, g_q, g_p = evaluate(loc + scale * torch.randn(c, *loc.shape, dtype=loc.dtype))
            log_w = torch.zeros(c, xb.shape[0], dtype=torch.float64)
            eps = torch.full((xb.shape[0],), step_size, dtype=loc.dtype)
            average = torch.full((xb.shape[0],), target, dtype=torch.float64)
            for t in range(1, steps + 1):
                log_w += (betas[t] - betas[t - 1]) * (log_p.double() - log_q.double())
                if t == steps:
                    break
                beta, e = betas[t], eps[None, :, None]
                r0 = torch.randn_like(z)
                r = r0 + 0.5 * e * ((1 - beta) * g_q + beta * g_p)
                new = (z, log_q, log_p, g_q, g_p)
                for step in range(leapfrog):
                    new = evaluate(new[0] + e * r)
                    r = r + (e if step < leapfrog - 1 else 0.5 * e) * ((1 - beta) * new[3] + beta * new[4])
                log_f1 = (1 - beta) * new[1] + beta * new[2]
                log_f0 = (1 - beta) * log_q + beta * log_p
                delta = (log_f1 - 0.5 * (r * r).sum(-1)) - (log_f0 - 0.5 * (r0 * r0).sum(-1))
                log_accept = torch.where(torch.isfinite(delta), delta.clamp(max=0.0), torch.full_like(delta, -math.inf))
                accept = torch.rand_like(log_accept).log() < log_accept
                z, g_q, g_p = (torch.where(accept[..., None], a, b) for a, b in ((new[0], z), (new[3], g_q), (new[4], g_p)))
                log_q, log_p = torch.where(accept, new[1], log_q), torch.where(accept, new[2], log_p)
                average = 0.9 * average + 0.1 * log_accept.exp().double().mean(0)
                eps = (eps * torch.where(average > target, 1.02, 0.98).to(eps.dtype)).clamp(*bounds)
            log_w_all.append(log_w)
        out.append(torch.cat(log_w_all).logsumexp(0) - math.log(chains))
    return torch.cat(out)


def one_chain_at_a_time_ais(encoder: nn.Module, decoder: nn.Module, x: Tensor, *, steps: int, leapfrog: int,
                            chains: int) -> Tensor:
    """The same AIS, one chain of one image at a time, combined by log-mean-exp per image."""
    out = []
    for xi in x.split(1):
        log_w = torch.stack([hand_written_ais(encoder, decoder, xi, steps=steps, leapfrog=leapfrog, chains=1,
                                              chunk_size=1)[0] for _ in range(chains)])
        out.append(log_w.logsumexp(0) - math.log(chains))
    return torch.stack(out)


def trained_model(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, TrainConfig]:
    if args.run is not None:
        config, state = load_run(args.run, map_location=device)
        return rebuild_model(config, state, device), config
    size = dict(train_size=None, epochs=1, val_size=100, z_dim=2, hidden=(16,)) if args.smoke else \
        dict(train_size=10_000, epochs=2)
    config = TrainConfig(**size, device=str(device), out=args.train_out, data_dir=args.data_dir)
    if (Path(args.train_out) / "checkpoint.pt").exists():
        config_saved, state = load_run(args.train_out, map_location=device)
        return rebuild_model(config_saved, state, device), config_saved
    return train(config, progress=False).vae.eval(), config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a run folder of the default model (else one is trained into --train-out)")
    parser.add_argument("--train-out", default="runs/bench-ais", help="where to train the model without --run")
    parser.add_argument("--num-images", type=int, default=200, help="test images")
    parser.add_argument("--steps", type=int, default=100, help="T, annealing steps")
    parser.add_argument("--leapfrog", type=int, default=10, help="L, leapfrog steps per HMC transition")
    parser.add_argument("--chains", type=int, default=4, help="C, chains per image")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="(chain, image) pairs per pass")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the images per estimator")
    parser.add_argument("--block-images", type=int, default=100, help="images per alternation block")
    parser.add_argument("--loop-images", type=int, default=2, help="images timed for the one-chain-at-a-time loop")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (a check that the script runs, not a timing)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.smoke:
        args.num_images, args.steps, args.leapfrog, args.chains = 8, 4, 2, 2
        args.repeats, args.block_images, args.loop_images = 1, 4, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    if device.type != "cpu":
        raise SystemExit("the hand-written estimator here draws on the CPU generator; run on --device cpu")
    vae, config = trained_model(args, device)
    if (config.model, config.prior, config.likelihood, config.guide) != ("vae", "normal", "bernoulli", "diagonal"):
        raise SystemExit("the hand-written AIS is written for the default model (vae, normal prior, bernoulli "
                         f"likelihood, diagonal guide); this run has {config.model}, {config.prior}, "
                         f"{config.likelihood}, {config.guide}")
    data = load_data(config.dataset, args.data_dir, val_size=config.val_size, device=device)
    x = fixed_eval_set(data.test, config.binarization)[: args.num_images]
    vae.likelihood.check_support(x)
    settings = dict(steps=args.steps, leapfrog=args.leapfrog, chains=args.chains)

    def pvae_estimator(xb: Tensor) -> Tensor:
        with pyro.validation_enabled(False):
            return ais_estimate(vae.model, vae.guide, xb, settings=AISSettings(
                num_steps=args.steps, num_leapfrog=args.leapfrog, num_chains=args.chains,
                chunk_size=args.chunk_size)).log_px

    def hand_estimator(xb: Tensor) -> Tensor:
        return hand_written_ais(vae.encoder, vae.decoder, xb, chunk_size=args.chunk_size, **settings)

    estimators: dict[str, Callable[[Tensor], Tensor]] = {"pvae": pvae_estimator, "hand-written": hand_estimator}
    blocks = list(x.split(args.block_images))
    seconds = {name: [[0.0] * len(blocks) for _ in range(args.repeats)] for name in estimators}
    log_px = {name: torch.empty(len(x), dtype=torch.float64) for name in estimators}
    for rep in range(args.repeats):
        first = 0
        for b, xb in enumerate(blocks):
            order = list(estimators) if (rep + b) % 2 == 0 else list(estimators)[::-1]
            for name in order:
                tic = time.perf_counter()
                log_px[name][first : first + len(xb)] = estimators[name](xb)
                seconds[name][rep][b] = time.perf_counter() - tic
            first += len(xb)
        totals = {name: sum(seconds[name][rep]) for name in estimators}
        print(f"pass {rep + 1}: pvae {totals['pvae']:8.2f} s, hand-written {totals['hand-written']:8.2f} s, "
              f"ratio {totals['pvae'] / totals['hand-written']:.3f}; mean log p(x) pvae {log_px['pvae'].mean():.3f}, "
              f"hand-written {log_px['hand-written'].mean():.3f} nats", flush=True)

    loop_x = x[: args.loop_images]
    tic = time.perf_counter()
    loop_px = one_chain_at_a_time_ais(vae.encoder, vae.decoder, loop_x, **settings)
    loop_seconds = (time.perf_counter() - tic) / len(loop_px) * len(x)

    total = {name: statistics.median(sum(s) for s in seconds[name]) for name in estimators}
    block_ratios = [p / h for ps, hs in zip(seconds["pvae"], seconds["hand-written"]) for p, h in zip(ps, hs)]
    p, h = total["pvae"], total["hand-written"]
    evaluations = len(x) * args.chains * max(args.steps - 1, 0) * args.leapfrog
    print(f"\ndevice {device}, {torch.get_num_threads()} threads; {len(x)} test images, T={args.steps}, "
          f"L={args.leapfrog}, C={args.chains}, sigmoid schedule, chunk {args.chunk_size} pairs; {args.repeats} "
          f"passes in blocks of {args.block_images} images; Pyro validation off in pvae's")
    print(f"pvae                       {p:9.2f} s per pass (median)   ({evaluations / max(p, 1e-9) / 1e6:.3f} M "
          "gradient evaluations/s)")
    print(f"hand-written, batched      {h:9.2f} s")
    print(f"one chain at a time        {loop_seconds:9.2f} s   (timed on {len(loop_px)} images x {args.chains} chains, "
          "scaled)")
    print(f"ratio pvae / hand-written = {p / h:.3f}; median over the {len(block_ratios)} blocks "
          f"{statistics.median(block_ratios):.3f} (target <= 1.2)")
    print(f"mean log p(x) pvae {log_px['pvae'].mean():.3f}, hand-written {log_px['hand-written'].mean():.3f}, "
          f"one chain at a time {loop_px.mean():.3f} (its {len(loop_px)} images; pvae on them "
          f"{log_px['pvae'][: len(loop_px)].mean():.3f}) nats")


if __name__ == "__main__":
    main()
