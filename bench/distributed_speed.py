"""Training throughput of 1 and P processes under torchrun, measured side by side in one run.

Each repeat launches ``torchrun --standalone --nproc-per-node P -m pvae train`` for every P in
turn (interleaved, so that load from elsewhere falls on all of them alike), with one CPU thread per
process (gloo on the CPU; on a GPU machine, one GPU per process with ``--device cuda``). The same
global minibatch (``--batch-size``) is shared by the P processes. Throughput is training images
per second: the training set's size over the median epoch time after the first (which traces the
ELBO), validation included (rank 0 computes it while the others wait). Scaling efficiency is the
speed-up over one process divided by P.

    PVAE_DATA_DIR=../shared/data .venv/bin/python bench/distributed_speed.py --procs 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def _epoch_seconds(metrics: Path) -> list[float]:
    with open(metrics, newline="") as f:
        return [float(row["seconds"]) for row in csv.DictReader(f)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="numbers of processes (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per launch; the first is not timed")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100, help="the global minibatch (default: 100)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more pvae train flags")
    args = parser.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS="1")
    times: dict[int, list[float]] = {p: [] for p in args.procs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for procs in args.procs:
                out = Path(tmp) / f"p{procs}-{repeat}"
                cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
                       "-m", "pvae", "train", "--epochs", str(args.epochs), "--train-size", str(args.train_size),
                       "--val-size", str(args.val_size), "--batch-size", str(args.batch_size), "--device", args.device,
                       "--out", str(out), "--no-progress", *args.extra]
                if args.data_dir:
                    cmd += ["--data-dir", args.data_dir]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"P = {procs} failed:\n{proc.stderr[-3000:]}")
                times[procs].extend(_epoch_seconds(out / "metrics.csv")[1:])
    base = statistics.median(times[args.procs[0]])
    print(f"MNIST, {args.train_size} training images, global batch {args.batch_size}, {args.device}, one thread per "
          f"process; median of {args.repeats} x {args.epochs - 1} epochs per P")
    print("| processes | seconds per epoch | images per second | speed-up | scaling efficiency |")
    print("|---:|---:|---:|---:|---:|")
    for procs in args.procs:
        seconds = statistics.median(times[procs])
        speedup = base / seconds * args.procs[0]
        print(f"| {procs} | {seconds:.2f} | {args.train_size / seconds:.0f} | {speedup:.2f} | {speedup / procs:.2f} |")


if __name__ == "__main__":
    main()
