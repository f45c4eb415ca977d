"""log p(x) beside the ELBO: importance sampling with growing K, checked against the exact value.

The ELBO is a lower bound: ELBO(x) = log p(x) - KL(q(z|x) || p(z|x)). Importance sampling with the
guide as proposal (Burda, Grosse & Salakhutdinov 2016),

    log p(x) ~ log (1/K) sum_k p(x, z_k) / q(z_k|x),   z_k ~ q(z|x),

is a tighter bound that approaches log p(x) as K grows. With a 2-D latent, log p(x) can also be
computed exactly (up to a tiny quadrature error) by summing p(x, z) over a grid of z. This script
trains a VAE with m = 2 and prints, in nats per image,

* the test ELBO and the importance-sampling estimate for K = 1, 10, 100, 1000 (K = 1 is the ELBO);
* for a few test images, the grid value of log p(x) beside the estimates;

and writes ``elbo_vs_log_px.png`` (per image: ELBO against log p(x); the vertical gap is the KL) and
``ess.png`` (the effective sample size of the importance weights).

    python examples/log_px_vs_elbo.py            # 10 epochs on 50,000 images, 10,000 test images
    python examples/log_px_vs_elbo.py --smoke    # seconds: 500 images, 1 epoch, 200 test images

MNIST is read from ``$PVAE_DATA_DIR`` (or downloaded by torchvision into ~/.cache/pvae/data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pvae
from pvae.data import fixed_eval_set
from pvae.inference.importance import importance_estimate, log_marginal_likelihood
from pvae.views.plots import plot_elbo_vs_log_px, plot_ess_histogram, posterior_on_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few seconds: 500 training images, 1 epoch")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num-test", type=int, default=10_000, help="test images to evaluate on")
    parser.add_argument("--out", default="runs/examples/log_px_vs_elbo", help="the run folder")
    args = parser.parse_args()
    num_test, ks, grid_size = (200, (1, 10, 100), 100) if args.smoke else (args.num_test, (1, 10, 100, 1000), 300)

    config = pvae.TrainConfig(z_dim=2, epochs=1 if args.smoke else args.epochs,
                              train_size=500 if args.smoke else None, val_size=100 if args.smoke else 10_000,
                              out=args.out)
    result = pvae.train(config, overwrite=True, progress=False)
    vae, out = result.vae, Path(result.run_dir)
    x = fixed_eval_set(result.data.test[:num_test], config.binarization)

    print(f"{num_test} test images, nats per image (higher is better):")
    print(f"  ELBO (analytic KL)      {pvae.elbo_terms(vae, x).elbo.mean().item():9.3f}")
    for k in ks:
        est = importance_estimate(vae.model, vae.guide, x, num_samples=k)
        print(f"  log p(x), IS, K = {k:<5} {est.log_px_mean:9.3f} ± {est.log_px_stderr:.3f}"
              f"   (mean ESS {est.ess.mean().item():.1f} of {k})")

    print("the first three test images: exact log p(x) (grid) against importance sampling")
    for i in range(3):
        exact = posterior_on_grid(vae, x[i], size=grid_size).log_px
        estimates = "  ".join(
            f"K={k}: {log_marginal_likelihood(vae.model, vae.guide, x[i : i + 1], num_samples=k).item():8.3f}"
            for k in ks
        )
        print(f"  image {i}: grid {exact:8.3f}   {estimates}")

    # per-image scatter and ESS histogram from the largest K
    for path in (
        plot_elbo_vs_log_px(est.elbo, est.log_px, out / "elbo_vs_log_px.png"),
        plot_ess_histogram(est.ess, out / "ess.png", num_samples=ks[-1]),
    ):
        print(f"written: {path}")


if __name__ == "__main__":
    main()
