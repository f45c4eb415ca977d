"""Swap the prior p(z): the same VAE trained with N(0, I), a mixture of Gaussians, a VampPrior and a flow.

Only the prior changes -- the model, the guide and the inference code stay the same, because
inference only ever calls ``prior().log_prob(z)``. For each prior the script prints the test ELBO
and log p(x) (importance sampling, K draws) in nats per image, and writes the latent space (posterior
means by digit) and samples from the prior into one run folder per prior.

    python examples/swap_prior.py              # 10 epochs on 50,000 images per prior
    python examples/swap_prior.py --smoke      # seconds: 500 images, 1 epoch, small mixtures

A prior of your own is any object with ``z_dim`` that, called with no arguments, returns a Pyro
distribution with ``event_shape == (z_dim,)``: pass it as ``pvae.VAE(..., prior=...)`` and train that
model with ``pvae.train(config, vae=...)`` (see :mod:`pvae.parts.priors`).

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pvae
from pvae.data import fixed_eval_set
from pvae.inference.importance import log_marginal_likelihood
from pvae.views.plots import plot_latent_space, plot_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--z-dim", type=int, default=2, help="m (default 2, so the latent space is drawn as is)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=1000, help="K, importance samples for log p(x)")
    parser.add_argument("--num-test", type=int, default=10_000, help="test images to evaluate on")
    parser.add_argument("--out", default="runs/examples/swap_prior", help="one run folder per prior inside it")
    args = parser.parse_args()
    # name[:argument], as in `pvae train --prior ...`: K mixture components, K pseudo-inputs, L flow layers
    priors = ["normal", "mog:3", "vamp:10", "flow:1"] if args.smoke else ["normal", "mog:10", "vamp:500", "flow:4"]
    num_samples, num_test = (10, 200) if args.smoke else (args.num_samples, args.num_test)

    print(f"{'prior':>10}  {'test ELBO':>10}  {'log p(x)':>10}   nats per image, {num_test} test images, K = {num_samples}")
    for spec in priors:
        config = pvae.TrainConfig(
            z_dim=args.z_dim,
            prior=spec,
            epochs=1 if args.smoke else args.epochs,
            train_size=500 if args.smoke else None,
            val_size=100 if args.smoke else 10_000,
            out=str(Path(args.out) / spec.replace(":", "-")),
        )
        result = pvae.train(config, overwrite=True, progress=False)
        vae, data, out = result.vae, result.data, Path(result.run_dir)
        x = fixed_eval_set(data.test[:num_test], config.binarization)
        elbo = pvae.elbo_terms(vae, x).elbo.mean().item()
        log_px = log_marginal_likelihood(vae.model, vae.guide, x, num_samples=num_samples).mean().item()
        print(f"{spec:>10}  {elbo:10.2f}  {log_px:10.2f}")
        plot_latent_space(vae, x, data.test_labels[:num_test], out / "latent_space.png")
        plot_samples(vae, data.image_shape, out / "samples.png")
    print(f"figures: {args.out}/<prior>/latent_space.png and samples.png")


if __name__ == "__main__":
    main()
