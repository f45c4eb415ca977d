"""Seconds for log p(x) (K importance samples) of a VampPrior model: the diagonal components'
matrix-product density that pvae uses against torch's generic mixture density, side by side.

The generic ``MixtureSameFamily.log_prob`` broadcasts z to ``(particles, images, K, z_dim)``; at
K = 500 pseudo-inputs and 5000 samples per image that tensor dominates the evaluation. pvae's
``_BroadcastMixture`` sums the same Gaussians with two matrix products in float64. Both run in one
process, in alternation, on the same model and the same draws (the same seed each pass), and the
script prints the per-image log p(x) difference beside the time ratio (generic / pvae).

    OMP_NUM_THREADS=1 .venv/bin/python bench/vamp_density.py [--images 4] [--num-samples 5000] [--repeats 2]

The model is the default one (784-200-200-50 tanh MLPs, Bernoulli likelihood, diagonal guide) with
``--prior vamp:500``, untrained, its pseudo-inputs uniform noise: the timing does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyro
import torch
from torch.distributions import MixtureSameFamily

from pvae import TrainConfig
from pvae.inference.importance import log_marginal_likelihood
from pvae.parts.priors import _BroadcastMixture
from pvae.runs.build import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    x_dim = 784
    init = torch.rand(args.components, x_dim)
    model = build_model(TrainConfig(prior=f"vamp:{args.components}"), x_dim, 50_000, init_data=init)
    model.eval()
    x = torch.bernoulli(torch.rand(args.images, x_dim))
    fast_log_prob = _BroadcastMixture.log_prob

    def timed(generic: bool) -> tuple[float, torch.Tensor]:
        _BroadcastMixture.log_prob = MixtureSameFamily.log_prob if generic else fast_log_prob  # type: ignore[method-assign]
        try:
            pyro.set_rng_seed(1)
            start = time.perf_counter()
            with torch.no_grad(), pyro.validation_enabled(False):
                log_px = log_marginal_likelihood(model.model, model.guide, x, num_samples=args.num_samples)
            return time.perf_counter() - start, log_px
        finally:
            _BroadcastMixture.log_prob = fast_log_prob  # type: ignore[method-assign]

    seconds: dict[str, list[float]] = {"pvae": [], "generic": []}
    estimates: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name in ("pvae", "generic"):
            t, estimates[name] = timed(name == "generic")
            seconds[name].append(t)
    diff = (estimates["pvae"] - estimates["generic"]).abs().max().item()
    print(f"VampPrior K={args.components}, z_dim={model.z_dim}, "
          f"{args.images} images x {args.num_samples} samples, {torch.get_num_threads()} thread(s)")
    for name, ts in seconds.items():
        print(f"  {name:8s} median {statistics.median(ts):7.2f} s  ({', '.join(f'{t:.2f}' for t in ts)})")
    ratio = statistics.median(seconds["generic"]) / statistics.median(seconds["pvae"])
    print(f"  generic / pvae: {ratio:.2f}x   max |log p(x) difference|: {diff:.2e} nats")


if __name__ == "__main__":
    main()
