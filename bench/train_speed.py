"""Seconds per training epoch: pvae (Pyro model/guide + Trace_ELBO) versus a hand-written PyTorch VAE.

Both train the default model (784-200-200-50, tanh, Bernoulli likelihood, N(0, I) prior, diagonal
Gaussian posterior) on the same dynamically binarized MNIST training images, with the same initial
weights, batch size, data order, optimizer (Adam) and estimator (one draw of z per image, Monte-Carlo
KL, the N/B minibatch scale). The two are timed in alternation in one process, so machine noise
hits both alike; the ratio pvae / hand-written is the figure of merit (target <= 1.10 on CPU).

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/train_speed.py [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from pvae import TrainConfig, build_vae, load_data
from pvae.runs import resolve_device
from pvae.train import _objective, train_epoch


class HandWrittenVAE(nn.Module):
    """The same networks as pvae's default VAE, with the ELBO written out by hand."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def loss(self, x: Tensor, num_data: int) -> Tensor:
        """-(N / B) * sum_i [log p(x_i|z_i) + log p(z_i) - log q(z_i|x_i)], z_i = loc + scale * eps."""
        loc, scale = self.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        log_px_z = -F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return -(num_data / x.shape[0]) * (log_px_z + log_pz - log_qz).sum()


def hand_written_epoch(vae: HandWrittenVAE, optimizer: torch.optim.Optimizer, x: Tensor, order: Tensor, batch: int) -> float:
    n = x.shape[0]
    elbo_sum = torch.zeros((), device=x.device)
    steps = 0
    for start in range(0, n, batch):
        loss = vae.loss(x[order[start : start + batch]], n)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elbo_sum -= loss.detach() / n
        steps += 1
    return elbo_sum.item() / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per implementation (alternating)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    config = TrainConfig(batch_size=args.batch_size, device=str(device))
    data = load_data(config.dataset, args.data_dir, val_size=config.val_size, device=device)
    x_grey, n = data.train, data.train.shape[0]
    torch.manual_seed(0)
    pvae_model = build_vae(config, data.x_dim, n, mean_image=x_grey.mean(0)).to(device)
    hand = HandWrittenVAE(copy.deepcopy(pvae_model.encoder), copy.deepcopy(pvae_model.decoder)).to(device)
    objective = _objective(config)
    opt_pvae = torch.optim.Adam(pvae_model.parameters(), lr=config.lr)
    opt_hand = torch.optim.Adam(hand.parameters(), lr=config.lr)
    gen = torch.Generator(device=device).manual_seed(0)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(run) -> tuple[float, float]:  # noqa: ANN001
        sync()
        tic = time.perf_counter()
        order = torch.randperm(n, generator=gen, device=device)
        x = torch.bernoulli(x_grey, generator=gen)  # dynamic binarization, as pvae train does
        elbo = run(x, order)
        sync()
        return time.perf_counter() - tic, elbo

    pvae_times, hand_times = [], []
    for rep in range(args.repeats):
        # Alternate which goes first so drifts in machine load do not favour one side.
        runs = [("pvae", pvae_times), ("hand", hand_times)]
        for name, store in runs if rep % 2 == 0 else runs[::-1]:
            if name == "pvae":
                seconds, elbo = timed(lambda x, o: train_epoch(pvae_model, objective, opt_pvae, x, o, config.batch_size))
            else:
                seconds, elbo = timed(lambda x, o: hand_written_epoch(hand, opt_hand, x, o, config.batch_size))
            store.append(seconds)
            print(f"epoch {rep + 1}  {name:<13} {seconds:7.2f} s   train elbo {elbo:9.2f} nats/image")
    p, h = statistics.median(pvae_times), statistics.median(hand_times)
    print(f"\ndevice {device}, {torch.get_num_threads()} threads, N={n}, batch {config.batch_size}, "
          f"{args.repeats} epochs each (median)")
    print(f"pvae          {p:7.2f} s/epoch")
    print(f"hand-written  {h:7.2f} s/epoch")
    print(f"ratio pvae / hand-written = {p / h:.3f}   (target <= 1.10)")


if __name__ == "__main__":
    main()
