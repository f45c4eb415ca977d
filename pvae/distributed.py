"""Data parallelism on PyTorch's own engine: ``torch.distributed``, launched with ``torchrun``.

``torchrun --nproc-per-node P -m pvae train ...`` starts P processes (ranks); each reads the
launch from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, the
rendezvous address) and joins one process group: gloo on CPUs, NCCL on GPUs. Without torchrun
(``WORLD_SIZE`` unset or 1) nothing here does anything, and a run is exactly a one-process run.

How a step is shared (:func:`pvae.training.loop.train_epoch`): every rank draws the same permutation and
binarization of the epoch from the data stream, so the global minibatch of ``batch_size`` images is
the one a single process would take; rank r takes the r-th contiguous share of it. Each rank's
loss is Pyro's ELBO of its share, whose data plate scales it by N / B_r, an unbiased estimate of
the whole-data ELBO; the gradients are combined as sum_r (B_r / B) g_r by one all-reduce after
backward, which is the gradient of the global minibatch's estimate with scale N / B whatever the
shares' sizes. An all-reduce after backward, not ``DistributedDataParallel``: DDP synchronizes
through a module's ``forward``, and an SVI step runs Pyro's model and guide (and the traced ELBO)
instead; one flat all-reduce per step is what DDP's buckets do, without the wrapper.

Random draws: rank 0 draws what a single process would; rank r > 0 has its own stream seeded
from the seed and r. Rank 0 alone reads and writes the run folder (its checkpoint holds every
rank's generator state, so ``--resume`` with the same number of processes continues bit for bit).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from pvae.errors import ConfigError

__all__ = ["World", "GradientBucket", "SINGLE", "current_world", "rank_seed"]

# How long a rank waits for the others at a collective before it gives up: a rank that died
# without torchrun noticing ends the run instead of hanging it.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """The processes of a run: this one's ``rank`` among ``size``, and its ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0, the one that reads and writes the run folder."""
        return self.rank == 0

    def share(self, rows: Tensor) -> Tensor:
        """This rank's contiguous share of a global minibatch's ``rows`` (sizes differ by at most one)."""
        return rows.tensor_split(self.size)[self.rank] if self.distributed else rows

    def device(self, device: torch.device) -> torch.device:
        """On GPUs, one per process: ``cuda:LOCAL_RANK``."""
        if self.distributed and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def sum_(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` over the ranks, in place (every rank gets the sum)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_tensors(self, tensors: Iterable[Tensor]) -> None:
        """Overwrite ``tensors`` (a model's parameters and buffers) with rank 0's, in place."""
        if self.distributed:
            for tensor in tensors:
                dist.broadcast(tensor, src=0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, value)
        return out

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on rank 0 and give its result to every rank; an error there is raised on every
        rank (the same type where it can be rebuilt from its message), so no rank waits for ever."""
        if not self.distributed:
            return fn()
        outcome: tuple[str, Any]
        if self.main:
            try:
                outcome = ("ok", fn())
            except Exception as err:  # re-raised below, on every rank
                outcome = ("error", err)
        else:
            outcome = ("ok", None)
        kind, value = self.broadcast(outcome)
        if kind == "error":
            raise value
        return value


class GradientBucket:
    """The gradients of a model's parameters as views of one flat buffer, with a few numbers more,
    summed across the ranks by a single all-reduce (what ``DistributedDataParallel`` does with
    ``gradient_as_bucket_view``): backward accumulates straight into the buffer, and nothing is
    copied before or after the collective, whose latency (about 2-3 ms on gloo) dominates a CPU step.

    :param parameters: the trained parameters, all of one dtype and device.
    :param extras: how many numbers ride along (the step's ELBO estimate, a flag of a non-finite loss).
    """

    def __init__(self, parameters: Iterable[torch.nn.Parameter], world: World, *, extras: int = 2) -> None:
        self.params = [p for p in parameters if p.requires_grad]
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) != 1:
            raise ConfigError(f"distributed training needs the parameters on one device in one dtype; got {kinds}")
        dtype, device = kinds.pop()
        self.world, self.extras = world, extras
        self.flat = torch.zeros(sum(p.numel() for p in self.params) + extras, dtype=dtype, device=device)
        self.views, offset = [], 0
        for p in self.params:
            self.views.append(self.flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.zero_()

    def zero_(self) -> None:
        """Zero the buffer and make every parameter's ``.grad`` its view again (a parameter no image
        of this rank's share reached keeps a zero gradient, which the others' may add to)."""
        self.flat.zero_()
        for p, view in zip(self.params, self.views):
            if p.grad is None or p.grad.data_ptr() != view.data_ptr():
                p.grad = view

    def all_reduce(self, extra: Tensor) -> Tensor:
        """Sum the gradients and ``extra`` (``(extras,)``) over the ranks in place; returns the summed extras."""
        for p, view in zip(self.params, self.views):
            if p.grad is not None and p.grad.data_ptr() != view.data_ptr():  # replaced by someone: kept anyway
                view.copy_(p.grad)
                p.grad = view
        self.flat[-self.extras :] = extra
        self.world.sum_(self.flat)
        return self.flat[-self.extras :]


#: The world of a run launched without torchrun: this process alone.
SINGLE = World()


def current_world(device: str = "cpu") -> World:
    """The world torchrun launched this process in, joining its process group on first use
    (gloo for CPU training, NCCL for CUDA); :data:`SINGLE` without torchrun.

    :param device: the run's device setting (``cpu``, ``cuda`` or ``auto``), which picks the backend.
    :raises ConfigError: when the environment names a world but no rendezvous to join it by.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise ConfigError(f"WORLD_SIZE is {size} but no MASTER_ADDR is set: launch distributed runs with "
                              "torchrun --nproc-per-node P -m pvae ...")
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return World(rank=rank, size=size, local_rank=local_rank)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0 (so that it draws what a
    single process draws), a different fixed one on each other rank."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 0x9E3779B1) % (2**63)
