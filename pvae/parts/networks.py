"""The neural networks: an MLP, the Gaussian encoder of q(z|x) and the decoder of p(x|z)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "mlp", "GaussianEncoder", "inverse_softplus"]

#: The activations by name (``TrainConfig.activation``, ``--activation``): name -> ``nn.Module`` class.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def inverse_softplus(y: Tensor) -> Tensor:
    """x such that softplus(x) = y, elementwise, for y > 0: the raw parameter a positive scale starts from."""
    return y + torch.log(-torch.expm1(-y))


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden[0] -> ... -> out_dim``, no activation at the end.

    :param activation: one of :data:`ACTIVATIONS`.
    :returns: a module mapping ``(..., in_dim)`` to ``(..., out_dim)``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """x -> (loc, scale) of the diagonal Gaussian q(z|x).

    :param x_dim: pixels per image.
    :param z_dim: m.
    :param hidden: hidden widths.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.net = mlp(x_dim, hidden, 2 * z_dim, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:param x: ``(batch, x_dim)``.
        :returns: ``loc``, ``scale``, each ``(batch, z_dim)``."""
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        # softplus keeps the scale positive without exp's overflow; the floor keeps log q finite.
        return loc, F.softplus(raw_scale) + 1e-6


def set_output_bias(decoder: nn.Sequential, bias: Tensor) -> None:
    """Set the last layer's bias of ``decoder`` (shape ``(out_dim,)``) without recording gradients."""
    last = decoder[-1]
    assert isinstance(last, nn.Linear)
    if last.bias.shape != bias.shape:
        raise ValueError(f"expected an output bias of shape {tuple(last.bias.shape)}, got {tuple(bias.shape)}")
    with torch.no_grad():
        last.bias.copy_(bias)
