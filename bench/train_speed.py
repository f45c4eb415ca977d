"""Seconds per training epoch: pvae (Pyro model/guide + Trace_ELBO) versus a hand-written PyTorch VAE.

Both train the default model (784-200-200-50, tanh, Bernoulli likelihood, N(0, I) prior, diagonal
Gaussian posterior) on the same dynamically binarized MNIST training images, with the same initial
weights, batch size, data order, optimizer (Adam) and estimator (one draw of z per image, Monte-Carlo
KL, the N/B minibatch scale). The ratio pvae / hand-written is the figure of merit (target <= 1.10 on
CPU). A third column, the same model as a plain Pyro program fitted by stock ``Trace_ELBO``, shows
how much of the difference is Pyro's own per-step tracing rather than pvae's code.

Machine noise on a shared machine moves one epoch's time by 5-10%, more than the difference being
measured. So each epoch is cut into blocks of ``--block-steps`` steps, and the implementations run
each block in turn (which one goes first rotates): a slow spell of the machine hits all alike. An
epoch's seconds are the sum of its blocks plus the binarization and shuffling that all share (timed
once). pvae's blocks run ``pvae.training.loop.train_epoch``, the loop ``pvae train`` runs.

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/train_speed.py [--repeats 5] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import Tensor, nn
from torch.nn import functional as F

from pvae import TrainConfig, build_vae, load_data
from pvae.runs.folder import resolve_device
from pvae.training.loop import train_epoch
from pvae.training.objectives import training_objective


class HandWrittenVAE(nn.Module):
    """The same networks as pvae's default VAE, with the ELBO written out by hand."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, num_data: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.num_data = encoder, decoder, num_data

    def loss(self, x: Tensor) -> Tensor:
        """-(N / B) * sum_i [log p(x_i|z_i) + log p(z_i) - log q(z_i|x_i)], z_i = loc + scale * eps."""
        loc, scale = self.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        log_px_z = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return -(self.num_data / x.shape[0]) * (log_px_z + log_pz - log_qz).sum()


class PlainPyroVAE(nn.Module):
    """The same networks in the few lines of Pyro one writes without pvae, for stock ``Trace_ELBO``.

    It tells what Pyro's tracing costs from what pvae adds on top: the same plate (size N, the
    minibatch as its subsample), sites and distributions as pvae's default model, none of its code.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, num_data: int) -> None:
        super().__init__()
        self.encoder, self.decoder, self.z_dim, self.num_data = encoder, decoder, z_dim, num_data
        self.elbo = Trace_ELBO(max_plate_nesting=1)

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", self.num_data, subsample=torch.arange(x.shape[0], device=x.device)):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        with pyro.plate("data", self.num_data, subsample=torch.arange(x.shape[0], device=x.device)):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def loss(self, x: Tensor) -> Tensor:
        """-(N / B) * the minibatch's ELBO estimate, by ``Trace_ELBO``, argument validation off as in pvae."""
        with pyro.validation_enabled(False):
            return self.elbo.differentiable_loss(self.model, self.guide, x)


def sgd_epoch(
    vae: HandWrittenVAE | PlainPyroVAE, optimizer: torch.optim.Optimizer, x: Tensor, order: Tensor, batch: int
) -> float:
    """Adam steps on the minibatches ``x[order[i : i + batch]]``, as pvae's train_epoch takes them.

    :returns: the mean over steps of the per-image ELBO estimate.
    """
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    for start in range(0, order.shape[0], batch):
        loss = vae.loss(x[order[start : start + batch]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elbo_sum -= loss.detach() / vae.num_data
        steps += 1
    return elbo_sum.item() / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per implementation")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--val-size", type=int, default=TrainConfig.val_size,
                        help="training images held out, as pvae train does (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--block-steps", type=int, default=50, help="steps per block; the implementations take turns block by block")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    config = TrainConfig(batch_size=args.batch_size, val_size=args.val_size, device=str(device))
    data = load_data(config.dataset, args.data_dir, val_size=config.val_size, device=device)
    x_grey, n = data.train, data.train.shape[0]
    torch.manual_seed(0)
    pvae_model = build_vae(config, data.x_dim, n, mean_image=x_grey.mean(0)).to(device)
    hand = HandWrittenVAE(copy.deepcopy(pvae_model.encoder), copy.deepcopy(pvae_model.decoder), n).to(device)
    plain = PlainPyroVAE(copy.deepcopy(pvae_model.encoder), copy.deepcopy(pvae_model.decoder), config.z_dim, n).to(device)
    objective = training_objective(pvae_model, objective=config.objective, engine="jit")  # as pvae train runs it (engine auto)
    opt_pvae = torch.optim.Adam(pvae_model.parameters(), lr=config.lr)
    opt_hand = torch.optim.Adam(hand.parameters(), lr=config.lr)
    opt_plain = torch.optim.Adam(plain.parameters(), lr=config.lr)
    gen = torch.Generator(device=device).manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(run) -> float:  # noqa: ANN001
        sync()
        tic = time.perf_counter()
        run()
        sync()
        return time.perf_counter() - tic

    block = args.block_steps * config.batch_size
    names = ("pvae", "hand", "pyro")
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats):
        order = torch.empty(0)
        x = x_grey

        def prepare() -> None:
            nonlocal order, x
            order = torch.randperm(n, generator=gen, device=device)
            x = torch.bernoulli(x_grey, generator=gen)  # dynamic binarization, as pvae train does

        shared = timed(prepare)
        seconds = dict.fromkeys(names, shared)
        elbos: dict[str, list[float]] = {name: [] for name in names}
        for i, lo in enumerate(range(0, n, block)):
            # All see the same minibatches: the block's images, gathered once outside the timing.
            xb = x[order[lo : lo + block]]
            steps = torch.arange(xb.shape[0], device=device)
            runs = {
                "pvae": lambda: train_epoch(pvae_model, objective, opt_pvae, xb, steps, config.batch_size),
                "hand": lambda: sgd_epoch(hand, opt_hand, xb, steps, config.batch_size),
                "pyro": lambda: sgd_epoch(plain, opt_plain, xb, steps, config.batch_size),
            }
            first = (rep + i) % len(names)  # each goes first in turn
            for name in names[first:] + names[:first]:
                seconds[name] += timed(lambda: elbos[name].append(runs[name]()))  # noqa: B023
        for name in names:
            times[name].append(seconds[name])
        print(f"epoch {rep + 1}  pvae {seconds['pvae']:6.2f} s  hand-written {seconds['hand']:6.2f} s  "
              f"plain Pyro {seconds['pyro']:6.2f} s  ratio {seconds['pvae'] / seconds['hand']:.3f}   "
              f"train elbo (nats/image) " + ", ".join(f"{statistics.fmean(elbos[k]):.2f}" for k in names))
    pvae_times, hand_times = times["pvae"], times["hand"]
    p, h, q = (statistics.median(times[name]) for name in names)
    paired = statistics.median(a / b for a, b in zip(pvae_times, hand_times))
    plain_paired = statistics.median(a / b for a, b in zip(times["pyro"], hand_times))
    print(f"\ndevice {device}, {torch.get_num_threads()} threads, N={n}, batch {config.batch_size}, "
          f"{args.repeats} epochs each, blocks of {args.block_steps} steps (medians)")
    print(f"pvae          {p:7.2f} s/epoch")
    print(f"hand-written  {h:7.2f} s/epoch")
    print(f"plain Pyro    {q:7.2f} s/epoch   (ratio to hand-written {plain_paired:.3f}: what Pyro's tracing costs)")
    print(f"ratio pvae / hand-written = {paired:.3f}   (median of the epochs' ratios; of the medians: "
          f"{p / h:.3f}; target <= 1.10)")


if __name__ == "__main__":
    main()
