"""Atomic writes and safe checkpoint loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from pyro import poutine

from pvae import VAE
from pvae.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    atomic_write_bytes,
    load_checkpoint,
    save_checkpoint,
)


class Opaque:
    """A class of the test module: unpickling it needs this code."""

    def __init__(self) -> None:
        self.weights = torch.ones(3)


class RunsCodeWhenUnpickled:
    """Unpickling this object would create a folder: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("failing", ["os.replace", "os.fsync"])
def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """A write that fails midway leaves the old file intact and no temporary file behind."""
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old content")

    def fail(*args: object) -> None:
        raise OSError("simulated failure")

    monkeypatch.setattr(os, failing.split(".")[1], fail)
    with pytest.raises(OSError, match="simulated failure"):
        atomic_write_bytes(path, b"new content that never lands")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content", f"the old file now holds {path.read_bytes()!r}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"], f"left behind: {list(tmp_path.iterdir())}"


def test_atomic_write_replaces_content(tmp_path: Path) -> None:
    """A successful write replaces the whole file and leaves no temporary file."""
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"a much longer first version")
    atomic_write_bytes(path, b"short")
    assert path.read_bytes() == b"short"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"], f"left behind: {list(tmp_path.iterdir())}"


def test_checkpoint_round_trip_gives_identical_model(tmp_path: Path) -> None:
    """A VAE saved and loaded into a freshly initialized one decodes and encodes exactly as before."""
    torch.manual_seed(0)
    vae = VAE(30, 4, hidden=(16, 8), num_data=100).eval()
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": vae.state_dict(), "epoch": 7})
    torch.manual_seed(1)
    copy = VAE(30, 4, hidden=(16, 8), num_data=100).eval()
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 7, f"format {state['format']}, epoch {state['epoch']}"
    copy.load_state_dict(state["model"])

    z = torch.randn(5, 4)
    x = torch.bernoulli(torch.full((5, 30), 0.5))
    torch.testing.assert_close(copy.decoder(z), vae.decoder(z), rtol=0, atol=0)
    q, q_copy = (poutine.trace(m.guide).get_trace(x).nodes["z"]["fn"] for m in (vae, copy))
    torch.testing.assert_close(q_copy.mean, q.mean, rtol=0, atol=0)
    torch.testing.assert_close(q_copy.variance, q.variance, rtol=0, atol=0)


def test_missing_checkpoint(tmp_path: Path) -> None:
    """A missing file is a CheckpointError naming the path."""
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / 'nothing.pt'}"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    """A checkpoint cut short is refused as truncated or corrupted."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.randn(100, 100)}})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value), f"the message spans lines: {info.value}"


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    """A file of random bytes is refused as truncated or corrupted (not as 'needs code')."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value), f"the message spans lines: {info.value}"


@pytest.mark.parametrize(
    "content",
    [{"model": {"w": torch.zeros(2)}}, {"format": "someone-else-v1", "model": {}}, [torch.zeros(2)]],
    ids=["no-tag", "other-tag", "not-a-dict"],
)
def test_torch_file_without_pvae_tag(tmp_path: Path, content: object) -> None:
    """A valid torch file that pvae did not write is refused as not a pvae checkpoint."""
    path = tmp_path / "checkpoint.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=f"not a pvae checkpoint.*{CHECKPOINT_FORMAT}"):
        load_checkpoint(path)


def test_pickle_needing_code_is_refused(tmp_path: Path) -> None:
    """An object of a custom class is refused: loading it would need (and run) code."""
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "model": Opaque()}, path)
    with pytest.raises(CheckpointError, match=r"would need code to load \(.*\bOpaque\)") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value), f"the message spans lines: {info.value}"


def test_malicious_pickle_runs_nothing(tmp_path: Path) -> None:
    """A pickle whose loading would call os.mkdir is refused without calling it."""
    path, marker = tmp_path / "checkpoint.pt", tmp_path / "pwned"
    torch.save({"format": CHECKPOINT_FORMAT, "model": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="would need code to load"):
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code from it"
