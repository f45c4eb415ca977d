"""Devices, random streams and the process: which device a setting means, blocks whose draws are
undone, and the allocator warm-up the estimators share."""

from __future__ import annotations

from typing import Any

import torch

from pvae.errors import ConfigError

__all__ = ["DEVICES", "resolve_device", "forked_rng", "raise_malloc_thresholds"]

#: The device settings (``device``, ``--device``): ``auto`` is CUDA when PyTorch sees a GPU, else CPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but PyTorch sees no CUDA GPU; use device='cpu' or device='auto'")
    return torch.device(device)


def forked_rng(device: torch.device) -> Any:
    """A block whose random draws are undone afterwards: torch's CPU generator, and CUDA's when
    ``device`` is a GPU, are given back as they were (so the draws in it leave others' streams alone)."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def raise_malloc_thresholds() -> None:
    """Allocate and free one 30 MB block, once per process.

    glibc's malloc serves a block above its mmap threshold with a fresh mapping and unmaps it when
    freed; the threshold (and the heap's trim threshold, twice it) rises to the size of the largest
    such block freed so far, up to 32 MB. Until a block that large has been freed, every pass of the
    estimator maps its chunk-sized tensors afresh and pays their page faults again: 1.5 times slower
    on one CPU thread (bench/log_px_speed.py, 'kernel' seconds). Under other allocators this is one
    allocation and nothing more.
    """
    block = torch.empty(30 * 2**20, dtype=torch.uint8)
    del block
