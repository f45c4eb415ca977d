"""A model's structure, read once from traces of its two programs.

Which sample sites a program has and which are observed, their plates and sizes N, their
distributions and event shapes, the support size of each discrete site, and which site's
log-density depends on which -- found, as :func:`pyro.infer.inspect.get_model_relations` finds it,
by Pyro's provenance tracking, with the program's inputs (the guide's images x, a conditional
model's labels y) tracked too. Estimators, objective checks, the training checks and the diagrams
all read a model through :class:`ModelStructure` rather than probing its traces themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyro
import torch
from pyro import poutine
from pyro.infer.inspect import TrackProvenance, is_sample_site
from pyro.ops.provenance import ProvenanceTensor, get_provenance
from torch import Tensor

from pvae.inference.traces import image_site, is_discrete
from pvae.protocol import GraphicalModel, label_mode

__all__ = ["Program", "ProgramStructure", "ModelStructure", "GraphStructure", "program_structure",
           "model_structure", "graph_structure"]

#: Which of the two programs of a model/guide pair: ``"model"`` or ``"guide"``.
Program = Literal["model", "guide"]

@dataclass(frozen=True)
class ProgramStructure:
    """The graphical structure of one program (model or guide), read from its trace.

    Nodes are the program's inputs that some site depends on (arguments it receives rather than
    samples, e.g. the guide's x), then its sample sites in program order.

    :param program: ``"model"`` or ``"guide"``.
    :param nodes: every node, inputs first.
    :param inputs: the nodes that are arguments of the program, not sample sites.
    :param observed: the observed sample sites.
    :param parents: for each node, the nodes its log-density depends on (none for inputs).
    :param distribution: each sample site's distribution name (``"input"`` for inputs).
    :param event_shape: each sample site's event shape.
    :param num_values: the size of the support of each discrete sample site.
    :param plates: each plate's nodes (an input lies in the plates of all the sites reading it).
    :param plate_size: each plate's size (N for the data plate, not the traced batch).
    :param image: the model's observed site holding the images x (``None`` for the guide).
    :param label: the model's sample site that labels y are observed at when they are passed (M2's
        ``y``); ``None`` when y only conditions the model, the model takes no labels, or for the guide.
    :param discrete_support: the sample sites whose distribution's support is discrete (binary
        pixels, 8-bit levels, classes): their log-densities are log-probabilities.
    :param enumerated: the sample sites marked ``infer={"enumerate": "parallel"}`` (to be summed out
        exactly, e.g. by ``TraceEnum_ELBO``), in program order.
    """

    program: Program
    nodes: list[str]
    inputs: list[str]
    observed: list[str]
    parents: dict[str, list[str]]
    distribution: dict[str, str]
    event_shape: dict[str, tuple[int, ...]]
    num_values: dict[str, int]
    plates: dict[str, list[str]]
    plate_size: dict[str, int]
    image: str | None = None
    label: str | None = None
    discrete_support: list[str] = field(default_factory=list)
    enumerated: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        """The sample sites, in program order."""
        return [name for name in self.nodes if name not in self.inputs]

    @property
    def latent(self) -> list[str]:
        """The latent (not observed) sample sites, in program order."""
        return [name for name in self.sites if name not in self.observed]

    @property
    def discrete(self) -> list[str]:
        """The latent sample sites with a finite support, in program order."""
        return [name for name in self.latent if name in self.num_values]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(a, b)`` for each dependence of b's log-density on a."""
        return [(parent, name) for name in self.nodes for parent in self.parents[name]]

    def relations(self) -> dict[str, Any]:
        """The structure in the format of :func:`pyro.infer.inspect.get_model_relations` (inputs as
        observed nodes), for :func:`~pyro.infer.inspect.generate_graph_specification`."""
        return {
            "sample_sample": dict(self.parents),
            "sample_param": {name: [] for name in self.nodes},
            "sample_dist": dict(self.distribution),
            "param_constraint": {},
            "plate_sample": {plate: list(names) for plate, names in self.plates.items()},
            "observed": [name for name in self.nodes if name in self.inputs or name in self.observed],
        }


@dataclass(frozen=True)
class ModelStructure:
    """A model's and its guide's :class:`ProgramStructure`: all that :func:`~pvae.views.graph.plot_graphical_model` draws,
    and what estimators, objective checks and evaluation read of a model (each list in program order)."""

    model: ProgramStructure
    guide: ProgramStructure

    @property
    def latent(self) -> list[str]:
        """The model's latent sample sites (the guide proposes each)."""
        return self.model.latent

    @property
    def observed(self) -> list[str]:
        """The model's observed sample sites."""
        return self.model.observed

    @property
    def root_latent(self) -> list[str]:
        """The model's latent sites drawn from no other latent (p(z), or p(z2) atop two layers): where
        KL(q || p) may be taken in closed form. An input (a conditional model's y) does not count."""
        latent = set(self.model.latent)
        return [name for name in self.model.latent if not latent.intersection(self.model.parents[name])]

    @property
    def discrete(self) -> list[str]:
        """The model's latent sites with a finite support (M2's label)."""
        return self.model.discrete

    @property
    def enumerated(self) -> list[str]:
        """The guide's sites marked ``infer={"enumerate": "parallel"}`` (then training needs ``TraceEnum_ELBO``)."""
        return self.guide.enumerated

    @property
    def label(self) -> str | None:
        """The model's site a label y is observed at when passed (M2's ``y``); ``None`` when y only
        conditions the model (a class-conditional VAE) or the model takes no labels."""
        return self.model.label

    @property
    def image(self) -> str | None:
        """The model's observed site holding the images x (``None`` when the model reshapes x first)."""
        return self.model.image

    @property
    def guide_dependencies(self) -> dict[str, list[str]]:
        """Each latent site of the guide -> the guide's latent sites it is drawn from (none for a
        mean-field guide; ``z2: [z1]`` for a two-layer one), inputs left out."""
        latent = self.guide.latent
        return {name: [p for p in self.guide.parents[name] if p in latent] for name in latent}


def _arguments(model: Any, x: Tensor | None, y: Tensor | None) -> dict[str, Tensor]:
    """The inputs to trace the programs with, by argument name: the images, and labels when the
    model is conditioned on them (a semi-supervised model is traced with y latent unless given)."""
    mode = label_mode(model)
    if y is not None and mode == "none":
        raise ValueError(f"expected no labels y for a model with label_mode 'none' ({type(model).__name__}), "
                         f"got a tensor of shape {tuple(y.shape)}; drop y")
    if x is None:
        # Two blank images on the model's device: only shapes matter, and a batch of two keeps batch
        # and event dims apart.
        x = torch.zeros(2, model.x_dim, device=next(model.parameters(), torch.empty(0)).device)
    elif x.dim() != 2 or x.shape[1] != model.x_dim:
        raise ValueError(f"expected images x of shape (batch, {model.x_dim}), got {tuple(x.shape)}")
    if y is None and mode == "observed":
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    elif y is not None and tuple(y.shape) != (x.shape[0],):
        raise ValueError(f"expected labels y of shape ({x.shape[0]},), one class per image, got {tuple(y.shape)}")
    return {"x": x} if y is None else {"x": x, "y": y}


def _sample_sites(trace: poutine.Trace) -> dict[str, dict[str, Any]]:
    # Pyro's own choice of what a graph shows: no subsample sites, no Delta sites, no masked-out observations.
    return {name: site for name, site in trace.nodes.items() if is_sample_site(site)}


def program_structure(
    model: GraphicalModel, program: Program = "model", *, x: Tensor | None = None, y: Tensor | None = None
) -> ProgramStructure:
    """Read the graph of ``model.model`` or ``model.guide`` from two traces of it.

    A plain trace finds the sample sites; an argument the program observes at one of its sites
    (the model's x) is that site, every other argument is an input. A second trace, under Pyro's
    :class:`~pyro.infer.inspect.TrackProvenance`, with each input wrapped as a
    :class:`~pyro.ops.provenance.ProvenanceTensor` named after it, says which sites and inputs each
    site's log-density depends on, as :func:`~pyro.infer.inspect.get_model_relations` does for
    sites alone (it would fail on a provenance that names no site).

    :param program: ``"model"`` or ``"guide"``.
    :param x: images ``(batch, x_dim)`` to trace with; only their shape matters. Default: two blank images.
    :param y: classes ``(batch,)``. Default: zeros for a model with ``label_mode`` ``"observed"``;
        none for ``"semi-supervised"``, so that its label site is latent (drawn as in Kingma et al. 2014).
    :raises ValueError: for an unknown program, images or labels of the wrong shape, or labels for
        a model that takes none.
    """
    if program not in ("model", "guide"):
        raise ValueError(f"expected program 'model' or 'guide', got {program!r}")
    arguments = _arguments(model, x, y)
    fn = getattr(model, program)
    # Reading the structure needs no gradients, must not move the global RNG, and the placeholder
    # images need not lie in the likelihood's support.
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        plain = poutine.trace(fn).get_trace(*arguments.values())
        candidates = [name for name in arguments if name not in _sample_sites(plain)]
        tracked = [ProvenanceTensor(value, frozenset({name})) if name in candidates else value
                   for name, value in arguments.items()]
        with TrackProvenance():
            trace = poutine.trace(fn).get_trace(*tracked)
        sites = _sample_sites(trace)
        parents: dict[str, list[str]] = {}
        for name, site in sites.items():
            # TrackProvenance gives each sampled value the provenance of its own site only, so a
            # log-density's provenance names its direct parents (and itself, through the value).
            provenance = get_provenance(site["fn"].log_prob(site["value"]))
            parents[name] = [n for n in (*candidates, *sites) if n in provenance and n != name]
        label = _label_site(model, arguments["x"], arguments.get("y")) if program == "model" else None
    inputs = [name for name in candidates if any(name in p for p in parents.values())]
    plates: dict[str, list[str]] = {}
    plate_size: dict[str, int] = {}
    for name, site in sites.items():
        for frame in site["cond_indep_stack"]:
            plates.setdefault(frame.name, []).append(name)
            plate_size[frame.name] = frame.full_size if frame.full_size is not None else frame.size
    for name in reversed(inputs):
        children = [site for site in sites if name in parents[site]]
        # An input is one value per image: it lies in every plate around all the sites that read it.
        for plate, members in plates.items():
            if all(child in members for child in children):
                members.insert(0, name)
    image = None
    if program == "model":
        try:
            image = image_site(plain, arguments["x"])
        except ValueError:
            image = None  # a model that reshapes x before observing it: laid out by depth alone
    return ProgramStructure(
        program=program,
        nodes=[*inputs, *sites],
        inputs=inputs,
        observed=[name for name, site in sites.items() if site["is_observed"]],
        parents={**{name: [] for name in inputs}, **parents},
        distribution={**{name: "input" for name in inputs}, **{n: _dist_name(s["fn"]) for n, s in sites.items()}},
        event_shape={name: tuple(site["fn"].event_shape) for name, site in sites.items()},
        num_values={name: int(site["fn"].enumerate_support(expand=False).shape[0])
                    for name, site in sites.items() if is_discrete(site)},
        plates=plates,
        plate_size=plate_size,
        image=image,
        label=label,
        discrete_support=[name for name, site in sites.items() if site["fn"].support.is_discrete],
        enumerated=[name for name, site in sites.items() if site["infer"].get("enumerate") == "parallel"],
    )


def _label_site(model: Any, x: Tensor, y: Tensor | None) -> str | None:
    """The model's sample site whose value is the labels passed in (M2's ``y``), or ``None``."""
    if label_mode(model) == "none":
        return None
    if y is None:
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    # Called inside program_structure's forked RNG, without gradients or validation: a model that
    # observes y (M2) has it as a site's value; a conditional VAE only reads it.
    trace = poutine.trace(model.model).get_trace(x, y)
    names = [name for name, site in _sample_sites(trace).items() if site["is_observed"] and site["value"] is y]
    return names[0] if names else None


def _dist_name(fn: Any) -> str:
    # Pyro's naming: the distribution inside the wrappers that plates and .to_event() add.
    while isinstance(fn, (pyro.distributions.Independent, pyro.distributions.ExpandedDistribution,
                          pyro.distributions.MaskedDistribution)):
        fn = fn.base_dist
    return type(fn).__name__


def model_structure(model: GraphicalModel, *, x: Tensor | None = None, y: Tensor | None = None) -> ModelStructure:
    """The :class:`ProgramStructure` of ``model.model`` and of ``model.guide`` (parameters as in
    :func:`program_structure`)."""
    return ModelStructure(program_structure(model, "model", x=x, y=y), program_structure(model, "guide", x=x, y=y))


#: The names the diagrams have always used.
GraphStructure = ModelStructure
graph_structure = model_structure


