"""Grey-level images with a likelihood that fits them, instead of binarizing MNIST.

A Bernoulli p(x|z) puts probability on 0 and 1 only, so pvae refuses it on grey levels. This
script trains on the raw grey levels (``binarization="none"``) with three likelihoods and prints the
test ELBO of each, in nats per image:

* ``continuous-bernoulli`` -- a normalized density on [0, 1] (Loaiza-Ganem & Cunningham 2019);
* ``gaussian:learned`` -- N(mu(z), sigma(z)^2) per pixel, a density on the real line;
* ``discretized-logistic`` -- a probability for each of the 256 grey levels k/255.

Only the last is a probability of the 8-bit image; the other two are densities, whose log can be
positive and is not comparable with it (nor with a binarized model's). For the discretized logistic
the script also prints bits per pixel, -ELBO / (x_dim ln 2). Reconstructions are written for each.

    python examples/grey_levels.py            # 10 epochs on 50,000 images per likelihood
    python examples/grey_levels.py --smoke    # seconds: 500 images, 1 epoch

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pvae
from pvae.views.plots import plot_reconstructions

LIKELIHOODS = ("continuous-bernoulli", "gaussian:learned", "discretized-logistic")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--z-dim", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="runs/examples/grey_levels", help="one run folder per likelihood inside it")
    args = parser.parse_args()

    try:
        pvae.TrainConfig(binarization="none", likelihood="bernoulli")
    except pvae.ConfigError as err:
        print(f"Bernoulli on grey levels is refused: {err}\n")

    for spec in LIKELIHOODS:
        config = pvae.TrainConfig(
            binarization="none",  # the grey levels k/255 as they are
            likelihood=spec,
            z_dim=args.z_dim,
            epochs=1 if args.smoke else args.epochs,
            train_size=500 if args.smoke else None,
            val_size=100 if args.smoke else 10_000,
            out=str(Path(args.out) / spec.replace(":", "-")),
        )
        result = pvae.train(config, overwrite=True, progress=False)
        x_test = result.data.test
        elbo = pvae.elbo_terms(result.vae, x_test).elbo.mean().item()
        line = f"{spec:>22}: test ELBO {elbo:9.2f} nats per image"
        if spec == "discretized-logistic":
            line += f"  = {-elbo / (x_test.shape[1] * math.log(2)):.3f} bits per pixel"
        print(line)
        path = plot_reconstructions(result.vae, x_test, result.data.image_shape, Path(result.run_dir) / "reconstructions.png")
        print(f"{'':>24}written: {path}")


if __name__ == "__main__":
    main()
