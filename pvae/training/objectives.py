"""The training objectives by name, for any graphical model: Pyro's ``Trace_ELBO``,
``TraceMeanField_ELBO`` (analytic KL), ``TraceEnum_ELBO`` (discrete latents summed exactly), the
IWAE bound, and the semi-supervised objective of M2 (Kingma et al. 2014, eq. 9).

Which ELBO a model needs is read from its guide's trace: a site marked
``infer={"enumerate": "parallel"}`` asks for ``TraceEnum_ELBO``. A combination that cannot work
(the IWAE bound or the analytic KL with an enumerated latent, the analytic KL with a guide whose
latents depend on each other) is refused before training with one line saying what to use.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO
from torch import Tensor
from torch.distributions import kl_divergence

from pvae.errors import ConfigError
from pvae.inference.iwae import IWAE_ELBO
from pvae.inference.structure import ModelStructure, model_structure, program_structure
from pvae.inference.traces import latent_sites, trace_pair
from pvae.protocol import GraphicalModel, label_mode
from pvae.training.compiled import TracedELBO

__all__ = [
    "OBJECTIVES",
    "Objective",
    "iwae_particles",
    "SemiSupervisedObjective",
    "build_objective",
    "training_objective",
    "engine_for",
    "wants_enumeration",
    "check_objective",
    "check_semi_supervised",
]

# Anything with Pyro's differentiable_loss(model, guide, *args): an ELBO, a TracedELBO, the M2 objective.
Objective = Any

#: The objectives by spelling: Trace_ELBO, TraceMeanField_ELBO and the IWAE bound with K samples.
OBJECTIVES: tuple[str, ...] = ("trace", "meanfield", "iwae:K")


def iwae_particles(objective: str) -> int | None:
    """K of an ``iwae:K`` objective, checked to be an integer >= 2; ``None`` for the other objectives.

    :raises ConfigError: for an unknown objective or a malformed ``iwae:K``.
    """
    name, _, arg = objective.partition(":")
    if name != "iwae":
        if objective not in OBJECTIVES:
            near = difflib.get_close_matches(str(objective), OBJECTIVES, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"unknown objective {objective!r}{hint}; expected one of: {', '.join(OBJECTIVES)}")
        return None
    if not arg.isdecimal() or int(arg) < 2:
        raise ConfigError(
            f"objective iwae:K needs K, an integer >= 2 importance samples per image, e.g. iwae:5; got {objective!r}"
        )
    return int(arg)


def wants_enumeration(model: GraphicalModel, x: Tensor, *args: Tensor) -> bool:
    """Whether the guide marks a site for parallel enumeration (then it needs ``TraceEnum_ELBO``),
    read from the guide's structure (the ``enumerated`` sites of its :class:`~pvae.inference.structure.ProgramStructure`;
    the model itself is not run).

    :param x: a few training images ``(n, x_dim)``.
    :param args: what the guide takes besides (a class-conditional model's labels ``(n,)``).
    """
    return bool(program_structure(model, "guide", x=x, y=args[0] if args else None).enumerated)


def build_objective(objective: str, *, num_particles: int = 1, enumerates: bool = False) -> ELBO:
    """The Pyro ELBO that ``objective`` names, for a model that does (or does not) enumerate.

    :param objective: ``trace``, ``meanfield`` or ``iwae:K``.
    :param num_particles: Monte Carlo samples of the latents per image (``iwae:K`` draws its own K).
    :param enumerates: the guide has sites marked for enumeration (:func:`wants_enumeration`).
    :raises ValueError: for an objective that cannot sum over an enumerated site (settings are
        checked against the model before this is called: :func:`pvae.models.families.check_fit`).
    """
    # max_plate_nesting=1 (the data plate) lets Pyro vectorize particles, and enumerate, to its left.
    vectorize = num_particles > 1
    k = iwae_particles(objective)
    if enumerates:
        if objective != "trace":
            raise ValueError(f"expected objective 'trace' for a guide that enumerates a discrete latent "
                             f"(TraceEnum_ELBO sums it exactly), got {objective!r}")
        # Not strict: M2's labelled batches run the same ELBO with y observed, where nothing is enumerated.
        return TraceEnum_ELBO(num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1,
                              strict_enumeration_warning=False)
    if k is not None:
        return IWAE_ELBO(num_particles=k, max_plate_nesting=1)
    cls = Trace_ELBO if objective == "trace" else TraceMeanField_ELBO
    return cls(num_particles=num_particles, vectorize_particles=vectorize, max_plate_nesting=1)


def check_objective(
    model: GraphicalModel, x: Tensor, *args: Tensor, objective: str, guide: str | None = None,
    prior: str | None = None, structure: ModelStructure | None = None,
) -> None:
    """Refuse, before training, an analytic-KL objective the model cannot have.

    ``TraceMeanField_ELBO`` would otherwise fall back to Monte Carlo without a word where
    ``torch.distributions.kl_divergence`` knows no closed form, and would be wrong for a guide whose
    latent sites depend on each other. Both are read from the programs on ``x``: the dependencies
    from the model's structure (:attr:`~pvae.inference.structure.ModelStructure.guide_dependencies`,
    Pyro's provenance tracking), the closed forms from traces of the guide and model.

    :param x: a few training images ``(n, x_dim)``; ``args``: what model and guide take besides.
    :param objective: ``trace``, ``meanfield`` or ``iwae:K``; only ``meanfield`` is checked.
    :param guide: the guide's spelling (e.g. ``diagonal``), named in the refusal when given.
    :param prior: the prior's spelling (e.g. ``mog:3``), named in the refusal when given.
    :param structure: the model's structure on ``x`` when the caller has read it already.
    :raises ConfigError: naming the pair and what to use instead.
    """
    if objective != "meanfield":
        return
    if structure is None:
        structure = model_structure(model, x=x, y=args[0] if args else None)
    dependent = {name: sorted(up) for name, up in structure.guide_dependencies.items() if up}
    if dependent:
        site, upstream = next(iter(dependent.items()))
        raise ConfigError(
            f"objective 'meanfield' (TraceMeanField_ELBO) needs a mean-field guide, but the guide draws {site!r} "
            f"from {', '.join(map(repr, upstream))}; use objective='trace' or objective='iwae:K'"
        )
    with torch.no_grad(), pyro.validation_enabled(False):
        guide_trace, model_trace, _ = trace_pair(model.model, model.guide, x, *args, enumerate_discrete=False)
    parts = ", ".join(f"{kind} {spec}" for kind, spec in (("guide", guide), ("prior", prior)) if spec is not None)
    for name in latent_sites(model_trace):
        q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
        try:
            kl_divergence(q, p)
        except NotImplementedError:
            raise ConfigError(
                f"objective 'meanfield' (TraceMeanField_ELBO) needs KL(q || p) in closed form at every latent site, "
                f"and site {name!r}{f' ({parts})' if parts else ''} has none; use objective='trace' "
                "(Monte-Carlo KL), or a closed-form pair: guide diagonal with prior normal, diagonal or laplace; "
                "guide full-cov with prior normal or diagonal"
            ) from None


def check_semi_supervised(model: GraphicalModel, x: Tensor, y: Tensor) -> None:
    """Check, before training, the programs a semi-supervised step runs on labelled images: the
    model and guide given ``y``, and the classification term ``classifier_model``/``classifier_guide``.

    :param x: two labelled images ``(2, x_dim)``.
    :param y: their classes ``(2,)``.
    :raises ConfigError: when the classification term is missing; the programs' own errors otherwise.
    """
    missing = [name for name in ("classifier_model", "classifier_guide") if not callable(getattr(model, name, None))]
    if missing:
        raise ConfigError(f"a semi-supervised model needs {' and '.join(missing)}(x, y), the classification term "
                          "alpha * log q(y|x) on labelled images (see pvae.models.semisupervised)")
    from pvae.inference.traces import check_model_traces

    check_model_traces(model, x, y)
    with torch.no_grad(), pyro.validation_enabled(False):
        model.classifier_model(x, y)  # type: ignore[attr-defined]
        model.classifier_guide(x, y)  # type: ignore[attr-defined]


class SemiSupervisedObjective:
    """M2's loss for one step: the unlabelled ELBO (y summed exactly by ``TraceEnum_ELBO``), the
    labelled ELBO and alpha * log q(y|x) on a labelled minibatch (Kingma et al. 2014, eq. 9).

    Each step draws its labelled minibatch, ``min(batch, N_l)`` of the N_l labelled images without
    replacement, from ``generator`` (the training's data stream, so a resumed run draws the same).

    :param elbo: the ELBO of both parts (``TraceEnum_ELBO``).
    :param x_labelled: the labelled images ``(N_l, x_dim)``.
    :param y_labelled: their classes ``(N_l,)``.
    :param generator: the random stream of the data order.
    :ivar auxiliary: the last step's classification term (a detached scalar), which the reported
        ELBO leaves out.
    """

    def __init__(self, elbo: ELBO, x_labelled: Tensor, y_labelled: Tensor, generator: torch.Generator) -> None:
        self.elbo, self.x_labelled, self.y_labelled, self.generator = elbo, x_labelled, y_labelled, generator
        self.classifier = Trace_ELBO(max_plate_nesting=1)
        self.auxiliary = torch.zeros(())
        # In a distributed run (pvae.distributed): the global minibatch's size, and the processes,
        # so that each rank takes its share of one labelled minibatch drawn alike on every rank.
        self.global_batch: int | None = None
        self.world: Any = None

    def differentiable_loss(self, model: Callable[..., Any], guide: Callable[..., Any], x: Tensor) -> Tensor:
        """-(ELBO of the unlabelled batch ``x`` + ELBO of a labelled batch) - alpha * log q(y|x).

        :param model: the M2 model's own ``model.model``.
        :param guide: the M2 model's own ``model.guide``.
        """
        owner = getattr(model, "__self__", None)
        if owner is None or not hasattr(owner, "classifier_model"):
            raise ValueError("a SemiSupervisedObjective needs the bound model and guide of a model with classifier_model")
        num_labelled = self.x_labelled.shape[0]
        rows = torch.randperm(num_labelled, generator=self.generator, device=self.x_labelled.device)
        rows = rows[: self.global_batch or x.shape[0]]
        if self.world is not None:
            rows = self.world.share(rows)
        xl, yl = self.x_labelled[rows], self.y_labelled[rows]
        aux = self.classifier.differentiable_loss(owner.classifier_model, owner.classifier_guide, xl, yl)
        self.auxiliary = aux.detach()
        return (self.elbo.differentiable_loss(model, guide, x)
                + self.elbo.differentiable_loss(model, guide, xl, yl) + aux)


def engine_for(engine: str, *, own_model: bool, enumerates: bool, semi_supervised: bool = False) -> str:
    """``jit`` or ``eager``: what the setting ``engine`` (``auto``, ``jit`` or ``eager``) means for this model.

    ``auto`` traces the models pvae builds whose objective is a fixed computation per minibatch
    shape; a model of your own, and one whose step enumerates or draws a labelled minibatch (M2),
    run eagerly. Whether the model supports an explicit ``jit`` is checked beforehand
    (:func:`pvae.models.families.check_fit`).

    :param own_model: the model is the caller's (an object, or a class by import path).
    :param enumerates: the guide enumerates a site (:func:`wants_enumeration`).
    :param semi_supervised: the model's label mode is ``semi-supervised``.
    """
    if engine != "auto":
        return engine
    return "eager" if own_model or enumerates or semi_supervised else "jit"


def training_objective(
    model: GraphicalModel,
    *,
    objective: str,
    num_particles: int = 1,
    engine: str = "jit",
    enumerates: bool = False,
    labelled: tuple[Tensor, Tensor, torch.Generator] | None = None,
) -> Objective:
    """The objective each SVI step calls, run by ``engine``.

    :param objective: ``trace``, ``meanfield`` or ``iwae:K`` (:func:`build_objective`).
    :param num_particles: Monte Carlo samples of the latents per image.
    :param engine: ``jit`` (:class:`~pvae.training.compiled.TracedELBO`) or ``eager``, as
        :func:`engine_for` resolves the setting.
    :param enumerates: the guide enumerates a site (:func:`wants_enumeration`).
    :param labelled: for a semi-supervised model, its labelled images, their classes and the data
        stream that picks each step's labelled minibatch.
    :raises ValueError: for a semi-supervised model without ``labelled``, or with engine ``jit``
        (its step draws a labelled minibatch, which a trace would freeze).
    """
    if engine not in ("jit", "eager"):
        raise ValueError(f"expected engine 'jit' or 'eager' (engine_for resolves 'auto'), got {engine!r}")
    elbo = build_objective(objective, num_particles=num_particles, enumerates=enumerates)
    if label_mode(model) == "semi-supervised":
        if labelled is None:
            raise ValueError("a semi-supervised model trains with its labelled images: pass labelled=(x, y, generator)")
        if engine == "jit":
            raise ValueError("expected engine 'eager' for a semi-supervised model, whose step draws a labelled "
                             "minibatch each time, got 'jit'")
        return SemiSupervisedObjective(elbo, *labelled)
    return TracedELBO(model, elbo) if engine == "jit" else elbo
