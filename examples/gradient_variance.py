"""Gradient variance of the ELBO: the reparameterized estimator against the score-function one.

The encoder's parameters phi enter the ELBO through the distribution z is drawn from. Two unbiased
Monte-Carlo estimators of grad_phi ELBO exist (Kingma & Welling 2014, section 2.3):

* reparameterized: z = mu_phi(x) + sigma_phi(x) * eps, eps ~ N(0, I), and differentiate through z;
* score function (REINFORCE): grad_phi log q_phi(z|x) * (log p(x, z) - log q_phi(z|x)), z held fixed.

Pyro's ``Trace_ELBO`` uses the first when q's distribution can ``rsample`` and the second when it
reports ``has_rsample=False`` -- so the same model and the same q, with one flag changed, give both.
This script draws each estimator many times on one minibatch and prints the total variance of the
gradient w.r.t. the encoder's weights (the trace of its covariance), and the ratio of the two.

    python examples/gradient_variance.py            # a VAE trained 1 epoch on MNIST, 200 draws
    python examples/gradient_variance.py --smoke    # seconds: 500 images, 30 draws

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO

import pvae
from pvae.data import fixed_eval_set


class ScoreFunctionNormal(dist.Normal):
    """A Normal whose draws Pyro may not differentiate through: Trace_ELBO then uses the score function.

    (A class attribute, not ``Normal(...).has_rsample_(False)``: in Pyro 1.9 a plate re-creates an
    ``Independent`` distribution when it broadcasts it, and the instance's flag is lost.)
    """

    has_rsample = False


def gradient_draws(vae: pvae.VAE, guide, x: torch.Tensor, draws: int) -> torch.Tensor:
    """``draws`` independent estimates of grad_phi (-ELBO), flattened: ``(draws, number of encoder weights)``."""
    params = list(vae.encoder.parameters())
    loss_fn = Trace_ELBO().differentiable_loss
    grads = []
    for _ in range(draws):
        loss = loss_fn(vae.model, guide, x)
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(grads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 30 draws")
    parser.add_argument("--draws", type=int, default=200, help="gradient estimates per estimator")
    parser.add_argument("--batch-size", type=int, default=100, help="images in the minibatch")
    parser.add_argument("--out", default="runs/examples/gradient_variance", help="the run folder")
    args = parser.parse_args()
    draws = 30 if args.smoke else args.draws

    config = pvae.TrainConfig(z_dim=10, epochs=1, train_size=500 if args.smoke else None,
                              val_size=100 if args.smoke else 10_000, out=args.out)
    result = pvae.train(config, overwrite=True, progress=False)
    vae = result.vae
    x = fixed_eval_set(result.data.test[: args.batch_size], config.binarization)

    def score_function_guide(x: torch.Tensor) -> None:
        """vae.guide's q(z|x), but marked as not reparameterizable: Trace_ELBO falls back to the score function."""
        with pyro.plate("data", vae.num_data, subsample=torch.arange(len(x))):  # the same plate as vae.model's
            loc, scale = vae.encoder(x)
            pyro.sample("z", ScoreFunctionNormal(loc, scale).to_event(1))

    pyro.set_rng_seed(0)
    reparam = gradient_draws(vae, vae.guide, x, draws)
    score = gradient_draws(vae, score_function_guide, x, draws)
    print(f"grad of -ELBO w.r.t. the encoder's {reparam.shape[1]:,} weights, {draws} draws each, "
          f"on {len(x)} test images (the loss sums over the N = {vae.num_data:,} training images):")
    for name, g in (("reparameterized", reparam), ("score function", score)):
        print(f"  {name:>15}: total variance {g.var(dim=0).sum():.4g}   squared norm of the mean {g.mean(0).square().sum():.4g}")
    ratio = score.var(dim=0).sum() / reparam.var(dim=0).sum()
    print(f"variance ratio, score function / reparameterized: {ratio:.4g}")
    # Both estimators are unbiased: their means differ only by Monte-Carlo error.
    diff = (score.mean(0) - reparam.mean(0)).square().sum()
    expected = (score.var(dim=0).sum() + reparam.var(dim=0).sum()) / draws
    print(f"|mean(score) - mean(reparam)|^2 = {diff:.4g}, Monte-Carlo error expected ~ {expected:.4g}")


if __name__ == "__main__":
    main()
