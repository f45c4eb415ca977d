"""Any graphical model, drawn from the code: Graphviz diagrams of the model and the guide, and a
figure in the style of Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Figure 1.

Everything drawn is read from traces of the programs (:func:`~pvae.inference.structure.program_structure`): the sample sites
and which are observed, their plates and sizes N, their distributions and event shapes, and which
site's log-density depends on which -- found, as :func:`pyro.infer.inspect.get_model_relations`
finds it, by Pyro's provenance tracking, with the program's inputs (the guide's images x, a
conditional model's labels y) tracked too, so that they appear as observed nodes with edges into
the sites that read them. The diagrams are then Pyro's own: :func:`pyro.render_model` is the steps
``get_model_relations`` -> :func:`~pyro.infer.inspect.generate_graph_specification` ->
:func:`~pyro.infer.inspect.render_graph`, and :func:`model_graph` feeds the same last two steps,
adding what ``render_model`` leaves out: the plate's size N beside its name, each site's event
shape, the inputs, and dashed edges for the guide. Writing DOT source needs only the ``graphviz``
Python package; turning it into SVG or PNG needs Graphviz's ``dot`` program (Debian: ``apt-get
install graphviz``), and without it the DOT source is still written and :attr:`GraphFiles.note`
says how to render it. The Figure-1-style picture is plain matplotlib, laid out from the traces.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle
from pyro.infer.inspect import generate_graph_specification, render_graph
from torch import Tensor

from pvae.inference.structure import GraphStructure, Program, ProgramStructure, graph_structure, program_structure
from pvae.protocol import DATA_PLATE, GraphicalModel
from pvae.views.plots import DPI

if TYPE_CHECKING:
    import graphviz

__all__ = [
    "GraphFiles",
    "ProgramStructure",
    "GraphStructure",
    "program_structure",
    "graph_structure",
    "model_graph",
    "graph_source",
    "plot_graphical_model",
    "write_graphs",
]

# What the protocol's arguments hold, for the diagrams' legends.
INPUT_MEANING = {"x": "the images", "y": "the labels"}


@dataclass
class GraphFiles:
    """What :func:`write_graphs` wrote: DOT sources, their SVG/PNG renderings (empty when Graphviz's
    ``dot`` is missing), the Figure-1-style picture, and a note on how to render the DOT by hand."""

    #: the DOT sources.
    dot: list[Path] = field(default_factory=list)
    #: their SVG/PNG renderings (empty when Graphviz's ``dot`` is missing).
    rendered: list[Path] = field(default_factory=list)
    #: the Figure-1-style picture.
    figure: list[Path] = field(default_factory=list)
    #: how to render the DOT sources by hand when ``dot`` is missing; ``None`` otherwise.
    note: str | None = None


def _factorization(structure: ProgramStructure, *, math: bool = False) -> str:
    """``p_theta(z) p_theta(x|z)`` for a model, ``q_phi(z|x)`` for a guide (TeX with ``math``)."""
    density = ("p_\\theta" if math else "p_theta") if structure.program == "model" else ("q_\\phi" if math else "q_phi")
    name = _tex if math else str
    bar, comma, gap = ("\\,|\\,", ",\\,", "\\,") if math else ("|", ",", " ")
    terms = []
    for site in structure.sites:
        given = comma.join(name(p) for p in structure.parents[site])
        terms.append(f"{density}({name(site)}{bar + given if given else ''})")
    return gap.join(terms)


def _digraph(structure: ProgramStructure) -> graphviz.Digraph:
    spec = generate_graph_specification(structure.relations())
    sizes = structure.plate_size
    # Pyro labels a plate with its name only; the name is also the plate's key, so renaming the key
    # puts N on the drawing.
    label = {p: f"{p}, N = {sizes[p]}" if p in sizes else p for p in spec["plate_groups"] if p is not None}
    spec["plate_groups"] = {label.get(p, p): names for p, names in spec["plate_groups"].items()}
    spec["plate_data"] = {label[p]: {"parent": label.get(d["parent"], d["parent"])} for p, d in spec["plate_data"].items()}
    lines = [f"{name}: {INPUT_MEANING.get(name, 'an argument')}, the {structure.program}'s input" for name in structure.inputs]
    lines += [f"{name} ~ {structure.distribution[name]}, event shape {structure.event_shape[name]}" for name in structure.sites]
    guide = structure.program == "guide"
    if guide:
        # q_phi's dependencies are drawn dashed, as in Kingma & Welling (2014), Figure 1.
        spec["edge_list"] = []
    graph = render_graph(spec, render_distributions=False)
    if guide:
        for source, target in structure.edges:
            graph.edge(source, target, style="dashed")
    graph.node("distributions", label="".join(line + "\\l" for line in lines), shape="plaintext")
    graph.attr(label=f"{structure.program}: {_factorization(structure)}", labelloc="t")
    return graph


def model_graph(
    model: GraphicalModel, program: Program = "model", *, x: Tensor | None = None, y: Tensor | None = None
) -> graphviz.Digraph:
    """The graphical model of ``model.model`` or ``model.guide``, drawn by Pyro's renderer.

    Sample sites are ellipses (observed ones grey), each plate a box labelled with its name and size
    N, an edge ``a -> b`` means b's distribution depends on a (dashed in the guide), and a text node
    lists each site's distribution and event shape. Arguments the program receives rather than
    samples (the guide's images x; a conditional model's labels y) are grey nodes too, with edges
    into the sites that read them, as in Kingma & Welling (2014), Figure 1. In a notebook the
    returned object displays itself.

    :param program: ``"model"`` (e.g. p_theta(z) p_theta(x|z)) or ``"guide"`` (e.g. q_phi(z|x)).
    :param x: images ``(batch, x_dim)`` to trace the program with; only their shape matters.
        Default: two blank images.
    :param y: classes ``(batch,)`` (see :func:`~pvae.inference.structure.program_structure` for the default).
    :returns: a ``graphviz.Digraph`` (its ``.source`` is the DOT text).
    """
    return _digraph(program_structure(model, program, x=x, y=y))


def graph_source(
    model: GraphicalModel, program: Program = "model", *, x: Tensor | None = None, y: Tensor | None = None
) -> str:
    """The DOT text of :func:`model_graph` (same parameters)."""
    return model_graph(model, program, x=x, y=y).source


# The picture's geometry, in axes units of half an inch.
NODE_RADIUS, ROW_GAP, COLUMN_GAP = 0.55, 3.0, 3.2
UNITS_PER_INCH = 2.0


def _tex(name: str) -> str:
    """A site name as mathtext: ``z1`` -> ``z_{1}``, ``x`` -> ``x``, anything else upright."""
    found = re.fullmatch(r"([A-Za-z])_?(\d+)", name)
    if found is not None:
        return f"{found.group(1)}_{{{found.group(2)}}}"
    if re.fullmatch(r"[A-Za-z]", name):
        return name
    return "\\mathrm{" + name.replace("_", "\\_") + "}"


def _layout(structure: ProgramStructure) -> dict[str, tuple[float, float]]:
    """Node centres: one row per depth in the model's graph (roots on top, the image site alone at
    the bottom), the nodes of a row side by side and centred."""
    if not structure.nodes:
        raise ValueError("the model has no sample sites to draw")
    depth: dict[str, int] = {}
    for name in structure.nodes:  # parents come first: inputs, then sites in program order
        depth[name] = 1 + max((depth[p] for p in structure.parents[name]), default=-1)
    image = structure.image
    if image is not None and len(depth) > 1:
        depth[image] = 1 + max(d for n, d in depth.items() if n != image)
    centre: dict[str, tuple[float, float]] = {}
    order = [*structure.sites, *structure.inputs]
    for row in range(max(depth.values()) + 1):
        names = [name for name in order if depth[name] == row]
        # A node below the top row goes near its parents' mean column, which keeps arrows short and uncrossed.
        names.sort(key=lambda n: sum(centre[p][0] for p in structure.parents[n]) / max(len(structure.parents[n]), 1))
        for column, name in enumerate(names):
            centre[name] = ((column - (len(names) - 1) / 2) * COLUMN_GAP, -row * ROW_GAP)
    return centre


def _size_text(structure: ProgramStructure, name: str) -> str:
    if name in structure.num_values:
        return f"{structure.num_values[name]} values"
    shape = structure.event_shape[name]
    return f"{shape[0] if shape else 1}-dim" if len(shape) <= 1 else " x ".join(map(str, shape))


def _arrow(ax: Axes, start: Circle, end: Circle, *, dashed: bool, rad: float = 0.0) -> list[tuple[float, float]]:
    """Draw an arrow centre to centre, clipped where it leaves and enters the two circles.

    :returns: points along its path (matplotlib's ``arc3``: a quadratic Bezier curve), for placing labels clear of it.
    """
    ax.add_patch(FancyArrowPatch(
        start.center, end.center, patchA=start, patchB=end, arrowstyle="-|>", mutation_scale=16, lw=1.6,
        color="black", linestyle=(0, (4, 3)) if dashed else "-", connectionstyle=f"arc3,rad={rad}",
        shrinkA=0, shrinkB=1, zorder=2,
    ))
    (x0, y0), (x1, y1) = start.center, end.center
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    return [((1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t**2 * x1, (1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t**2 * y1)
            for t in (i / 40 for i in range(41))]


def _label_place(centre: tuple[float, float], text: str, paths: list[tuple[float, float]]) -> tuple[float, float, str, str]:
    """Where beside a node its size label is farthest from every arrow: ``(x, y, ha, va)``."""
    cx, cy = centre
    # The label's box at fontsize 9, in axes units; the anchor sits just off the circle.
    w, h, gap = 0.15 * len(text), 0.3, 0.1
    d = NODE_RADIUS * 0.8 + gap
    candidates = [  # upper right first, as in the paper
        (cx + d, cy + d, "left", "bottom"), (cx, cy + NODE_RADIUS + gap, "center", "bottom"),
        (cx + NODE_RADIUS + gap, cy, "left", "center"), (cx + d, cy - d, "left", "top"),
        (cx - d, cy + d, "right", "bottom"), (cx - NODE_RADIUS - gap, cy, "right", "center"),
        (cx - d, cy - d, "right", "top"), (cx, cy - NODE_RADIUS - gap, "center", "top"),
    ]
    best, best_clearance = candidates[0], -1.0
    for x, y, ha, va in candidates:
        x0 = {"left": x, "center": x - w / 2, "right": x - w}[ha]
        y0 = {"bottom": y, "center": y - h / 2, "top": y - h}[va]
        clearance = min((math.hypot(max(x0 - px, 0.0, px - x0 - w), max(y0 - py, 0.0, py - y0 - h)) for px, py in paths),
                        default=math.inf)
        if clearance > best_clearance + 0.02:
            best, best_clearance = (x, y, ha, va), clearance
        # Half a label's height clear of every arrow is enough: no need to leave the preferred places.
        if best_clearance >= h / 2:
            break
    return best


def _plate_boxes(structure: ProgramStructure, centre: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float, float, float]]:
    """``(left, bottom, right, top)`` of each plate around its nodes, outer plates around inner ones."""
    boxes = {}
    for plate, members in structure.plates.items():
        inner = sum(1 for other, names in structure.plates.items() if other != plate and set(names) < set(members))
        # Room beside the nodes for the guide's curved arrows and the latent sizes, below for the N.
        side, top, bottom = 1.5 + 0.4 * inner, 0.9 + 0.4 * inner, 1.0 + 0.4 * inner
        xs, ys = [centre[n][0] for n in members], [centre[n][1] for n in members]
        boxes[plate] = (min(xs) - NODE_RADIUS - side, min(ys) - NODE_RADIUS - bottom,
                        max(xs) + NODE_RADIUS + side, max(ys) + NODE_RADIUS + top)
    return boxes


def plot_graphical_model(model: GraphicalModel | GraphStructure, path: str | Path, *, pdf: bool = False) -> list[Path]:
    """A model's directed graphical model in the style of Kingma & Welling (2014), Figure 1, laid
    out from its traces (:func:`~pvae.inference.structure.graph_structure`).

    Circles are the model's sample sites and inputs (observed ones grey), one row per depth in the
    model's graph (roots on top, the image site at the bottom), with the latent sites' sizes beside
    them. Solid arrows: the generative model's dependencies (``model.model``); dashed, curved arrows:
    the guide's (``model.guide``, from its inputs too); theta and phi are the model's and the guide's
    parameters, pointing, as in the paper, at every site of the model and every latent site of the
    guide; the plate repeats its nodes for each of the N images. A VAE gives the paper's z -> x figure.

    :param model: the model, or its structure from :func:`~pvae.inference.structure.graph_structure` (then nothing is traced).
    :param pdf: also write the figure as PDF beside the PNG.
    :returns: the files written (PNG, then PDF).
    """
    path = Path(path)
    structure = model if isinstance(model, GraphStructure) else graph_structure(model)
    p, q = structure.model, structure.guide
    centre = _layout(p)
    r = NODE_RADIUS
    boxes = _plate_boxes(p, centre)
    xs, ys = [c[0] for c in centre.values()], [c[1] for c in centre.values()]
    left = min([min(xs) - r - 1.5, *(b[0] for b in boxes.values())])
    right = max([max(xs) + r + 1.5, *(b[2] for b in boxes.values())])
    bottom = min([min(ys) - r - 1.0, *(b[1] for b in boxes.values())])
    top = max([max(ys) + r + 0.9, *(b[3] for b in boxes.values())])
    # Beside the top row, as in the paper, unless that row has several nodes for the arrows to cross.
    level = max(ys) if sum(1 for y in ys if y == max(ys)) == 1 else top + 0.3
    theta, phi = (right + 1.3, level), (left - 1.3, level)
    # 5 x 4 inches at the least (the paper's proportions for z -> x), wider and taller for more nodes.
    lo_x, hi_x, lo_y, hi_y = phi[0] - 0.8, theta[0] + 0.8, bottom - 1.4, max(top, level + 1.0) + 0.4
    width = max(5.0, (hi_x - lo_x) / UNITS_PER_INCH)
    height = max(4.0, (hi_y - lo_y) / UNITS_PER_INCH)
    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    mid_x, mid_y = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    ax.set_xlim(mid_x - width * UNITS_PER_INCH / 2, mid_x + width * UNITS_PER_INCH / 2)
    ax.set_ylim(mid_y - height * UNITS_PER_INCH / 2, mid_y + height * UNITS_PER_INCH / 2)
    ax.set_aspect("equal")
    ax.axis("off")
    for plate, (x0, y0, x1, y1) in boxes.items():
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.4))
        size = p.plate_size[plate]
        ax.text(x1 - 0.2, y0 + 0.15, f"N = {size:,}" if plate == DATA_PLATE else f"{plate}: {size:,}",
                ha="right", va="bottom", fontsize=11)
    circles: dict[str, Circle] = {}
    for name, (cx, cy) in centre.items():
        grey = name in p.observed or name in p.inputs
        circles[name] = Circle((cx, cy), r, facecolor="0.75" if grey else "white", edgecolor="black", lw=1.6, zorder=3)
        ax.add_patch(circles[name])
        ax.text(cx, cy, f"${_tex(name)}$", ha="center", va="center", fontsize=16 if len(name) <= 2 else 10, zorder=4)
    dots = {}
    for label, (px, py) in ((r"$\theta$", theta), (r"$\phi$", phi)):
        dots[label] = Circle((px, py), 0.12, color="black", zorder=3)
        ax.add_patch(dots[label])
        ax.text(px, py + 0.35, label, ha="center", va="bottom", fontsize=15)
    paths: list[tuple[float, float]] = []
    for source, target in p.edges:
        paths += _arrow(ax, circles[source], circles[target], dashed=False)
    for name in p.sites:
        paths += _arrow(ax, dots[r"$\theta$"], circles[name], dashed=False)
    for source, target in q.edges:
        if source in circles and target in circles:
            (x0, y0), (x1, y1) = centre[source], centre[target]
            # The guide's arrows bend away from the model's straight ones, as in the paper: a vertical
            # one to the left, a slanted one outwards (so that two arrows into one node arrive apart),
            # one within a row down, into the room between the rows.
            rad = math.copysign(0.45, x1 - x0) if y0 == y1 or x0 != x1 else -0.45
            paths += _arrow(ax, circles[source], circles[target], dashed=True, rad=rad)
    for name in q.latent:
        if name in circles:
            paths += _arrow(ax, dots[r"$\phi$"], circles[name], dashed=True)
    for name in p.latent:
        text = _size_text(p, name)
        tx, ty, ha, va = _label_place(centre[name], text, paths)
        ax.text(tx, ty, text, fontsize=9, ha=ha, va=va)
    ax.text(mid_x, bottom - 0.45, f"solid: ${_factorization(p, math=True)}$ (model)", ha="center", va="center", fontsize=8)
    ax.text(mid_x, bottom - 1.0, f"dashed: ${_factorization(q, math=True)}$ (guide)", ha="center", va="center", fontsize=8)
    written = [path]
    fig.savefig(path)
    if pdf:
        written.append(path.with_suffix(".pdf"))
        fig.savefig(written[-1])
    return written


def write_graphs(model: GraphicalModel, out: str | Path, *, pdf: bool = False) -> GraphFiles:
    """Write the model's and the guide's diagrams and the Figure-1-style picture into ``out``.

    Files: ``model.dot``, ``guide.dot`` (always), ``model.svg``/``.png`` and ``guide.svg``/``.png``
    (when Graphviz's ``dot`` program is installed), ``graphical_model.png`` (and ``.pdf`` with ``pdf``).

    :param model: any :class:`~pvae.protocol.GraphicalModel`.
    :returns: the paths written, and in ``note`` how to render the DOT files when ``dot`` is missing.
    """
    import graphviz

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = GraphFiles()
    structure = graph_structure(model)
    for program, part in (("model", structure.model), ("guide", structure.guide)):
        graph = _digraph(part)
        dot_path = out / f"{program}.dot"
        dot_path.write_text(graph.source)
        files.dot.append(dot_path)
        try:
            files.rendered += _render(graph, dot_path)
        except graphviz.ExecutableNotFound:
            commands = "; ".join(f"dot -Tpng {p} -o {p.with_suffix('.png')}" for p in (out / "model.dot", out / "guide.dot"))
            files.note = (f"Graphviz's dot program was not found, so only the DOT sources were written. Install it "
                          f"(Debian/Ubuntu: sudo apt-get install graphviz) and run: {commands}")
    files.figure = plot_graphical_model(structure, out / "graphical_model.png", pdf=pdf)
    return files


def _render(graph: graphviz.Digraph, dot_path: Path) -> list[Path]:
    svg, png = dot_path.with_suffix(".svg"), dot_path.with_suffix(".png")
    svg.write_bytes(graph.pipe(format="svg"))
    # PNG at the resolution of the other figures; SVG is resolution-free.
    sharp = graph.copy()
    sharp.graph_attr["dpi"] = str(DPI)
    png.write_bytes(sharp.pipe(format="png"))
    return [svg, png]
