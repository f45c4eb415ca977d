"""Train a VAE on binarized MNIST, measure its test ELBO, and draw what it learned.

What it shows: the whole pvae workflow from Python -- ``pvae.train`` (SVI with Pyro's Trace_ELBO),
``pvae.evaluate_run`` (test-set ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), in nats per image),
``pvae.plot_run`` (training curves, reconstructions, samples, interpolations, the latent space and,
for a 2-D latent, the manifold and the true posterior beside q) and ``pvae.write_graphs`` (the
graphical model of Kingma & Welling 2014, Figure 1, drawn from the model and guide code).

    python examples/train_mnist.py                 # 20 epochs on 50,000 images, m = 2
    python examples/train_mnist.py --z-dim 20      # a larger latent (the latent plot then shows 2 PCs)
    python examples/train_mnist.py --smoke         # seconds: 500 images, 1 epoch

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pvae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--z-dim", type=int, default=2, help="m, the latent dimension (default: 2)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/examples/train_mnist", help="the run folder")
    args = parser.parse_args()

    config = pvae.TrainConfig(
        z_dim=args.z_dim,
        epochs=1 if args.smoke else args.epochs,
        train_size=500 if args.smoke else None,  # None: all 50,000 images left after validation
        val_size=100 if args.smoke else 10_000,
        out=args.out,
    )
    print(f"training on {config.dataset}: {config.train_size or 'all'} images, m = {config.z_dim}, "
          f"{config.epochs} epoch(s)")
    result = pvae.train(config, overwrite=True, progress=False)

    evaluation = pvae.evaluate_run(result.run_dir)
    print(f"test ELBO {evaluation['elbo']:.2f} nats per image = E_q[log p(x|z)] {evaluation['reconstruction']:.2f}"
          f" - KL(q(z|x) || p(z)) {evaluation['kl']:.2f}")

    figures = pvae.plot_run(result.run_dir)
    graphs = pvae.write_graphs(result.vae, Path(result.run_dir) / "graph")
    for path in figures.files + graphs.dot + graphs.rendered + graphs.figure:
        print(f"written: {path}")
    for note in figures.skipped + ([graphs.note] if graphs.note else []):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
