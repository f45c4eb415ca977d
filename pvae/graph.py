"""The VAE's graphical model, drawn from the code: Graphviz diagrams of the model and the guide, and a
figure in the style of Kingma & Welling (2014), "Auto-Encoding Variational Bayes", Figure 1.

The diagrams come from the Pyro programs themselves: :func:`pyro.infer.inspect.get_model_relations`
traces ``vae.model`` (or ``vae.guide``) and finds its sample sites, the plates they sit in and which
site's log-density depends on which -- the analysis behind :func:`pyro.render_model`. This module
writes that analysis as DOT text in ``render_model``'s style (latent sites white, observed ones grey,
one box per plate), adding what ``render_model`` leaves out: the plate's size N and each site's event
shape. Turning DOT into SVG or PNG needs Graphviz's ``dot`` program (Debian: ``apt-get install
graphviz``); without it the DOT source is still written and :attr:`GraphFiles.note` says how to render
it. The Figure-1-style picture is plain matplotlib and needs no Graphviz.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyro
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle
from pyro import poutine
from pyro.infer.inspect import generate_graph_specification, get_model_relations
from torch import Tensor

from pvae.components import build_vae
from pvae.config import TrainConfig
from pvae.model import VAE
from pvae.plots import DPI

__all__ = ["GraphFiles", "graph_source", "render_dot", "plot_graphical_model", "write_graphs", "default_vae"]

Program = Literal["model", "guide"]
DOT_HINT = "install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz), then run: dot -Tpng {dot} -o {png}"
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


def _trace(fn: Callable[[Tensor], None], x: Tensor) -> poutine.Trace:
    # Reading the program's structure needs no gradients, and the placeholder images need not lie in
    # the likelihood's support.
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block():
        return poutine.trace(fn).get_trace(x)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_source(vae: VAE, program: Program = "model", *, x: Tensor | None = None) -> str:
    """The graphical model of ``vae.model`` or ``vae.guide`` as Graphviz DOT text.

    Sample sites are nodes (observed ones filled grey), each plate a box labelled with its name and
    size N, an edge ``a -> b`` means b's distribution depends on a, and a text node lists each site's
    distribution and event shape. The guide receives x as an argument rather than sampling it, so
    Pyro's analysis sees no x there; it is drawn as a grey input node with a dashed edge into each
    latent site, as in Kingma & Welling (2014), Figure 1.

    :param program: ``"model"`` (p_theta(z) p_theta(x|z)) or ``"guide"`` (q_phi(z|x)).
    :param x: images ``(batch, x_dim)`` to trace the program with; only their shape matters.
        Default: two blank images.
    :returns: DOT source of a ``digraph``.
    """
    if program not in ("model", "guide"):
        raise ValueError(f"expected program 'model' or 'guide', got {program!r}")
    if x is None:
        x = torch.zeros(2, vae.x_dim)
    fn = vae.model if program == "model" else vae.guide
    spec = generate_graph_specification(get_model_relations(fn, (x,)))
    trace = _trace(fn, x)
    sites = {name: site for name, site in trace.nodes.items() if site["type"] == "sample"}
    plate_size = {
        frame.name: frame.full_size if frame.full_size is not None else frame.size
        for site in sites.values()
        for frame in site["cond_indep_stack"]
    }
    node_data: dict[str, dict[str, Any]] = dict(spec["node_data"])
    plate_groups: dict[str | None, list[str]] = {k: list(v) for k, v in spec["plate_groups"].items()}
    edges = [(a, b, "solid") for a, b in spec["edge_list"]]
    if program == "guide":
        latent = [name for name in node_data if not node_data[name]["is_observed"]]
        plate = next((p for p, names in plate_groups.items() if p is not None and set(latent) <= set(names)), None)
        node_data["x"] = {"is_observed": True, "distribution": None}
        plate_groups.setdefault(plate, []).insert(0, "x")
        edges = [("x", name, "dashed") for name in latent] + edges

    parents = {p: d["parent"] for p, d in spec["plate_data"].items()}

    def node_line(name: str) -> str:
        fill = "gray" if node_data[name]["is_observed"] else "white"
        return f"{_quote(name)} [label={_quote(name)} shape=ellipse style=filled fillcolor={fill}]"

    def plate_block(plate: str, indent: str) -> list[str]:
        label = f"plate {plate.split('__CLONE')[0]},  N = {plate_size.get(plate, '?')}"
        lines = [f"{indent}subgraph {_quote('cluster_' + plate)} {{",
                 f"{indent}\tlabel={_quote(label)} labeljust=r labelloc=b"]
        lines += [f"{indent}\t{node_line(n)}" for n in plate_groups.get(plate, [])]
        for child in (c for c, p in parents.items() if p == plate):
            lines += plate_block(child, indent + "\t")
        return lines + [f"{indent}}}"]

    lines = ["digraph {", f"\tlabel={_quote(_title(program))} labelloc=t"]
    lines += [f"\t{node_line(n)}" for n in plate_groups.get(None, [])]
    for plate in (p for p, parent in parents.items() if parent is None):
        lines += plate_block(plate, "\t")
    lines += [f"\t{_quote(a)} -> {_quote(b)} [style={style}]" for a, b, style in edges]
    described = []
    for name, site in sites.items():
        if name in node_data:
            event = tuple(site["fn"].event_shape)
            described.append(f"{name} ~ {node_data[name]['distribution']}, event shape {event}\\l")
    if program == "guide":
        described.insert(0, "x: the observed images (the guide's input)\\l")
    lines.append(f"\tdistributions [label=\"{''.join(described)}\" shape=plaintext]")
    return "\n".join(lines + ["}"]) + "\n"


def _title(program: Program) -> str:
    return "model: p_theta(z) p_theta(x|z)" if program == "model" else "guide: q_phi(z|x)"


def render_dot(dot_path: str | Path, formats: tuple[str, ...] = ("svg", "png")) -> list[Path]:
    """Render a DOT file with Graphviz's ``dot`` program beside itself (``model.dot`` -> ``model.svg`` ...).

    :raises FileNotFoundError: when ``dot`` is not on the ``PATH`` (the message says how to install it).
    """
    dot_path = Path(dot_path)
    exe = shutil.which("dot")
    if exe is None:
        hint = DOT_HINT.format(dot=dot_path, png=dot_path.with_suffix(".png"))
        raise FileNotFoundError(f"Graphviz's dot program is not on the PATH; {hint}")
    out = []
    for fmt in formats:
        target = dot_path.with_suffix(f".{fmt}")
        # PNG at 150 dpi, the resolution of the other figures; SVG is resolution-free.
        extra = [f"-Gdpi={DPI}"] if fmt == "png" else []
        subprocess.run([exe, f"-T{fmt}", *extra, str(dot_path), "-o", str(target)], check=True, capture_output=True)
        out.append(target)
    return out


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
    (when Graphviz's ``dot`` is on the ``PATH``), ``graphical_model.png`` (and ``.pdf`` with ``pdf``).

    :returns: the paths written, and in ``note`` how to render the DOT files when ``dot`` is missing.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = GraphFiles()
    for program in ("model", "guide"):
        dot_path = out / f"{program}.dot"
        dot_path.write_text(graph_source(vae, program))
        files.dot.append(dot_path)
    if shutil.which("dot") is not None:
        for dot_path in files.dot:
            files.rendered += render_dot(dot_path)
    else:
        commands = "; ".join(f"dot -Tpng {p} -o {p.with_suffix('.png')}" for p in files.dot)
        files.note = (f"Graphviz's dot program was not found, so only the DOT sources were written. "
                      f"Install it (Debian/Ubuntu: sudo apt-get install graphviz) and run: {commands}")
    files.figure = plot_graphical_model(out / "graphical_model.png", num_data=vae.num_data, z_dim=vae.z_dim, pdf=pdf)
    return files
