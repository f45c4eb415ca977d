"""From a run's record to a model: the whole model a :class:`~pvae.runs.config.TrainConfig`
describes, and the checks that a configuration fits together.

The parts' names and their parsing live in :mod:`pvae.parts.registry`, their builders in
:mod:`pvae.parts.build`; this module joins them to the configuration (it imports both, and neither
imports it).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import Tensor, nn

from pvae.runs.config import TrainConfig, iwae_particles, model_arguments
from pvae.errors import ConfigError
from pvae.parts.guides import PosteriorFamily
from pvae.parts.likelihoods import Likelihood
from pvae.models import VAE, ConditionalVAE, SemiSupervisedVAE, TopLayerPosterior, TwoLayerVAE
from pvae.parts.networks import set_output_bias
from pvae.parts.priors import Prior
from pvae.protocol import GraphicalModel, label_mode
from pvae.parts.build import build_guide, build_likelihood, build_prior
from pvae.parts.registry import LIKELIHOODS, check_model, check_spec, is_import_path, needs_binary

__all__ = [
    "NUM_CLASSES",
    "build_model",
    "build_vae",
    "check_config",
    "import_model_class",
    "default_model",
    "default_vae",
]

# MNIST, Fashion-MNIST and KMNIST each have ten classes.
NUM_CLASSES = 10


def check_config(config: TrainConfig) -> None:
    """Check that a configuration's names are known and fit together, before anything is built.

    The field-by-field checks are :class:`~pvae.runs.config.TrainConfig`'s own; these need the
    registry: known prior, likelihood, guide and model names; a likelihood for binary pixels only
    with binarized data; labels (``--labels``) only for ``m2``, and ``m2`` only with them; a
    VampPrior only where the guide's posterior is q(z|x) (not q(z | x, y)). Whether an analytic-KL
    objective fits the guide is read from its traces once it is built
    (:func:`pvae.training.objectives.check_objective`).

    :raises ConfigError: one line saying what to change.
    """
    for kind in ("prior", "likelihood", "guide"):
        check_spec(kind, getattr(config, kind))
    check_model(config.model)
    if config.binarization == "none" and needs_binary(config.likelihood):
        grey = [e.usage for name, e in LIKELIHOODS.items() if not needs_binary(name)]
        raise ConfigError(
            f"the {config.likelihood} likelihood needs binary pixels, but binarization is 'none'; "
            f"use --binarization dynamic or static, or a likelihood for grey levels: {', '.join(grey)}"
        )
    if config.model == "m2" and config.labels is None:
        raise ConfigError("model m2 learns from a few labelled images: give their number with --labels, e.g. --labels 100")
    if config.model not in ("m2",) and not is_import_path(config.model) and config.labels is not None:
        raise ConfigError(f"--labels picks the labelled images of model m2; model {config.model} "
                          f"{'uses every label' if config.model == 'conditional' else 'uses no labels'}: drop --labels")
    if config.labels is not None and config.labels % NUM_CLASSES:
        raise ConfigError(f"--labels is drawn class-balanced, so it must be a multiple of the {NUM_CLASSES} classes; "
                          f"got {config.labels} (e.g. {max(NUM_CLASSES, config.labels // NUM_CLASSES * NUM_CLASSES)})")
    if config.prior.partition(":")[0] == "vamp" and config.model in ("conditional", "m2"):
        raise ConfigError(f"the vamp prior mixes q(z|x) at pseudo-images, but model {config.model}'s guide is "
                          "q(z | x, y); use another prior (e.g. mog:10)")
    if config.model_args != "{}" and not is_import_path(config.model):
        raise ConfigError(f"--model-args are the constructor arguments of a model of your own "
                          f"(--model package.module:ClassName); model {config.model} takes its sizes from the other flags")
    if config.objective != "trace" and config.model == "m2":
        raise ConfigError(f"model m2 sums its latent label out by enumeration (TraceEnum_ELBO), which the objective "
                          f"{config.objective} cannot do; use --objective trace")
    iwae_particles(config.objective)


def import_model_class(path: str) -> type[nn.Module]:
    """The class ``package.module:ClassName`` names, checked to be a module with ``model`` and ``guide``.

    :raises ConfigError: when it cannot be imported or is not such a class (one line, with the fix).
    """
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import {module_name!r} for --model {path} ({err}); put its folder on "
                          "PYTHONPATH or install it") from None
    except Exception as err:  # the user's module itself fails (a SyntaxError, a NameError, ...): say where
        raise ConfigError(f"importing {module_name!r} for --model {path} failed: {type(err).__name__}: "
                          f"{' '.join(str(err).split())}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"module {module_name!r} has no {class_name!r} (for --model {path})")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(f"--model {path} must name a torch.nn.Module class (e.g. a PyroModule), got {cls!r}")
    missing = [name for name in ("model", "guide") if not callable(getattr(cls, name, None))]
    if missing:
        raise ConfigError(f"{path} lacks {' and '.join(missing)}: a pvae model has model(x, ...) and guide(x, ...) "
                          "methods (see pvae.protocol)")
    return cls


def build_model(
    config: TrainConfig,
    x_dim: int,
    num_data: int,
    mean_image: Tensor | None = None,
    *,
    init_data: Tensor | None = None,
) -> GraphicalModel:
    """The graphical model a configuration describes (its ``model`` family, or a class of your own).

    :param x_dim: pixels per image.
    :param num_data: N, the training-set size.
    :param mean_image: mean training image ``(x_dim,)``; when given, the decoder's output bias
        starts at the likelihood's :meth:`~pvae.parts.likelihoods.Likelihood.initial_bias` of it (pvae's own families).
    :param init_data: training images ``(n, x_dim)`` for data-dependent starting values (the VampPrior's
        pseudo-inputs); without them such parameters start from noise. Loading a checkpoint
        overwrites them either way.
    :raises ConfigError: for names that do not fit (see :func:`check_config`) or a class of your
        own that cannot be built from ``model_args``.
    """
    check_config(config)
    if is_import_path(config.model):
        cls = import_model_class(config.model)
        kwargs = model_arguments(config.model_args)
        try:
            model = cls(x_dim=x_dim, num_data=num_data, **kwargs)
        except Exception as err:  # a wrong argument, or the constructor's own error: one line, with its type
            raise ConfigError(f"{config.model}(x_dim={x_dim}, num_data={num_data}, **{config.model_args}) failed: "
                              f"{type(err).__name__}: {' '.join(str(err).split())}") from None
        for name in ("x_dim", "num_data"):
            if not hasattr(model, name):
                raise ConfigError(f"{config.model} must keep its constructor's {name} as an attribute (see pvae.protocol)")
        label_mode(model)
        return model  # type: ignore[return-value]
    likelihood = build_likelihood(config.likelihood)
    sizes = (config.hidden, config.activation)
    model: Any
    if config.model == "hierarchical":
        # The guide first: a VampPrior over z2 mixes the guide's two layers at its pseudo-inputs.
        q1 = build_guide(config.guide, x_dim, config.z1_dim, *sizes)
        q2 = build_guide(config.guide, config.z1_dim, config.z_dim, config.top_hidden, config.activation)
        prior = build_prior(config.prior, config.z_dim, x_dim=x_dim, posterior=TopLayerPosterior(q1, q2),
                            init_data=init_data)
        model = TwoLayerVAE(x_dim, config.z1_dim, config.z_dim, prior=prior, likelihood=likelihood, posterior=q1,
                            top_posterior=q2, hidden=config.hidden, top_hidden=config.top_hidden,
                            activation=config.activation, num_data=num_data)
    elif config.model in ("conditional", "m2"):
        # q(z | x, y) reads the image and the one-hot label.
        posterior = build_guide(config.guide, x_dim + NUM_CLASSES, config.z_dim, *sizes)
        prior = build_prior(config.prior, config.z_dim)
        common = dict(prior=prior, likelihood=likelihood, posterior=posterior, hidden=config.hidden,
                      activation=config.activation, num_data=num_data)
        if config.model == "conditional":
            model = ConditionalVAE(x_dim, config.z_dim, NUM_CLASSES, **common)
        else:
            model = SemiSupervisedVAE(x_dim, config.z_dim, NUM_CLASSES, num_labelled=config.labels,
                                      aux_weight=config.aux_weight, **common)
    else:
        # The guide first: a VampPrior is built on it.
        posterior = build_guide(config.guide, x_dim, config.z_dim, *sizes)
        prior = build_prior(config.prior, config.z_dim, x_dim=x_dim, posterior=posterior, init_data=init_data)
        model = VAE(x_dim, config.z_dim, prior=prior, likelihood=likelihood, posterior=posterior,
                    hidden=config.hidden, activation=config.activation, num_data=num_data)
    if mean_image is not None:
        set_output_bias(model.decoder, likelihood.initial_bias(mean_image).to(model.decoder[-1].bias))
    return model


def build_vae(
    config: TrainConfig, x_dim: int, num_data: int, mean_image: Tensor | None = None, *, init_data: Tensor | None = None
) -> GraphicalModel:
    """:func:`build_model` under its earlier name (every family, not only the VAE)."""
    return build_model(config, x_dim, num_data, mean_image, init_data=init_data)


# MNIST, Fashion-MNIST and KMNIST alike: 60,000 training images of 28 x 28 pixels.
TRAIN_IMAGES, IMAGE_PIXELS = 60_000, 28 * 28


def default_model(config: TrainConfig | None = None) -> GraphicalModel:
    """The untrained model that ``config`` describes, any family (default: ``pvae train``'s
    defaults, a VAE), sized for the 28 x 28 datasets without loading any: enough to draw its
    graphical model. For M2, ``config.labels`` (e.g. ``TrainConfig(model="m2", labels=100)``) sets N_l.

    :raises ConfigError: for a configuration :func:`pvae.runs.build.build_model` refuses.
    """
    config = config if config is not None else TrainConfig()
    num_data = config.train_size if config.train_size is not None else TRAIN_IMAGES - config.val_size
    return build_model(config, IMAGE_PIXELS, num_data)


# The name ``pvae graph`` has always used; every family is built.
default_vae = default_model
