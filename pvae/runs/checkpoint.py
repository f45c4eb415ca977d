"""Atomic file writes and safe checkpoint loading.

Every file of a run folder is written to a temporary file in the same folder and renamed over the
old one, so an interruption at any moment leaves either the old or the new version, never half a
file. Checkpoints are read with ``torch.load(weights_only=True)``: loading never runs code from the file.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "atomic_write_bytes", "atomic_write_text", "save_checkpoint", "load_checkpoint"]

#: The tag every checkpoint pvae writes carries (its ``"format"`` entry).
CHECKPOINT_FORMAT = "pvae-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted or not a pvae checkpoint."""


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a run folder is shared like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) atomically, tagged with
    :data:`CHECKPOINT_FORMAT`."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything else with a clear error.

    :raises CheckpointError: the file is missing, truncated, corrupted, needs code to unpickle, or
        was not written by pvae.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; expected the file a pvae training run writes")
    damaged = f"{path} is truncated or corrupted and cannot be read; use an intact copy"
    if not zipfile.is_zipfile(path):
        # save_checkpoint always writes torch's zip format; torch.load would otherwise read any other
        # bytes as a legacy pickle and report garbage as "unsupported" objects.
        raise CheckpointError(f"{damaged} (it is not a torch zip archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        try:
            needs = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # a damaged pickle cannot be disassembled either
            needs = []
        if not needs:
            raise CheckpointError(f"{damaged} ({_one_line(err)})") from err
        raise CheckpointError(
            f"{path} holds objects that would need code to load ({', '.join(needs)}); "
            "pvae only reads its own tensor checkpoints"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise CheckpointError(f"{damaged} ({_one_line(err)})") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pvae checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return state


def _one_line(err: BaseException) -> str:
    """An error's text on one line (PyTorch's messages span several), for the one-line CLI error."""
    return " ".join(str(err).split())
