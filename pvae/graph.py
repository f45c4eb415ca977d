"""The VAE's graphical model, drawn from the code: Graphviz diagrams of the model and the guide, and a
figure in the style of Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Figure 1.

The diagrams are Pyro's own: :func:`pyro.render_model` is three steps -- trace the program and find
its sample sites, their plates and which site's log-density depends on which
(:func:`~pyro.infer.inspect.get_model_relations`), arrange that as a graph specification, and draw
it with Graphviz (:func:`~pyro.infer.inspect.render_graph`). :func:`model_graph` runs the same steps
and adds what ``render_model`` leaves out: the plate's size N beside its name, each site's event
shape, and, for the guide, the images x it conditions on. Writing DOT source needs only the
``graphviz`` Python package; turning it into SVG or PNG needs Graphviz's ``dot`` program (Debian:
``apt-get install graphviz``), and without it the DOT source is still written and
:attr:`GraphFiles.note` says how to render it. The Figure-1-style picture is plain matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pyro
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle
from pyro import poutine
from pyro.infer.inspect import generate_graph_specification, get_model_relations, render_graph
from torch import Tensor

from pvae.components import build_vae
from pvae.config import TrainConfig
from pvae.models import VAE
from pvae.plots import DPI

if TYPE_CHECKING:
    import graphviz

__all__ = ["GraphFiles", "model_graph", "graph_source", "plot_graphical_model", "write_graphs", "default_vae"]

Program = Literal["model", "guide"]
# MNIST, Fashion-MNIST and KMNIST alike: 60,000 training images of 28 x 28 pixels.
TRAIN_IMAGES, IMAGE_PIXELS = 60_000, 28 * 28


@dataclass
class GraphFiles:
    """What :func:`write_graphs` wrote: DOT sources, their SVG/PNG renderings (empty when Graphviz's
    ``dot`` is missing), the Figure-1-style picture, and a note on how to render the DOT by hand."""

    dot: list[Path] = field(default_factory=list)
    rendered: list[Path] = field(default_factory=list)
    figure: list[Path] = field(default_factory=list)
    note: str | None = None


def default_vae(config: TrainConfig | None = None) -> VAE:
    """The untrained VAE that ``config`` describes (default: ``pvae train``'s defaults), sized for the
    28 x 28 datasets without loading any: enough to draw its graphical model."""
    config = config if config is not None else TrainConfig()
    num_data = config.train_size if config.train_size is not None else TRAIN_IMAGES - config.val_size
    return build_vae(config, IMAGE_PIXELS, num_data)


def _sites(fn: Any, x: Tensor) -> dict[str, Any]:
    # Reading the program's structure needs no gradients, and the placeholder images need not lie in
    # the likelihood's support.
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        trace = poutine.trace(fn).get_trace(x)
    return {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}


def model_graph(vae: VAE, program: Program = "model", *, x: Tensor | None = None) -> graphviz.Digraph:
    """The graphical model of ``vae.model`` or ``vae.guide``, drawn by Pyro's renderer.

    Sample sites are ellipses (observed ones grey), each plate a box labelled with its name and size
    N, an edge ``a -> b`` means b's distribution depends on a, and a text node lists each site's
    distribution and event shape. The guide receives x as an argument rather than sampling it, so
    Pyro's analysis finds no x there; it is added as a grey node with a dashed edge into each latent
    site, as in Kingma & Welling (2014), Figure 1. In a notebook the returned object displays itself.

    :param program: ``"model"`` (p_theta(z) p_theta(x|z)) or ``"guide"`` (q_phi(z|x)).
    :param x: images ``(batch, x_dim)`` to trace the program with; only their shape matters.
        Default: two blank images.
    :returns: a ``graphviz.Digraph`` (its ``.source`` is the DOT text).
    """
    if program not in ("model", "guide"):
        raise ValueError(f"expected program 'model' or 'guide', got {program!r}")
    x = torch.zeros(2, vae.x_dim) if x is None else x
    fn = vae.model if program == "model" else vae.guide
    spec = generate_graph_specification(get_model_relations(fn, (x,)))
    sites = _sites(fn, x)
    sizes = {f.name: f.full_size if f.full_size is not None else f.size for s in sites.values() for f in s["cond_indep_stack"]}
    # Pyro labels a plate with its name only; the name is also the plate's key, so renaming the key
    # puts N on the drawing.
    label = {p: f"{p}, N = {sizes[p]}" if p in sizes else p for p in spec["plate_groups"] if p is not None}
    spec["plate_groups"] = {label.get(p, p): names for p, names in spec["plate_groups"].items()}  # type: ignore[arg-type]
    spec["plate_data"] = {label[p]: {"parent": label.get(d["parent"], d["parent"])} for p, d in spec["plate_data"].items()}
    lines = [f"{name} ~ {spec['node_data'][name]['distribution']}, event shape {tuple(sites[name]['fn'].event_shape)}"
             for name in spec["node_data"]]
    latent = [name for name, data in spec["node_data"].items() if not data["is_observed"]]
    if program == "guide":
        plate = next((p for p, names in spec["plate_groups"].items() if p is not None and set(latent) <= set(names)), None)
        spec["plate_groups"].setdefault(plate, []).insert(0, "x")
        spec["node_data"]["x"] = {"is_observed": True, "distribution": "input"}
        lines.insert(0, "x: the images, the guide's input")
    graph = render_graph(spec, render_distributions=False)
    if program == "guide":
        for name in latent:
            graph.edge("x", name, style="dashed")
    graph.node("distributions", label="".join(line + "\\l" for line in lines), shape="plaintext")
    title = "model: p_theta(z) p_theta(x|z)" if program == "model" else "guide: q_phi(z|x)"
    graph.attr(label=title, labelloc="t")
    return graph


def graph_source(vae: VAE, program: Program = "model", *, x: Tensor | None = None) -> str:
    """The DOT text of :func:`model_graph` (same parameters)."""
    return model_graph(vae, program, x=x).source


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], *, dashed: bool, rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(
        start, end, arrowstyle="-|>", mutation_scale=16, lw=1.6, color="black",
        linestyle=(0, (4, 3)) if dashed else "-", connectionstyle=f"arc3,rad={rad}", shrinkA=0, shrinkB=0,
    ))


def plot_graphical_model(
    path: str | Path, *, num_data: int | None = None, z_dim: int | None = None, pdf: bool = False
) -> list[Path]:
    """The VAE's directed graphical model in the style of Kingma & Welling (2014), Figure 1.

    Solid arrows: the generative model p_theta(z) p_theta(x|z) (:meth:`pvae.VAE.model`); dashed
    arrows: the variational approximation q_phi(z|x) (:meth:`pvae.VAE.guide`); the plate repeats
    z and x for each of the N images; theta and phi are the decoder's and encoder's weights.

    :param num_data: N, written on the plate when given. :param z_dim: m, written beside z when given.
    :param pdf: also write the figure as PDF beside the PNG.
    :returns: the files written (PNG, then PDF).
    """
    path = Path(path)
    fig = Figure(figsize=(5.0, 4.0), dpi=DPI)
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 8)
    ax.set_aspect("equal")
    ax.axis("off")
    r = 0.55
    z, x = (5.0, 5.2), (5.0, 2.2)
    theta, phi = (8.4, 5.2), (1.6, 5.2)
    ax.add_patch(Rectangle((3.0, 0.9), 4.3, 6.0, fill=False, lw=1.4))
    ax.text(7.1, 1.05, "N" if num_data is None else f"N = {num_data:,}", ha="right", va="bottom", fontsize=11)
    ax.add_patch(Circle(z, r, facecolor="white", edgecolor="black", lw=1.6, zorder=3))
    ax.add_patch(Circle(x, r, facecolor="0.75", edgecolor="black", lw=1.6, zorder=3))
    ax.text(*z, "$z$", ha="center", va="center", fontsize=16, zorder=4)
    ax.text(*x, "$x$", ha="center", va="center", fontsize=16, zorder=4)
    if z_dim is not None:
        ax.text(z[0] + r + 0.15, z[1] + r, f"m = {z_dim}", fontsize=9, va="bottom")
    for name, (px, py) in ((r"$\theta$", theta), (r"$\phi$", phi)):
        ax.add_patch(Circle((px, py), 0.12, color="black", zorder=3))
        ax.text(px, py + 0.35, name, ha="center", va="bottom", fontsize=15)
    # generative model, solid
    _arrow(ax, (z[0], z[1] - r), (x[0], x[1] + r), dashed=False)
    _arrow(ax, (theta[0] - 0.15, theta[1]), (z[0] + r, z[1]), dashed=False)
    _arrow(ax, (theta[0] - 0.1, theta[1] - 0.1), (x[0] + r * 0.75, x[1] + r * 0.65), dashed=False)
    # inference model, dashed: x -> z bends left of the solid z -> x, as in the paper
    _arrow(ax, (x[0] - r * 0.75, x[1] + r * 0.65), (z[0] - r * 0.75, z[1] - r * 0.65), dashed=True, rad=-0.45)
    _arrow(ax, (phi[0] + 0.15, phi[1]), (z[0] - r, z[1]), dashed=True)
    ax.text(5.0, 0.45, r"solid: $p_\theta(z)\,p_\theta(x\,|\,z)$ (VAE.model)      dashed: $q_\phi(z\,|\,x)$ (VAE.guide)",
            ha="center", va="center", fontsize=8)
    fig.tight_layout()
    written = [path]
    fig.savefig(path)
    if pdf:
        written.append(path.with_suffix(".pdf"))
        fig.savefig(written[-1])
    return written


def write_graphs(vae: VAE, out: str | Path, *, pdf: bool = False) -> GraphFiles:
    """Write the model's and the guide's diagrams and the Figure-1-style picture into ``out``.

    Files: ``model.dot``, ``guide.dot`` (always), ``model.svg``/``.png`` and ``guide.svg``/``.png``
    (when Graphviz's ``dot`` program is installed), ``graphical_model.png`` (and ``.pdf`` with ``pdf``).

    :returns: the paths written, and in ``note`` how to render the DOT files when ``dot`` is missing.
    """
    import graphviz

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = GraphFiles()
    for program in ("model", "guide"):
        graph = model_graph(vae, program)
        dot_path = out / f"{program}.dot"
        dot_path.write_text(graph.source)
        files.dot.append(dot_path)
        try:
            files.rendered += _render(graph, dot_path)
        except graphviz.ExecutableNotFound:
            commands = "; ".join(f"dot -Tpng {p} -o {p.with_suffix('.png')}" for p in (out / "model.dot", out / "guide.dot"))
            files.note = (f"Graphviz's dot program was not found, so only the DOT sources were written. Install it "
                          f"(Debian/Ubuntu: sudo apt-get install graphviz) and run: {commands}")
    files.figure = plot_graphical_model(out / "graphical_model.png", num_data=vae.num_data, z_dim=vae.z_dim, pdf=pdf)
    return files


def _render(graph: graphviz.Digraph, dot_path: Path) -> list[Path]:
    svg, png = dot_path.with_suffix(".svg"), dot_path.with_suffix(".png")
    svg.write_bytes(graph.pipe(format="svg"))
    # PNG at the resolution of the other figures; SVG is resolution-free.
    sharp = graph.copy()
    sharp.graph_attr["dpi"] = str(DPI)
    png.write_bytes(sharp.pipe(format="png"))
    return [svg, png]
