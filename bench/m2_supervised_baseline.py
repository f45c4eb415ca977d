"""Test error of M2's classifier network q(y|x) fitted to the labelled images alone, with no
unlabelled images and no generative model: the baseline an M2 run's classification error should beat.

The network is the one ``pvae train --model m2 --hidden 500 --activation softplus`` builds for
q(y|x) (784 -> 500 softplus -> 10). It is fitted by Adam (lr 1e-3) to the ``--labels`` images that
pvae's M2 would label (``pvae.data.labelled_subset``, class-balanced, ``--label-seed``), each step on
a fresh dynamic binarization, and scored on the full test set binarized once (seed 0).

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/m2_supervised_baseline.py --labels 100 --label-seeds 0 1
"""

from __future__ import annotations

import argparse

import torch

from pvae.data import fixed_eval_set, labelled_subset, load_data
from pvae.parts.networks import mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, default=100)
    parser.add_argument("--label-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--hidden", type=int, nargs="+", default=[500])
    parser.add_argument("--activation", default="softplus")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--val-size", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (default: PyTorch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_data("mnist", args.data_dir, val_size=args.val_size)
    x_test = fixed_eval_set(data.test, "dynamic")
    for seed in args.label_seeds:
        rows = labelled_subset(data.train_labels, args.labels, seed)
        x, y = data.train[rows], data.train_labels[rows]
        net = mlp(x.shape[1], tuple(args.hidden), 10, args.activation)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(args.steps):
            loss = torch.nn.functional.cross_entropy(net(torch.bernoulli(x)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            error = (net(x_test).argmax(-1) != data.test_labels).double().mean().item()
        print(f"{args.labels} labels, label seed {seed}: supervised-only test error {100 * error:.2f}%")


if __name__ == "__main__":
    main()
