"""The graphical-model diagrams: DOT source from the Pyro programs, its Graphviz rendering, the
Figure-1-style picture and ``pvae graph``."""

from __future__ import annotations

import re
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pvae import VAE
from pvae.cli import main
from pvae.graph import default_vae, graph_source, plot_graphical_model, write_graphs

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
    written = plot_graphical_model(tmp_path / "fig1.png", num_data=60000, z_dim=2, pdf=True)
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
