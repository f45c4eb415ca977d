"""Transforms of grey-level images: binarization (dynamic, static, fixed for evaluation),
uniform dequantization, and the labelled few of a semi-supervised run."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["BINARIZATIONS", "EVAL_BINARIZATION_SEED", "binarize", "dequantize", "fixed_eval_set", "labelled_subset"]

Binarization = Literal["dynamic", "static", "none"]
BINARIZATIONS: tuple[str, ...] = ("dynamic", "static", "none")
# Evaluation sets are binarized once with this seed, whatever the run's seed, so that numbers from
# different runs are measured on the very same binary images.
EVAL_BINARIZATION_SEED = 0


def binarize(x: Tensor, seed: int) -> Tensor:
    """One Bernoulli draw of every pixel: x_bin ~ Bernoulli(x), reproducible from ``seed``.

    :param x: grey levels in [0, 1], any shape.
    :returns: 0/1 float tensor of the same shape and device.

    >>> x = torch.full((2, 3), 0.5)
    >>> torch.equal(binarize(x, seed=7), binarize(x, seed=7))
    True
    >>> binarize(torch.tensor([0.0, 1.0]), seed=0)
    tensor([0., 1.])
    """
    gen = torch.Generator(device=x.device).manual_seed(seed)
    return torch.bernoulli(x, generator=gen)


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization of 8-bit grey levels: y = (255 x + u) / 256 with u ~ U(0, 1) per pixel.

    A density on [0, 1] fitted to the 256 levels k / 255 themselves can grow without bound on them;
    spread over their bins [k / 256, (k + 1) / 256), the levels have a density whose log-likelihood
    minus D log 256 is a lower bound on the 8-bit data's log-probability (Theis, van den Oord &
    Bethge 2016, "A note on the evaluation of generative models"). Each y lies strictly inside
    (0, 1), as densities such as the Beta need.

    :param x: grey levels k / 255 in [0, 1], any shape.
    :param generator: the source of u (on ``x``'s device); the global one when not given.
    :returns: float tensor of ``x``'s shape, dtype and device.

    >>> y = dequantize(torch.tensor([0.0, 1.0]), torch.Generator().manual_seed(0))
    >>> bool(((y > 0) & (y < 1)).all()), bool(y[0] < 1 / 256), bool(y[1] >= 255 / 256)
    (True, True, True)
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    levels = (x * 255).round_()  # k exactly: x holds k / 255 up to float rounding
    # (k + u) / 256 rounds to exactly 0 or 1 in float32 when u is within 2^-24 of either end;
    # the clamp keeps every value inside (0, 1) and moves almost no probability.
    return ((levels + u) / 256).clamp_(2.0**-32, 1 - 2.0**-24)


def fixed_eval_set(x: Tensor, binarization: str, dequantized: bool = False) -> Tensor:
    """The evaluation version of a split, the same for every run: binarized once with a fixed seed
    unless ``binarization`` is ``none``; with ``dequantized``, one fixed draw of :func:`dequantize`."""
    if dequantized:
        gen = torch.Generator(device=x.device).manual_seed(EVAL_BINARIZATION_SEED)
        return dequantize(x, gen)
    return x if binarization == "none" else binarize(x, EVAL_BINARIZATION_SEED)


def labelled_subset(labels: Tensor, num_labelled: int, seed: int, num_classes: int = 10) -> Tensor:
    """Indices of ``num_labelled`` images, the same number of each class, drawn with ``seed``.

    The semi-supervised setting of Kingma et al. (2014): of the training images, a class-balanced
    few keep their label and the rest are used unlabelled.

    :param labels: classes of the training images ``(N,)``.
    :returns: sorted indices ``(num_labelled,)`` on the labels' device.
    :raises ValueError: when ``num_labelled`` is not a multiple of ``num_classes``, exceeds the
        training set, or asks more of one class than it has.
    """
    n = labels.shape[0]
    if num_labelled % num_classes or num_labelled < num_classes:
        raise ValueError(f"labels={num_labelled}: the labelled images are drawn class-balanced, so expected a "
                         f"positive multiple of the {num_classes} classes")
    if num_labelled >= n:
        raise ValueError(f"labels={num_labelled} leaves no unlabelled image among the {n} training images; "
                         f"use fewer labels or a larger training set (train_size=N)")
    per_class = num_labelled // num_classes
    gen = torch.Generator().manual_seed(seed)
    cpu = labels.cpu()
    chosen = []
    for c in range(num_classes):
        members = (cpu == c).nonzero().squeeze(-1)
        if len(members) < per_class:
            raise ValueError(f"labels={num_labelled} asks {per_class} images of class {c}, but the training set "
                             f"has {len(members)}; use fewer labels or a larger training set (train_size=N)")
        chosen.append(members[torch.randperm(len(members), generator=gen)[:per_class]])
    return torch.cat(chosen).sort().values.to(labels.device)
