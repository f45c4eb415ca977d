"""The names of pvae's parts: ``prior='mog:10'``, ``likelihood='gaussian:learned'``, ``guide='flow:4'``,
and the spelling of a model of your own, ``package.module:ClassName`` (the model families' table is
:data:`pvae.models.families.FAMILIES`, which builds models from these parts).

A spelling is ``name`` or ``name:argument``; each entry says what its argument means and its
default. An unknown name is refused with the list of known ones and the nearest match. This module
knows names and their parts only: it imports no configuration.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from pvae.errors import ConfigError
from pvae.parts.guides import DiagonalPosterior, FlowPosterior, FullCovariancePosterior
from pvae.parts.likelihoods import Bernoulli, Beta, ContinuousBernoulli, DiscretizedLogistic, Gaussian, Laplace
from pvae.parts.priors import (
    DiagonalNormal,
    FlowPrior,
    MixtureOfGaussians,
    StandardNormal,
    StudentT,
    VampPrior,
)
from pvae.parts.priors import (
    Laplace as LaplacePrior,
)

__all__ = [
    "PRIORS",
    "LIKELIHOODS",
    "GUIDES",
    "Entry",
    "Context",
    "check_spec",
    "is_import_path",
    "known",
    "needs_binary",
]


@dataclass(frozen=True)
class Context:
    """What a component may need besides its own argument: the model's sizes, the guide (for a
    VampPrior) and training images (to start data-dependent parameters from)."""

    z_dim: int
    x_dim: int | None = None
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    posterior: Any = None  # x -> q(z|x) over the prior's z (a VampPrior mixes it at pseudo-inputs)
    init_data: Tensor | None = None


@dataclass(frozen=True)
class Entry:
    """A registered component.

    :param usage: how to spell it, e.g. ``mog[:K]``.
    :param summary: one line, with the default.
    :param parse: the text after the colon (``None`` when absent) -> the argument; raises
        ``ValueError`` with the expected form.
    :param build: ``(argument, context) -> component``.
    """

    usage: str
    summary: str
    parse: Callable[[str | None], Any]
    build: Callable[[Any, Context], Any]


def _no_argument(arg: str | None) -> None:
    if arg is not None:
        raise ValueError(f"takes no argument, got {arg!r}")


def _count(default: int, what: str) -> Callable[[str | None], int]:
    def parse(arg: str | None) -> int:
        if arg is None:
            return default
        try:
            value = int(arg)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"expected a positive integer {what} after the colon, got {arg!r}")
        return value

    return parse


def _positive(default: float, what: str) -> Callable[[str | None], float]:
    def parse(arg: str | None) -> float:
        if arg is None:
            return default
        try:
            value = float(arg)
        except ValueError:
            value = 0.0
        if not value > 0:
            raise ValueError(f"expected a positive number {what} after the colon, got {arg!r}")
        return value

    return parse


def _scale_or_learned(default: float) -> Callable[[str | None], float | None]:
    number = _positive(default, "(the fixed scale) or 'learned'")

    def parse(arg: str | None) -> float | None:
        return None if arg == "learned" else number(arg)

    return parse


def _pseudo_inputs(num: int, ctx: Context) -> Tensor:
    """K random training images when some are given, else uniform noise in [0, 1]^x_dim."""
    if ctx.init_data is not None:
        rows = torch.randint(ctx.init_data.shape[0], (num,), device=ctx.init_data.device)
        return ctx.init_data[rows].detach().clone()
    if ctx.x_dim is None:
        raise ValueError("the vamp prior needs x_dim (its pseudo-inputs are images)")
    return torch.rand(num, ctx.x_dim)


def _vamp(num: int, ctx: Context) -> VampPrior:
    if ctx.posterior is None:
        raise ValueError("the vamp prior needs the guide's posterior family (build_vae hands it over)")
    return VampPrior(ctx.z_dim, ctx.posterior, _pseudo_inputs(num, ctx))


#: The priors by name (``--prior NAME[:ARG]``): name -> :class:`Entry`.
PRIORS: dict[str, Entry] = {
    "normal": Entry("normal", "N(0, I)", _no_argument, lambda a, c: StandardNormal(c.z_dim)),
    "diagonal": Entry("diagonal", "N(mu, diag(sigma^2)), mu and sigma learned", _no_argument,
                      lambda a, c: DiagonalNormal(c.z_dim)),
    "mog": Entry("mog[:K]", "mixture of K learned diagonal Gaussians (K=10)", _count(10, "K"),
                 lambda k, c: MixtureOfGaussians(c.z_dim, k)),
    "vamp": Entry("vamp[:K]", "VampPrior: mixture of q(z|u_k) over K learned pseudo-inputs (K=500)",
                  _count(500, "K"), _vamp),
    "laplace": Entry("laplace", "independent Laplace(0, 1)", _no_argument, lambda a, c: LaplacePrior(c.z_dim)),
    "student-t": Entry("student-t[:DF]", "independent Student-t(DF), heavy tails (DF=3)",
                       _positive(3.0, "DF"), lambda df, c: StudentT(c.z_dim, df)),
    "flow": Entry("flow[:L]", "N(0, I) through L masked autoregressive flow layers (L=4)", _count(4, "L"),
                  lambda n, c: FlowPrior(c.z_dim, n)),
}
#: The likelihoods by name (``--likelihood NAME[:ARG]``): name -> :class:`Entry`.
LIKELIHOODS: dict[str, Entry] = {
    "bernoulli": Entry("bernoulli", "binary pixels (needs --binarization dynamic or static)", _no_argument,
                       lambda a, c: Bernoulli()),
    "continuous-bernoulli": Entry("continuous-bernoulli", "grey levels in [0, 1], normalized", _no_argument,
                                  lambda a, c: ContinuousBernoulli()),
    "gaussian": Entry("gaussian[:SCALE|learned]", "N(mu, SCALE^2) (SCALE=0.1), or a learned scale per pixel",
                      _scale_or_learned(0.1), lambda s, c: Gaussian(s)),
    "laplace": Entry("laplace[:SCALE|learned]", "Laplace(mu, SCALE) (SCALE=0.1), or a learned scale per pixel",
                     _scale_or_learned(0.1), lambda s, c: Laplace(s)),
    "beta": Entry("beta", "Beta(alpha, beta), values strictly inside (0, 1) (needs --binarization none --dequantize)", _no_argument, lambda a, c: Beta()),
    "discretized-logistic": Entry("discretized-logistic", "probabilities of the 256 grey levels k/255",
                                  _no_argument, lambda a, c: DiscretizedLogistic()),
}


def _guide_sizes(c: Context) -> tuple[int, int, tuple[int, ...], str]:
    if c.x_dim is None:
        raise ValueError("a posterior family needs x_dim")
    return c.x_dim, c.z_dim, c.hidden, c.activation


#: The posterior families by name (``--guide NAME[:ARG]``): name -> :class:`Entry`.
GUIDES: dict[str, Entry] = {
    "diagonal": Entry("diagonal", "diagonal Gaussian q(z|x)", _no_argument,
                      lambda a, c: DiagonalPosterior(*_guide_sizes(c))),
    "full-cov": Entry("full-cov", "full-covariance Gaussian q(z|x) (learned Cholesky factor)", _no_argument,
                      lambda a, c: FullCovariancePosterior(*_guide_sizes(c))),
    "flow": Entry("flow[:L]", "diagonal Gaussian refined by L inverse autoregressive flow steps (L=4)",
                  _count(4, "L"), lambda n, c: FlowPosterior(*_guide_sizes(c), num_flows=n)),
}

_REGISTRIES: dict[str, dict[str, Entry]] = {"prior": PRIORS, "likelihood": LIKELIHOODS, "guide": GUIDES}


def known(kind: str) -> str:
    """The spellings of one kind (``prior``, ``likelihood`` or ``guide``), one per line, with summaries."""
    return "\n".join(f"  {e.usage:<26} {e.summary}" for e in _REGISTRIES[kind].values())


def check_spec(kind: str, spec: str) -> tuple[Entry, Any]:
    """Validate a spelling such as ``mog:10``.

    :param kind: ``prior``, ``likelihood`` or ``guide``.
    :returns: the registry entry and the parsed argument.
    :raises ConfigError: for an unknown name (listing the known ones and the nearest) or a bad argument.
    """
    registry = _REGISTRIES[kind]
    name, colon, arg = spec.partition(":")
    if name not in registry:
        near = difflib.get_close_matches(name, registry, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        usages = ", ".join(e.usage for e in registry.values())
        raise ConfigError(f"unknown {kind} {spec!r}{hint} Known {kind}s: {usages} (pvae.parts.registry.known({kind!r}) describes each)")
    entry = registry[name]
    try:
        return entry, entry.parse(arg if colon else None)
    except ValueError as err:
        raise ConfigError(f"{kind} {spec!r} (spelled {entry.usage}): {err}") from err


# package.module:ClassName, each part a Python identifier
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")


def is_import_path(spec: str) -> bool:
    """Whether ``spec`` names a class of your own, ``package.module:ClassName``."""
    return bool(_IMPORT_PATH.match(spec))


def needs_binary(likelihood: str) -> bool:
    """Whether the likelihood spelled ``likelihood`` is for binary pixels only."""
    entry, arg = check_spec("likelihood", likelihood)
    return bool(entry.build(arg, Context(z_dim=1)).needs_binary)
