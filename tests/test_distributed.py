"""Data-parallel training and sharded evaluation under torchrun, with 2 gloo processes on the CPU:
the same parameters as one process, the same numbers image by image, and a clean failure and an
exact resume when one process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pvae import TrainConfig, train
from pvae.runs.checkpoint import load_checkpoint
from pvae.runs.evaluate import evaluate_run
from pvae.runs.folder import CHECKPOINT, PER_IMAGE

TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="needs torch.distributed with gloo")


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "pvae", *args]


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)


def _flags(config: TrainConfig) -> list[str]:
    flags = []
    for name, value in config.to_dict().items():
        default = TrainConfig.__dataclass_fields__[name].default
        if value == default or value is None or (isinstance(value, list) and tuple(value) == default):
            continue
        flag = "--" + name.replace("_", "-")
        flags += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return flags + ["--no-progress"]


def _weights(run: Path, name: str = CHECKPOINT) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / name)["model"]


def test_two_processes_reach_one_process_parameters(fake_mnist_root: Path, tmp_path: Path) -> None:
    """P = 2 and P = 1 with the same global minibatches (45 images: shares of 23 and 22, and a last
    batch of 20), data order, binarization and seed reach the same parameters, up to float rounding.
    The model's guide is a point mass, so its loss has no Monte-Carlo draws that could differ."""
    config = TrainConfig(data_dir=str(fake_mnist_root), model="ddp_models:PointMassVAE", train_size=200,
                         val_size=100, batch_size=45, epochs=3, lr=3e-3, device="cpu", out=str(tmp_path / "p2"))
    proc = _run(_torchrun("train", *_flags(config)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1, "only rank 0 reports"
    sys.path.insert(0, str(TESTS))
    try:
        one = train(TrainConfig(**{**config.to_dict(), "hidden": config.hidden, "top_hidden": config.top_hidden,
                                   "keep_epochs": (), "out": str(tmp_path / "p1")}), progress=False)
    finally:
        sys.path.remove(str(TESTS))
    two = _weights(tmp_path / "p2")
    for name, value in one.vae.state_dict().items():
        assert torch.allclose(value, two[name], rtol=1e-5, atol=1e-6), f"{name} differs between P = 1 and P = 2"
    state = load_checkpoint(tmp_path / "p2" / CHECKPOINT)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    assert not torch.equal(state["rank_rng"][0], state["rank_rng"][1]), "the ranks must draw different latents"


def _rank_pid(marker: str, rank: int) -> int | None:
    """The pid of the worker process of rank ``rank`` whose command line holds ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in cmdline and f"RANK={rank}".encode() in environ and b"LOCAL_RANK=%d" % rank in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_dying_rank_ends_the_run_cleanly_and_resume_completes_exactly(fake_mnist_root: Path, tmp_path: Path) -> None:
    """Rank 1 killed mid-run: the run ends with one clear line, the last checkpoint loads, and
    resuming with 2 processes finishes with the weights of an uninterrupted 2-process run."""
    def config(out: Path) -> TrainConfig:
        return TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(32,), batch_size=10,
                           epochs=8, device="cpu", out=str(out))

    straight = _run(_torchrun("train", *_flags(config(tmp_path / "straight"))), tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun("train", *_flags(config(out))), cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / CHECKPOINT).exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.02)
        pid = _rank_pid(str(out), 1)
        assert pid is not None, "rank 1's process was not found"
        os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "pvae: error: rank 0 stopped: another process" in stderr or "pvae: interrupted" in stderr, stderr[-3000:]
    epoch = load_checkpoint(out / CHECKPOINT)["epoch"]
    assert 1 <= epoch < 8, f"the kill came after the run ended (epoch {epoch})"

    resumed = _run(_torchrun("train", "--resume", str(out), "--no-progress"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(tmp_path / "straight"), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert load_checkpoint(out / CHECKPOINT)["epoch"] == 8

    # another number of processes cannot continue it bit for bit: refused
    other = _run(_torchrun("train", "--resume", str(out), "--no-progress", nproc=1), tmp_path)
    assert other.returncode != 0 and "trained with 2" in other.stderr, other.stderr[-2000:]


@pytest.mark.parametrize("method", ["is", "ais"])
def test_sharded_evaluation_equals_one_process_image_by_image(fake_mnist_root: Path, tmp_path: Path,
                                                              method: str) -> None:
    """pvae evaluate under torchrun with 2 processes writes the per-image numbers one process writes."""
    run = tmp_path / "run"
    train(TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(16,), batch_size=50, epochs=1,
                      device="cpu", out=str(run)), progress=False)
    flags = (["--num-samples", "20", "--chunk-size", "100"] if method == "is"  # blocks of 5 images
             else ["--method", "ais", "--steps", "5", "--leapfrog", "2", "--chunk-size", "10"])
    proc = _run(_torchrun("evaluate", str(run), "--num-images", "47", "--no-progress", *flags), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("written:") >= 1 and proc.stdout.count("evaluation.json") == 1, "only rank 0 reports"
    sharded = (run / PER_IMAGE).read_text()
    kwargs = ({"num_samples": 20, "chunk_size": 100} if method == "is"
              else {"method": "ais", "num_steps": 5, "num_leapfrog": 2, "chunk_size": 10})
    evaluate_run(run, num_images=47, device="cpu", progress=False, **kwargs)
    single = (run / PER_IMAGE).read_text()
    assert sharded == single and single.count("\n") == 48


@pytest.mark.parametrize("changes", [
    {"model": "hierarchical", "z1_dim": 4, "top_hidden": [8]},
    {"model": "conditional"},
    {"model": "m2", "labels": 50, "kl_warmup": 1},
], ids=["hierarchical", "conditional", "m2-warmup"])
def test_every_family_trains_under_torchrun(fake_mnist_root: Path, tmp_path: Path, changes: dict[str, object]) -> None:
    """Two processes train each model family pvae builds (M2 eagerly, with its labelled minibatch
    shared between the ranks) to a finite validation ELBO."""
    config = TrainConfig(data_dir=str(fake_mnist_root), val_size=100, z_dim=2, hidden=(16,), batch_size=50,
                         epochs=1, device="cpu", out=str(tmp_path / "run"))
    config = TrainConfig(**{**config.to_dict(), **changes, "hidden": (16,), "keep_epochs": (),
                            "top_hidden": tuple(changes.get("top_hidden", config.top_hidden))})
    proc = _run(_torchrun("train", *_flags(config)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "validation ELBO -" in proc.stdout and load_checkpoint(tmp_path / "run" / CHECKPOINT)["world_size"] == 2
