"""Your own prior and likelihood, plugged into a pvae VAE without subclassing anything from pvae.

A prior is anything that, called with no arguments, returns a distribution over z with event shape
``(z_dim,)``; a likelihood maps the decoder's output to a distribution over the image and says how
many numbers per pixel it needs (see :mod:`pvae.parts.priors` and :mod:`pvae.parts.likelihoods`). Below:

* ``LearnedScaleNormal``: p(z) = N(0, s^2 I) with one learned s (an ``nn.Module``, so that s is
  trained and saved with the model);
* ``StudentTPixels``: p(x|z) = prod_d t_3(x_d; mu_d, sigma_d), a heavy-tailed cousin of the Gaussian
  likelihood that shrugs off stray pixels (a plain object).

Both go straight into :class:`pvae.VAE`; training and evaluation are unchanged Pyro code.

    python examples/custom_prior_and_likelihood.py            # 3 epochs on 10,000 MNIST grey-level images
    python examples/custom_prior_and_likelihood.py --smoke    # seconds: 500 images, 1 epoch

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse

import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.nn import functional as F

import pvae


class LearnedScaleNormal(nn.Module):
    """p(z) = N(0, s^2 I_m) with one learned scale s, starting at 1."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.log_scale = nn.Parameter(torch.zeros(()))

    def forward(self) -> dist.TorchDistribution:
        loc = self.log_scale.new_zeros(self.z_dim)
        return dist.Normal(loc, self.log_scale.exp().expand(self.z_dim)).to_event(1)


class StudentTPixels:
    """p(x|z) = prod_d StudentT(x_d; df=3, mu_d, sigma_d); the decoder emits mu then softplus^-1(sigma)."""

    params_per_pixel = 2
    needs_binary = False

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        loc, raw_scale = output.chunk(2, dim=-1)
        return dist.StudentT(3.0, loc, F.softplus(raw_scale) + 1e-3).to_event(1)

    def check_support(self, x: Tensor) -> None:
        if not bool(torch.isfinite(x).all()):
            raise ValueError("StudentTPixels needs finite pixel values")

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        return torch.cat([mean_image, torch.full_like(mean_image, -2.0)])  # sigma = softplus(-2) ~ 0.13


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    data = pvae.load_data("mnist", val_size=100 if args.smoke else 10_000, train_size=500 if args.smoke else 10_000)
    x_train, x_test = data.train, data.test[: 500 if args.smoke else None]  # grey levels in [0, 1]
    z_dim, hidden = (2, (32,)) if args.smoke else (20, (200, 200))
    likelihood = StudentTPixels()
    likelihood.check_support(x_train)
    vae = pvae.VAE(data.x_dim, z_dim, prior=LearnedScaleNormal(z_dim), likelihood=likelihood, hidden=hidden,
                   num_data=len(x_train))
    with torch.no_grad():  # start the decoder at the average image, as pvae's own likelihoods do
        vae.decoder[-1].bias.copy_(likelihood.initial_bias(x_train.mean(0)))

    # The same SVI as pvae.train: Pyro's ELBO as a differentiable loss, one Adam over all weights.
    elbo = Trace_ELBO(max_plate_nesting=1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for epoch in range(1 if args.smoke else args.epochs):
        for batch in torch.randperm(len(x_train)).split(100):
            loss = elbo.differentiable_loss(vae.model, vae.guide, x_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        test_elbo = pvae.elbo_terms(vae.eval(), x_test).elbo.mean().item()
        vae.train()
        print(f"epoch {epoch + 1}: test ELBO {test_elbo:.1f} nats per image (a log-density: grey levels are "
              f"treated as continuous); learned prior scale s = {vae.prior.log_scale.exp().item():.3f}")


if __name__ == "__main__":
    main()
