"""The graphical-model diagrams: DOT source from the Pyro programs, its Graphviz rendering, the
Figure-1-style picture and ``pvae graph``."""

from __future__ import annotations

import re
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from pvae import VAE
from pvae.cli import main
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs.build import build_model, default_model, default_vae
from pvae.runs.config import TrainConfig
from pvae.views.graph import (
    graph_source,
    graph_structure,
    plot_graphical_model,
    program_structure,
    write_graphs,
)

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="Graphviz's dot program is not installed (apt-get install graphviz)"
)


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG (starts with {head[:8]!r})"
    return struct.unpack(">II", head[16:24])


def cluster_body(dot: str, label: str) -> str:
    """The text inside ``subgraph "cluster_<label>" { ... }`` (a plate drawn by Pyro's renderer)."""
    found = re.search(rf'subgraph "cluster_{re.escape(label)}" \{{\n(.*?)\n\t\}}', dot, flags=re.S)
    assert found is not None, f"no plate box labelled {label!r} in:\n{dot}"
    return found.group(1)


def test_model_dot_has_z_and_x_in_a_plate_of_size_n() -> None:
    """The model's DOT puts latent z (white) and observed x (grey) inside the data plate, labelled N = 300, with z -> x."""
    dot = graph_source(VAE(12, 2, hidden=(8,), num_data=300), "model")
    body = cluster_body(dot, "data, N = 300")
    assert 'label="data, N = 300"' in body, f"plate label missing N = 300:\n{body}"
    assert re.search(r"\bz \[label=z fillcolor=white shape=ellipse", body), f"no white z node in the plate:\n{body}"
    assert re.search(r"\bx \[label=x fillcolor=gray shape=ellipse", body), f"no grey (observed) x node in the plate:\n{body}"
    assert "\tz -> x\n" in dot, f"no edge z -> x:\n{dot}"
    assert "z ~ Normal, event shape (2,)" in dot and "x ~ Bernoulli, event shape (12,)" in dot, dot


def test_guide_dot_has_a_dashed_edge_from_x_to_z() -> None:
    """The guide's DOT draws q(z|x): x as grey input, a dashed edge x -> z, both in the plate of size N."""
    dot = graph_source(VAE(12, 3, hidden=(8,), num_data=50), "guide")
    body = cluster_body(dot, "data, N = 50")
    assert "\tz [" in body and "\tx [label=x fillcolor=gray" in body, body
    assert "\tx -> z [style=dashed]\n" in dot, dot
    assert "z ~ Normal, event shape (3,)" in dot, dot


def test_graph_source_rejects_an_unknown_program() -> None:
    """Asking for anything but the model or the guide names both choices."""
    with pytest.raises(ValueError, match="expected program 'model' or 'guide', got 'decoder'"):
        graph_source(VAE(4, 1, hidden=(3,)), "decoder")  # type: ignore[arg-type]


def test_without_dot_the_sources_are_written_with_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no dot program on the PATH, write_graphs writes model.dot, guide.dot and the figure, and says how to render."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    files = write_graphs(VAE(12, 2, hidden=(8,), num_data=300), tmp_path)
    assert files.dot == [tmp_path / "model.dot", tmp_path / "guide.dot"], files.dot
    assert files.rendered == [], f"nothing can be rendered without dot, got {files.rendered}"
    assert (tmp_path / "model.dot").read_text().startswith("digraph {")
    assert files.note is not None and "apt-get install graphviz" in files.note, files.note
    assert f"dot -Tpng {tmp_path / 'model.dot'} -o {tmp_path / 'model.png'}" in files.note, files.note
    assert png_size(tmp_path / "graphical_model.png") == (750, 600)  # 5 x 4 inches at 150 dpi


@needs_dot
def test_rendered_svg_has_z_and_x_inside_the_plate(tmp_path: Path) -> None:
    """Rendered by Graphviz, the z and x ellipses lie inside the plate's box, whose label reads N = 300."""
    files = write_graphs(VAE(12, 2, hidden=(8,), num_data=300), tmp_path)
    assert files.note is None, files.note
    for name in ("model", "guide"):
        for suffix in ("svg", "png"):
            path = tmp_path / f"{name}.{suffix}"
            assert path in files.rendered and path.stat().st_size > 0, f"{path} missing or empty"
        width, height = png_size(tmp_path / f"{name}.png")
        assert width > 100 and height > 100, f"{name}.png is only {width} x {height} pixels"
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ET.parse(tmp_path / "model.svg").getroot()
    groups = {g.findtext("svg:title", namespaces=ns): g for g in root.iter(f"{{{ns['svg']}}}g")}
    plate = groups["cluster_data, N = 300"]
    assert any("N = 300" in (t.text or "") for t in plate.iter(f"{{{ns['svg']}}}text")), "plate label lacks N = 300"
    xs, ys = zip(*(map(float, p.split(",")) for p in plate.find("svg:polygon", ns).get("points").split()))
    for node in ("z", "x"):
        ellipse = groups[node].find("svg:ellipse", ns)
        cx, cy = float(ellipse.get("cx")), float(ellipse.get("cy"))
        assert min(xs) < cx < max(xs) and min(ys) < cy < max(ys), f"node {node} at ({cx}, {cy}) is outside the plate"


def test_graphical_model_figure_png_and_pdf(tmp_path: Path) -> None:
    """The Figure-1-style picture is a 750 x 600 PNG (5 x 4 in at 150 dpi), plus a PDF on request."""
    written = plot_graphical_model(VAE(12, 2, hidden=(8,), num_data=60000), tmp_path / "fig1.png", pdf=True)
    assert written == [tmp_path / "fig1.png", tmp_path / "fig1.pdf"], written
    assert png_size(written[0]) == (750, 600)
    assert written[1].read_bytes().startswith(b"%PDF") and written[1].stat().st_size > 1000


def test_default_vae_is_the_default_training_model() -> None:
    """Without a run, the diagram shows pvae train's default model: m = 50, 784 pixels, N = 60000 - 10000."""
    vae = default_vae()
    assert (vae.z_dim, vae.x_dim, vae.num_data) == (50, 784, 50_000), (vae.z_dim, vae.x_dim, vae.num_data)


def test_cli_graph_writes_the_default_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pvae graph --out DIR` exits 0, lists the files, and the model's plate has N = 50000."""
    assert main(["graph", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"written: {tmp_path / 'model.dot'}" in out and f"written: {tmp_path / 'graphical_model.png'}" in out, out
    assert "z [" in cluster_body((tmp_path / "model.dot").read_text(), "data, N = 50000")


FAMILIES = ("vae", "hierarchical", "conditional", "m2")


def small_model(family: str) -> GraphicalModel:
    """A model of ``family`` with tiny networks, on 784 pixels and N = 600 images (M2: 100 labelled)."""
    config = TrainConfig(model=family, z_dim=3, z1_dim=4, hidden=(8,), top_hidden=(8,),
                         labels=100 if family == "m2" else None)
    return build_model(config, 784, 600)


def dot_edges(dot: str) -> set[str]:
    """Every edge line of a DOT source, e.g. ``z -> x`` or ``x -> z [style=dashed]``."""
    return set(re.findall(r"^\t(\w+ -> \w+(?: \[style=dashed\])?)$", dot, flags=re.M))


def plate_nodes(body: str) -> dict[str, str]:
    """The nodes inside a plate's DOT body and their fill colour (white: latent, gray: observed)."""
    return dict(re.findall(r"^\t\t(\w+) \[label=\w+ fillcolor=(\w+) shape=ellipse", body, flags=re.M))


# family, program: (the plate's N, its nodes and fill colours, every edge). M2 is drawn with y
# latent, so its plate is the N - N_l = 500 unlabelled images.
EXPECTED = {
    ("vae", "model"): (600, {"z": "white", "x": "gray"}, {"z -> x"}),
    ("vae", "guide"): (600, {"x": "gray", "z": "white"}, {"x -> z [style=dashed]"}),
    ("hierarchical", "model"): (600, {"z2": "white", "z1": "white", "x": "gray"}, {"z2 -> z1", "z1 -> x"}),
    ("hierarchical", "guide"): (600, {"x": "gray", "z1": "white", "z2": "white"},
                                {"x -> z1 [style=dashed]", "z1 -> z2 [style=dashed]"}),
    ("conditional", "model"): (600, {"y": "gray", "z": "white", "x": "gray"}, {"y -> x", "z -> x"}),
    ("conditional", "guide"): (600, {"x": "gray", "y": "gray", "z": "white"},
                               {"x -> z [style=dashed]", "y -> z [style=dashed]"}),
    ("m2", "model"): (500, {"y": "white", "z": "white", "x": "gray"}, {"y -> x", "z -> x"}),
    ("m2", "guide"): (500, {"x": "gray", "y": "white", "z": "white"},
                      {"x -> y [style=dashed]", "x -> z [style=dashed]", "y -> z [style=dashed]"}),
}


@pytest.mark.parametrize(("family", "program"), list(EXPECTED), ids=[f"{f}-{p}" for f, p in EXPECTED])
def test_dot_of_every_family_has_its_nodes_edges_and_plate(family: str, program: str) -> None:
    """Each family's model and guide DOT has exactly the expected edges (the guide's dashed), and its
    nodes, observed ones and inputs filled grey, in a plate labelled with N."""
    num_data, nodes, edges = EXPECTED[family, program]
    dot = graph_source(small_model(family), program)  # type: ignore[arg-type]
    body = cluster_body(dot, f"data, N = {num_data}")
    assert plate_nodes(body) == nodes, f"{family} {program}: plate nodes {plate_nodes(body)}, expected {nodes}:\n{dot}"
    assert dot_edges(dot) == edges, f"{family} {program}: edges {dot_edges(dot)}, expected {edges}:\n{dot}"


def test_structure_reads_inputs_and_dependencies_from_the_traces() -> None:
    """The conditional model's labels and the guides' images are inputs with the sites that read them as children."""
    conditional = program_structure(small_model("conditional"), "model")
    assert (conditional.inputs, conditional.image, conditional.latent) == (["y"], "x", ["z"]), conditional
    assert conditional.parents == {"y": [], "z": [], "x": ["y", "z"]}, conditional.parents
    guide = program_structure(small_model("hierarchical"), "guide")
    assert guide.inputs == ["x"] and guide.parents == {"x": [], "z1": ["x"], "z2": ["z1"]}, guide.parents
    assert guide.event_shape == {"z1": (4,), "z2": (3,)} and guide.image is None, guide
    m2 = program_structure(small_model("m2"), "model")
    assert m2.latent == ["y", "z"] and m2.num_values == {"y": 10} and m2.inputs == [], m2


def test_structure_leaves_the_global_rng_alone() -> None:
    """Tracing a model to draw it does not move torch's random state (the draws are forked)."""
    model = small_model("m2")
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    graph_structure(model)
    assert torch.equal(torch.rand(3), expected), "drawing the graph consumed random numbers"


def test_labels_for_a_model_without_labels_are_refused() -> None:
    """Passing y to draw a model that takes no labels names the problem."""
    with pytest.raises(ValueError, match="expected no labels y for a model with label_mode 'none'"):
        graph_source(small_model("vae"), "model", y=torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("family", FAMILIES)
def test_write_graphs_for_every_family(family: str, tmp_path: Path) -> None:
    """write_graphs writes both DOT files and the Figure-1 picture for every family (and SVG/PNG when dot is
    installed); the picture grows with the traced structure: taller for three rows, wider for two nodes side by side."""
    files = write_graphs(small_model(family), tmp_path)
    assert files.dot == [tmp_path / "model.dot", tmp_path / "guide.dot"], files.dot
    assert "data, N = " in (tmp_path / "guide.dot").read_text()
    assert files.figure == [tmp_path / "graphical_model.png"], files.figure
    width, height = png_size(files.figure[0])
    rows, columns = {"vae": (2, 1), "hierarchical": (3, 1), "conditional": (2, 2), "m2": (2, 2)}[family]
    assert (width > 750) == (columns > 1), f"{family}: {width} x {height} pixels for {columns} column(s)"
    # A VAE's picture keeps the paper's 5 x 4 inches; a third row adds most of its 1.5 inches (225 px).
    assert height == 600 if family == "vae" else height > 600 + 150 * (rows - 2), f"{family}: {width} x {height}"
    if shutil.which("dot") is not None:
        assert files.note is None and files.rendered == [tmp_path / f"{n}.{s}" for n in ("model", "guide")
                                                         for s in ("svg", "png")], files


def test_figure_of_a_structure_traces_nothing(tmp_path: Path) -> None:
    """plot_graphical_model draws an already traced GraphStructure, also as PDF."""
    structure = graph_structure(small_model("hierarchical"))
    written = plot_graphical_model(structure, tmp_path / "h.png", pdf=True)
    assert written == [tmp_path / "h.png", tmp_path / "h.pdf"], written
    assert png_size(written[0])[1] > 600 and written[1].read_bytes().startswith(b"%PDF")


def test_default_model_builds_any_family() -> None:
    """default_model (and its old name default_vae) builds M2 from TrainConfig(model='m2', labels=100), N = 50000."""
    assert default_vae is default_model
    m2 = default_model(TrainConfig(model="m2", labels=100))
    assert (label_mode(m2), m2.x_dim, m2.num_data) == ("semi-supervised", 784, 50_000), (label_mode(m2), m2.num_data)
    assert "x -> y [style=dashed]" in dot_edges(graph_source(m2, "guide"))


def test_inputs_of_the_wrong_shape_are_refused() -> None:
    """Images that are not (batch, x_dim), or labels that are not one per image, are refused with the shape expected."""
    model = small_model("conditional")
    with pytest.raises(ValueError, match=r"expected images x of shape \(batch, 784\), got \(2, 28, 28\)"):
        graph_source(model, "model", x=torch.zeros(2, 28, 28))
    with pytest.raises(ValueError, match=r"expected labels y of shape \(2,\), one class per image, got \(3,\)"):
        graph_source(model, "guide", x=torch.zeros(2, 784), y=torch.zeros(3, dtype=torch.long))
