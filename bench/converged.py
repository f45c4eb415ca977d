"""Numbers at convergence: long trainings in run folders that resume, then log p(x) with K = 5000.

Two suites, each a list of ``pvae train`` runs under ``--root`` (one folder per run). A run whose
folder already holds a checkpoint is resumed (bit for bit), one that is complete is not trained
again, and one already evaluated with the same settings is not evaluated again: the script can be
stopped at any moment and started again with the same command.

``components``: the component table at a budget where the components separate. The default VAE
(784-200-200-50, tanh, Bernoulli, dynamic binarization, 50,000 training images, batch 100, Adam 1e-3
with a cosine schedule, Trace_ELBO) with one component changed per row: the priors N(0, I), MoG,
VampPrior and flow; the guides diagonal, full-covariance and flow; every row with the same KL
warm-up, epochs and seed. Each is measured on the first ``--iw-images`` test images (binarized
once, seed 0): the ELBO, log p(x) by importance sampling with K = ``--iw-samples``, and their
standard errors over images.

``iwae``: the recipe of Burda et al. (2016), ``pvae train --recipe iwae:S`` (batch 20, Adam 1e-3
with epsilon 1e-4, stage i of 3^i epochs at 1e-3 * 10^(-i/7), 400 validation images), keeping
the checkpoint at every stage's end. The learning curve is test log p(x) (K = ``--iw-samples`` on
the first ``--curve-images`` test images) at each kept stage end; the last checkpoint is measured
on ``--final-images`` test images (all of them by default). ``--no-train`` measures what a run
(for instance one cut off by its time budget) has so far. ``figure`` draws the curves of such runs
(their ``curve.json``) in one PNG, beside published numbers.

    PVAE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/converged.py components \\
        --root /work/runs/components --epochs 100 --kl-warmup 20
    PVAE_DATA_DIR=../shared/data OMP_NUM_THREADS=1 .venv/bin/python bench/converged.py iwae \\
        --root /work/runs --name iwae-vae --stages 8
    .venv/bin/python bench/converged.py figure --curve "VAE" /work/runs/iwae-vae/curve.json \\
        --reference "VAE, Burda et al. 2016" -86.76 --out iwae_curves.png
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from pvae import TrainConfig
from pvae.runs.evaluate import evaluate_run
from pvae.runs.folder import CHECKPOINT, EVALUATION, METRICS, PER_IMAGE, kept_checkpoint, load_config
from pvae.runs.train import train
from pvae.training.recipes import IWAE_STAGES, iwae_epochs, recipe_fields
from pvae.views.plots import plot_log_px_curves

# (varied, prior, guide) of the component table's rows
COMPONENT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("baseline", "normal", "diagonal"),
    ("prior", "mog:10", "diagonal"),
    ("prior", "vamp:500", "diagonal"),
    ("prior", "flow:4", "diagonal"),
    ("guide", "normal", "full-cov"),
    ("guide", "normal", "flow:4"),
)


def folder_name(*parts: str) -> str:
    """A run folder's name from its varied settings: 'prior-vamp500'."""
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "", p) for p in parts)


def ensure_trained(config: TrainConfig) -> TrainConfig:
    """Train ``config`` into ``config.out``, resuming a folder that holds a checkpoint; return the
    configuration the folder holds."""
    out = Path(str(config.out))
    if (out / CHECKPOINT).exists():
        saved = load_config(out)
        if replace(saved, out=config.out, device=config.device, data_dir=config.data_dir) != config:
            raise SystemExit(f"{out} holds a run of other settings; give another --root or remove it")
        train(config, resume=True, progress=False)
    else:
        train(config, progress=False)
    return config


def measured(run: Path, checkpoint: str | None, *, num_images: int | None, num_samples: int, device: str,
             data_dir: str | None) -> dict[str, Any]:
    """The run's evaluation of ``checkpoint`` (its JSON), computed unless an identical one is there."""
    name = EVALUATION if checkpoint is None else f"evaluation-{Path(checkpoint).stem}.json"
    path = run / name
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("num_samples") == num_samples and (num_images is None or old.get("num_images") == num_images) \
                and old.get("epoch") == _epoch_of(run, checkpoint):
            return old
    return evaluate_run(run, num_images=num_images, num_samples=num_samples, device=device, data_dir=data_dir,
                        checkpoint=checkpoint, progress=False).to_dict()


def _epoch_of(run: Path, checkpoint: str | None) -> int:
    if checkpoint is not None:
        return int(re.search(r"(\d+)", checkpoint).group(1))  # type: ignore[union-attr]
    rows = (run / METRICS).read_text().strip().splitlines()
    return int(rows[-1].split(",")[0])


def _seconds_per_epoch(run: Path) -> float:
    lines = (run / METRICS).read_text().strip().splitlines()
    header = lines[0].split(",")
    column = header.index("seconds")
    return statistics.median(float(line.split(",")[column]) for line in lines[1:])


def _per_image_log_px(run: Path) -> list[float]:
    with open(run / PER_IMAGE, newline="") as f:
        return [float(row["log_px"]) for row in csv.DictReader(f)]


def _paired(values: list[float], baseline: list[float]) -> str:
    """Mean and standard error of the per-image difference ``values - baseline``."""
    diffs = [a - b for a, b in zip(values, baseline, strict=True)]
    return f"{statistics.fmean(diffs):+.2f} ± {statistics.stdev(diffs) / len(diffs) ** 0.5:.2f}"


def _pm(result: dict[str, Any], key: str) -> str:
    return f"{result[key]:.2f} ± {result[key + '_stderr']:.2f}"


def components(args: argparse.Namespace) -> None:
    root = Path(args.root)
    print(f"MNIST, {args.train_size or 50_000} training images, {args.epochs} epochs, KL warm-up over {args.kl_warmup} epochs, batch "
          f"{args.batch_size}, Adam 1e-3 cosine, seed {args.seed}; test images 1..{args.iw_images} (binarized once, "
          f"seed 0), log p(x) with K = {args.iw_samples}")
    lines = ["| varied | prior | guide | test elbo | test log_px | log_px − baseline (paired) | kl_gap | active units "
             "| s/epoch |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    baseline: list[float] | None = None
    print("\n".join(lines), flush=True)
    summary = []
    for varied, prior, guide in COMPONENT_ROWS:
        if args.only is not None and not re.search(args.only, f"{prior}/{guide}"):
            continue
        config = TrainConfig(prior=prior, guide=guide, epochs=args.epochs, kl_warmup=args.kl_warmup,
                             batch_size=args.batch_size, train_size=args.train_size, val_size=args.val_size, seed=args.seed,
                             device=args.device, data_dir=args.data_dir,
                             out=str(root / folder_name(varied, prior if varied != "guide" else guide)))
        if not args.no_train:
            ensure_trained(config)
        run = Path(str(config.out))
        result = measured(run, None, num_images=args.iw_images, num_samples=args.iw_samples, device=args.device,
                          data_dir=args.data_dir)
        per_image = _per_image_log_px(run)
        if varied == "baseline":
            baseline = per_image
        # the same test images and the same seed in every row: the difference is measured image by image
        paired = _paired(per_image, baseline) if baseline is not None and varied != "baseline" else "—"
        line = (f"| {varied} | {prior} | {guide} | {_pm(result, 'elbo')} | {_pm(result, 'log_px')} | {paired} | "
                f"{result['kl_gap']:.2f} | {result['active_units']} | {_seconds_per_epoch(run):.1f} |")
        print(line, flush=True)
        lines.append(line)
        summary.append({"varied": varied, "prior": prior, "guide": guide, "run": str(run), **result})
    (root / "components.md").write_text("\n".join(lines) + "\n")
    (root / "components.json").write_text(json.dumps(summary, indent=2))


def iwae(args: argparse.Namespace) -> None:
    run = Path(args.root) / args.name
    fields = recipe_fields(f"iwae:{args.stages}")
    for name in ("batch_size", "lr"):  # e.g. on a GPU: larger batches, in the same schedule's shape
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    config = TrainConfig(**fields, train_size=args.train_size, model=args.model, objective=args.objective, seed=args.seed, device=args.device,
                         data_dir=args.data_dir, keep_epochs=tuple(iwae_epochs(s) for s in range(1, args.stages + 1)),
                         out=str(run))
    if not args.no_train:
        ensure_trained(config)
    epochs_done = _epoch_of(run, None)
    print(f"{run}: {args.model}, objective {args.objective}, recipe iwae:{args.stages}, batch {config.batch_size}, "
          f"lr {config.lr}; "
          f"{epochs_done} of {config.epochs} epochs done")
    print("| stage | epoch | lr | val elbo (400 images) | test elbo | test log_px |", "|---:|---:|---:|---:|---:|---:|",
          sep="\n", flush=True)
    curve = []
    val = {int(line.split(",")[0]): line.split(",") for line in (run / METRICS).read_text().strip().splitlines()[1:]}
    for stage in range(args.stages):
        epoch = iwae_epochs(stage + 1)
        if epoch > epochs_done:
            break
        result = measured(run, kept_checkpoint(epoch), num_images=args.curve_images, num_samples=args.iw_samples,
                          device=args.device, data_dir=args.data_dir)
        curve.append({"stage": stage, "epoch": epoch, "lr": float(val[epoch][3]), "val_elbo": float(val[epoch][2]),
                      **{k: result[k] for k in ("elbo", "elbo_stderr", "log_px", "log_px_stderr", "num_images")}})
        print(f"| {stage} | {epoch} | {float(val[epoch][3]):.3g} | {float(val[epoch][2]):.2f} | {_pm(result, 'elbo')} "
              f"| {_pm(result, 'log_px')} |", flush=True)
    final = measured(run, None, num_images=args.final_images, num_samples=args.iw_samples, device=args.device,
                     data_dir=args.data_dir)
    print(f"last checkpoint, epoch {final['epoch']}: test elbo {_pm(final, 'elbo')}, test log_px "
          f"{_pm(final, 'log_px')} (K = {args.iw_samples}, {final['num_images']} test images), kl_gap "
          f"{final['kl_gap']:.2f}, active units {final['active_units']}")
    (run / "curve.json").write_text(json.dumps({"curve": curve, "final": final}, indent=2))


def figure(args: argparse.Namespace) -> None:
    """The learning curves of ``iwae`` runs (their ``curve.json``) in one figure, beside published numbers."""
    curves = {}
    for label, path in args.curve:
        try:
            curves[label] = json.loads(Path(path).read_text())["curve"]
        except (OSError, ValueError, KeyError) as error:
            raise SystemExit(f"--curve {label!r} {path}: expected the curve.json of bench/converged.py iwae ({error})")
    references = {}
    for label, value in args.reference:
        try:
            references[label] = float(value)
        except ValueError:
            raise SystemExit(f"--reference {label!r} {value!r}: expected a log p(x) in nats, e.g. -86.76") from None
    print(plot_log_px_curves(curves, args.out, references=references, until=args.until))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="suite", required=True)
    fig = sub.add_parser("figure", help="the curves of iwae runs in one PNG, beside published numbers")
    fig.add_argument("--curve", nargs=2, action="append", required=True, metavar=("LABEL", "CURVE_JSON"),
                     help="a run's label and the curve.json that bench/converged.py iwae wrote (repeatable)")
    fig.add_argument("--reference", nargs=2, action="append", default=[], metavar=("LABEL", "LOG_PX"),
                     help="a published log p(x) in nats (minus the paper's nll), drawn as a line (repeatable)")
    fig.add_argument("--until", type=int, default=None, help="the epoch axis reaches this far (e.g. 3280)")
    fig.add_argument("--out", required=True, help="the PNG to write")
    for name in ("components", "iwae"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True, help="folder of the run folders (outside the repository)")
        p.add_argument("--iw-samples", type=int, default=5000, help="K of log p(x) (default: 5000)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
        p.add_argument("--data-dir", default=None)
        p.add_argument("--no-train", action="store_true", help="measure the runs as they are, train nothing")
    comp = sub.choices["components"]
    comp.add_argument("--epochs", type=int, default=100)
    comp.add_argument("--kl-warmup", type=int, default=20, help="epochs of KL warm-up, every row (default: 20)")
    comp.add_argument("--batch-size", type=int, default=100)
    comp.add_argument("--train-size", type=int, default=None, help="training images (default: all 50,000)")
    comp.add_argument("--val-size", type=int, default=10_000, help="validation images (default: 10,000)")
    comp.add_argument("--iw-images", type=int, default=1000, help="test images measured (default: 1,000)")
    comp.add_argument("--only", default=None, help="regular expression on 'prior/guide' to run a subset")
    iw = sub.choices["iwae"]
    iw.add_argument("--name", default="iwae-vae", help="the run folder's name under --root")
    iw.add_argument("--model", default="vae", choices=("vae", "hierarchical"))
    iw.add_argument("--objective", default="trace", help="trace, or iwae:K for the IWAE bound (default: trace)")
    iw.add_argument("--stages", type=int, default=IWAE_STAGES, help=f"stages of the schedule, 1..{IWAE_STAGES}")
    iw.add_argument("--batch-size", type=int, default=None, help="instead of the paper's 20 (e.g. on a GPU)")
    iw.add_argument("--lr", type=float, default=None, help="stage 0's learning rate instead of the paper's 1e-3")
    iw.add_argument("--train-size", type=int, default=None, help="training images (default: all but the 400)")
    iw.add_argument("--curve-images", type=int, default=1000, help="test images per point of the curve")
    iw.add_argument("--final-images", type=int, default=None, help="test images for the last checkpoint (all)")
    args = parser.parse_args()
    {"components": components, "iwae": iwae, "figure": figure}[args.suite](args)


if __name__ == "__main__":
    main()
