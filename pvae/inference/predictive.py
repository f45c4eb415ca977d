"""What a trained model draws and reconstructs, for any graphical model, from its traces.

* :func:`central_latents`: one representative value of every latent site of the guide, the mean of
  each q (for a flow the image of its base mean; for a discrete site its most probable value),
  each computed from its parents' representative values;
* :func:`continuous_latents`: the same, for the continuous latent sites only;
* :func:`reconstruct`: the mean of the image site of the model given those values;
* :func:`generate`: the mean of the image site for latents drawn from the model's own prior
  (with a chosen class for a model with labels);
* :func:`decode`: the mean of the image site given chosen values of some latent sites.

Nothing here knows a site's name in advance: the image site is the observed site holding ``x``,
the latent sites are those the guide samples.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from torch import Tensor

from pvae.inference.pyro_internals import is_subsample_site
from pvae.inference.traces import image_site, is_discrete, sample_sites
from pvae.parts.guides import central_value
from pvae.protocol import GraphicalModel, label_mode

__all__ = ["central_latents", "continuous_latents", "reconstruct", "generate", "decode", "label_args", "prior_trace"]


class _Central(Messenger):
    """Replaces every latent draw by its distribution's representative value (no sampling)."""

    def _pyro_sample(self, msg: dict[str, Any]) -> None:
        # A plate's subsample site (which images are in the batch) is no latent: Pyro draws it as usual.
        if msg["is_observed"] or msg["value"] is not None or is_subsample_site(msg):
            return
        fn = msg["fn"]
        msg["value"] = fn.probs.argmax(-1) if is_discrete(msg) else central_value(fn)
        msg["done"] = True


def label_args(model: GraphicalModel, y: Tensor | None) -> tuple[Tensor, ...]:
    """What to pass after the images: ``(y,)`` when given to a model that takes labels, else ``()``.

    :raises ValueError: when a class-conditional model is given no labels.
    """
    mode = label_mode(model)
    if mode == "observed" and y is None:
        raise ValueError("this model is conditioned on the label y: pass the labels of the images")
    return (y,) if y is not None and mode != "none" else ()


@torch.no_grad()
def central_latents(model: GraphicalModel, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
    """The guide's representative value of every latent site for images ``x`` ``(batch, x_dim)``.

    :param y: labels ``(batch,)`` for a model that takes them (for M2, ``None`` lets q(y|x) choose).
    :returns: site name -> value, each ``(batch, ...)``, in the guide's order.
    """
    return {name: site["value"] for name, site in _central_sites(model, x, y).items()}


@torch.no_grad()
def continuous_latents(model: GraphicalModel, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
    """:func:`central_latents` without the discrete sites (M2's y): the values a figure can move
    along a line or project on a plane.

    :returns: site name -> ``(batch, ...)``, in the guide's order.
    """
    return {name: site["value"] for name, site in _central_sites(model, x, y).items() if not is_discrete(site)}


def _central_sites(model: GraphicalModel, x: Tensor, y: Tensor | None) -> dict[str, dict[str, Any]]:
    with poutine.block(), _Central():
        trace = poutine.trace(model.guide).get_trace(x, *label_args(model, y))
    sites = sample_sites(prune_subsample_sites(trace))
    return {name: site for name, site in sites.items() if not site["is_observed"]}


@torch.no_grad()
def decode(model: GraphicalModel, values: dict[str, Tensor], num: int, y: Tensor | None = None,
           device: torch.device | None = None) -> Tensor:
    """Mean of the image site given latent ``values`` (sites not in it are drawn from the model).

    :param values: site name -> ``(num, ...)``.
    :param num: images to decode.
    :returns: ``(num, x_dim)``.
    """
    if device is None:
        device = next(iter(values.values())).device if values else _device_dtype(model)[0]
    placeholder = torch.zeros(num, model.x_dim, device=device)
    with poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(poutine.condition(model.model, data=values)).get_trace(placeholder, *label_args(model, y))
    return trace.nodes[image_site(trace, placeholder)]["fn"].mean.reshape(num, model.x_dim)


@torch.no_grad()
def reconstruct(model: GraphicalModel, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Mean of the model's image site at the guide's representative latents of ``x``.

    :param x: ``(batch, x_dim)``.
    :param y: labels for a model that takes them.
    :returns: ``(batch, x_dim)``.
    """
    values = central_latents(model, x, y)
    # For M2 without labels the guide's choice of y is among the values and conditions the model.
    given = y if label_mode(model) == "observed" else None
    return decode(model, values, x.shape[0], given, device=x.device)


@torch.no_grad()
def generate(model: GraphicalModel, num: int, y: Tensor | None = None, *, device: torch.device | None = None) -> Tensor:
    """Means of the image site for latents drawn from the model's prior.

    :param y: classes ``(num,)`` to draw (a model with labels); ``None`` for a model without, or
        for M2 to draw y from its prior too.
    :returns: ``(num, x_dim)``.
    """
    if device is None:
        device = _device_dtype(model)[0]
    return decode(model, {}, num, y, device=device)


def _device_dtype(model: GraphicalModel) -> tuple[torch.device, torch.dtype]:
    first = next(model.parameters())
    return first.device, first.dtype


def prior_trace(model: GraphicalModel, num: int, y: Tensor | None = None, *, like: Tensor | None = None) -> Trace:
    """The model run forward for ``num`` placeholder images: every latent site drawn from the model
    itself, so from its prior. The placeholder is observed at the image site but never read, since
    no site comes after the images.

    :param like: a tensor giving device and dtype (default: the model's).
    """
    device, dtype = (like.device, like.dtype) if like is not None else (_device_dtype(model))
    placeholder = torch.zeros(num, model.x_dim, device=device, dtype=dtype)
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(model.model).get_trace(placeholder, *label_args(model, y))
    return prune_subsample_sites(trace)
