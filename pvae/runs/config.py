"""The run configuration: one frozen dataclass, saved as ``config.json`` beside every checkpoint.

Every field is a command-line flag of ``pvae train`` (``z_dim`` -> ``--z-dim``); ``__post_init__``
only validates each field's form. Whether the names (``--prior``, ``--model``, ...) are known and
fit together is checked by :func:`pvae.runs.build.check_config`, which :func:`pvae.runs.train.train` calls
before it writes anything: this module imports no registry. Its messages name fields as Python
spells them (``labels=100``); the command line shows them as flags (``--labels 100``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from typing import Any

from pvae.data import BINARIZATIONS, DATASETS
from pvae.devices import DEVICES
from pvae.errors import ConfigError
from pvae.models.families import ENGINE_NAMES as ENGINES
from pvae.parts.networks import ACTIVATIONS
from pvae.training.objectives import OBJECTIVES, iwae_particles
from pvae.training.schedules import LR_SCHEDULES

__all__ = ["TrainConfig", "OBJECTIVES", "LR_SCHEDULES", "FIELD_CHOICES", "ConfigError", "iwae_particles",
           "model_arguments"]

# The fields that take one of a fixed set of names (pvae train lists them as argparse choices).
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": tuple(DATASETS),
    "binarization": BINARIZATIONS,
    "activation": tuple(ACTIVATIONS),
    "engine": ENGINES,
    "lr_schedule": LR_SCHEDULES,
    "device": DEVICES,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Each field is a ``pvae train`` flag (``z_dim`` is ``--z-dim``), and its description below is
    that flag's ``--help`` sentence, so it is written for the terminal.

    :param dataset: the images to model.
    :param data_dir: the folder holding the dataset; when not given, $PVAE_DATA_DIR, else the user's
        cache folder (~/.cache/pvae/data), where a missing dataset is downloaded.
    :param binarization: how grey levels become the binary pixels a Bernoulli models: dynamic (a
        fresh Bernoulli draw of every image each epoch), static (one draw with the seed) or none
        (keep the grey levels, for likelihoods of grey levels).
    :param dequantize: with binarization none, train on (255 x + u) / 256 with u ~ U(0, 1) drawn
        afresh each epoch (uniform dequantization of the 8-bit levels, which densities such as beta
        need) and evaluate on one fixed draw.
    :param val_size: training images held out for validation (the last ones of the training file);
        0 trains on all of them.
    :param train_size: train on the first this many of the remaining images; when not given, all of them.
    :param model: the graphical model: vae (z -> x), hierarchical (z2 -> z1 -> x), conditional
        (p(z) p(x | z, y) with the label y observed), m2 (semi-supervised, Kingma et al. 2014), or a
        class of your own as package.module:ClassName (see the model protocol in :mod:`pvae.protocol`).
    :param model_args: for a class of your own, its constructor arguments as a JSON object such as
        '{"z_dim": 8}'; pvae adds x_dim and num_data.
    :param z_dim: m, the dimension of the prior's latent (for hierarchical, of the top layer z2).
    :param z1_dim: units of z1, the layer next to x, in the hierarchical model.
    :param hidden: hidden layer widths of the encoder; the decoder mirrors them.
    :param top_hidden: widths of the networks between z1 and z2 in the hierarchical model.
    :param labels: for m2, how many training images keep their label, drawn class-balanced.
    :param label_seed: for m2, the seed of which images keep their label (independent of the seed).
    :param aux_weight: for m2, alpha / N, the weight of the classification term log q(y|x) on the
        labelled images (Kingma et al. 2014, eq. 9, use alpha = 0.1 N).
    :param activation: the hidden layers' nonlinearity.
    :param prior: p(z), as NAME[:ARG], one of: normal, diagonal, mog[:K], vamp[:K], laplace,
        student-t[:DF], flow[:L] (docs/components.md says what each is).
    :param likelihood: p(x|z), one of: bernoulli, continuous-bernoulli, gaussian[:SCALE|learned],
        laplace[:SCALE|learned], beta, discretized-logistic.
    :param guide: the posterior family q(z|x), one of: diagonal, full-cov, flow[:L].
    :param objective: the training bound, one of: trace (Pyro's Trace_ELBO, Monte Carlo KL),
        meanfield (TraceMeanField_ELBO, analytic KL), iwae:K (the importance-weighted bound with K >= 2
        samples per image, Burda et al. 2016).
    :param engine: how each step computes the objective: jit records Pyro's computation once per
        minibatch shape and replays it (the same numbers without Pyro's per-step Python), eager runs
        Pyro at every step, auto is jit for the models pvae builds and eager for a model of your own.
    :param num_particles: Monte Carlo samples of the latents per image in the training objective.
    :param batch_size: B, images per SVI step.
    :param epochs: passes over the training set.
    :param lr: Adam's learning rate.
    :param lr_schedule: the learning rate over epochs: constant, cosine (down to lr / 100 at the
        last epoch), exponential (times lr-decay each epoch) or iwae (Burda et al. 2016: stage
        i = 0, 1, ... of 3^i epochs at lr * 10^(-i/7); see --recipe).
    :param lr_decay: the factor of the exponential schedule, in (0, 1].
    :param adam_eps: Adam's epsilon, the constant added to the root of its second-moment estimate.
    :param kl_warmup: KL warm-up: the weight of the latents' log-densities, and so of KL(q || p),
        rises linearly from near 0 to beta over this many epochs, step by step (Sonderby et al.
        2016); 0 for none. The ELBO reported is always the unweighted one.
    :param beta: the weight of KL(q || p) in the objective after warm-up (beta-VAE, Higgins et al.
        2017); 1 is the ELBO. The ELBO reported is always the unweighted one.
    :param patience: early stopping: end training when the validation ELBO has not improved for
        this many epochs, keeping the best epoch's checkpoint as best.pt beside the last; when not
        given, train all epochs.
    :param keep_epochs: epochs whose checkpoints are also kept, as checkpoint-EPOCH.pt (e.g. the
        ends of the iwae schedule's stages, for a learning curve).
    :param seed: seeds the initialization, the draws of the latents, the binarization and the data order.
    :param device: where to train: auto (CUDA when available), cpu or cuda.
    :param out: the run folder to write; when not given, runs/DATE-TIME.

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
    dequantize: bool = False
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
    adam_eps: float = 1e-8
    kl_warmup: int = 0
    beta: float = 1.0
    patience: int | None = None
    keep_epochs: tuple[int, ...] = ()
    seed: int = 0
    device: str = "auto"
    out: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in FIELD_CHOICES.items():
            _choice(name, getattr(self, name), allowed)
        iwae_k = iwae_particles(self.objective)
        if not isinstance(self.dequantize, bool):
            raise ConfigError(f"dequantize must be true or false, got {self.dequantize!r}")
        if self.dequantize and self.binarization != "none":
            raise ConfigError(f"dequantize spreads grey levels over their 8-bit bins; it needs binarization none, "
                              f"got {self.binarization!r}: use binarization='none' with dequantize=True")
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
        if iwae_k is not None and self.num_particles != 1:
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
        if not (self.adam_eps > 0 and math.isfinite(self.adam_eps)):
            raise ConfigError(f"adam_eps must be a positive number, e.g. 1e-8; got {self.adam_eps}")
        _at_least("kl_warmup", self.kl_warmup, 0)
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ConfigError(f"beta must be a positive weight of the KL term, e.g. 1 (the ELBO) or 4; got {self.beta}")
        if (self.kl_warmup or self.beta != 1) and iwae_k is not None:
            # log-mean-exp over K samples mixes every term, so no KL term is left to weight.
            raise ConfigError(f"kl_warmup and beta weight the KL term of the ELBO, which the IWAE bound "
                              f"({self.objective}) does not have; use objective='trace' or objective='meanfield' "
                              "with them")
        if self.patience is not None:
            _at_least("patience", self.patience, 1)
            if self.val_size == 0:
                raise ConfigError("patience stops on the validation ELBO, and val_size=0 leaves no validation "
                                  "images; give some, e.g. val_size=400")
        if any(not isinstance(e, int) or isinstance(e, bool) or e < 1 for e in self.keep_epochs):
            raise ConfigError(f"keep_epochs must be epoch numbers >= 1, e.g. 1 4 13; got {self.keep_epochs}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``hidden`` as a list)."""
        d = dataclasses.asdict(self)
        for name in ("hidden", "top_hidden", "keep_epochs"):
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they mean another program or version)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        d = dict(d)
        for name in ("hidden", "top_hidden", "keep_epochs"):
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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        near = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown {name} {value!r}{hint}; expected one of: {', '.join(allowed)}")


def _at_least(name: str, value: int, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
