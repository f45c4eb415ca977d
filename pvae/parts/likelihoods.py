"""Likelihoods p(x|z): decoder output -> a distribution over the whole (flattened) image.

A likelihood is any object with

* ``params_per_pixel: int`` -- how many numbers the decoder emits per pixel (the decoder's output
  width is ``params_per_pixel * x_dim``; with two, the first ``x_dim`` outputs are the first
  parameter of every pixel and the next ``x_dim`` the second);
* ``needs_binary: bool`` -- whether the data must be binarized (``--binarization`` not ``none``),
  so that a configuration can be refused before any data is loaded;
* ``__call__(output) -> distribution`` with ``event_shape == (x_dim,)``;
* ``check_support(x)`` -- raise ``ValueError`` naming a fitting likelihood when ``x`` is outside the
  distribution's support, so a mismatch is caught before training and not as NaNs later;
* ``initial_bias(mean_image) -> Tensor`` -- a starting value for the decoder's output bias
  (``params_per_pixel * x_dim``,), so the untrained decoder already predicts the average image.

:class:`Likelihood` is a ``Protocol``: nothing needs to be subclassed.

Images are grey levels in [0, 1] (8-bit values k / 255), or 0/1 after binarization. Densities on
[0, 1] or the real line (continuous Bernoulli, Gaussian, Laplace, Beta) give log-*densities*, which
are not comparable to the log-probabilities of discrete likelihoods (Bernoulli, discretized
logistic); only the latter measure how well 8-bit or binary images are predicted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import broadcast_all
from torch.nn import functional as F

from pvae.parts.networks import inverse_softplus

__all__ = [
    "Likelihood",
    "Bernoulli",
    "BernoulliPixels",
    "ContinuousBernoulli",
    "Gaussian",
    "Laplace",
    "Beta",
    "DiscretizedLogistic",
    "DiscretizedLogisticDistribution",
    "GreyLevels",
]

_GREY_LEVEL_CHOICES = "continuous-bernoulli, discretized-logistic, gaussian or laplace"


@runtime_checkable
class Likelihood(Protocol):
    """What :class:`pvae.VAE <pvae.models.vae.VAE>` needs from a likelihood p(x|z)."""

    params_per_pixel: int
    needs_binary: bool

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: decoder output, shape ``(..., params_per_pixel * x_dim)``.
        :returns: p(x|z) with ``event_shape == (x_dim,)``."""
        ...

    def check_support(self, x: Tensor) -> None:
        """Raise ``ValueError`` when data ``x`` of shape ``(N, x_dim)`` lies outside the support."""
        ...

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """:param mean_image: the training images' mean, shape ``(x_dim,)``.
        :returns: decoder output bias, shape ``(params_per_pixel * x_dim,)``."""
        ...


def _logit(p: Tensor) -> Tensor:
    return torch.log(p) - torch.log1p(-p)


def _solve_increasing(f: Callable[[Tensor], Tensor], target: Tensor, lo: float, hi: float, steps: int = 50) -> Tensor:
    """Elementwise bisection: the a in [lo, hi] with f(a) = target, for f increasing in a."""
    low, high = torch.full_like(target, lo), torch.full_like(target, hi)
    for _ in range(steps):
        mid = (low + high) / 2
        below = f(mid) < target
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    return (low + high) / 2


def _check_finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"the {name} likelihood needs finite pixel values, but the data holds NaN or inf")


def _check_unit_interval(x: Tensor, name: str) -> None:
    _check_finite(x, name)
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise ValueError(
            f"the {name} likelihood needs pixel values in [0, 1], got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]; rescale the data or use gaussian or laplace"
        )


class Bernoulli:
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)), for binarized images.

    The decoder emits logits; the output bias starts at logit(mean training image), as in
    Burda, Grosse & Salakhutdinov (2016), "Importance Weighted Autoencoders".
    """

    params_per_pixel = 1
    needs_binary = True

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: logits, shape ``(..., x_dim)``.
        :returns: independent Bernoullis, ``event_shape == (x_dim,)``."""
        return BernoulliPixels(dist.Bernoulli(logits=output), 1)

    def check_support(self, x: Tensor) -> None:
        """Refuse grey levels: a Bernoulli puts probability on 0 and 1 only."""
        if not bool(((x == 0) | (x == 1)).all()):
            raise ValueError(
                "the Bernoulli likelihood needs binary pixels (0 or 1), but the data has grey levels; "
                f"binarize it (binarization='dynamic' or binarization='static') or choose a likelihood for grey levels: "
                f"{_GREY_LEVEL_CHOICES}"
            )

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """logit of the mean image, clamped so that always-black pixels get a finite bias."""
        return _logit(mean_image.clamp(1e-3, 1 - 1e-3))

    def __repr__(self) -> str:
        return "Bernoulli()"


class BernoulliPixels(dist.Independent):
    """Independent Bernoulli pixels, ``Bernoulli(logits=l).to_event(1)``, with a cheaper ``log_prob``.

    The log-probability of an image is ``-sum_d BCE(l_d, x_d)``. Pyro's (torch's) Bernoulli negates
    every pixel's term before ``to_event`` sums them; summing first negates one number per image.
    That is one pass fewer over the ``(..., x_dim)`` tensor forward and one backward: in every
    training step, and K times over in importance sampling. The values are the same bits.
    """

    def log_prob(self, value: Tensor) -> Tensor:
        """:param value: binary images ``(..., x_dim)``.
        :returns: ``(...)``, summed over pixels."""
        if self.reinterpreted_batch_ndims != 1:  # the shortcut sums over the last dimension only
            return super().log_prob(value)
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        if logits.shape != value.shape:
            logits, value = broadcast_all(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class ContinuousBernoulli:
    """p(x|z) = prod_d CB(x_d; lambda_d), a normalized density on grey levels x in [0, 1].

    Loaiza-Ganem & Cunningham (2019), "The continuous Bernoulli: fixing a pervasive error in
    variational autoencoders": ``C(lambda) lambda^x (1 - lambda)^(1 - x)`` with its normalizing
    constant C (Pyro's ``ContinuousBernoulli``), unlike the unnormalized "Bernoulli on grey levels".
    The decoder emits logit(lambda).
    """

    params_per_pixel = 1
    needs_binary = False

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: logits of lambda, ``(..., x_dim)``.
        :returns: ``event_shape == (x_dim,)``."""
        return dist.ContinuousBernoulli(logits=output).to_event(1)

    def check_support(self, x: Tensor) -> None:
        """Refuse values outside [0, 1]."""
        _check_unit_interval(x, "continuous Bernoulli")

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """The logits whose CB mean is the mean image (the per-pixel maximum-likelihood fit, since the
        CB is an exponential family in x), found by bisection and limited to [-10, 10]: a pixel that is
        always black would otherwise need logit -infinity."""
        return _solve_increasing(lambda a: torch.distributions.ContinuousBernoulli(logits=a).mean, mean_image, -10.0, 10.0)

    def __repr__(self) -> str:
        return "ContinuousBernoulli()"


class _LocationScale:
    """Shared body of :class:`Gaussian` and :class:`Laplace`: a location per pixel from the decoder
    and a scale that is either fixed or a second decoder output per pixel."""

    _family: type[dist.TorchDistribution]
    _name: str
    _std_of_unit_scale: float  # standard deviation of the family at scale 1
    needs_binary = False

    def __init__(self, scale: float | None = 0.1, *, min_scale: float = 1e-3) -> None:
        if scale is not None and not scale > 0:
            raise ValueError(f"the {self._name} likelihood's scale must be positive or None (learned), got {scale}")
        if not min_scale > 0:
            raise ValueError(f"min_scale must be positive, got {min_scale}")
        self.scale, self.min_scale = scale, min_scale
        self.params_per_pixel = 1 if scale is not None else 2

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: locations ``(..., x_dim)``, or locations then raw scales ``(..., 2 * x_dim)``
            when the scale is learned.
        :returns: ``event_shape == (x_dim,)``."""
        if self.scale is not None:
            return self._family(output, output.new_tensor(self.scale)).to_event(1)
        loc, raw_scale = output.chunk(2, dim=-1)
        # The floor bounds the density: grey levels are discrete, so a free scale could shrink to 0
        # on pixels that never change and drive log p(x|z) to infinity.
        return self._family(loc, F.softplus(raw_scale) + self.min_scale).to_event(1)

    def check_support(self, x: Tensor) -> None:
        """Any finite value is in the support of a density on the real line."""
        _check_finite(x, self._name)

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """Location: the mean image. Learned scale: sqrt(m (1 - m)), the largest standard deviation a
        pixel in [0, 1] with mean m can have, kept in [0.05, 0.5]."""
        if self.scale is not None:
            return mean_image.clone()
        std = (mean_image * (1 - mean_image)).sqrt().clamp(0.05, 0.5)
        return torch.cat([mean_image, inverse_softplus(std / self._std_of_unit_scale - self.min_scale)])

    def __repr__(self) -> str:
        scale = "learned" if self.scale is None else self.scale
        return f"{type(self).__name__}(scale={scale})"


class Gaussian(_LocationScale):
    """p(x|z) = prod_d N(x_d; mu_d, sigma^2), sigma fixed, or sigma_d from the decoder.

    :param scale: the fixed sigma, or ``None`` to learn a sigma per pixel (two outputs per pixel).
    :param min_scale: floor of a learned sigma.
    """

    _family = dist.Normal
    _name = "Gaussian"
    _std_of_unit_scale = 1.0


class Laplace(_LocationScale):
    """p(x|z) = prod_d Laplace(x_d; mu_d, b), b fixed, or b_d from the decoder (an L1 reconstruction
    error with its normalizing constant).

    :param scale: the fixed b, or ``None`` to learn a b per pixel (two outputs per pixel).
    :param min_scale: floor of a learned b.
    """

    _family = dist.Laplace
    _name = "Laplace"
    _std_of_unit_scale = 2.0**0.5


class Beta:
    """p(x|z) = prod_d Beta(x_d; alpha_d, beta_d), for values strictly inside (0, 1).

    The decoder emits softplus^-1(alpha) then softplus^-1(beta). The density is infinite or zero at
    exactly 0 and 1, so 8-bit images must first be moved off the ends: ``pvae train --binarization
    none --dequantize`` trains on (255 x + u) / 256, u ~ U(0, 1) (:func:`pvae.data.transforms.dequantize`).
    """

    params_per_pixel = 2
    needs_binary = False

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: ``(..., 2 * x_dim)``.
        :returns: ``event_shape == (x_dim,)``."""
        raw_alpha, raw_beta = output.chunk(2, dim=-1)
        return dist.Beta(F.softplus(raw_alpha) + 1e-4, F.softplus(raw_beta) + 1e-4).to_event(1)

    def check_support(self, x: Tensor) -> None:
        """Refuse exact 0s and 1s (and anything outside (0, 1))."""
        _check_finite(x, "Beta")
        outside = int(((x <= 0) | (x >= 1)).sum())
        if outside:
            raise ValueError(
                f"the Beta likelihood needs values strictly inside (0, 1), but {outside} pixel values are "
                "0, 1 or outside; dequantize the 8-bit levels (binarization='none' with dequantize=True), or use "
                "continuous-bernoulli or discretized-logistic, which allow exact 0 and 1"
            )

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """alpha = 2 m, beta = 2 (1 - m): mean m, and the flat Beta(1, 1) where m = 1/2."""
        m = mean_image.clamp(1e-3, 1 - 1e-3)
        return torch.cat([inverse_softplus(2 * m), inverse_softplus(2 * (1 - m))])

    def __repr__(self) -> str:
        return "Beta()"


class GreyLevels(constraints.Constraint):
    """The grid k / (num_levels - 1), k = 0, ..., num_levels - 1: a discrete support inside [0, 1].

    Discrete (``is_discrete``), so that consumers reading a site's support know its log-probabilities
    are probabilities of the levels, e.g. to report bits per dimension.
    """

    is_discrete = True
    event_dim = 0

    def __init__(self, num_levels: int) -> None:
        self.num_levels = num_levels
        super().__init__()

    def check(self, value: Tensor) -> Tensor:
        k = value * (self.num_levels - 1)
        # x = k / 255 in float32 is k up to rounding: a level is within 1e-3 of an integer k
        return (value >= 0) & (value <= 1) & ((k - k.round()).abs() < 1e-3)


class DiscretizedLogisticDistribution(dist.TorchDistribution):
    """A logistic density integrated over the bins of ``num_levels`` grey levels k / (num_levels - 1).

    Salimans, Karpathy, Chen & Kingma (2017), "PixelCNN++" (one component): level k gets the
    logistic's mass on ``[k - 1/2, k + 1/2] / (num_levels - 1)``, and the first and last levels also
    the tails, so the probabilities of all levels sum to 1.

    :param loc: mu, any shape, in data units.
    :param scale: s > 0, broadcastable with ``loc``.
    :param num_levels: grey levels, 256 for 8-bit images.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = False

    def __init__(self, loc: Tensor, scale: Tensor, num_levels: int = 256, validate_args: bool | None = None) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.num_levels = num_levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def support(self) -> GreyLevels:
        """The ``num_levels`` grey levels (:class:`GreyLevels`)."""
        return GreyLevels(self.num_levels)

    def expand(self, batch_shape: torch.Size, _instance: DiscretizedLogisticDistribution | None = None) -> DiscretizedLogisticDistribution:  # type: ignore[override]
        new = self._get_checked_instance(DiscretizedLogisticDistribution, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.num_levels = self.num_levels
        super(DiscretizedLogisticDistribution, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: Tensor) -> Tensor:
        """:param value: grey levels k / (num_levels - 1).
        :returns: log P(value), broadcast shape."""
        if self._validate_args:
            self._validate_sample(value)
        half_bin = 0.5 / (self.num_levels - 1)
        upper = (value - self.loc + half_bin) / self.scale
        lower = (value - self.loc - half_bin) / self.scale
        # sigmoid(u) - sigmoid(l) = sigmoid(u) sigmoid(-l) (1 - e^(l - u)), free of cancellation.
        log_bin = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
        return torch.where(value < half_bin, F.logsigmoid(upper),
                           torch.where(value > 1 - half_bin, F.logsigmoid(-lower), log_bin))

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        """Round a logistic draw to the nearest level.

        :returns: ``sample_shape + batch_shape``."""
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
            y = self.loc.expand(shape) + self.scale.expand(shape) * (torch.log(u) - torch.log1p(-u))
            top = self.num_levels - 1
            return (y * top).round().clamp(0, top) / top

    @property
    def mean(self) -> Tensor:
        """E[x] = sum over the inner bin edges e_j of P(x > e_j) / (num_levels - 1)."""
        top = self.num_levels - 1
        edges = (torch.arange(top, dtype=self.loc.dtype, device=self.loc.device) + 0.5) / top
        return torch.sigmoid((self.loc.unsqueeze(-1) - edges) / self.scale.unsqueeze(-1)).sum(-1) / top


class DiscretizedLogistic:
    """p(x|z) = prod_d DiscretizedLogistic(x_d; mu_d, s_d), a probability for 8-bit grey levels.

    Data representation: pixels stay the grey levels k / 255 in [0, 1] that :func:`pvae.load_data <pvae.data.idx.load_data>`
    returns; the distribution puts its mass on exactly those 256 values, so log p(x|z) is a proper
    log-probability of the 8-bit image (and binarized 0/1 images, levels 0 and 255, fit too). Values
    off that grid are refused. The decoder emits mu (in data units) then softplus^-1(s).
    """

    params_per_pixel = 2
    needs_binary = False
    num_levels = 256

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        """:param output: ``(..., 2 * x_dim)``.
        :returns: ``event_shape == (x_dim,)``."""
        loc, raw_scale = output.chunk(2, dim=-1)
        return DiscretizedLogisticDistribution(loc, F.softplus(raw_scale) + 1e-4, self.num_levels).to_event(1)

    def check_support(self, x: Tensor) -> None:
        """Refuse values that are not grey levels k / 255."""
        _check_unit_interval(x, "discretized logistic")
        top = self.num_levels - 1
        off = (x * top - (x * top).round()).abs()
        if bool((off > 1e-3).any()):
            bad = float(x.flatten()[off.flatten().argmax()])
            raise ValueError(
                f"the discretized logistic likelihood expects 8-bit grey levels k/{top}, got {bad:.6g}; "
                "for continuous values use continuous-bernoulli, gaussian or laplace"
            )

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        """s = sqrt(3 m (1 - m)) / pi, a logistic with the largest variance a pixel in [0, 1] with mean m
        can have (at least one grey level wide), and mu, found by bisection in [-1, 2], such that the
        discretized distribution's mean is m (the edge levels' tails pull it towards 1/2 otherwise)."""
        top = self.num_levels - 1
        scale = (3 * mean_image * (1 - mean_image)).sqrt().div(torch.pi).clamp(min=1.0 / top)
        loc = _solve_increasing(lambda a: DiscretizedLogisticDistribution(a, scale, self.num_levels).mean,
                                mean_image, -1.0, 2.0)
        return torch.cat([loc, inverse_softplus(scale - 1e-4)])

    def __repr__(self) -> str:
        return "DiscretizedLogistic()"
