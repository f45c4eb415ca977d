"""A 1-D and a 2-D latent space: what a VAE with m = 1 or m = 2 learns, and how far q(z|x) is from p(z|x).

With so few latent dimensions everything can be looked at exactly. For each m this script trains a
VAE, prints its test ELBO, and draws

* ``manifold.png``: E[x|z] on a grid of z (one row for m = 1; Kingma & Welling 2014, Figure 4, for m = 2);
* ``latent_space.png``: the posterior means of test images, coloured by digit;
* ``posteriors.png``: the true posterior p(z|x), normalized on a grid, beside q(z|x); the gap
  log p(x) - ELBO = KL(q(z|x) || p(z|x)) is printed over each image.

    python examples/latent_1d_2d.py            # 10 epochs on 50,000 images for each m
    python examples/latent_1d_2d.py --smoke    # seconds: 500 images, 1 epoch

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pvae
from pvae.data import fixed_eval_set
from pvae.views.plots import plot_latent_space, plot_manifold, plot_posteriors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/examples/latent_1d_2d", help="one run folder per m inside it")
    args = parser.parse_args()

    for z_dim in (1, 2):
        config = pvae.TrainConfig(
            z_dim=z_dim,
            epochs=1 if args.smoke else args.epochs,
            train_size=500 if args.smoke else None,
            val_size=100 if args.smoke else 10_000,
            out=str(Path(args.out) / f"m{z_dim}"),
        )
        result = pvae.train(config, overwrite=True, progress=False)
        vae, data, out = result.vae, result.data, Path(result.run_dir)
        x_test = fixed_eval_set(data.test, config.binarization)
        elbo = pvae.elbo_terms(vae, x_test).elbo.mean().item()
        print(f"m = {z_dim}: test ELBO {elbo:.2f} nats per image")
        for path in (
            plot_manifold(vae, data.image_shape, out / "manifold.png"),
            plot_latent_space(vae, x_test[:5000], data.test_labels[:5000], out / "latent_space.png"),
            plot_posteriors(vae, x_test[:4], data.image_shape, out / "posteriors.png"),
        ):
            print(f"  written: {path}")


if __name__ == "__main__":
    main()
