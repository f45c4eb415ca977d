"""Faults and bad input: killed runs resume exactly, divergence stops cleanly, bad data and flags
get one clear line and a non-zero exit status (issue 6)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import fake_config

import pvae
from pvae.cli import build_parser, main
from pvae.data import check_images, load_data
from pvae.parts.likelihoods import Bernoulli
from pvae.runs.config import ConfigError, TrainConfig
from pvae.runs.folder import load_run
from pvae.runs.train import TrainingDivergedError, train

# Over tests/support.fake_config's tiny run: 300 training images, 10 epochs of 10 steps.
SMALL = dict(train_size=300, batch_size=30, z_dim=3, epochs=10)


def _config(root: Path, out: Path, **kw: object) -> TrainConfig:
    return fake_config(root, out, **{**SMALL, **kw})


def _cli_flags(root: Path, out: Path, epochs: int) -> list[str]:
    return ["train", "--data-dir", str(root), "--out", str(out), "--train-size", "300", "--val-size", "100",
            "--batch-size", "30", "--hidden", "32", "--z-dim", "3", "--device", "cpu", "--epochs", str(epochs),
            "--no-progress"]


def _assert_same_run(a: Path, b: Path) -> None:
    _, sa = load_run(a)
    _, sb = load_run(b)
    assert sa["epoch"] == sb["epoch"], f"epochs differ: {sa['epoch']} vs {sb['epoch']}"
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), f"parameter {name} differs after kill and resume"
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(sa["metrics"]) == strip(sb["metrics"]), "metrics differ after kill and resume"


# The default VAE, and two of the new families: M2 (labelled minibatches drawn each step, y enumerated)
# and two stochastic layers (traced engine).
KILLED_MODELS = [(1, {}), (2, {"model": "m2", "labels": 100}), (3, {"model": "hierarchical", "z1_dim": 4})]


@pytest.mark.parametrize("kill_seed,model", KILLED_MODELS, ids=["vae", "m2", "hierarchical"])
def test_kill_9_then_resume_matches_uninterrupted(
    fake_mnist_root: Path, tmp_path: Path, kill_seed: int, model: dict[str, object]
) -> None:
    """A training process killed with SIGKILL at a random moment resumes to exactly the uninterrupted result."""
    epochs = 6
    reference = tmp_path / "reference"
    train(_config(fake_mnist_root, reference, epochs=epochs, **model), progress=False)

    killed = tmp_path / "killed"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in model.items()]
    cmd = [sys.executable, "-m", "pvae.cli", *_cli_flags(fake_mnist_root, killed, epochs), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, "the training process ended before writing its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    time.sleep(random.Random(kill_seed).uniform(0.0, 0.6))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, state = load_run(killed)  # the folder still reads: a complete checkpoint and matching config
    assert 1 <= state["epoch"] <= epochs, f"checkpoint epoch {state['epoch']} out of range"

    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    _assert_same_run(reference, killed)
    assert not list(killed.glob(".*.tmp")), "temporary files were left in the run folder"
    rows = (killed / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == epochs + 1, f"metrics.csv should hold a header and {epochs} rows, got {len(rows)} lines"


def test_sigterm_stops_cleanly_and_resumes(fake_mnist_root: Path, tmp_path: Path) -> None:
    """SIGTERM ends training with status 130, keeps a loadable checkpoint, and --resume finishes the run."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "pvae.cli", *_cli_flags(fake_mnist_root, out, 8)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 130, f"expected exit status 130 after SIGTERM, got {proc.returncode}: {err}"
    assert "--resume" in err, f"the message should say how to continue, got: {err!r}"
    load_run(out)
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert load_run(out)[1]["epoch"] == 8


class _PoisonedBernoulli(Bernoulli):
    """A Bernoulli likelihood whose logits become NaN from its ``poison_after``-th call on."""

    def __init__(self, poison_after: int) -> None:
        self.calls, self.poison_after = 0, poison_after

    def __call__(self, output: torch.Tensor):  # noqa: ANN204
        self.calls += 1
        return super().__call__(output * float("nan") if self.calls > self.poison_after else output)


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(fake_mnist_root: Path, tmp_path: Path) -> None:
    """A NaN loss raises TrainingDivergedError naming epoch and step; the previous checkpoint is untouched."""
    out = tmp_path / "run"
    config = _config(fake_mnist_root, out, epochs=3)
    # 10 steps per epoch plus a few evaluation calls: poisoning after call 14 hits epoch 2.
    vae = pvae.VAE(784, 3, hidden=(32,), num_data=300, likelihood=_PoisonedBernoulli(poison_after=14))
    with pytest.raises(TrainingDivergedError, match=r"epoch 2: the loss became nan at step \d+") as info:
        train(config, vae=vae, progress=False)
    assert "epoch 1" in str(info.value) and "intact" in str(info.value), str(info.value)
    before = (out / "checkpoint.pt").read_bytes()
    _, state = load_run(out)
    assert state["epoch"] == 1, f"the kept checkpoint should be epoch 1's, got {state['epoch']}"
    assert all(torch.isfinite(t).all() for t in state["model"].values()), "the kept checkpoint holds NaNs"
    assert (out / "checkpoint.pt").read_bytes() == before


def _write_idx(path: Path, data: torch.Tensor, type_code: int = 0x08) -> None:
    header = bytes([0, 0, type_code, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    path.write_bytes(header + data.contiguous().numpy().tobytes())


def _fake_root(tmp_path: Path, n_train: int = 50, side: int = 28, truncate: bool = False) -> Path:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", 20)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, side, side), dtype=torch.uint8))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", torch.zeros(n, dtype=torch.uint8))
    if truncate:
        p = raw / "train-images-idx3-ubyte"
        p.write_bytes(p.read_bytes()[:1000])
    return tmp_path / "data"


def test_missing_data_cli_says_where_and_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing dataset files (and no download) give exit status 2 and one line naming the folder and both fixes."""

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")  # what an offline machine answers

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    empty = tmp_path / "nothing"
    assert main(["train", "--data-dir", str(empty), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, f"expected one line, got: {err!r}"
    assert str(empty / "MNIST" / "raw") in err and "PVAE_DATA_DIR" in err and "--data-dir" in err, err


def test_empty_dataset_refused(tmp_path: Path) -> None:
    """An IDX file with zero images is refused with 'empty'."""
    root = _fake_root(tmp_path, n_train=0)
    with pytest.raises(ValueError, match="empty"):
        load_data("mnist", root, val_size=0)


def test_truncated_idx_refused(tmp_path: Path) -> None:
    """A truncated images file is an error, not a silently smaller dataset."""
    root = _fake_root(tmp_path, truncate=True)
    with pytest.raises((ValueError, RuntimeError)):
        load_data("mnist", root, val_size=10)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.full((2, 4), float("nan")), "NaN"),
        (torch.zeros(2, 5), r"shape \(N, 4\)"),
        (torch.zeros(2, 4, dtype=torch.uint8), "floating-point"),
        (torch.zeros(0, 4), "at least one image"),
    ],
    ids=["nan-pixels", "wrong-shape", "wrong-dtype", "empty"],
)
def test_bad_images_refused(x: torch.Tensor, message: str) -> None:
    """check_images names what was expected for NaN pixels, wrong shape, wrong dtype and empty input."""
    with pytest.raises(ValueError, match=message):
        check_images(x, 4)


def test_grey_levels_refused_by_bernoulli() -> None:
    """Grey-level data under a Bernoulli likelihood is refused, naming the fix."""
    with pytest.raises(ValueError, match="binarize"):
        Bernoulli().check_support(torch.tensor([[0.0, 0.5, 1.0]]))


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--z-dim", "0"], "z_dim"),
        (["--z-dim", "-2"], "z_dim"),
        (["--epochs", "-1"], "epochs"),
        (["--batch-size", "0"], "batch_size"),
        (["--lr", "-0.1"], "lr"),
        (["--prior", "nromal"], "prior"),
        (["--activation", "tahn"], "activation"),
    ],
    ids=lambda v: "_".join(v) if isinstance(v, list) else v,
)
def test_bad_flags_one_line(flags: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range or unknown flag values exit with status 2 and one line naming the field."""
    assert main(["train", "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pvae: error:") and "\n" not in err and field in err, err


def test_unknown_name_suggests_nearest() -> None:
    """A misspelt choice suggests the nearest known one."""
    with pytest.raises(ConfigError, match="did you mean 'tanh'"):
        TrainConfig(activation="tahn")


def test_same_seed_same_metrics(fake_mnist_root: Path, tmp_path: Path) -> None:
    """Same seed, same device, same versions: the very same metrics and weights."""
    a = train(_config(fake_mnist_root, tmp_path / "a", epochs=2), progress=False)
    b = train(_config(fake_mnist_root, tmp_path / "b", epochs=2), progress=False)
    _assert_same_run(a.run_dir, b.run_dir)
    recorded = json.loads((a.run_dir / "config.json").read_text())
    assert recorded["config"]["seed"] == 0 and "torch" in recorded["versions"] and recorded["device"] == "cpu"
    assert recorded["config"]["engine"] == "auto" and recorded["engine"] == "jit", "auto traces the models pvae builds"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    z_dim=st.integers(-5, 300),
    epochs=st.integers(-5, 50),
    batch_size=st.integers(-5, 5000),
    hidden=st.lists(st.integers(-3, 500), min_size=0, max_size=4),
    lr=st.one_of(st.floats(-1.0, 1.0), st.just(float("nan")), st.just(float("inf"))),
)
def test_config_and_cli_parsing_agree(z_dim: int, epochs: int, batch_size: int, hidden: list[int], lr: float) -> None:
    """For any numbers, the CLI's flags build exactly the TrainConfig the Python API builds, or both refuse."""
    kwargs = dict(z_dim=z_dim, epochs=epochs, batch_size=batch_size, lr=lr)
    # "--flag=value" so that negative numbers in exponent form are not taken for flags by argparse.
    argv = ["train", f"--z-dim={z_dim}", f"--epochs={epochs}", f"--batch-size={batch_size}", f"--lr={lr!r}"]
    if hidden:
        kwargs["hidden"] = tuple(hidden)
        argv += ["--hidden", *map(str, hidden)]
    expected = _maybe(kwargs)
    args = build_parser().parse_args(argv)
    parsed = {k: getattr(args, k) for k in kwargs}
    if "hidden" in parsed:
        parsed["hidden"] = tuple(parsed["hidden"])
    built = _maybe(parsed)
    assert built == expected, f"CLI built {built}, API built {expected} for {kwargs}"
    if built is not None:
        assert TrainConfig.from_dict(json.loads(built.to_json())) == built, "JSON round trip changed the config"


def _maybe(kwargs: dict[str, object]) -> TrainConfig | None:
    try:
        return TrainConfig(**kwargs)  # type: ignore[arg-type]
    except ConfigError:
        return None


def test_checkpoint_of_another_configuration_refused(
    fake_mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A checkpoint copied in from a run with other settings is refused with one line, exit status 2."""
    a = train(_config(fake_mnist_root, tmp_path / "a", epochs=1), progress=False).run_dir
    b = train(_config(fake_mnist_root, tmp_path / "b", epochs=1, z_dim=4), progress=False).run_dir
    (a / "checkpoint.pt").write_bytes((b / "checkpoint.pt").read_bytes())
    capsys.readouterr()  # drop the training output
    assert main(["evaluate", str(a), "--data-dir", str(fake_mnist_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "another configuration" in err and "\n" not in err, err


def test_overwrite_removes_the_old_runs_numbers(fake_mnist_root: Path, tmp_path: Path) -> None:
    """--overwrite deletes the replaced run's evaluation files, so its numbers never pass for the new run's."""
    out = tmp_path / "run"
    train(_config(fake_mnist_root, out, epochs=1), progress=False)
    (out / "evaluation.json").write_text("{}")
    (out / "per_image.csv").write_text("index\n")
    train(_config(fake_mnist_root, out, epochs=1, seed=1), overwrite=True, progress=False)
    assert not (out / "evaluation.json").exists() and not (out / "per_image.csv").exists()
