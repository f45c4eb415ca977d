"""One table: every prior, likelihood and posterior family trained on MNIST for the same budget.

Each row changes one component of the default VAE (784-200-200-50, tanh; N(0, I) prior, Bernoulli
likelihood, diagonal Gaussian guide) and trains it with the same estimator (Pyro's ``Trace_ELBO``,
one draw of z, Monte-Carlo KL), optimizer (Adam, lr 1e-3, batch 100), seed and budget. Reported:
the test-set ELBO (all test images, one draw of z each), log p(x) by importance sampling on the
first ``--iw-images`` test images (``pvae.inference.importance``), and seconds per training epoch: the median
time of one SVI step times the number of steps (evaluation not included). The median keeps bursts
of load from other processes out of the figure; steady load is not, so compare rows of one run.

Data: each likelihood is trained and tested on data it fits. Bernoulli: dynamically binarized
training images, test images binarized once (seed 0), as ``pvae train`` does; the other
likelihoods: grey levels k/255; Beta: the grey levels moved to bin centres (255 x + 0.5) / 256.
Numbers of different data columns are not comparable, nor are log-densities (continuous
likelihoods) with log-probabilities (Bernoulli on binary images, discretized logistic on 8-bit ones).

    PVAE_DATA_DIR=/work/shared/data .venv/bin/python bench/components.py --epochs 1 --train-size 10000
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from dataclasses import dataclass

import torch
from pyro.infer import Trace_ELBO

from pvae import TrainConfig, build_likelihood, build_vae, elbo_terms, load_data
from pvae.data import fixed_eval_set
from pvae.runs.folder import resolve_device
from pvae.runs.train import train_epoch

try:  # log p(x) needs the importance-sampling module; without it the column is left out
    from pvae.inference.importance import log_marginal_likelihood
except ImportError:  # pragma: no cover
    log_marginal_likelihood = None

PRIORS = ["normal", "diagonal", "mog:10", "vamp:500", "laplace", "student-t:3", "flow:4"]
LIKELIHOODS = ["bernoulli", "continuous-bernoulli", "gaussian", "gaussian:learned", "laplace", "laplace:learned",
               "beta", "discretized-logistic"]
GUIDES = ["diagonal", "full-cov", "flow:4"]


@dataclass(frozen=True)
class Row:
    group: str
    prior: str = "normal"
    likelihood: str = "bernoulli"
    guide: str = "diagonal"

    @property
    def key(self) -> str:
        return f"{self.prior}/{self.likelihood}/{self.guide}"


def _rows() -> list[Row]:
    return ([Row("prior", prior=p) for p in PRIORS] + [Row("likelihood", likelihood=lik) for lik in LIKELIHOODS]
            + [Row("guide", guide=g) for g in GUIDES])


def _data_kind(likelihood: str) -> str:
    if build_likelihood(likelihood).needs_binary:
        return "binarized"
    return "bin centres" if likelihood == "beta" else "grey"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per configuration (default: 1)")
    parser.add_argument("--train-size", type=int, default=10_000, help="training images (default: 10,000)")
    parser.add_argument("--test-size", type=int, default=None, help="test images for the ELBO (default: all)")
    parser.add_argument("--iw-samples", type=int, default=100, help="importance samples K for log p(x) (0: skip)")
    parser.add_argument("--iw-images", type=int, default=1000, help="test images for log p(x) (default: 1,000)")
    parser.add_argument("--z-dim", type=int, default=TrainConfig.z_dim)
    parser.add_argument("--hidden", type=int, nargs="+", default=list(TrainConfig.hidden))
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", default=None, help="regular expression on 'prior/likelihood/guide' to run a subset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    data = load_data("mnist", args.data_dir, val_size=10_000, train_size=args.train_size, device=device)
    x_grey, test_grey = data.train, data.test[: args.test_size]
    test_sets = {"binarized": fixed_eval_set(test_grey, "dynamic"), "grey": test_grey,
                 "bin centres": (255 * test_grey + 0.5) / 256}
    train_sets = {"grey": x_grey, "bin centres": (255 * x_grey + 0.5) / 256}
    iw = args.iw_samples if log_marginal_likelihood is not None else 0
    print(f"MNIST, {len(x_grey)} training images, {args.epochs} epoch(s), batch {args.batch_size}, Adam lr {args.lr}, "
          f"z_dim {args.z_dim}, hidden {args.hidden}, seed {args.seed}, {device}, torch threads {torch.get_num_threads()}; "
          f"test ELBO on {len(test_grey)} images (1 draw each)"
          + (f", log p(x) with K={iw} on the first {min(args.iw_images, len(test_grey))}" if iw else ""))

    done: dict[str, dict[str, object]] = {}
    lines = ["| varied | prior | likelihood | guide | data | test ELBO | log p(x) | s/epoch | KL |",
             "|---|---|---|---|---|---:|---:|---:|---|"]
    print("\n".join(lines), flush=True)
    for row in _rows():
        if args.only is not None and not re.search(args.only, row.key):
            continue
        if row.key not in done:
            done[row.key] = _run(row, args, train_sets, test_sets, device, iw)
        r = done[row.key]
        log_px = f"{r['log_px']:.2f}" if r["log_px"] is not None else "-"
        line = (f"| {row.group} | {row.prior} | {row.likelihood} | {row.guide} | {r['data']} | {r['elbo']:.2f} | "
                f"{log_px} | {r['seconds']:.2f} | {'analytic' if r['kl_analytic'] else 'MC'} |")
        print(line, flush=True)


def _run(row: Row, args: argparse.Namespace, train_sets: dict, test_sets: dict, device: torch.device, iw: int) -> dict:  # noqa: E501
    kind = _data_kind(row.likelihood)
    config = TrainConfig(prior=row.prior, likelihood=row.likelihood, guide=row.guide, z_dim=args.z_dim,
                         hidden=tuple(args.hidden), binarization="dynamic" if kind == "binarized" else "none",
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    x_fixed = train_sets["grey" if kind == "binarized" else kind]
    torch.manual_seed(args.seed)
    vae = build_vae(config, x_fixed.shape[1], len(x_fixed), mean_image=x_fixed.mean(0), init_data=x_fixed).to(device)
    x_test = test_sets[kind]
    vae.likelihood.check_support(x_test)
    objective = Trace_ELBO(max_plate_nesting=1)
    optimizer = torch.optim.Adam(vae.parameters(), lr=args.lr)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    clock = _StepClock(device)
    for _ in range(args.epochs):
        vae.train()
        x_epoch = torch.bernoulli(x_fixed, generator=gen) if kind == "binarized" else x_fixed
        order = torch.randperm(len(x_fixed), generator=gen, device=device)
        clock.start()
        train_epoch(vae, objective, optimizer, x_epoch, order, args.batch_size, progress=clock)
    vae.eval()
    # A VampPrior scores each z against its 500 components: smaller evaluation chunks bound the memory.
    big_mixture = row.prior.startswith("vamp")
    terms = elbo_terms(vae, x_test, batch_size=200 if big_mixture else 1000)
    log_px = None
    if iw:
        log_px = log_marginal_likelihood(vae.model, vae.guide, x_test[: args.iw_images], num_samples=iw,
                                         chunk_size=2**10 if big_mixture else 2**15).mean().item()
    steps_per_epoch = -(-len(x_fixed) // args.batch_size)
    return {"data": kind, "elbo": terms.elbo.mean().item(), "log_px": log_px,
            "seconds": statistics.median(clock.steps) * steps_per_epoch, "kl_analytic": terms.kl_is_analytic}


class _StepClock:
    """Stands in for ``train_epoch``'s progress bar: ``update`` is called after every SVI step, and
    the clock keeps the seconds each step took."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.steps, self._last = device, [], 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._last = self._now()

    def update(self, n: int = 1) -> None:
        now = self._now()
        self.steps.append(now - self._last)
        self._last = now

    def set_postfix(self, **kwargs: object) -> None:
        pass


if __name__ == "__main__":
    main()
