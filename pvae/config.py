"""The run configuration: one frozen dataclass, saved as ``config.json`` beside every checkpoint.

Every field is a command-line flag of ``pvae train`` (``z_dim`` -> ``--z-dim``); ``__post_init__``
only validates each field's form. Whether the names (``--prior``, ``--model``, ...) are known and
fit together is checked by :func:`pvae.components.check_config`, which :func:`pvae.train` calls
before it writes anything: this module imports no registry.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import json
from dataclasses import dataclass
from typing import Any

from pvae.data import BINARIZATIONS, DATASETS
from pvae.errors import ConfigError
from pvae.networks import ACTIVATIONS

__all__ = ["TrainConfig", "OBJECTIVES", "LR_SCHEDULES", "ConfigError", "iwae_particles", "model_arguments"]

OBJECTIVES: tuple[str, ...] = ("trace", "meanfield", "iwae:K")
ENGINES: tuple[str, ...] = ("auto", "jit", "eager")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "exponential")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    :param dataset: ``mnist``, ``fashion-mnist`` or ``kmnist``.
    :param data_dir: where the dataset lives (else ``$PVAE_DATA_DIR``, else the cache directory).
    :param binarization: ``dynamic`` (a fresh Bernoulli draw each epoch), ``static`` (one draw with
        ``seed``) or ``none`` (grey levels).
    :param val_size: training images held out for validation (the last ones of the training file).
    :param train_size: train on the first ``train_size`` remaining images; ``None``: all of them.
    :param model: the graphical model: ``vae`` (z -> x), ``hierarchical`` (z2 -> z1 -> x),
        ``conditional`` (p(z) p(x | z, y), y observed), ``m2`` (semi-supervised, Kingma et al. 2014),
        or a class of your own as ``package.module:ClassName`` (see :mod:`pvae.protocol`).
    :param model_args: for a class of your own, its constructor arguments as a JSON object, e.g.
        ``{"z_dim": 8}``; pvae adds ``x_dim`` and ``num_data``.
    :param z_dim: m, the latent dimension of the prior's variable (for ``hierarchical``, the top
        layer z2).
    :param z1_dim: units of z1, the layer next to x, in the ``hierarchical`` model.
    :param hidden: hidden layer widths of the encoder (the decoder mirrors them).
    :param top_hidden: widths of the networks between z1 and z2 in the ``hierarchical`` model.
    :param labels: for ``m2``: how many training images keep their label, drawn class-balanced.
    :param label_seed: seeds which images keep their label (``m2``), independently of ``seed``.
    :param aux_weight: for ``m2``: alpha / N, the weight of the classification term log q(y|x) on
        labelled images (Kingma et al. 2014, eq. 9, use alpha = 0.1 N).
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
    pvae.errors.ConfigError: z_dim must be an integer >= 1, got 0
    """

    dataset: str = "mnist"
    data_dir: str | None = None
    binarization: str = "dynamic"
    val_size: int = 10_000
    train_size: int | None = None
    model: str = "vae"
    model_args: str = "{}"
    z_dim: int = 50
    z1_dim: int = 100
    hidden: tuple[int, ...] = (200, 200)
    top_hidden: tuple[int, ...] = (100, 100)
    labels: int | None = None
    label_seed: int = 0
    aux_weight: float = 0.1
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
        for kind in ("model", "prior", "likelihood", "guide"):
            if not isinstance(getattr(self, kind), str) or not getattr(self, kind):
                raise ConfigError(f"{kind} must be a name such as {TrainConfig.__dataclass_fields__[kind].default!r}, "
                                  f"got {getattr(self, kind)!r}")
        model_arguments(self.model_args)
        _at_least("z_dim", self.z_dim, 1)
        _at_least("z1_dim", self.z1_dim, 1)
        if self.labels is not None:
            _at_least("labels", self.labels, 1)
        if not (self.aux_weight >= 0 and math.isfinite(self.aux_weight)):
            raise ConfigError(f"aux_weight must be a number >= 0, e.g. 0.1; got {self.aux_weight}")
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
        for name in ("hidden", "top_hidden"):
            widths = getattr(self, name)
            if not widths or any(not isinstance(h, int) or h < 1 for h in widths):
                raise ConfigError(f"{name} must be one or more positive layer widths, e.g. 200 200; got {widths}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive learning rate, e.g. 1e-3; got {self.lr}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay must be in (0, 1], e.g. 0.95; got {self.lr_decay}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``hidden`` as a list)."""
        d = dataclasses.asdict(self)
        d["hidden"], d["top_hidden"] = list(self.hidden), list(self.top_hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean another program or version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        d = dict(d)
        for name in ("hidden", "top_hidden"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def model_arguments(text: str) -> dict[str, Any]:
    """The constructor arguments ``model_args`` spells, a JSON object such as ``{"z_dim": 8}``.

    :raises ConfigError: when the text is not a JSON object with string keys.
    """
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as err:
        raise ConfigError(f"model_args must be a JSON object such as '{{\"z_dim\": 8}}', got {text!r} ({err})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"model_args must be a JSON object such as '{{\"z_dim\": 8}}', got {text!r}")
    return value


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
