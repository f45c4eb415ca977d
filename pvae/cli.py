"""The ``pvae`` command line: ``pvae train``, ``pvae evaluate``.

``pvae train`` has one flag per :class:`~pvae.config.TrainConfig` field (``z_dim`` -> ``--z-dim``).
Errors a user can fix print one line, ``pvae: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from pvae.checkpoint import CheckpointError
from pvae.config import TrainConfig
from pvae.data import DataNotFoundError
from pvae.runs import CONFIG, RunFolderError

__all__ = ["main", "build_parser"]

# TrainConfig field types as written in its (postponed) annotations -> argparse settings.
_ARG_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": str},
    "str | None": {"type": str},
    "int": {"type": int},
    "int | None": {"type": int},
    "float": {"type": float},
    "tuple[int, ...]": {"type": int, "nargs": "+"},
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    doc = TrainConfig.__doc__ or ""
    for f in dataclasses.fields(TrainConfig):
        kwargs = dict(_ARG_TYPES[str(f.type)])
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        hint = f"default: {' '.join(map(str, default)) if isinstance(default, tuple) else default}"
        # argparse.SUPPRESS keeps unset flags out of the namespace, so --resume can tell what was given.
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=_field_help(doc, f.name, hint), **kwargs)


def _field_help(doc: str, name: str, hint: str) -> str:
    marker = f":param {name}:"
    if marker not in doc:
        return hint
    text = doc.split(marker, 1)[1].split(":param", 1)[0]
    return " ".join(text.split()) + f" ({hint})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pvae`` with its subcommands."""
    parser = argparse.ArgumentParser(prog="pvae", description="Variational autoencoders as Pyro programs.")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser("train", help="train a VAE by SVI and write a run folder")
    _add_config_flags(tr)
    tr.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")

    ev = sub.add_parser("evaluate", help="test-set ELBO of a run; writes RUN/evaluation.json")
    ev.add_argument("run", metavar="RUN", help="a run folder written by pvae train")
    ev.add_argument("--split", choices=("test", "val"), default="test", help="default: test")
    ev.add_argument("--elbo-samples", type=int, default=1, help="draws of z per image for the ELBO (default: 1)")
    ev.add_argument("--data-dir", help="where the dataset is, if not where the run found it")
    ev.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: auto")
    return parser


def _train(args: argparse.Namespace) -> None:
    from pvae.train import train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    if args.resume is not None:
        from pvae.runs import load_run

        saved, _ = load_run(args.resume)
        extra = set(given) - {"out", "device", "data_dir"}
        if extra:
            raise RunFolderError(
                f"--resume continues the run exactly as configured in {args.resume}/{CONFIG}; "
                f"drop {', '.join('--' + k.replace('_', '-') for k in sorted(extra))}"
            )
        config = dataclasses.replace(saved, out=args.resume, **{k: v for k, v in given.items() if k != "out"})
        result = train(config, resume=True, progress=False if args.no_progress else None)
    else:
        result = train(TrainConfig(**given), overwrite=args.overwrite, progress=False if args.no_progress else None)
    last = result.metrics[-1]
    print(f"run folder: {result.run_dir}  (validation ELBO {last['val_elbo']:.3f} nats per image)")


def _evaluate(args: argparse.Namespace) -> None:
    from pvae.evaluate import evaluate_run, format_table

    if args.elbo_samples < 1:
        raise ValueError(f"--elbo-samples must be >= 1, got {args.elbo_samples}")
    result = evaluate_run(
        args.run, split=args.split, num_samples=args.elbo_samples, data_dir=args.data_dir, device=args.device
    )
    print(format_table(result))
    print(f"written: {args.run}/evaluation.json")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pvae`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        {"train": _train, "evaluate": _evaluate}[args.command](args)
    except (ValueError, DataNotFoundError, CheckpointError, RunFolderError) as err:
        print(f"pvae: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pvae: interrupted; the run folder keeps its last complete checkpoint (continue with --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
