"""The ``pvae`` command line: ``pvae train``, ``evaluate``, ``compare``, ``graph``, ``plot`` and ``sample``.

``pvae train`` has one flag per :class:`~pvae.runs.config.TrainConfig` field (``z_dim`` -> ``--z-dim``).
Errors a user can fix print one line, ``pvae: error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import os
import re
import shlex
import signal
import sys
import textwrap
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pvae.data import DataNotFoundError
from pvae.runs.checkpoint import CheckpointError
from pvae.runs.config import FIELD_CHOICES, TrainConfig
from pvae.runs.evaluate import SETTING_CHOICES, EvaluationSettings
from pvae.runs.folder import CONFIG, RunFolderError
from pvae.runs.train import TrainingDivergedError
from pvae.training.compiled import TracedELBOMismatch
from pvae.training.recipes import recipe_fields
from pvae.version import __version__

__all__ = ["main", "build_parser", "field_docs", "as_flags"]

# TrainConfig field types as written in its (postponed) annotations -> argparse settings.
_ARG_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": str},
    "str | None": {"type": str},
    "int": {"type": int},
    "int | None": {"type": int},
    "float": {"type": float},
    "bool": {"action": "store_true"},
    "tuple[int, ...]": {"type": int, "nargs": "+"},
}


_METAVARS = {"data_dir": "DIR", "out": "DIR", "model": "NAME", "model_args": "JSON", "prior": "NAME[:ARG]",
             "likelihood": "NAME[:ARG]", "guide": "NAME[:ARG]", "objective": "NAME[:K]"}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, without breaking words at hyphens (full-cov, runs/DATE-TIME)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    docs = field_docs(TrainConfig.__doc__ or "")
    for f in dataclasses.fields(TrainConfig):
        kwargs = dict(_ARG_TYPES[str(f.type)])
        if f.name in FIELD_CHOICES:
            # Listed as argparse lists choices, but checked by TrainConfig: its refusal is one line
            # that suggests the nearest name, where argparse's repeats the whole usage.
            kwargs["metavar"] = "{" + ",".join(FIELD_CHOICES[f.name]) + "}"
        elif "type" in kwargs:
            kwargs["metavar"] = _METAVARS.get(f.name) or {int: "N", float: "X"}.get(kwargs["type"], "TEXT")
        default = f.default
        sentence = docs.get(f.name)
        if sentence is None:
            raise AssertionError(f"TrainConfig's docstring has no ':param {f.name}:' to be the help of its flag")
        sentence = sentence.rstrip(".")
        if default is not None and not isinstance(default, bool):
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            sentence += f" (default: {shown})"
        flag = "--" + f.name.replace("_", "-")
        # argparse.SUPPRESS keeps unset flags out of the namespace, so --resume can tell what was given.
        parser.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, help=sentence, **kwargs)


#: EvaluationSettings' fields as ``pvae evaluate``'s flags: their names, but for the AIS path's
#: short forms and the switch that turns the progress bar off.
EVALUATE_FLAGS: dict[str, str] = {
    **{f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(EvaluationSettings)},
    "num_steps": "--steps",
    "num_leapfrog": "--leapfrog",
    "num_chains": "--chains",
    "progress": "--no-progress",
}
_EVALUATE_METAVARS = {"checkpoint": "FILE", "num_samples": "K", "num_steps": "T", "num_leapfrog": "L",
                      "num_chains": "C", "bdmc_images": "M", "data_dir": "DIR"}


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`EvaluationSettings` field, its help the field's ``:param:`` entry."""
    docs = field_docs(EvaluationSettings.__doc__ or "")
    for f in dataclasses.fields(EvaluationSettings):
        sentence = docs.get(f.name)
        if sentence is None:
            raise AssertionError(f"EvaluationSettings' docstring has no ':param {f.name}:' to be the help of its flag")
        sentence = sentence.rstrip(".")
        flag = EVALUATE_FLAGS[f.name]
        if f.name == "progress":  # on by default where stderr is a terminal: the flag turns it off
            parser.add_argument(flag, dest=f.name, action="store_const", const=False, default=None,
                                help="no progress bar while log p(x) is estimated")
            continue
        kwargs: dict[str, Any] = {"default": f.default}
        if f.name in SETTING_CHOICES:
            kwargs["choices"] = SETTING_CHOICES[f.name]
        else:
            kwargs["type"] = int if str(f.type).startswith("int") else str
            kwargs["metavar"] = _EVALUATE_METAVARS.get(f.name, "N")
        if f.default is not None:
            if "(default:" in sentence:  # a default explained in the docstring: it must be the field's
                if f"(default: {f.default}" not in sentence:
                    raise AssertionError(f"EvaluationSettings' docstring gives {f.name} another default than "
                                         f"{f.default}")
            else:
                sentence += f" (default: {f.default})"
        parser.add_argument(flag, dest=f.name, help=sentence, **kwargs)


def field_docs(doc: str) -> dict[str, str]:
    r"""The ``:param name: text`` entries of a docstring, as plain terminal text.

    An entry runs on over the lines indented below it. Sphinx roles become their text
    (``:class:`~a.B``` is B) and double backquotes are dropped, so that the docstring is the one
    source of the reference pages, help() and --help alike.

    >>> field_docs(":param lr: Adam's ``lr``, see\n    :class:`~torch.optim.Adam`.\n\n>>> 1")
    {'lr': "Adam's lr, see Adam."}
    """
    entries: dict[str, list[str]] = {}
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        match = re.match(r":param (\w+):\s*(.*)", line)
        if match:
            current = match.group(1)
            entries[current] = [match.group(2)]
        elif current is not None and line.startswith(" ") and line.strip():
            entries[current].append(line.strip())
        else:
            current = None
    return {name: _plain(" ".join(words)) for name, words in entries.items()}


def _plain(text: str) -> str:
    text = re.sub(r":\w+:`([^`<]*?)\s*<[^`]*>`", r"\1", text)  # :role:`text <target>` -> text
    text = re.sub(r":\w+:`~(?:[^`]*\.)?([^`.]+)`", r"\1", text)  # :role:`~a.b.C` -> C
    text = re.sub(r":\w+:`([^`]+)`", r"\1", text)  # :role:`a.b.C` -> a.b.C
    return text.replace("``", "")


#: TrainConfig's fields as flags (``z_dim`` -> ``--z-dim``), with train()'s own switches.
TRAIN_FLAGS: dict[str, str] = {
    **{f.name: "--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)},
    "resume": "--resume",
    "overwrite": "--overwrite",
}
# name=value as Python spells a keyword argument: 'text', "text", (1, 2), or a bare word or number,
# at the start of a word (after a space or an opening parenthesis, never inside a path such as runs/lr=0.1)
_KEYWORD = re.compile(r"(?:^|(?<=[\s(]))([a-z_][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|\([^)]*\)|[^\s,;()]+)")


def as_flags(message: str, flags: Mapping[str, str] | None = None) -> str:
    """A library message with its parameters spelled as command-line flags.

    Library errors name a setting as Python spells a keyword argument (``labels=100``,
    ``objective='trace'``, ``dequantize=True``, ``hidden=(200, 200)``); on the command line the
    same words read ``--labels 100``, ``--objective trace``, ``--dequantize``, ``--hidden 200 200``.
    Only names in ``flags`` are rewritten; a trailing period or comma stays where it was.

    :param flags: parameter name -> flag; default ``TRAIN_FLAGS`` (``pvae train``'s).

    >>> as_flags("model m2 needs labels: e.g. labels=100; use objective='trace' or binarization='none' with dequantize=True.")
    'model m2 needs labels: e.g. --labels 100; use --objective trace or --binarization none with --dequantize.'
    """
    flags = TRAIN_FLAGS if flags is None else flags

    def flag(match: re.Match[str]) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        end = ""
        if value[-1] == "." and value[0] not in "'\"(":  # the sentence's period, not a decimal point
            value, end = value[:-1], "."
        if value[0] in "'\"":
            value = value[1:-1]
        elif value[0] == "(":
            return f"{flags[name]} {' '.join(shlex.quote(v.strip()) for v in value[1:-1].split(',') if v.strip())}{end}"
        if value == "True":
            return flags[name] + end
        return f"{flags[name]} {shlex.quote(value)}{end}"

    return _KEYWORD.sub(flag, message)


def _version() -> str:
    """pvae's version with the versions of what it runs on, for bug reports."""
    def of(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    return f"pvae {__version__} (Pyro {of('pyro-ppl')}, PyTorch {of('torch')}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``pvae`` with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="pvae", formatter_class=_HelpFormatter, description="Variational autoencoders as Pyro programs: train, evaluate, compare and draw them.",
        epilog="Run 'pvae COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the versions of pvae, Pyro, PyTorch and Python, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=_HelpFormatter)  # type: ignore[method-assign]

    tr = sub.add_parser("train", help="train a graphical model by SVI and write a run folder",
                        description="Train a graphical model (a VAE, two stochastic layers, class-conditional, "
                                    "semi-supervised M2, or a class of your own) by stochastic variational inference, "
                                    "and write a run folder: config.json, metrics.csv and checkpoint.pt.")
    _add_config_flags(tr)
    tr.add_argument("--recipe", metavar="NAME[:S]",
                    help="a paper's training recipe, whose settings flags given beside it override: iwae[:S], "
                         "Burda et al. 2016, the first S of the 8 stages of their schedule (3^i epochs at lr "
                         "1e-3 * 10^(-i/7)), Adam epsilon 1e-4, batch 20, 400 validation images (default S: 8, "
                         "3280 epochs)")
    tr.add_argument("--resume", metavar="RUN", help="continue the run in folder RUN from its last checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch only)")

    ev = sub.add_parser("evaluate", help="the ELBO and log p(x) of a run on its test set; writes RUN/evaluation.json",
                        description="Measure a trained run on a fixed evaluation set: the ELBO and its terms per "
                                    "latent, and with --num-samples log p(x) by importance sampling (or by AIS, --method ais), in nats per image "
                                    "(higher is better). Writes RUN/evaluation.json, and RUN/per_image.csv with "
                                    "log p(x).")
    ev.add_argument("run", metavar="RUN", help="a run folder written by pvae train")
    _add_evaluation_flags(ev)
    cm = sub.add_parser("compare", help="several runs side by side: the settings that differ and their numbers",
                        description="Put run folders side by side: one table of the settings that differ and the "
                                    "numbers (validation and test ELBO, log p(x) with its standard error and K, KL "
                                    "gap, active units, seconds per epoch), printed and written as Markdown and CSV, "
                                    "and a figure of the training curves overlaid. Numbers measured differently "
                                    "(another K, split, binarization, ...) are flagged.")
    cm.add_argument("runs", metavar="RUN", nargs="+",
                    help="run folders written by pvae train; those evaluated by pvae evaluate add their test numbers")
    cm.add_argument("--out", metavar="DIR",
                    help="folder for comparison.md, comparison.csv and comparison.png (default: the current folder)")
    _add_figure_commands(sub)
    return parser


def _train(args: argparse.Namespace) -> None:
    try:
        _run_train(args)
    except TracedELBOMismatch as err:  # a traceback for a bug report, its advice in flags
        err.args = (as_flags(str(err)),)
        raise


def _run_train(args: argparse.Namespace) -> None:
    from pvae.runs.train import train

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}  # nargs "+" gives lists
    if args.recipe is not None:
        if args.resume is not None:
            raise RunFolderError(f"--resume continues the run exactly as configured in {args.resume}/{CONFIG}; "
                                 "drop --recipe")
        given = {**recipe_fields(args.recipe), **given}  # flags given beside the recipe win
    if args.resume is not None:
        from pvae.runs.folder import load_config

        saved = load_config(args.resume)  # train() reads and checks the checkpoint itself
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
    if int(os.environ.get("RANK", "0")) != 0:  # one report per run, from rank 0
        return
    last = result.metrics[-1]
    if math.isnan(last["val_elbo"]):  # --val-size 0: all training images, no validation split
        print(f"run folder: {result.run_dir}  (train ELBO {last['train_elbo']:.3f} nats per image; no validation split)")
    else:
        print(f"run folder: {result.run_dir}  (validation ELBO {last['val_elbo']:.3f} nats per image)")


def _evaluate(args: argparse.Namespace) -> None:
    from pvae.runs.evaluate import EvaluationSettings, evaluate_with, format_table

    settings = EvaluationSettings(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvaluationSettings)})
    evaluation = evaluate_with(args.run, settings)
    if int(os.environ.get("RANK", "0")) != 0:  # one report per evaluation, from rank 0
        return
    print(format_table(evaluation))
    what = {"bdmc": "(lower and upper bound of each simulated image's log p(x))",
            "per_image": "(elbo, log_px and their gap, image by image)"}
    for name in evaluation.files or []:
        note = next((text for prefix, text in what.items() if name.startswith(prefix)), "")
        print(f"written: {args.run}/{name} {note}".rstrip())


def _compare(args: argparse.Namespace) -> None:
    from pvae.runs.compare import compare_runs, format_comparison

    comparison = compare_runs(args.runs, out=args.out or ".")
    print(format_comparison(comparison))
    for path in comparison.files:
        print(f"written: {path}")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _add_figure_commands(sub: Any) -> None:
    gr = sub.add_parser("graph", help="draw the graphical model of a run's model and guide (DOT, SVG, PNG)",
                        description="Draw the model and the guide as graphical models, read from their traces: "
                                    "latent and observed nodes, the plate over the N images, the guide's arrows "
                                    "dashed.")
    gr.add_argument("run", metavar="RUN", nargs="?",
                    help="a run folder (when not given, the model pvae train builds by default)")
    gr.add_argument("--out", metavar="DIR", help="folder for the files (default: RUN, else the current folder)")
    gr.add_argument("--pdf", action="store_true", help="also write graphical_model.pdf")
    pl = sub.add_parser("plot", help="draw a run's figures (curves, reconstructions, latent space, ...) as PNG",
                        description="Draw every figure that applies to a run's model; a figure that does not apply "
                                    "is skipped with one line saying why.")
    pl.add_argument("run", metavar="RUN", help="a run folder written by pvae train")
    pl.add_argument("--out", metavar="DIR", help="folder for the figures (default: RUN)")
    pl.add_argument("--pdf", action="store_true", help="also write every figure as PDF")
    pl.add_argument("--data-dir", metavar="DIR", help="where the dataset is, if not where the run found it")
    pl.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to compute: auto (CUDA when available), cpu or cuda (default: auto)")
    sa = sub.add_parser("sample", help="draw images from a run's model (of one class with --label) into a PNG",
                        description="Draw images x ~ p(x | z) with z from the prior, for a model with labels of one "
                                    "class with --label.")
    sa.add_argument("run", metavar="RUN", help="a run folder written by pvae train")
    sa.add_argument("--label", type=int, metavar="Y",
                    help="the class to draw, for a model with labels (when not given, any class)")
    sa.add_argument("--num", type=int, default=64, metavar="N", help="images to draw (default: 64)")
    sa.add_argument("--out", metavar="DIR", help="folder for the figure (default: RUN)")
    sa.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the draws (default: 0)")
    sa.add_argument("--data-dir", metavar="DIR", help="where the dataset is, if not where the run found it")
    sa.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where to compute: auto (CUDA when available), cpu or cuda (default: auto)")


def _graph(args: argparse.Namespace) -> None:
    from pvae.runs.build import default_vae
    from pvae.runs.folder import load_run, rebuild_model, resolve_device
    from pvae.views.graph import write_graphs

    if args.run is not None:
        config, state = load_run(args.run)
        vae = rebuild_model(config, state, resolve_device("cpu"))  # any family, or a class by import path
    else:
        vae = default_vae()
    files = write_graphs(vae, args.out or args.run or ".", pdf=args.pdf)
    for path in files.dot + files.rendered + files.figure:
        print(f"written: {path}")
    if files.note is not None:
        print(files.note, file=sys.stderr)


def _plot(args: argparse.Namespace) -> None:
    from pvae.runs.figures import plot_run

    figures = plot_run(args.run, out=args.out, pdf=args.pdf, data_dir=args.data_dir, device=args.device)
    for path in figures.files:
        print(f"written: {path}")
    for reason in figures.skipped:
        print(f"skipped: {reason}")


def _sample(args: argparse.Namespace) -> None:
    from pvae.runs.figures import sample_run

    if args.num < 1:
        raise ValueError(f"--num must be >= 1, got {args.num}")
    path = sample_run(args.run, out=args.out, label=args.label, num=args.num, data_dir=args.data_dir,
                      device=args.device, seed=args.seed)
    print(f"written: {path}")


def _in_flags(err: BaseException, command: str) -> str:
    """An error's one line as the command line says it: the library names parameters
    (``labels=100``, ``num_steps=500``), the command its flags (``--labels 100``, ``--steps 500``)."""
    return as_flags(str(err), EVALUATE_FLAGS if command == "evaluate" else TRAIN_FLAGS)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pvae`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    # SIGTERM (kill, a batch scheduler's time limit) ends a run like Ctrl-C does: every file of the
    # run folder is written atomically, so the last complete checkpoint survives either way.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        commands = {"train": _train, "evaluate": _evaluate, "compare": _compare, "graph": _graph, "plot": _plot,
                    "sample": _sample}
        commands[args.command](args)
    except (ValueError, DataNotFoundError, CheckpointError, RunFolderError) as err:
        print(f"pvae: error: {_in_flags(err, args.command)}", file=sys.stderr)
        return 2
    except TrainingDivergedError as err:
        print(f"pvae: error: {_in_flags(err, args.command)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pvae: interrupted; the run folder keeps its last complete checkpoint (continue with --resume)",
              file=sys.stderr)
        return 130
    except RuntimeError as err:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            raise
        # A collective failed: another process of the distributed run died or was stopped.
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"pvae: error: rank {os.environ.get('RANK', '?')} stopped: another process of this distributed run "
              f"failed ({first[:200]}); the run folder keeps its last complete checkpoint: continue with the same "
              "torchrun --nproc-per-node and --resume", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
