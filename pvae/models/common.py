"""Pieces the model families share: the data plate over N images and a label joined to an input."""

from __future__ import annotations

import pyro
import torch
from torch import Tensor
from torch.nn import functional as F

from pvae.protocol import DATA_PLATE

__all__ = ["data_plate", "join_label"]


def data_plate(x: Tensor, num_data: int | None) -> pyro.plate:
    """The plate over the images of ``x`` ``(batch, ...)``: size N with the batch as its subsample.

    A minibatch of B < N images is a subsample of the data plate, so Pyro scales its log-densities by
    N / B and SVI's loss estimates the whole-dataset ELBO. ``num_data=None`` (or B >= N) makes the
    plate exactly as large as the batch.
    """
    batch = x.shape[0]
    if num_data is None or batch >= num_data:
        return pyro.plate(DATA_PLATE, batch)
    return pyro.plate(DATA_PLATE, num_data, subsample=torch.arange(batch, device=x.device))


def join_label(inputs: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """``inputs`` ``(..., d)`` with the one-hot code of ``y`` appended: ``(..., d + num_classes)``.

    ``y`` holds integer classes whose shape broadcasts against ``inputs.shape[:-1]``: ``(batch,)``
    when observed, ``(num_classes, 1)`` when Pyro enumerates it (one row per class, left of the plates),
    or with a particles dimension as well; both sides are broadcast to their common shape.
    """
    code = F.one_hot(y.long(), num_classes).to(inputs.dtype)
    shape = torch.broadcast_shapes(inputs.shape[:-1], code.shape[:-1])
    return torch.cat([inputs.expand(shape + inputs.shape[-1:]), code.expand(shape + code.shape[-1:])], dim=-1)
