"""``pvae compare``: three small runs side by side; the table's numbers are each run's own
(evaluation.json, metrics.csv), only the settings that differ are columns, and runs evaluated
differently or not at all are flagged, never silently put side by side."""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import statistics
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import pvae
from pvae.cli import build_parser, main
from pvae.runs.compare import (
    COMPARISON_CSV,
    COMPARISON_MD,
    COMPARISON_PNG,
    OPTIONAL_COLUMNS,
    Comparison,
    compare_runs,
    format_comparison,
)
from pvae.runs.config import TrainConfig
from pvae.runs.evaluate import evaluate_run
from pvae.runs.folder import RunFolderError

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_compare")

K = 10
EVALUATION_KEYS = ("split", "num_images", "elbo", "elbo_stderr", "log_px", "log_px_stderr", "num_samples", "kl_gap",
                   "kl_gap_stderr", "active_units")
# run name -> the settings it differs in from the default of this file
RUNS: dict[str, dict[str, Any]] = {"a": {}, "b": {"z_dim": 3}, "c": {"prior": "laplace"}}


@pytest.fixture(scope="module")
def runs(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three three-epoch runs on the fake MNIST that differ in z_dim or prior, each evaluated with K = 10.
    Tests that change an evaluation work on copies."""
    root = tmp_path_factory.mktemp("compare")
    folders = []
    for name, changes in RUNS.items():
        config = TrainConfig(**{"data_dir": str(fake_mnist_root), "train_size": 200, "val_size": 100, "epochs": 3,
                                "hidden": (16,), "z_dim": 2, "batch_size": 50, "device": "cpu",
                                "out": str(root / name), **changes})
        pvae.train(config, progress=False)
        evaluate_run(root / name, num_samples=K, device="cpu")
        folders.append(root / name)
    return folders


def copy_run(run: Path, to: Path) -> Path:
    """A copy of a run folder, to evaluate differently without touching the shared one."""
    shutil.copytree(run, to)
    return to


def evaluation(run: Path) -> dict[str, Any]:
    return json.loads((run / "evaluation.json").read_text())


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def table_lines(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("|")]


def test_table_values_are_each_runs_own_numbers(runs: list[Path], tmp_path: Path) -> None:
    """Every row's numbers equal that run's evaluation.json and metrics.csv; the settings columns
    are exactly the two fields that differ; three like-for-like runs raise no flag."""
    comparison = compare_runs(runs, out=tmp_path)
    assert isinstance(comparison, Comparison)
    assert comparison.names == ("a", "b", "c"), comparison.names
    assert comparison.settings == ("z_dim", "prior"), f"settings that differ: {comparison.settings}"
    assert comparison.flags == (), f"like-for-like runs were flagged: {comparison.warnings}"
    for run, row in zip(runs, comparison.rows):
        assert set(row) == set(comparison.columns), f"{row['run']}: keys {sorted(row)} vs {comparison.columns}"
        assert (row["z_dim"], row["prior"]) == (3 if run.name == "b" else 2, RUNS[run.name].get("prior", "normal"))
        saved = evaluation(run)
        for key in EVALUATION_KEYS:
            assert row[key] == saved[key], f"{run.name}: {key} is {row[key]} here, {saved[key]} in evaluation.json"
        for key in OPTIONAL_COLUMNS:  # bits per dimension, where evaluate writes them
            assert row.get(key) == saved.get(key), f"{run.name}: {key} is {row.get(key)}, {saved.get(key)} saved"
        assert row["num_samples"] == K and row["split"] == "test", row
        epochs = metrics(run)
        val = [float(m["val_elbo"]) for m in epochs]
        assert row["epochs_trained"] == len(epochs) == 3, row
        assert row["val_elbo"] == val[-1] and row["train_elbo"] == float(epochs[-1]["train_elbo"]), row
        assert row["val_elbo_best"] == max(val) and row["best_epoch"] == 1 + val.index(max(val)), row
        assert row["seconds_per_epoch"] == statistics.median(float(m["seconds"]) for m in epochs), row
        assert row["notes"] == () and row["flags"] == (), row
    assert comparison.files == (tmp_path / COMPARISON_MD, tmp_path / COMPARISON_CSV, tmp_path / COMPARISON_PNG)
    assert compare_runs(runs).files == (), "without out nothing is written"


def test_csv_markdown_text_and_figure(runs: list[Path], tmp_path: Path) -> None:
    """The CSV parses back to the table's values, the Markdown has one row per run, the terminal
    text shows each run's numbers in aligned columns, and the figure is a PNG of the stated size."""
    comparison = compare_runs(runs, out=tmp_path)
    parsed = list(csv.DictReader(io.StringIO((tmp_path / COMPARISON_CSV).read_text())))
    assert len(parsed) == 3 and tuple(parsed[0]) == comparison.columns, parsed
    for row, back in zip(comparison.rows, parsed):
        for column in comparison.columns:
            value = row[column]
            if isinstance(value, float):
                assert float(back[column]) == value, f"{column}: {back[column]!r} does not give back {value!r}"
            elif isinstance(value, tuple):
                assert back[column] == " | ".join(value), (column, back[column], value)
            else:
                assert back[column] == ("" if value is None else str(value)), (column, back[column], value)

    md = (tmp_path / COMPARISON_MD).read_text()
    lines = table_lines(md)
    assert len(lines) == 2 + 3, f"expected a header, a rule and 3 rows:\n{md}"
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["run", "z_dim", "prior"] and "test log p(x)" in header and "K" in header, header
    for run, line in zip(runs, lines[2:]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert len(cells) == len(header), line
        assert cells[0] == run.name, line
        saved = evaluation(run)
        assert cells[header.index("test log p(x)")] == f"{saved['log_px']:.2f} ± {saved['log_px_stderr']:.2f}", line
        assert cells[header.index("K")] == str(K), line

    text = format_comparison(comparison)
    rows = text.splitlines()[:4]
    for run, line in zip(runs, rows[1:]):
        assert line.startswith(run.name + " "), text
        assert f"{evaluation(run)['elbo']:.2f} ± " in line, text
    # numbers right-aligned under their header: the K column ends at the same character in every row
    end = rows[0].index(" K ") + 2
    assert all(r[end - len(str(K)) : end] == str(K) for r in rows[1:]), text

    with Image.open(tmp_path / COMPARISON_PNG) as image:
        image.verify()
        assert (image.format, image.size) == ("PNG", (975, 630)), (image.format, image.size)


def test_different_k_is_flagged(runs: list[Path], tmp_path: Path) -> None:
    """A run evaluated with another K keeps its numbers, and the log p(x) of every run carries the flag."""
    b = copy_run(runs[1], tmp_path / "b")
    evaluate_run(b, num_samples=2 * K, device="cpu")
    comparison = compare_runs([runs[0], b, runs[2]], out=tmp_path / "out")
    assert len(comparison.flags) == 1, comparison.warnings
    flag = comparison.flags[0]
    assert "different K" in flag.message and f"b: {2 * K}" in flag.message and "\n" not in flag.message, flag
    assert {(i, "log_px") for i in range(3)} <= set(flag.cells), flag.cells
    assert [row["num_samples"] for row in comparison.rows] == [K, 2 * K, K]
    assert comparison.rows[1]["log_px"] == evaluation(b)["log_px"]
    assert all(flag.message in row["flags"] for row in comparison.rows)
    text = format_comparison(comparison)
    assert f"[1] {flag.message}" in text, text
    md = (tmp_path / "out" / COMPARISON_MD).read_text()
    assert f"[1] {flag.message}" in md, md
    for line in table_lines(md)[2:]:
        assert line.count("[1]") >= 2, f"log p(x) and K unmarked: {line}"


def test_ais_beside_importance_sampling_is_flagged(runs: list[Path], tmp_path: Path) -> None:
    """A run whose log p(x) is by AIS, beside runs by importance sampling: one flag naming both
    estimators (not a K mismatch), and the AIS run's log p(x) is its own."""
    b = copy_run(runs[1], tmp_path / "b")
    evaluate_run(b, method="ais", num_steps=3, num_leapfrog=2, device="cpu", progress=False)
    comparison = compare_runs([runs[0], b, runs[2]])
    assert len(comparison.flags) == 1, comparison.warnings
    message = comparison.flags[0].message
    assert "estimators of log p(x)" in message and "AIS T=3 L=2 C=1" in message and "importance sampling" in message
    assert comparison.rows[1]["log_px"] == evaluation(b)["log_px"]


def test_different_split_is_flagged(runs: list[Path], tmp_path: Path) -> None:
    """A run evaluated on the validation split beside test-split runs: flagged, and the split shown."""
    c = copy_run(runs[2], tmp_path / "c")
    evaluate_run(c, split="val", device="cpu")  # no K: log p(x) also missing for c
    comparison = compare_runs([runs[0], runs[1], c])
    messages = comparison.warnings
    assert any("different splits" in m and "c: val" in m for m in messages), messages
    assert any("log p(x) is estimated for a, b only" in m for m in messages), messages
    assert not any("numbers of images" in m for m in messages), f"the split's size flagged twice: {messages}"
    split_flag = next(f for f in comparison.flags if "different splits" in f.message)
    assert {(2, "elbo"), (0, "log_px")} <= set(split_flag.cells), split_flag.cells
    assert all(comparison.rows[i][col] is not None for i, col in split_flag.cells), "an empty cell is marked"
    assert comparison.rows[2]["split"] == "val" and comparison.rows[2]["log_px"] is None
    header = format_comparison(comparison).splitlines()[0]
    assert " split " in header and "test elbo" not in header, header


def test_run_not_evaluated_is_shown_with_a_note(runs: list[Path], tmp_path: Path) -> None:
    """A run without evaluation.json is a row with empty test numbers, a note saying how to
    evaluate it, and a flag; its training numbers are still there."""
    c = copy_run(runs[2], tmp_path / "c")
    (c / "evaluation.json").unlink()
    comparison = compare_runs([runs[0], runs[1], c], out=tmp_path / "out")
    row = comparison.rows[2]
    assert all(row[key] is None for key in EVALUATION_KEYS), row
    assert row["val_elbo"] == float(metrics(c)[-1]["val_elbo"]), row
    assert row["notes"] == (f"not evaluated: run pvae evaluate {c}",), row["notes"]
    assert len(comparison.flags) == 1, comparison.warnings
    assert "only 2 of 3 runs are evaluated" in comparison.warnings[0], comparison.warnings
    assert comparison.flags[0].cells == ((2, "elbo"),), "the empty test ELBO of the run is not marked"
    text = format_comparison(comparison)
    assert text.splitlines()[3].startswith("c ") and "– [1]" in text.splitlines()[3], text
    assert f"c: not evaluated: run pvae evaluate {c}" in text, text
    md = (tmp_path / "out" / COMPARISON_MD).read_text()
    assert f"not evaluated: run pvae evaluate {c}" in md and len(table_lines(md)) == 5, md


def test_stale_evaluation_and_unfinished_run_are_noted(runs: list[Path], tmp_path: Path) -> None:
    """An evaluation.json older than the run's last epoch is flagged; a run stopped early says so."""
    a = copy_run(runs[0], tmp_path / "a")
    saved = evaluation(a)
    (a / "evaluation.json").write_text(json.dumps({**saved, "epoch": 1}))
    config = json.loads((a / "config.json").read_text())
    config["config"]["epochs"] = 5
    (a / "config.json").write_text(json.dumps(config))
    comparison = compare_runs([a, runs[1]])
    assert "epochs" in comparison.settings, comparison.settings
    notes = comparison.rows[0]["notes"]
    assert any("trained 3 of 5 epochs" in n for n in notes) and any("evaluated at epoch 1" in n for n in notes), notes
    assert any("evaluation.json is of epoch 1" in m for m in comparison.warnings), comparison.warnings


def test_a_column_only_one_run_has(runs: list[Path], tmp_path: Path) -> None:
    """M2's classification error is a column as soon as one run has it, empty for the others."""
    a = copy_run(runs[0], tmp_path / "a")
    (a / "evaluation.json").write_text(json.dumps({**evaluation(a), "classification_error": 0.125}))
    comparison = compare_runs([a, runs[1]], out=tmp_path / "out")
    assert [row["classification_error"] for row in comparison.rows] == [0.125, None], comparison.rows
    header = table_lines((tmp_path / "out" / COMPARISON_MD).read_text())[0]
    assert "class. error" in header and "12.50%" in format_comparison(comparison), header
    assert "classification_error" not in compare_runs(runs).columns


@pytest.mark.parametrize("bad", ["missing", "empty", "file"])
def test_not_a_run_folder_is_one_line_and_writes_nothing(runs: list[Path], tmp_path: Path, bad: str) -> None:
    """A path that is not a run folder is refused in one line naming it; no file is written."""
    path = tmp_path / bad
    if bad == "empty":
        path.mkdir()
    elif bad == "file":
        path.write_text("not a run")
    out = tmp_path / "out"
    with pytest.raises(RunFolderError) as err:
        compare_runs([runs[0], path], out=out)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "run folder" in message, message
    assert not out.exists(), f"files written despite the error: {list(out.iterdir())}"


def test_no_runs_and_duplicates(runs: list[Path]) -> None:
    """No run at all is refused; the same folder given twice is compared once, with a flag."""
    with pytest.raises(RunFolderError, match="one or more run folders"):
        compare_runs([])
    again = f"{runs[0].parent}/./a/"  # the same folder, spelled otherwise
    twice = compare_runs([runs[0], runs[1], again])
    assert twice.names == ("a", "b"), twice.names
    assert twice.warnings == (f"{runs[0]} (also as {again}) was given more than once; it is compared once",), \
        twice.warnings
    single = compare_runs([runs[0]])
    assert single.settings == () and len(single.rows) == 1 and single.flags == ()


def test_runs_with_one_name_are_told_apart(runs: list[Path], tmp_path: Path) -> None:
    """Two folders named alike get their parent folder in the name."""
    other = copy_run(runs[0], tmp_path / "other" / "a")
    saved = json.loads((other / "config.json").read_text())
    saved["config"]["data_dir"] = str(tmp_path / "elsewhere")  # where the data was found is no setting
    (other / "config.json").write_text(json.dumps(saved))
    comparison = compare_runs([runs[0], other])
    assert comparison.names[1] == "other/a" and comparison.names[0].endswith("/a"), comparison.names
    assert comparison.settings == (), f"a copy differs in {comparison.settings}"


def _subcommands() -> set[str]:
    return {name for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices}


@pytest.mark.skipif("compare" not in _subcommands(), reason="pvae.cli has no compare subcommand yet")
def test_cli_compare(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pvae compare prints the table and writes the three files into --out; a bad path exits 2 in one line."""
    out = tmp_path / "out"
    assert main(["compare", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for run in runs:
        assert f"\n{run.name} " in printed, printed
    for name in (COMPARISON_MD, COMPARISON_CSV, COMPARISON_PNG):
        assert (out / name).is_file() and str(out / name) in printed, printed
    bad_out = tmp_path / "bad_out"
    assert main(["compare", str(runs[0]), str(tmp_path / "nowhere"), "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err, err
    assert not bad_out.exists()
