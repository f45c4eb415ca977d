"""The model families pvae builds, in one table: each name's usage, how it uses labels, the
objectives and engines it supports, and its builder.

``--model NAME`` looks its family up in :data:`FAMILIES`; :func:`pvae.runs.build.build_model`
calls the entry's ``build`` with the sizes and the parts' spellings as keyword arguments, and
:func:`check_fit` is the one place where what a family supports is enforced (for a model of your
own, against what :func:`own_family` reads from the model). Nothing here reads a run configuration.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from pvae.errors import ConfigError
from pvae.models.conditional import ConditionalVAE
from pvae.models.hierarchical import TopLayerPosterior, TwoLayerVAE
from pvae.models.semisupervised import SemiSupervisedVAE
from pvae.models.vae import VAE
from pvae.parts.build import build_guide, build_likelihood, build_prior
from pvae.parts.networks import set_output_bias
from pvae.parts.registry import is_import_path
from pvae.protocol import GraphicalModel, LabelMode

__all__ = [
    "Family",
    "FAMILIES",
    "MODELS",
    "NUM_CLASSES",
    "OBJECTIVE_KINDS",
    "ENGINE_NAMES",
    "check_model",
    "check_fit",
    "own_family",
]

# MNIST, Fashion-MNIST and KMNIST each have ten classes.
NUM_CLASSES = 10
#: The objectives by kind (``iwae`` stands for every ``iwae:K``).
OBJECTIVE_KINDS: tuple[str, ...] = ("trace", "meanfield", "iwae")
#: The engines a step can run on (``auto`` resolves to one of the other two).
ENGINE_NAMES: tuple[str, ...] = ("auto", "jit", "eager")

# Why a guide that enumerates a discrete latent fits only Trace(Enum)_ELBO: the IWAE bound samples
# every latent, and the analytic KL has no closed form against a sum over classes.
_ENUMERATES = "sums its discrete latent out by enumeration (TraceEnum_ELBO), which {objective} cannot do"
# Why a semi-supervised step runs eagerly: each step draws a labelled minibatch, which a trace would freeze.
_DRAWS_LABELLED = "its step draws a labelled minibatch each time, which a trace would freeze"


@dataclass(frozen=True)
class Family:
    """One model family: its usage, label mode, what it supports, and its builder.

    :param usage: how to spell it (``--model NAME``, ``model='NAME'``).
    :param summary: one line saying what the graphical model is.
    :param label_mode: how the model uses labels (:func:`pvae.protocol.label_mode`).
    :param build: keyword arguments -> the untrained model; every argument other than ``x_dim``,
        ``num_data``, ``mean_image`` and ``init_data`` is a setting of the same name
        (:class:`~pvae.runs.config.TrainConfig`'s field); ``None`` for a model of your own.
    :param refused_objectives: objective kind -> why the family cannot train with it.
    :param refused_engines: engine -> why it cannot run the family's step.
    """

    usage: str
    summary: str
    label_mode: LabelMode
    build: Callable[..., GraphicalModel] | None
    refused_objectives: Mapping[str, str] = field(default_factory=dict)
    refused_engines: Mapping[str, str] = field(default_factory=dict)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objective kinds it trains with (``iwae`` for every ``iwae:K``)."""
        return tuple(kind for kind in OBJECTIVE_KINDS if kind not in self.refused_objectives)

    @property
    def engines(self) -> tuple[str, ...]:
        """The engines that run its step."""
        return tuple(name for name in ENGINE_NAMES if name not in self.refused_engines)


def _start_output(model: Any, likelihood: Any, mean_image: Tensor | None) -> None:
    # The decoder's output bias starts at the likelihood's parameters of the mean image, so the
    # first steps fit shape, not the average ink (Burda et al. 2016 start the same way).
    if mean_image is not None:
        set_output_bias(model.decoder, likelihood.initial_bias(mean_image).to(model.decoder[-1].bias))


def build_vae_family(
    *,
    x_dim: int,
    num_data: int | None,
    z_dim: int,
    hidden: Sequence[int],
    activation: str,
    prior: str,
    likelihood: str,
    guide: str,
    mean_image: Tensor | None = None,
    init_data: Tensor | None = None,
) -> VAE:
    """z -> x: :class:`~pvae.models.vae.VAE` with the parts the spellings name.

    :param x_dim: pixels per image.
    :param num_data: N, the training-set size.
    :param z_dim: m.
    :param hidden: encoder widths (the decoder mirrors them).
    :param prior: p(z)'s spelling, e.g. ``mog:10``; ``vamp:K`` mixes the guide's q(z|x).
    :param mean_image: mean training image ``(x_dim,)``: the decoder's output bias starts at it.
    :param init_data: training images ``(n, x_dim)`` for data-dependent starting values (VampPrior).
    """
    p_x = build_likelihood(likelihood)
    posterior = build_guide(guide, x_dim, z_dim, hidden, activation)  # first: a VampPrior is built on it
    p_z = build_prior(prior, z_dim, x_dim=x_dim, posterior=posterior, init_data=init_data)
    model = VAE(x_dim, z_dim, prior=p_z, likelihood=p_x, posterior=posterior, hidden=hidden, activation=activation,
                num_data=num_data)
    _start_output(model, p_x, mean_image)
    return model


def build_hierarchical_family(
    *,
    x_dim: int,
    num_data: int | None,
    z_dim: int,
    z1_dim: int,
    hidden: Sequence[int],
    top_hidden: Sequence[int],
    activation: str,
    prior: str,
    likelihood: str,
    guide: str,
    mean_image: Tensor | None = None,
    init_data: Tensor | None = None,
) -> TwoLayerVAE:
    """z2 -> z1 -> x: :class:`~pvae.models.hierarchical.TwoLayerVAE` (Burda et al. 2016, section 5).

    :param z_dim: units of z2, the top layer (the prior's latent).
    :param z1_dim: units of z1, the layer next to x.
    :param hidden: widths between x and z1.
    :param top_hidden: widths between z1 and z2.
    (The other arguments as in :func:`build_vae_family`.)
    """
    p_x = build_likelihood(likelihood)
    # The guide first: a VampPrior over z2 mixes the guide's two layers at its pseudo-inputs.
    q1 = build_guide(guide, x_dim, z1_dim, hidden, activation)
    q2 = build_guide(guide, z1_dim, z_dim, top_hidden, activation)
    p_z = build_prior(prior, z_dim, x_dim=x_dim, posterior=TopLayerPosterior(q1, q2), init_data=init_data)
    model = TwoLayerVAE(x_dim, z1_dim, z_dim, prior=p_z, likelihood=p_x, posterior=q1, top_posterior=q2,
                        hidden=hidden, top_hidden=top_hidden, activation=activation, num_data=num_data)
    _start_output(model, p_x, mean_image)
    return model


def build_conditional_family(
    *,
    x_dim: int,
    num_data: int | None,
    z_dim: int,
    hidden: Sequence[int],
    activation: str,
    prior: str,
    likelihood: str,
    guide: str,
    mean_image: Tensor | None = None,
    init_data: Tensor | None = None,
) -> ConditionalVAE:
    """p(z) p(x | z, y), y observed: :class:`~pvae.models.conditional.ConditionalVAE` over
    :data:`NUM_CLASSES` classes. (Arguments as in :func:`build_vae_family`; ``init_data`` is unused:
    the guide is q(z | x, y), which no VampPrior mixes.)"""
    p_x = build_likelihood(likelihood)
    posterior = build_guide(guide, x_dim + NUM_CLASSES, z_dim, hidden, activation)  # reads x and the one-hot y
    model = ConditionalVAE(x_dim, z_dim, NUM_CLASSES, prior=build_prior(prior, z_dim), likelihood=p_x,
                           posterior=posterior, hidden=hidden, activation=activation, num_data=num_data)
    _start_output(model, p_x, mean_image)
    return model


def build_m2_family(
    *,
    x_dim: int,
    num_data: int | None,
    z_dim: int,
    labels: int | None,
    aux_weight: float,
    hidden: Sequence[int],
    activation: str,
    prior: str,
    likelihood: str,
    guide: str,
    mean_image: Tensor | None = None,
    init_data: Tensor | None = None,
) -> SemiSupervisedVAE:
    """M2, semi-supervised (Kingma et al. 2014): :class:`~pvae.models.semisupervised.SemiSupervisedVAE`.

    :param labels: N_l, the labelled training images.
    :param aux_weight: alpha / N, the weight of the classification term log q(y|x).
    (The other arguments as in :func:`build_conditional_family`.)
    """
    p_x = build_likelihood(likelihood)
    posterior = build_guide(guide, x_dim + NUM_CLASSES, z_dim, hidden, activation)  # q(z | x, y)
    model = SemiSupervisedVAE(x_dim, z_dim, NUM_CLASSES, num_labelled=labels, aux_weight=aux_weight,
                              prior=build_prior(prior, z_dim), likelihood=p_x, posterior=posterior, hidden=hidden,
                              activation=activation, num_data=num_data)
    _start_output(model, p_x, mean_image)
    return model


#: The model families by name (``--model NAME``): name -> :class:`Family`.
FAMILIES: dict[str, Family] = {
    "vae": Family("vae", "z -> x, the VAE of Kingma & Welling (2014)", "none", build_vae_family),
    "hierarchical": Family(
        "hierarchical", "z2 -> z1 -> x, two stochastic layers (Burda et al. 2016); sizes z1_dim, z_dim", "none",
        build_hierarchical_family,
        refused_objectives={"meanfield": "has a guide that draws z2 from z1, and objective 'meanfield' (the analytic "
                                         "KL of TraceMeanField_ELBO) needs a mean-field guide"},
    ),
    "conditional": Family("conditional", "p(z) p(x | z, y) with the label y observed", "observed",
                          build_conditional_family),
    "m2": Family(
        "m2", "semi-supervised M2 (Kingma et al. 2014): y observed for the labelled images, enumerated otherwise",
        "semi-supervised", build_m2_family,
        refused_objectives={"meanfield": _ENUMERATES.format(objective="objective 'meanfield'"),
                            "iwae": _ENUMERATES.format(objective="the IWAE bound")},
        refused_engines={"jit": _DRAWS_LABELLED},
    ),
}
#: The families under the name ``pvae.MODELS`` has always had (each entry has ``usage`` and ``summary``).
MODELS = FAMILIES


def check_model(spec: str) -> str:
    """A family's name (``vae``, ``hierarchical``, ``conditional``, ``m2``) or an import path
    ``package.module:ClassName``, returned as given (the class is imported only when built).

    :raises ConfigError: for anything else, naming the known families and the nearest.
    """
    if is_import_path(spec) or spec in FAMILIES:
        return spec
    if ":" in spec:
        raise ConfigError(f"model {spec!r} is neither a known family nor an import path; a model of your own is "
                          "spelled package.module:ClassName, e.g. model='my_models:TwoLatentVAE'")
    near = difflib.get_close_matches(spec, FAMILIES, n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else "."
    raise ConfigError(f"unknown model {spec!r}{hint} Known models: {', '.join(FAMILIES)}, or a class of your own "
                      "as package.module:ClassName")


def own_family(spec: str, label_mode: LabelMode, *, enumerates: bool) -> Family:
    """What a model of your own supports, read from the model: its label mode, and whether its guide
    enumerates a discrete latent (:func:`pvae.training.objectives.wants_enumeration`).

    :param spec: how it is named (an import path, or a description of an object), for messages.
    """
    refused = {kind: _ENUMERATES.format(objective=f"objective {kind!r}" if kind == "meanfield" else "the IWAE bound")
               for kind in ("meanfield", "iwae")} if enumerates else {}
    engines = {"jit": _DRAWS_LABELLED} if label_mode == "semi-supervised" else {}
    return Family(spec, "a model of your own", label_mode, None, refused_objectives=refused, refused_engines=engines)


def check_fit(name: str, family: Family, *, objective: str, engine: str, labels: int | None) -> None:
    """Refuse settings the family cannot train with: an objective or engine it does not support,
    labels for a model that does not take a labelled subset, or none for one that needs it.

    :param name: the model's name as the user gave it (``m2``, ``my_models:Net``).
    :param objective: ``trace``, ``meanfield`` or ``iwae:K``.
    :param engine: ``auto``, ``jit`` or ``eager``.
    :param labels: N_l, how many training images keep their label, or ``None``.
    :raises ConfigError: one line naming the setting and what to use instead.
    """
    kind = objective.partition(":")[0]
    if kind in family.refused_objectives:
        usable = " or ".join(f"objective={'iwae:K' if k == 'iwae' else k!r}" for k in family.objectives)
        raise ConfigError(f"model {name} {family.refused_objectives[kind]}; use {usable}")
    if engine in family.refused_engines:
        usable = " or ".join(f"engine={e!r}" for e in family.engines)
        raise ConfigError(f"engine {engine!r} cannot run model {name}: {family.refused_engines[engine]}; use {usable}")
    if family.label_mode == "semi-supervised" and labels is None:
        raise ConfigError(f"model {name} learns from a few labelled images: give their number, e.g. labels=100")
    if family.label_mode != "semi-supervised" and labels is not None:
        uses = "uses every label" if family.label_mode == "observed" else "uses no labels"
        raise ConfigError(f"labels picks the labelled images of a semi-supervised model; model {name} {uses}: "
                          f"drop labels={labels}")
