"""The run configuration: one frozen dataclass, saved as ``config.json`` beside every checkpoint.

Every field is a command-line flag of ``pvae train`` (``z_dim`` -> ``--z-dim``); ``__post_init__``
only validates.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import json
from dataclasses import dataclass
from typing import Any

from pvae.data import BINARIZATIONS, DATASETS
from pvae.networks import ACTIVATIONS

__all__ = ["TrainConfig", "OBJECTIVES", "LR_SCHEDULES", "ConfigError", "iwae_particles"]

OBJECTIVES: tuple[str, ...] = ("trace", "meanfield", "iwae:K")
ENGINES: tuple[str, ...] = ("auto", "jit", "eager")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "exponential")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A configuration value is out of range or unknown."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    :param dataset: ``mnist``, ``fashion-mnist`` or ``kmnist``.
    :param data_dir: where the dataset lives (else ``$PVAE_DATA_DIR``, else the cache directory).
    :param binarization: ``dynamic`` (a fresh Bernoulli draw each epoch), ``static`` (one draw with
        ``seed``) or ``none`` (grey levels).
    :param val_size: training images held out for validation (the last ones of the training file).
    :param train_size: train on the first ``train_size`` remaining images; ``None``: all of them.
    :param z_dim: m, the latent dimension.
    :param hidden: hidden layer widths of the encoder (the decoder mirrors them).
    :param activation: hidden-layer nonlinearity.
    :param prior: p(z) as name[:argument]: normal, diagonal, mog[:K], vamp[:K], laplace, student-t[:DF]
        or flow[:L] (:data:`pvae.components.PRIORS` says what each is).
    :param likelihood: p(x|z): bernoulli, continuous-bernoulli, gaussian[:SCALE|learned],
        laplace[:SCALE|learned], beta or discretized-logistic (:data:`pvae.components.LIKELIHOODS`).
    :param guide: the posterior family q(z|x): diagonal, full-cov or flow[:L] (:data:`pvae.components.GUIDES`).
    :param engine: how each step computes the objective: ``jit`` records Pyro's computation once per
        minibatch shape and replays it (the same numbers without Pyro's per-step Python; see
        :mod:`pvae.compiled`), ``eager`` runs Pyro's ELBO at every step, ``auto`` is ``jit`` for the
        models pvae builds and ``eager`` for a model of your own (``train(vae=...)``), whose Python a
        trace may not follow.
    :param objective: ``trace`` (Pyro's ``Trace_ELBO``, Monte-Carlo KL), ``meanfield``
        (``TraceMeanField_ELBO``, analytic KL) or ``iwae:K`` (the importance-weighted bound with K >= 2
        samples per image, Burda et al. 2016; :class:`pvae.iwae.IWAE_ELBO`).
    :param num_particles: Monte-Carlo samples of z per image in the training objective.
    :param batch_size: B, images per SVI step; :param epochs: passes over the training set.
    :param lr: Adam's learning rate; :param lr_schedule: ``constant``, ``cosine`` (to lr/100 at the
        last epoch) or ``exponential`` (times ``lr_decay`` each epoch).
    :param seed: seeds the model's initialization, the sampling of z and the data order.
    :param device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    :param out: the run folder; ``None``: ``runs/<date-time>``.

    >>> TrainConfig(z_dim=2, epochs=5).z_dim
    2
    >>> TrainConfig(z_dim=0)
    Traceback (most recent call last):
    ...
    pvae.config.ConfigError: z_dim must be an integer >= 1, got 0
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    binarization: str = "dynamic"
    val_size: int = 10_000
    train_size: int | None = None
    z_dim: int = 50
    hidden: tuple[int, ...] = (200, 200)
    activation: str = "tanh"
    prior: str = "normal"
    likelihood: str = "bernoulli"
    guide: str = "diagonal"
    objective: str = "trace"
    engine: str = "auto"
    num_particles: int = 1
    batch_size: int = 100
    epochs: int = 10
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    lr_decay: float = 0.95
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        _choice("dataset", self.dataset, tuple(DATASETS))
        _choice("binarization", self.binarization, BINARIZATIONS)
        _choice("activation", self.activation, tuple(ACTIVATIONS))
        iwae_particles(self.objective)
        _choice("engine", self.engine, ENGINES)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("device", self.device, DEVICES)
        from pvae.components import LIKELIHOODS, build_likelihood, check_spec

        for kind in ("prior", "likelihood", "guide"):
            check_spec(kind, getattr(self, kind))
        _at_least("z_dim", self.z_dim, 1)
        _at_least("num_particles", self.num_particles, 1)
        if iwae_particles(self.objective) is not None and self.num_particles != 1:
            raise ConfigError(
                f"objective {self.objective} already draws its K samples per image; "
                f"leave num_particles at 1, got {self.num_particles}"
            )
        _at_least("batch_size", self.batch_size, 1)
        _at_least("epochs", self.epochs, 1)
        _at_least("val_size", self.val_size, 0)
        if self.train_size is not None:
            _at_least("train_size", self.train_size, 1)
        if not self.hidden or any(not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ConfigError(f"hidden must be one or more positive layer widths, e.g. 200 200; got {self.hidden}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive learning rate, e.g. 1e-3; got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], e.g. 0.95; got {self.lr_decay}")
        if self.binarization == "none" and build_likelihood(self.likelihood).needs_binary:
            grey = [e.usage for name, e in LIKELIHOODS.items() if not build_likelihood(name).needs_binary]
            raise ConfigError(
                f"the {self.likelihood} likelihood needs binary pixels, but binarization is 'none'; "
                f"use --binarization dynamic or static, or a likelihood for grey levels: {', '.join(grey)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``hidden`` as a list)."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean another program or version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        d = dict(d)
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def iwae_particles(objective: str) -> int | None:
    """K of an ``iwae:K`` objective, checked to be an integer >= 2; ``None`` for the other objectives.

    :raises ConfigError: for an unknown objective or a malformed ``iwae:K``.
    """
    name, _, arg = objective.partition(":")
    if name != "iwae":
        _choice("objective", objective, OBJECTIVES)
        return None
    if not arg.isdecimal() or int(arg) < 2:
        raise ConfigError(
            f"objective iwae:K needs K, an integer >= 2 importance samples per image, e.g. iwae:5; got {objective!r}"
        )
    return int(arg)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        near = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown {name} {value!r}{hint}; expected one of: {', '.join(allowed)}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
