"""From a run's record to a model: the whole model a :class:`~pvae.runs.config.TrainConfig`
describes, and the one check that a configuration fits together.

The parts' names live in :mod:`pvae.parts.registry`, the model families (what each supports, and
its builder) in :mod:`pvae.models.families`; this module joins them to the configuration (it
imports both, and neither imports it).
"""

from __future__ import annotations

import importlib
import inspect

from torch import Tensor, nn

from pvae.errors import ConfigError
from pvae.models.families import FAMILIES, NUM_CLASSES, check_fit, check_model
from pvae.parts.registry import LIKELIHOODS, check_spec, is_import_path, needs_binary
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs.config import TrainConfig, model_arguments

__all__ = [
    "NUM_CLASSES",
    "build_model",
    "build_vae",
    "check_config",
    "import_model_class",
    "default_model",
    "default_vae",
]

# What a family's builder takes besides the settings of the same name.
_BUILD_INPUTS = ("x_dim", "num_data", "mean_image", "init_data")


def check_config(config: TrainConfig) -> None:
    """Check that a configuration's names are known and fit together, before anything is built.

    The field-by-field checks are :class:`~pvae.runs.config.TrainConfig`'s own; these need the
    tables: known prior, likelihood, guide and model names; a likelihood for binary pixels only
    with binarized data; what the model family supports (its objectives and engines, and labels
    only for a semi-supervised family, which needs them; :func:`pvae.models.families.check_fit`),
    labels a multiple of the classes; a VampPrior only where the guide's posterior is q(z|x) (not
    q(z | x, y)). What a model of your own supports, and whether an analytic-KL objective fits the
    guide, is read from its traces once it is built (:func:`pvae.runs.train.train`).

    :raises ConfigError: one line saying what to change.
    """
    for kind in ("prior", "likelihood", "guide"):
        check_spec(kind, getattr(config, kind))
    check_model(config.model)
    if config.binarization == "none" and needs_binary(config.likelihood):
        grey = [e.usage for name, e in LIKELIHOODS.items() if not needs_binary(name)]
        raise ConfigError(
            f"the {config.likelihood} likelihood needs binary pixels, but binarization is 'none'; "
            f"use binarization='dynamic' or binarization='static', or a likelihood for grey levels: {', '.join(grey)}"
        )
    own = is_import_path(config.model)
    if not own:
        check_fit(config.model, FAMILIES[config.model], objective=config.objective, engine=config.engine,
                  labels=config.labels)
    if config.labels is not None and config.labels % NUM_CLASSES:
        raise ConfigError(f"labels are drawn class-balanced, so their number must be a multiple of the {NUM_CLASSES} "
                          f"classes; got labels={config.labels} "
                          f"(e.g. labels={max(NUM_CLASSES, config.labels // NUM_CLASSES * NUM_CLASSES)})")
    if config.prior.partition(":")[0] == "vamp" and not own and FAMILIES[config.model].label_mode != "none":
        raise ConfigError(f"the vamp prior mixes q(z|x) at pseudo-images, but model {config.model}'s guide is "
                          "q(z | x, y); use another prior (e.g. prior='mog:10')")
    if config.model_args != "{}" and not own:
        raise ConfigError(f"model_args are the constructor arguments of a model of your own "
                          f"(model='package.module:ClassName'); model {config.model} takes its sizes from the other "
                          f"settings: drop model_args={config.model_args!r}")


def import_model_class(path: str) -> type[nn.Module]:
    """The class ``package.module:ClassName`` names, checked to be a module with ``model`` and ``guide``.

    :raises ConfigError: when it cannot be imported or is not such a class (one line, with the fix).
    """
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import {module_name!r} for model={path!r} ({err}); put its folder on "
                          "PYTHONPATH or install it") from None
    except Exception as err:  # the user's module itself fails (a SyntaxError, a NameError, ...): say where
        raise ConfigError(f"importing {module_name!r} for model={path!r} failed: {type(err).__name__}: "
                          f"{' '.join(str(err).split())}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"module {module_name!r} has no {class_name!r} (for model={path!r})")
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ConfigError(f"model={path!r} must name a torch.nn.Module class (e.g. a PyroModule), got {cls!r}")
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
    checked: bool = False,
) -> GraphicalModel:
    """The graphical model a configuration describes: its family's builder
    (:data:`~pvae.models.families.FAMILIES`) called with the settings it takes, or a class of your own.

    :param x_dim: pixels per image.
    :param num_data: N, the training-set size.
    :param mean_image: mean training image ``(x_dim,)``; when given, the decoder's output bias
        starts at the likelihood's :meth:`~pvae.parts.likelihoods.Likelihood.initial_bias` of it (pvae's own families).
    :param init_data: training images ``(n, x_dim)`` for data-dependent starting values (the VampPrior's
        pseudo-inputs); without them such parameters start from noise. Loading a checkpoint
        overwrites them either way.
    :param checked: the caller has run :func:`check_config` on ``config`` already (as
        :func:`pvae.runs.train.train` does, once, before it writes anything).
    :raises ConfigError: for names that do not fit (see :func:`check_config`) or a class of your
        own that cannot be built from ``model_args``.
    """
    if not checked:
        check_config(config)
    if is_import_path(config.model):
        return _build_own(config, x_dim, num_data)
    build = FAMILIES[config.model].build
    assert build is not None  # every entry of the table has its builder
    # The builder's other arguments are settings of the same name.
    settings = {name: getattr(config, name) for name in inspect.signature(build).parameters
                if name not in _BUILD_INPUTS}
    return build(x_dim=x_dim, num_data=num_data, mean_image=mean_image, init_data=init_data, **settings)


def _build_own(config: TrainConfig, x_dim: int, num_data: int) -> GraphicalModel:
    """The class of your own ``config.model`` names, built with ``x_dim``, ``num_data`` and ``model_args``."""
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
