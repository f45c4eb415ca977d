"""The ``pvae`` command line: train and evaluate run folders, refuse bad flags with exit status 2."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pvae
from pvae.cli import EVALUATE_FLAGS, as_flags, build_parser, field_docs, main
from pvae.runs.config import FIELD_CHOICES, TrainConfig

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_cli")

# the module, not the function pvae.train that the package re-exports under the same name
train_module = importlib.import_module("pvae.runs.train")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    """``pvae train`` on the fake MNIST with a tiny model: 200 training and 100 validation images."""
    return [
        "train", "--data-dir", str(root), "--train-size", "200", "--val-size", "100", "--epochs", "1",
        "--z-dim", "2", "--hidden", "32", "--batch-size", "50", "--device", "cpu", "--no-progress",
        "--out", str(out), *extra,
    ]


def read_metrics(run: Path) -> list[dict[str, str]]:
    """metrics.csv as a list of rows."""
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained_run(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by ``pvae train`` (one epoch on the fake MNIST)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    status = main(train_args(fake_mnist_root, out))
    assert status == 0, f"pvae train exited with {status}"
    return out


def test_train_writes_the_run_folder(trained_run: Path) -> None:
    """pvae train writes config.json with versions, one metrics row, the checkpoint and three PNGs."""
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["config"]["z_dim"] == 2 and saved["config"]["hidden"] == [32], f"config: {saved['config']}"
    assert saved["config"]["out"] == str(trained_run), f"out is {saved['config']['out']}"
    for package in ("pvae", "pyro", "torch", "python"):
        assert saved["versions"].get(package), f"config.json lacks the {package} version: {saved['versions']}"
    rows = read_metrics(trained_run)
    assert len(rows) == 1 and rows[0]["epoch"] == "1", f"metrics rows: {rows}"
    assert float(rows[0]["val_elbo"]) < 0, f"a Bernoulli ELBO is a log-probability bound, got {rows[0]['val_elbo']}"
    assert (trained_run / "checkpoint.pt").stat().st_size > 0
    for name in ("curves.png", "reconstructions.png", "samples.png"):
        data = (trained_run / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, f"{name}: {len(data)} bytes, head {data[:8]!r}"


def test_evaluate_writes_evaluation_json(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pvae evaluate writes evaluation.json with elbo = reconstruction - kl on the test split."""
    assert main(["evaluate", str(trained_run), "--device", "cpu"]) == 0
    result = json.loads((trained_run / "evaluation.json").read_text())
    missing = {"split", "binarization", "elbo", "reconstruction", "kl"} - set(result)
    assert not missing, f"evaluation.json lacks {missing}"
    assert (result["split"], result["binarization"], result["num_images"]) == ("test", "dynamic", 200), result
    assert result["elbo"] == pytest.approx(result["reconstruction"] - result["kl"], abs=1e-3), result
    assert result["kl"] >= 0, f"a KL divergence is non-negative, got {result['kl']}"
    assert "evaluation.json" in capsys.readouterr().out


def test_train_refuses_an_existing_run(trained_run: Path, fake_mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Training into a folder that holds a run, without --resume or --overwrite, exits 2 with one line."""
    capsys.readouterr()
    assert main(train_args(fake_mnist_root, trained_run)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected a one-line error, got:\n{err}"
    assert err.startswith("pvae: error:") and "--resume" in err and "--overwrite" in err, err


def test_overwrite_replaces_a_run(fake_mnist_root: Path, tmp_path: Path) -> None:
    """--overwrite starts the run afresh in a folder that already holds one."""
    out = tmp_path / "run"
    assert main(train_args(fake_mnist_root, out)) == 0
    assert main(train_args(fake_mnist_root, out, "--overwrite", "--seed", "5")) == 0
    assert json.loads((out / "config.json").read_text())["config"]["seed"] == 5
    assert len(read_metrics(out)) == 1, "the replaced run should start again at epoch 1"


def test_interrupted_run_resumes(
    fake_mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C after epoch 1 of 2 exits 130 keeping the checkpoint; --resume RUN finishes epoch 2."""
    out = tmp_path / "run"
    save_epoch = train_module.save_epoch

    def save_then_interrupt(*args: object, **kwargs: object) -> None:
        save_epoch(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "save_epoch", save_then_interrupt)
    args = train_args(fake_mnist_root, out)
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    assert [r["epoch"] for r in read_metrics(out)] == ["1"]
    monkeypatch.undo()

    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert [r["epoch"] for r in read_metrics(out)] == ["1", "2"], f"metrics after resuming: {read_metrics(out)}"


def test_resume_refuses_new_settings(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--resume with a training flag exits 2, naming the flag to drop."""
    capsys.readouterr()
    assert main(["train", "--resume", str(trained_run), "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "drop --lr" in err, err


@pytest.mark.parametrize(
    ("flag", "value", "named"),
    [
        ("--z-dim", "0", "z_dim"),
        ("--batch-size", "-1", "batch_size"),
        ("--epochs", "-3", "epochs"),
        ("--prior", "nope", "prior"),
        ("--lr", "0", "lr"),
        ("--binarization", "sometimes", "binarization"),
        ("--objective", "iwae:1", "objective"),
    ],
)
def test_bad_flag_exits_2(
    fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, named: str
) -> None:
    """A bad flag value exits 2 with a 'pvae: error:' line naming the flag, before any file is written."""
    out = tmp_path / "run"
    assert main(train_args(fake_mnist_root, out, flag, value)) == 2
    first = capsys.readouterr().err.strip().splitlines()[0]
    assert first.startswith("pvae: error:"), first
    assert flag in first or named in first, f"the error does not name {flag}: {first}"
    assert not out.exists(), f"{out} was created for a refused configuration"


@pytest.mark.parametrize("argv", [["train", "--z-dim", "two"], ["evaluate"], ["frobnicate"]])
def test_unparseable_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Arguments argparse cannot read (a word for a number, a missing RUN, an unknown command) exit 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_evaluate_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pvae evaluate on a folder that is not a run exits 2 saying config.json is missing."""
    assert main(["evaluate", str(tmp_path), "--device", "cpu"]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_every_config_field_is_a_train_flag() -> None:
    """Each TrainConfig field is a `pvae train` flag (z_dim -> --z-dim)."""
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]  # type: ignore[union-attr]
    flags = {opt for action in train_parser._actions for opt in action.option_strings}
    missing = {f.name for f in dataclasses.fields(TrainConfig)} - {flag[2:].replace("-", "_") for flag in flags}
    assert not missing, f"fields without a flag: {sorted(missing)}"


def test_console_script_is_declared() -> None:
    """The installed distribution's `pvae` console script points at pvae.cli:main."""
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="pvae")
    assert entry.value == "pvae.cli:main" and entry.load() is main, f"pvae script is {entry.value}"


@pytest.mark.parametrize("module", ["pvae", "pvae.cli"])
def test_module_entry_point_runs(module: str) -> None:
    """`python -m pvae --help` (and `-m pvae.cli`) runs in a fresh interpreter and lists the subcommands."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"exit {done.returncode}; stderr:\n{done.stderr}"
    for command in ("train", "evaluate", "graph", "plot", "sample"):
        assert command in done.stdout, f"{command} missing from:\n{done.stdout}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr,return-value]


# What must never reach a terminal: reStructuredText, doctests, Python spellings.
MARKUP = ("``", ":param", ":class:", ":func:", ":mod:", ":data:", ":meth:", ">>>", "Traceback", "None", "True", "False")


@pytest.mark.parametrize("command", ["", *_subparsers()])
def test_help_is_plain_text(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every subcommand's --help is terminal text: no markup, doctest or Python words, and every
    option has a help sentence of its own (not only a default)."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"] if command else ["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    found = [token for token in MARKUP if token in text]
    assert not found, f"pvae {command} --help shows {found}:\n{text}"
    parser = _subparsers()[command] if command else build_parser()
    actions = [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    actions += [c for a in parser._actions if isinstance(a, argparse._SubParsersAction) for c in a._choices_actions]
    for action in actions:
        words = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        assert len(words.split()) >= 2, f"pvae {command}: {action.option_strings or action.dest} has no help sentence"
        assert not words.endswith(";"), f"pvae {command}: {action.option_strings}: stray ';' in {action.help!r}"


def test_choice_fields_list_their_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """Fields with a fixed set of names list them in --help, as {a,b,c}."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name, allowed in FIELD_CHOICES.items():
        listed = f"--{name.replace('_', '-')} {{{','.join(allowed)}}}"
        assert listed in text, f"--help does not list {listed}"


def test_unknown_choice_is_one_line_with_a_suggestion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A value outside a field's choices is one line, exit 2, naming the nearest choice and all of them."""
    assert main(["train", "--binarization", "dinamic", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean 'dynamic'" in err and "dynamic, static, none" in err, err
    assert not (tmp_path / "r").exists()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`pvae --version` prints pvae's version and those of Pyro and PyTorch."""
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"pvae {pvae.__version__} ") and "Pyro" in out and "PyTorch" in out, out


def test_field_docs_turn_markup_into_text() -> None:
    """field_docs reads each :param: entry with its continuation lines, roles as their text."""
    doc = """Summary.

    :param a: first ``literal``, see :class:`~pvae.runs.config.TrainConfig` and
        :mod:`pvae.protocol`.
    :param b: second.

    >>> 1 + 1
    2
    """
    assert field_docs(doc) == {"a": "first literal, see TrainConfig and pvae.protocol.", "b": "second."}


def test_val_size_0_trains_and_refuses_val_evaluation(
    fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--val-size 0 trains on every training image; evaluating its empty validation split is one line, exit 2."""
    out = tmp_path / "all"
    argv = train_args(fake_mnist_root, out)
    argv[argv.index("--val-size") + 1] = "0"
    argv[argv.index("--train-size"):argv.index("--train-size") + 2] = []
    assert main(argv) == 0
    printed = capsys.readouterr()
    assert "no validation split" in printed.out, printed.out
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["val_size"] == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["num_data"] == 600, f"the data plate should hold all 600 fake training images, got {state['num_data']}"
    assert main(["evaluate", str(out), "--split", "val", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "val_size=0" in err[0], err
    assert main(["evaluate", str(out), "--device", "cpu", "--num-samples", "5", "--no-progress"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["split"] == "test"


@pytest.mark.parametrize(
    ("message", "flags", "expected"),
    [
        ("give their number with labels=100.", None, "give their number with --labels 100."),
        ("use objective='trace' (TraceEnum_ELBO)", None, "use --objective trace (TraceEnum_ELBO)"),
        ("with hidden=(200, 200) and dequantize=True", None, "with --hidden 200 200 and --dequantize"),
        ("a lower lr=0.0001, e.g.", None, "a lower --lr 0.0001, e.g."),
        ("x=3 and num_particles=2 stay", {"num_particles": "--num-particles"}, "x=3 and --num-particles 2 stay"),
        ("method='ais' needs num_steps=T >= 1", EVALUATE_FLAGS, "--method ais needs --steps T >= 1"),
        ("nothing here is a setting: k=5", None, "nothing here is a setting: k=5"),
        ("runs/lr=0.1 holds a run; pass resume=True", None, "runs/lr=0.1 holds a run; pass --resume"),
    ],
)
def test_library_parameters_read_as_flags_on_the_command_line(message: str, flags: dict[str, str] | None,
                                                              expected: str) -> None:
    """as_flags turns a library message's keyword spellings into the command's flags, and nothing else."""
    assert as_flags(message, flags) == expected


def test_evaluate_of_a_config_that_is_not_text_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run folder whose config.json is not UTF-8 text is refused in one line, not a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes(b"\xff\xfe\x00not json")
    (run / "checkpoint.pt").write_bytes(b"")
    assert main(["evaluate", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pvae: error:") and err.count("\n") == 1, err
