"""Per-image estimates over fixed blocks of images, each seeded from its first image's index, and
dealt to the processes of a distributed evaluation.

An estimate of log p(x) draws latents for every image. For its numbers to be the same whatever the
number of processes (and the same as one process's), the draws of an image must not depend on
which process computes it: the images are cut into fixed blocks (their size set by the estimator's
settings, never by the number of processes), block b's draws are seeded from the evaluation's seed
and the index of its first image, and rank r computes blocks r, r + P, r + 2P, ... The blocks'
results are gathered and put back in image order on every rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from pvae.distributed import SINGLE, World
from pvae.inference.importance import chunk_args

__all__ = ["by_blocks", "block_seed", "concat_estimates"]


def block_seed(seed: int, first: int) -> int:
    """The seed of the block whose first image is image ``first`` of the evaluation set."""
    return (seed * 1_000_003 + first * 0x9E3779B1 + 1) % (2**63)


def by_blocks(
    estimate: Callable[[Tensor, tuple[Any, ...]], Any],
    x: Tensor,
    args: tuple[Any, ...],
    *,
    block: int,
    seed: int,
    world: World = SINGLE,
) -> Any:
    """``estimate(x_block, args_block)`` on the blocks of ``block`` images of ``x``, this rank's
    share of them, joined in image order by :func:`concat_estimates` on every rank.

    :param estimate: a per-image estimator of the images it is given, returning a dataclass whose
        tensor fields have the images as their last dimension (``ImportanceEstimate``,
        ``AISEstimate``).
    :param x: the images ``(N, ...)``; ``args`` are what model and guide take besides (per-image
        tensors are cut with the images).
    :param block: images per block; the results depend on it, never on the number of processes.
    :param seed: the evaluation's seed.
    """
    if block < 1:
        raise ValueError(f"block must be >= 1 image, got {block}")
    starts = list(range(0, x.shape[0], block))
    mine: dict[int, Any] = {}
    for i, first in enumerate(starts):
        if i % world.size != world.rank:
            continue
        torch.manual_seed(block_seed(seed, first))
        xb = x[first : first + block]
        part = estimate(xb, chunk_args(args, x.shape[0], first, xb.shape[0]))
        # gathered through pickles: on the CPU
        mine[first] = _to_cpu(part) if world.distributed else part
    merged = {k: v for shard in world.gather(mine) for k, v in shard.items()}
    return concat_estimates([merged[first] for first in starts])


def concat_estimates(parts: list[Any]) -> Any:
    """One estimate of all images from those of consecutive blocks: tensor fields joined along their
    last (image) dimension, ``seconds`` summed, the other fields (settings) taken from the first."""
    if not parts:
        raise ValueError("no blocks to join")
    first = parts[0]
    if len(parts) == 1:
        return first
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(first):
        values = [getattr(p, f.name) for p in parts]
        if isinstance(values[0], Tensor):
            device = values[0].device
            changes[f.name] = torch.cat([v.to(device) for v in values], dim=-1)
        elif f.name == "seconds":
            changes[f.name] = sum(values)
    return dataclasses.replace(first, **changes)  


def _to_cpu(part: Any) -> Any:
    changes = {f.name: getattr(part, f.name).cpu() for f in dataclasses.fields(part)
               if isinstance(getattr(part, f.name), Tensor)}
    return dataclasses.replace(part, **changes)
