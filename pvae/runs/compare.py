"""Run folders side by side (``pvae compare RUN [RUN ...]``): one table of the settings that differ
between the runs and their numbers, and one figure of their training curves.

Each run is read from its files alone (``config.json``, ``metrics.csv`` and, when ``pvae evaluate``
has written it, ``evaluation.json``); no checkpoint is loaded and no model is run. The numbers are
per image, in nats, and keep their sign: ``elbo`` and ``log_px`` are log-probabilities (bounds),
higher is better; ``kl_gap = log_px - elbo`` (lower: a tighter bound).

Numbers that cannot fairly stand side by side stay in the table, marked: runs evaluated with
different K, on different splits, datasets, images (grey or binarized) or numbers of images, a
log p(x | y) beside a log p(x), an evaluation older than the run's last epoch, validation ELBOs on
different validation sets, a run evaluated beside one that is not. Each such case is a
:class:`Flag`: a one-line warning, numbered, whose number ``[n]`` stands next to every number it
concerns.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pvae.errors import ConfigError
from pvae.runs.checkpoint import atomic_write_bytes, atomic_write_text
from pvae.runs.evaluate import Evaluation
from pvae.runs.folder import CONFIG, EVALUATION, METRICS, METRICS_FIELDS, RunFolderError, load_config

__all__ = [
    "Comparison",
    "Flag",
    "compare_runs",
    "format_comparison",
    "comparison_markdown",
    "comparison_csv",
    "plot_comparison",
    "COMPARISON_MD",
    "COMPARISON_CSV",
    "COMPARISON_PNG",
    "NUMBER_COLUMNS",
    "OPTIONAL_COLUMNS",
    "SKIPPED_SETTINGS",
]

COMPARISON_MD, COMPARISON_CSV, COMPARISON_PNG = "comparison.md", "comparison.csv", "comparison.png"

#: Configuration fields never shown as a difference: where a run lives, and where its data was read from.
SKIPPED_SETTINGS = ("out", "data_dir")

#: The numbers of each run, in the table's order. From ``metrics.csv``: ``epochs_trained`` (rows),
#: ``seconds_per_epoch`` (median), ``train_elbo`` and ``val_elbo`` (the last epoch's),
#: ``val_elbo_best`` and its ``best_epoch``. From ``evaluation.json``: the ``split`` and
#: ``num_images`` evaluated, ``elbo`` and ``log_px`` with their standard errors, ``num_samples``
#: (K), ``kl_gap`` and ``active_units``.
NUMBER_COLUMNS = (
    "epochs_trained",
    "seconds_per_epoch",
    "train_elbo",
    "val_elbo",
    "val_elbo_best",
    "best_epoch",
    "split",
    "num_images",
    "elbo",
    "elbo_stderr",
    "log_px",
    "log_px_stderr",
    "num_samples",
    "kl_gap",
    "kl_gap_stderr",
    "active_units",
)
#: Columns only some runs have (each is in the table when one run has it): M2's test error of
#: q(y|x), and -log p(x) and -ELBO in bits per dimension (lower is better) where they are
#: likelihoods of the images (binary pixels, discretized or dequantized 8-bit levels).
OPTIONAL_COLUMNS = ("classification_error", "nll_bits_per_dim", "neg_elbo_bits_per_dim")
_EVALUATION_COLUMNS = ("num_images", "elbo", "elbo_stderr", "log_px", "log_px_stderr", "num_samples", "kl_gap",
                       "kl_gap_stderr", "active_units", *OPTIONAL_COLUMNS)
_LOG_PX_COLUMNS = ("log_px", "log_px_stderr", "num_samples", "kl_gap", "kl_gap_stderr", "nll_bits_per_dim")
_VALIDATION_COLUMNS = ("val_elbo", "val_elbo_best")


def _images(evaluation: Evaluation) -> str | None:
    """What the evaluation's images were: grey levels, or binarized once with a seed. Static and
    dynamic binarization are evaluated on the same images (one fixed draw), so they compare."""
    if "binarization" not in evaluation:
        return None
    if evaluation.binarization == "none":
        if evaluation.dequantized:
            seed = evaluation.eval_binarization_seed
            return "dequantized 8-bit levels" + ("" if seed is None else f" (seed {seed})")
        return "grey levels"
    seed = evaluation.eval_binarization_seed
    return "binarized" if seed is None else f"binarized once (seed {seed})"


# What an evaluation was of; runs that differ in one are flagged.
def _estimator(evaluation: Evaluation) -> str | None:
    """How the evaluation's log p(x) was estimated: importance sampling (its K is checked apart) or AIS
    with its settings."""
    if "log_px" not in evaluation:
        return None
    if evaluation.method == "ais":
        return (f"AIS T={evaluation.ais_num_steps} L={evaluation.ais_num_leapfrog} "
                f"C={evaluation.ais_num_chains}")
    return "importance sampling"


_EVALUATION_CONDITIONS: tuple[tuple[str, str, Callable[[Evaluation], object]], ...] = (
    ("dataset", "datasets", lambda ev: ev.dataset),
    ("split", "splits", lambda ev: ev.split),
    ("images", "images", _images),
    ("num_images", "numbers of images", lambda ev: ev.num_images),
    ("conditioned_on_label", "targets (log p(x | y) for a model given the labels, log p(x) otherwise)",
     lambda ev: None if "conditioned_on_label" not in ev else
     "log p(x | y)" if ev.conditioned_on_label else "log p(x)"),
    ("estimator", "estimators of log p(x)", _estimator),
)


@dataclass(frozen=True)
class Flag:
    """A warning about numbers that do not compare like for like.

    :ivar message: one line saying what differs, between which runs, and what to do about it.
    :ivar cells: the ``(row index, column)`` pairs the warning concerns; each is marked in the
        table with the flag's number.
    """

    message: str
    cells: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class Comparison:
    """Run folders side by side: what :func:`compare_runs` returns.

    :ivar rows: one dict per run, in the order given, keyed by ``columns``: ``run`` (the folder's
        name, with as many parent folders as needed to tell the runs apart), ``path`` (as given),
        each differing setting (its value as in :class:`~pvae.runs.config.TrainConfig`; ``None`` where a
        run has no such setting), the numbers of :data:`NUMBER_COLUMNS` (``None`` where absent), the
        :data:`OPTIONAL_COLUMNS` some run has, ``notes`` (tuple of str: e.g. that the run is not
        evaluated) and ``flags`` (tuple of str: the messages of the flags that concern the run).
    :ivar columns: the keys of every row, in the table's order (the columns of ``comparison.csv``).
    :ivar settings: the settings whose values differ between the runs: configuration fields but
        ``out`` and ``data_dir``, then ``device_used``, ``engine_used``, ``cpu_threads`` and
        ``<package>_version`` as ``config.json`` records them.
    :ivar flags: the warnings, numbered from 1 in this order.
    :ivar curves: each run's rows of ``metrics.csv`` (``epoch``, ``train_elbo``, ``val_elbo``, ``lr``,
        ``seconds``; ELBOs in nats per image; a missing validation ELBO is NaN).
    :ivar files: the files written (``comparison.md``, ``comparison.csv``, ``comparison.png``), or
        ``()`` when no ``out`` was given.
    """

    rows: tuple[dict[str, Any], ...]
    columns: tuple[str, ...]
    settings: tuple[str, ...]
    flags: tuple[Flag, ...]
    curves: tuple[tuple[dict[str, float], ...], ...]
    files: tuple[Path, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The runs' names, as in the table and the figure's legend."""
        return tuple(row["run"] for row in self.rows)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The flags' one-line messages, in order."""
        return tuple(flag.message for flag in self.flags)


@dataclass(frozen=True)
class _Run:
    """A run folder as read: everything the table needs, checked."""

    given: str
    path: Path
    settings: dict[str, Any]
    config_epochs: int
    metrics: tuple[dict[str, float], ...]
    evaluation: Evaluation | None


def compare_runs(runs: Sequence[str | Path], *, out: str | Path | None = None) -> Comparison:
    """Read run folders and put their settings and numbers side by side; with ``out``, also write
    ``comparison.md``, ``comparison.csv`` and ``comparison.png`` there.

    Every folder is read before anything is written, so a bad one leaves no file. A folder given
    twice (the same folder under any spelling) is compared once, with a flag saying so.

    :param runs: one or more run folders written by ``pvae train``; evaluated ones (``pvae evaluate
        RUN [--num-samples K]``) add their test numbers, the others appear with those columns empty
        and a note.
    :param out: folder for the three files (created if missing); ``None``: write nothing.
    :returns: the table, the settings that differ, the flags and the files written.
    :raises RunFolderError: when ``runs`` is empty, or a path is not a run folder (no
        ``config.json``, no readable ``metrics.csv``) or holds an unreadable ``evaluation.json``.
    """
    if isinstance(runs, (str, Path)):
        runs = [runs]
    if len(runs) == 0:
        raise RunFolderError("pvae compare needs one or more run folders (written by pvae train), got none")
    read: list[_Run] = []
    seen: dict[Path, str] = {}
    duplicates: list[str] = []
    for given in runs:
        path = Path(given).resolve()
        if path in seen:
            duplicates.append(seen[path] if str(given) == seen[path] else f"{seen[path]} (also as {given})")
            continue
        seen[path] = str(given)
        read.append(_read_run(given))
    comparison = _tabulate(read, duplicates)
    if out is None:
        return comparison
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = (out / COMPARISON_MD, out / COMPARISON_CSV, out / COMPARISON_PNG)
    atomic_write_text(files[0], comparison_markdown(comparison))
    atomic_write_text(files[1], comparison_csv(comparison))
    plot_comparison(comparison, files[2])
    return replace(comparison, files=files)


def _read_run(given: str | Path) -> _Run:
    """One run folder's configuration, metrics and evaluation, or a one-line :class:`RunFolderError`."""
    run_dir = Path(given)
    if not run_dir.is_dir():
        what = "a file" if run_dir.exists() else "no such folder"
        raise RunFolderError(f"{given} is not a pvae run folder: {what} (expected a folder written by pvae train)")
    try:
        config = load_config(run_dir)  # raises RunFolderError without a readable config.json
    except ConfigError as err:  # e.g. written by another version of pvae, with other settings
        raise RunFolderError(f"{run_dir / CONFIG} cannot be read: {err}") from err
    saved = json.loads((run_dir / CONFIG).read_text())
    settings = {k: v for k, v in config.to_dict().items() if k not in SKIPPED_SETTINGS}
    settings["hidden"], settings["top_hidden"] = config.hidden, config.top_hidden
    settings["device_used"] = saved.get("device")
    settings["engine_used"] = saved.get("engine")
    settings["cpu_threads"] = saved.get("cpu_threads")
    versions = saved.get("versions")
    for package, version in (versions.items() if isinstance(versions, dict) else ()):
        settings[f"{package}_version"] = version
    evaluation = None
    ev_path = run_dir / EVALUATION
    if ev_path.is_file():
        try:
            data = json.loads(ev_path.read_text())
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{ev_path} is not JSON ({err}); run pvae evaluate {given} again") from err
        if not isinstance(data, dict):
            raise RunFolderError(f"{ev_path} is not an evaluation (expected a JSON object); "
                                 f"run pvae evaluate {given} again")
        try:
            evaluation = Evaluation.from_dict(data)
        except (TypeError, ValueError) as err:
            raise RunFolderError(f"{ev_path} is not an evaluation ({err})") from err
    return _Run(str(given), run_dir.resolve(), settings, config.epochs, _read_metrics(run_dir, given), evaluation)


def _read_metrics(run_dir: Path, given: str | Path) -> tuple[dict[str, float], ...]:
    """``metrics.csv`` as numbers: ``epoch`` an int, the rest floats (an empty cell is NaN)."""
    path = run_dir / METRICS
    if not path.is_file():
        raise RunFolderError(f"{given} is not a complete pvae run folder: {METRICS} is missing")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or ()
        # kl_weight came later: a run from before it is read with the weight empty (NaN)
        missing = [k for k in METRICS_FIELDS if k not in columns and k != "kl_weight"]
        if missing:
            raise RunFolderError(f"{path} lacks the columns {missing}; expected {', '.join(METRICS_FIELDS)}")
        try:
            return tuple({k: int(row[k]) if k == "epoch" else _float(row.get(k, "")) for k in METRICS_FIELDS}
                         for row in reader)
        except (TypeError, ValueError) as err:
            raise RunFolderError(f"{path} holds a value that is not a number ({err})") from err


def _float(text: str | None) -> float:
    if text is None:
        raise ValueError("a row is short of cells")
    return float(text) if text.strip() else math.nan


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _names(paths: Sequence[Path]) -> list[str]:
    """The runs' folder names, with as many parent folders as it takes to tell them apart."""
    depth = 1
    while True:
        names = ["/".join(p.parts[-depth:]) or str(p) for p in paths]
        if len(set(names)) == len(names) or depth >= max(len(p.parts) for p in paths):
            return names
        depth += 1


def _numbers(run: _Run) -> dict[str, Any]:
    """The row's numbers: training from ``metrics.csv``, the rest from ``evaluation.json``."""
    m = run.metrics
    val = [(row["val_elbo"], int(row["epoch"])) for row in m if math.isfinite(row["val_elbo"])]
    best = max(val, key=lambda v: v[0]) if val else None
    seconds = [row["seconds"] for row in m if math.isfinite(row["seconds"])]
    numbers: dict[str, Any] = {
        "epochs_trained": int(m[-1]["epoch"]) if m else 0,
        "seconds_per_epoch": statistics.median(seconds) if seconds else None,
        "train_elbo": _finite(m[-1]["train_elbo"]) if m else None,
        "val_elbo": _finite(m[-1]["val_elbo"]) if m else None,
        "val_elbo_best": best[0] if best else None,
        "best_epoch": best[1] if best else None,
    }
    ev = run.evaluation or {}
    for key in ("split", "num_images", *_EVALUATION_COLUMNS):
        value = ev.get(key)
        numbers[key] = value if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    if numbers["log_px"] is None:  # K and the gap belong to a log p(x) estimate
        numbers.update(num_samples=None, kl_gap=None, kl_gap_stderr=None)
    return numbers


def _differing(runs: Sequence[_Run]) -> list[str]:
    keys: list[str] = []
    for run in runs:
        keys += [k for k in run.settings if k not in keys]
    if len(runs) < 2:
        return []
    return [k for k in keys if len({json.dumps(r.settings.get(k), default=str) for r in runs}) > 1]


def _listing(names: Sequence[str], values: Sequence[object]) -> str:
    return ", ".join(f"{n}: {v}" for n, v in zip(names, values))


def _tabulate(runs: Sequence[_Run], duplicates: Sequence[str]) -> Comparison:
    names = _names([r.path for r in runs])
    settings = _differing(runs)
    numbers = [_numbers(r) for r in runs]
    optional = [c for c in OPTIONAL_COLUMNS if any(n[c] is not None for n in numbers)]
    notes: list[list[str]] = [[] for _ in runs]
    flags: list[Flag] = []
    evaluated = [i for i, r in enumerate(runs) if r.evaluation is not None]
    columns_here = set(NUMBER_COLUMNS) | set(optional)

    def cells(rows: Sequence[int], columns: Sequence[str]) -> tuple[tuple[int, str], ...]:
        """The cells of these rows and columns that hold a number (a missing one is not marked)."""
        return tuple((i, c) for i in rows for c in columns if c in columns_here and numbers[i][c] is not None)

    def gaps(rows: Sequence[int], column: str) -> tuple[tuple[int, str], ...]:
        """Empty cells, for a flag about a number that is missing."""
        return tuple((i, column) for i in rows)

    for i, run in enumerate(runs):
        trained = numbers[i]["epochs_trained"]
        if trained < run.config_epochs:
            notes[i].append(f"trained {trained} of {run.config_epochs} epochs "
                            f"(continue: pvae train --resume {run.given})")
        if run.evaluation is None:
            notes[i].append(f"not evaluated: run pvae evaluate {run.given}")
            continue
        at = run.evaluation.epoch
        if isinstance(at, int) and at != trained:
            notes[i].append(f"evaluated at epoch {at}, trained to epoch {trained}")
            flags.append(Flag(f"{names[i]}'s evaluation.json is of epoch {at}, but the run has trained to epoch "
                              f"{trained}: run pvae evaluate {run.given} again", cells([i], _EVALUATION_COLUMNS)))
    not_evaluated = [i for i in range(len(runs)) if i not in evaluated]
    if evaluated and not_evaluated:
        flags.append(Flag(
            f"only {len(evaluated)} of {len(runs)} runs are evaluated: {', '.join(names[i] for i in not_evaluated)} "
            f"{'has' if len(not_evaluated) == 1 else 'have'} no evaluation.json (pvae evaluate RUN)",
            gaps(not_evaluated, "elbo")))
    differ: set[str] = set()
    for key, what, read in _EVALUATION_CONDITIONS:
        known = [(i, read(runs[i].evaluation)) for i in evaluated]  # type: ignore[arg-type]
        have = [i for i, v in known if v is not None]  # an older evaluation.json may not say
        values = [v for _, v in known if v is not None]
        if len({json.dumps(v) for v in values}) > 1:
            differ.add(key)
            if key == "num_images" and differ & {"dataset", "split"}:
                continue  # a consequence of a difference already flagged
            flags.append(Flag(
                f"evaluated on different {what} ({_listing([names[i] for i in have], values)}): "
                f"their evaluation numbers are not like for like", cells(have, _EVALUATION_COLUMNS)))
    with_log_px = [i for i in evaluated if numbers[i]["log_px"] is not None]
    by_is = [i for i in with_log_px if runs[i].evaluation.method != "ais"]  # type: ignore[union-attr]
    ks = [numbers[i]["num_samples"] for i in by_is]
    if len(set(ks)) > 1:
        flags.append(Flag(
            f"log p(x) estimated with different K ({_listing([names[i] for i in by_is], ks)}): a larger K "
            f"gives a higher, tighter estimate; evaluate each with the same --num-samples",
            cells(by_is, _LOG_PX_COLUMNS)))
    without = [i for i in evaluated if i not in with_log_px]
    if with_log_px and without:
        flags.append(Flag(
            f"log p(x) is estimated for {', '.join(names[i] for i in with_log_px)} only; for the others run "
            f"pvae evaluate RUN --num-samples {ks[0] if ks else 5000}", gaps(without, "log_px")))
    # The validation images: the last val_size training images, binarized once unless binarization is none.
    grey = ["binarized" if r.settings.get("binarization") != "none" else
            "dequantized" if r.settings.get("dequantize") else "grey levels" for r in runs]
    why = [f"{k}: {_listing(names, [r.settings.get(k) for r in runs])}" for k in ("dataset", "val_size")
           if k in settings]
    if len(set(grey)) > 1:
        why.append(_listing(names, grey))
    if why:
        flags.append(Flag(f"validation ELBOs are on different images ({'; '.join(why)})",
                          cells(range(len(runs)), _VALIDATION_COLUMNS)))
    for dup in duplicates:
        flags.append(Flag(f"{dup} was given more than once; it is compared once"))

    columns = ("run", "path", *settings, *NUMBER_COLUMNS, *optional, "notes", "flags")
    rows = []
    for i, run in enumerate(runs):
        concerning = tuple(f.message for f in flags if any(r == i for r, _ in f.cells))
        row: dict[str, Any] = {"run": names[i], "path": run.given}
        row.update({k: run.settings.get(k) for k in settings})
        row.update({k: numbers[i][k] for k in (*NUMBER_COLUMNS, *optional)})
        row.update(notes=tuple(notes[i]), flags=concerning)
        rows.append(row)
    return Comparison(tuple(rows), columns, tuple(settings), tuple(flags), tuple(r.metrics for r in runs))


# ------------------------------------------------------------------ rendering


def _setting_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def _csv_text(value: object) -> str:
    """A cell of ``comparison.csv``: numbers at full precision (``float(text)`` gives the value back)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, str) for v in value):
        return " | ".join(value)
    return _setting_text(value)


def comparison_csv(comparison: Comparison) -> str:
    """The text of ``comparison.csv``: a header of the comparison's ``columns`` and one row per run.

    Numbers are written at full precision, an absent one as an empty cell; a tuple-valued setting
    (``hidden``) as its values separated by spaces; ``notes`` and ``flags`` as their lines joined
    by a vertical bar (``" | "``).
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(comparison.columns)
    writer.writerows([_csv_text(row[c]) for c in comparison.columns] for row in comparison.rows)
    return buf.getvalue()


def _nats(value: float | None, stderr: float | None = None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if stderr is None else f"{value:.2f} ± {stderr:.2f}"


@dataclass(frozen=True)
class _Column:
    header: str
    text: Callable[[dict[str, Any]], str]
    sources: tuple[str, ...]  # the raw columns it shows: a flag on any of them marks the cell
    numeric: bool = True


def _display_columns(comparison: Comparison) -> list[_Column]:
    rows = comparison.rows
    splits = {row["split"] for row in rows if row["split"] is not None}
    prefix = f"{next(iter(splits))} " if len(splits) == 1 else ""

    def seconds(row: dict[str, Any]) -> str:
        s = row["seconds_per_epoch"]
        return "" if s is None else f"{s:.3g}" if s < 100 else f"{s:.0f}"

    def best(row: dict[str, Any]) -> str:
        return "" if row["val_elbo_best"] is None else f"{row['val_elbo_best']:.2f} ({row['best_epoch']})"

    def plain(key: str, fmt: str = "{}") -> Callable[[dict[str, Any]], str]:
        return lambda row: "" if row[key] is None else fmt.format(row[key])

    columns = [_Column("run", plain("run"), ("run",), numeric=False)]
    for key in comparison.settings:
        columns.append(_Column(key, lambda row, key=key: _setting_text(row[key]), (key,),
                               numeric=all(isinstance(r[key], (int, float)) for r in rows)))
    columns += [
        # "epochs" itself is the setting's column when the runs were set different numbers of epochs
        _Column("trained" if "epochs" in comparison.settings else "epochs", plain("epochs_trained"),
                ("epochs_trained",)),
        _Column("s/epoch", seconds, ("seconds_per_epoch",)),
        _Column("val elbo", lambda row: _nats(row["val_elbo"]), ("val_elbo",)),
        _Column("best val elbo (epoch)", best, ("val_elbo_best", "best_epoch")),
    ]
    if len(splits) > 1:
        columns.append(_Column("split", plain("split"), ("split",), numeric=False))
    columns += [
        _Column(f"{prefix}elbo", lambda row: _nats(row["elbo"], row["elbo_stderr"]), ("elbo", "elbo_stderr")),
        _Column(f"{prefix}log p(x)", lambda row: _nats(row["log_px"], row["log_px_stderr"]),
                ("log_px", "log_px_stderr")),
        _Column("K", plain("num_samples"), ("num_samples",)),
        _Column("kl gap", lambda row: _nats(row["kl_gap"]), ("kl_gap", "kl_gap_stderr")),
        _Column("active units", plain("active_units"), ("active_units",)),
    ]
    if "classification_error" in comparison.columns:
        columns.append(_Column("class. error", plain("classification_error", "{:.2%}"), ("classification_error",)))
    # One bits-per-dimension column (it restates log p(x) or the ELBO; the CSV has both).
    if "nll_bits_per_dim" in comparison.columns:
        columns.append(_Column("-log p(x) bits/dim", plain("nll_bits_per_dim", "{:.3f}"), ("nll_bits_per_dim",)))
    elif "neg_elbo_bits_per_dim" in comparison.columns:
        columns.append(_Column("-elbo bits/dim", plain("neg_elbo_bits_per_dim", "{:.3f}"),
                               ("neg_elbo_bits_per_dim",)))
    return columns


def _grid(comparison: Comparison) -> tuple[list[_Column], list[list[str]]]:
    """The displayed columns and their cells (with flag markers ``[n]``); columns that are empty
    for every run are left out."""
    marks: dict[tuple[int, str], list[int]] = {}
    for number, flag in enumerate(comparison.flags, start=1):
        for cell in flag.cells:
            marks.setdefault(cell, []).append(number)
    shown, cells = [], []
    for column in _display_columns(comparison):
        texts = []
        for i, row in enumerate(comparison.rows):
            text = column.text(row)
            numbers = sorted({n for source in column.sources for n in marks.get((i, source), [])})
            if numbers:
                text = f"{text or '–'} [{','.join(map(str, numbers))}]"
            texts.append(text)
        if column.header == "run" or any(texts):
            shown.append(column)
            cells.append(texts)
    return shown, [list(r) for r in zip(*cells)]


def _units(columns: Sequence[_Column]) -> str:
    bits = any("bits/dim" in c.header for c in columns)
    return ("nats per image; elbo and log p(x) higher is better, kl gap = log p(x) - elbo"
            + ("; bits/dim lower is better" if bits else ""))


def format_comparison(comparison: Comparison) -> str:
    """The table for a terminal: aligned columns (numbers right-aligned), the units, then each
    flag's line (``[n] ...``) and each run's notes.

    :returns: the text, without a trailing newline.
    """
    columns, grid = _grid(comparison)
    widths = [max(len(c.header), *(len(r[j]) for r in grid)) for j, c in enumerate(columns)]

    def line(texts: Sequence[str]) -> str:
        return "  ".join(t.rjust(w) if c.numeric else t.ljust(w) for t, w, c in zip(texts, widths, columns)).rstrip()

    lines = [line([c.header for c in columns]), *(line(r) for r in grid), f"({_units(columns)})"]
    flags = [f"[{i}] {flag.message}" for i, flag in enumerate(comparison.flags, start=1)]
    notes = [f"{row['run']}: {note}" for row in comparison.rows for note in row["notes"]]
    for part in (flags, notes):
        lines += [""] + part if part else []
    return "\n".join(lines)


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def comparison_markdown(comparison: Comparison) -> str:
    """The text of ``comparison.md``: a heading, a Markdown table with one row per run (the columns
    of :func:`format_comparison`), the units, the flags as a numbered list and the runs' notes."""
    columns, grid = _grid(comparison)
    head = "| " + " | ".join(_markdown_cell(c.header) for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|"
    body = ["| " + " | ".join(_markdown_cell(t) for t in row) + " |" for row in grid]
    n = len(comparison.rows)
    lines = [f"# {n} run{'s' if n != 1 else ''} compared", "", head, rule, *body, "", f"Numbers in {_units(columns)}."]
    flags = [f"- [{i}] {_markdown_cell(f.message)}" for i, f in enumerate(comparison.flags, start=1)]
    if flags:
        lines += ["", "**Not like for like:**", "", *flags]
    notes = [f"- {row['run']}: {note}" for row in comparison.rows for note in row["notes"]]
    if notes:
        lines += ["", "**Notes:**", "", *notes]
    return "\n".join(lines) + "\n"


def plot_comparison(comparison: Comparison, path: str | Path) -> Path:
    """The runs' training curves overlaid in one figure: validation ELBO (solid) and the training
    ELBO's running mean (dashed) per epoch, in nats per image, one colour per run, its name in the
    legend. Written atomically as PNG.

    :param path: the PNG's path.
    :returns: ``path``.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    from pvae.views.plots import DPI

    fig = Figure(figsize=(6.5, 4.2), dpi=DPI)
    ax = fig.subplots()
    handles = []
    for i, (name, curve) in enumerate(zip(comparison.names, comparison.curves)):
        colour = f"C{i % 10}"
        style = ["-", "-.", ":"][(i // 10) % 3]  # more runs than colours: vary the line too
        marker = "o" if len(curve) <= 30 else None
        epochs = [row["epoch"] for row in curve]
        ax.plot(epochs, [row["val_elbo"] for row in curve], style, color=colour, marker=marker, ms=3)
        ax.plot(epochs, [row["train_elbo"] for row in curve], "--", color=colour, lw=1, alpha=0.8)
        handles.append(Line2D([], [], color=colour, ls=style, marker=marker, ms=3, label=name))
    handles += [Line2D([], [], color="0.4", ls="-", label="validation ELBO"),
                Line2D([], [], color="0.4", ls="--", lw=1, label="train ELBO (running mean)")]
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("ELBO, nats per image (higher is better)")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
