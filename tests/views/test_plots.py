"""Figures of a run: every file is written, non-empty and of the expected pixel size; the grid
posterior behind the true-posterior figure matches a linear-Gaussian model's closed form."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import pyro.distributions as dist
import pytest
import torch
from torch import Tensor, nn

import pvae
from pvae.cli import main
from pvae.inference.importance import log_marginal_likelihood
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs.build import build_model
from pvae.runs.figures import plot_run, sample_run
from pvae.views import plots
from pvae.views.plots import (
    plot_class_grid,
    plot_elbo_vs_log_px,
    plot_ess_histogram,
    plot_interpolations,
    plot_latent_space,
    plot_log_px_curves,
    plot_manifold,
    plot_posteriors,
    plot_reconstructions,
    plot_samples,
    posterior_on_grid,
    read_per_image_csv,
)

# A module-scoped fixture here is costly to build: the file's tests share one worker (pytest-xdist).
pytestmark = pytest.mark.xdist_group("test_plots")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG's IHDR chunk; fails on a missing, empty or non-PNG file."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG (starts with {head[:8]!r})"
    return struct.unpack(">II", head[16:24])


# Expected (width, height) in pixels at 150 dpi. Image mosaics: 3 pixels per image pixel and a
# 60-pixel title strip, e.g. reconstructions: 2 rows x 10 images of 28 x 28 -> 840 x (168 + 60).
RUN_FIGURES = {
    "curves.png": (750, 525),  # 5 x 3.5 in
    "reconstructions.png": (840, 228),
    "samples.png": (672, 732),  # 8 x 8 images
    "interpolations.png": (1008, 396),  # 4 pairs x (2 ends + 10 steps)
    "latent_space.png": (825, 675),  # 5.5 x 4.5 in
    "manifold.png": (1680, 1740),  # 20 x 20 images
    "posteriors.png": (1080, 1560),  # 7.2 x 10.4 in: 4 images, 3 panels each
    "elbo_vs_log_px.png": (675, 675),  # 4.5 x 4.5 in
    "ess.png": (750, 525),
    "class_grid.png": (840, 900),  # 10 classes x 10 styles
}
NO_LABELS = "class_grid.png: the model takes no labels"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder: z_dim 2, 300 real MNIST training images, 1 epoch (skips without real MNIST)."""
    env = os.environ.get("PVAE_DATA_DIR")
    if not env or not (Path(env).expanduser() / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST needed: set PVAE_DATA_DIR to a folder holding MNIST/raw/*-ubyte")
    out = tmp_path_factory.mktemp("run")
    config = pvae.TrainConfig(z_dim=2, hidden=(64,), train_size=300, val_size=100, epochs=1, device="cpu",
                              out=str(out))
    pvae.train(config, overwrite=True, progress=False)
    return out


def test_plot_run_writes_every_figure(tiny_run: Path, tmp_path: Path) -> None:
    """plot_run writes all nine figures at their sizes (and PDFs), given evaluation.json and per_image.csv."""
    n = 50
    rows = ["elbo,log_px,ess"] + [f"{-100 - i:.1f},{-99 - 0.5 * i:.1f},{1 + i % 7}" for i in range(n)]
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "checkpoint.pt", "metrics.csv"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    (run / "per_image.csv").write_text("\n".join(rows) + "\n")
    (run / "evaluation.json").write_text(json.dumps({"log_px": -150.0, "num_samples": 8}))
    figures = plot_run(run, pdf=True, device="cpu")
    assert figures.skipped == [NO_LABELS], figures.skipped
    drawn = {name: size for name, size in RUN_FIGURES.items() if name != "class_grid.png"}
    for name, size in drawn.items():
        assert png_size(run / name) == size, f"{name}: {png_size(run / name)} pixels, expected {size}"
        pdf = (run / name).with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000, f"{pdf} missing or empty"
    assert sorted(p.name for p in figures.files) == sorted(
        [*drawn, *(name.replace(".png", ".pdf") for name in drawn)]
    ), figures.files


def test_cli_plot_says_what_it_skipped(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`pvae plot RUN --out DIR` writes the figures it can and names the ones that need per_image.csv."""
    assert main(["plot", str(tiny_run), "--out", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    for name in ("curves.png", "latent_space.png", "manifold.png", "posteriors.png"):
        assert png_size(tmp_path / name) == RUN_FIGURES[name], name
    assert "skipped: elbo_vs_log_px.png and ess.png need" in out, out
    assert not (tmp_path / "ess.png").exists()


def test_latent_space_of_m_above_2_uses_principal_components(tmp_path: Path) -> None:
    """For m = 5 the scatter is drawn (from the first two principal components) at 825 x 675 pixels."""
    vae = pvae.VAE(16, 5, hidden=(8,))
    x = torch.rand(40, 16).round()
    path = plot_latent_space(vae, x, torch.arange(40) % 10, tmp_path / "latent.png")
    assert png_size(path) == (825, 675)


def test_manifold_and_posteriors_of_a_1d_latent(tmp_path: Path) -> None:
    """With m = 1 the manifold is one row of 20 images and the posterior figure has two panels per image."""
    vae = pvae.VAE(16, 1, hidden=(8,))
    assert png_size(plot_manifold(vae, (4, 4), tmp_path / "m.png")) == (20 * 12, 12 + 60)
    x = torch.rand(2, 16).round()
    path = plot_posteriors(vae, x, (4, 4), tmp_path / "p.png", size=50, elbo_samples=50)
    assert png_size(path) == (630, 780)  # (1.2 + 3.0) x (2 * 2.6) in


def test_figures_for_m_above_2_refuse_with_the_reason() -> None:
    """The manifold and the grid posterior need m <= 2; asking for more says so."""
    vae = pvae.VAE(16, 3, hidden=(8,))
    with pytest.raises(ValueError, match="got z_dim=3"):
        plot_manifold(vae, (4, 4), "unused.png")
    with pytest.raises(ValueError, match="got z_dim=3"):
        plot_posteriors(vae, torch.zeros(1, 16), (4, 4), "unused.png")


class FixedGaussian:
    """p(x|z) = N(x; decoder(z), s^2 I): a duck-typed likelihood for the closed-form check."""

    params_per_pixel = 1

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, output: Tensor) -> dist.TorchDistribution:
        return dist.Normal(output, self.scale).to_event(1)

    def check_support(self, x: Tensor) -> None: ...

    def initial_bias(self, mean_image: Tensor) -> Tensor:
        return mean_image


@pytest.mark.parametrize("z_dim", [1, 2], ids=["m=1", "m=2"])
def test_posterior_on_grid_matches_linear_gaussian_closed_form(z_dim: int) -> None:
    """With x = W z + b + s eps, the grid's log p(x) and log p(z|x) match N(x; b, W W^T + s^2 I) and the Gaussian posterior."""
    torch.manual_seed(0)
    x_dim, s = 5, 0.7
    vae = pvae.VAE(x_dim, z_dim, likelihood=FixedGaussian(s), hidden=(4,)).double()
    vae.decoder = nn.Linear(z_dim, x_dim).double()
    w, b = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    x = b + w @ torch.randn(z_dim, dtype=torch.float64) + s * torch.randn(x_dim, dtype=torch.float64)
    exact_log_px = dist.MultivariateNormal(b, w @ w.T + s**2 * torch.eye(x_dim, dtype=torch.float64)).log_prob(x)
    precision = torch.eye(z_dim, dtype=torch.float64) + w.T @ w / s**2
    post_cov = torch.linalg.inv(precision)
    post_mean = post_cov @ w.T @ (x - b) / s**2
    posterior = dist.MultivariateNormal(post_mean, post_cov)

    grid = posterior_on_grid(vae, x, [(-6.0, 6.0)] * z_dim, size=400 if z_dim == 1 else 200)
    torch.testing.assert_close(torch.tensor(grid.log_px, dtype=torch.float64), exact_log_px, atol=1e-4, rtol=0)
    mesh = torch.meshgrid(*reversed(grid.axes), indexing="ij")
    z = torch.stack([t.reshape(-1) for t in reversed(mesh)], dim=-1)
    torch.testing.assert_close(grid.log_density.reshape(-1), posterior.log_prob(z), atol=1e-4, rtol=0)


def test_per_image_csv_round_trip(tmp_path: Path) -> None:
    """read_per_image_csv returns each column as a float64 tensor in file order."""
    path = tmp_path / "per_image.csv"
    path.write_text("elbo,log_px,ess\n-101.5,-99.25,3.5\n-90,-89,1\n")
    cols = read_per_image_csv(path)
    torch.testing.assert_close(cols["log_px"], torch.tensor([-99.25, -89.0], dtype=torch.float64))
    torch.testing.assert_close(cols["ess"], torch.tensor([3.5, 1.0], dtype=torch.float64))


def test_elbo_and_ess_figures(tmp_path: Path) -> None:
    """The ELBO-vs-log p(x) scatter is 675 x 675 pixels and the ESS histogram 750 x 525; mismatched shapes are refused."""
    elbo, log_px = -torch.rand(30) * 10 - 100, -torch.rand(30) * 10 - 95
    assert png_size(plot_elbo_vs_log_px(elbo, log_px, tmp_path / "s.png")) == (675, 675)
    assert png_size(plot_ess_histogram(torch.rand(30) * 9 + 1, tmp_path / "e.png", num_samples=10)) == (750, 525)
    with pytest.raises(ValueError, match=r"got \(30,\) and \(29,\)"):
        plot_elbo_vs_log_px(elbo, log_px[:29], tmp_path / "bad.png")


def test_log_px_curves_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run's points are drawn at (epoch, log p(x)) on a log-scale epoch axis reaching ``until``,
    each reference as a horizontal line at its value inside the frame; the PNG is 825 x 570; no
    curve, or an empty one, is refused."""
    curves = {"k = 1": [{"epoch": 1, "log_px": -116.9, "log_px_stderr": 1.1}, {"epoch": 4, "log_px": -103.5}],
              "k = 5": [{"epoch": 1, "log_px": -113.1, "log_px_stderr": 1.0}]}
    assert png_size(plot_log_px_curves(curves, tmp_path / "c.png", references={"paper": -86.76})) == (825, 570)
    figures = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, pdf: figures.append(fig) or real_save(fig, path, pdf))
    plot_log_px_curves(curves, tmp_path / "c.png", references={"paper": -86.76}, until=3280)
    ax = figures[0].axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[1] >= 3280  # the axis shows the whole budget
    low, high = ax.get_ylim()
    assert low < -116.9 - 1.1 and high > -86.76  # error bars and the reference inside the frame
    drawn = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines]
    assert ([1, 4], [-116.9, -103.5]) in drawn and ([1], [-113.1]) in drawn
    assert any(ys == [-86.76, -86.76] for _, ys in drawn)
    for bad in ({}, {"k = 1": []}):
        with pytest.raises(ValueError, match="at least one curve"):
            plot_log_px_curves(bad, tmp_path / "bad.png")


def test_save_run_figures_keeps_the_training_trio(tiny_run: Path) -> None:
    """pvae.train still leaves curves.png, reconstructions.png and samples.png in the run folder."""
    for name in ("curves.png", "reconstructions.png", "samples.png"):
        assert png_size(tiny_run / name) == RUN_FIGURES[name], name



# Every family, untrained: (config, number of continuous latent sites the guide proposes).
FAMILIES = {
    "vae": (pvae.TrainConfig(model="vae", z_dim=2, hidden=(8,)), 1),
    "hierarchical": (pvae.TrainConfig(model="hierarchical", z_dim=2, z1_dim=4, hidden=(8,), top_hidden=(8,)), 2),
    "conditional": (pvae.TrainConfig(model="conditional", z_dim=3, hidden=(8,)), 1),
    "m2": (pvae.TrainConfig(model="m2", z_dim=2, hidden=(8,), labels=100), 1),
}


def small_model(family: str) -> GraphicalModel:
    """An untrained model of ``family`` over 28 x 28 images, N = 600."""
    return build_model(FAMILIES[family][0], 784, 600).eval()  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_figures_of_every_family(family: str, tmp_path: Path) -> None:
    """Reconstructions, samples, interpolations, one latent panel per continuous site and the class grid (label models) have their sizes."""
    model = small_model(family)
    x, labels = torch.rand(40, 784).round(), torch.arange(40) % 10
    y = labels if label_mode(model) == "observed" else None
    shape = (28, 28)
    assert png_size(plot_reconstructions(model, x, shape, tmp_path / "r.png", y=y)) == RUN_FIGURES["reconstructions.png"]
    assert png_size(plot_samples(model, shape, tmp_path / "s.png")) == RUN_FIGURES["samples.png"]
    path = plot_interpolations(model, x[:8], shape, tmp_path / "i.png", y=None if y is None else y[:8])
    assert png_size(path) == RUN_FIGURES["interpolations.png"]
    panels = FAMILIES[family][1]
    assert png_size(plot_latent_space(model, x, labels, tmp_path / "l.png", y)) == (825 * panels, 675)
    if label_mode(model) == "none":
        with pytest.raises(ValueError, match="takes none"):
            plot_class_grid(model, shape, tmp_path / "c.png")
    else:
        assert png_size(plot_class_grid(model, shape, tmp_path / "c.png")) == RUN_FIGURES["class_grid.png"]


@pytest.mark.parametrize("family", ["hierarchical", "conditional", "m2"])
def test_grid_figures_refuse_other_models_with_the_reason(family: str) -> None:
    """The manifold and the grid posterior refuse a model with labels or with more than one latent site, saying which."""
    model = small_model(family)
    reason = "the model has z2 \\(continuous\\), z1 \\(continuous\\)" if family == "hierarchical" else "takes labels"
    with pytest.raises(ValueError, match=reason):
        plot_manifold(model, (28, 28), "unused.png")
    with pytest.raises(ValueError, match=reason):
        posterior_on_grid(model, torch.zeros(784))


@pytest.mark.parametrize("family", ["conditional", "m2"])
def test_class_grid_shares_the_style_down_each_column(family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The class grid has C rows of `styles` images; every row decodes the same prior draws of z, row c with class c."""
    model = small_model(family)
    seen: dict[str, object] = {}
    real_decode = plots.decode

    def spy(model_: GraphicalModel, values: dict[str, Tensor], num: int, y: Tensor | None = None, **kw: object) -> Tensor:
        seen.update(values=dict(values), num=num, y=y)
        return real_decode(model_, values, num, y, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(plots, "decode", spy)
    styles = 3
    path = plot_class_grid(model, (28, 28), tmp_path / "c.png", styles=styles)
    assert png_size(path) == (styles * 84, 10 * 84 + 60), png_size(path)
    values = seen["values"]
    assert isinstance(values, dict)
    z = values["z"].reshape(10, styles, -1)
    torch.testing.assert_close(z, z[:1].expand_as(z), rtol=0, atol=0)
    # conditional: the classes are the label argument; M2: its latent site y is conditioned on them
    classes = seen["y"] if family == "conditional" else values["y"]
    assert seen["num"] == 10 * styles
    assert torch.equal(classes, torch.arange(10).repeat_interleave(styles)), classes


def test_posterior_on_grid_is_the_prior_times_the_likelihood() -> None:
    """On a built VAE (N = 600, grid chunks smaller than N), the traced log p(x, z) equals log p(z) + log p(x|z): no minibatch scale."""
    vae = small_model("vae")
    x = torch.rand(784).round()
    bounds = [(-4.0, 4.0), (-3.0, 5.0)]
    grid = posterior_on_grid(vae, x, bounds, size=60, chunk=500)
    mesh = torch.meshgrid(*reversed(grid.axes), indexing="ij")
    z = torch.stack([t.reshape(-1) for t in reversed(mesh)], dim=-1).float()
    with torch.no_grad():
        log_joint = (vae.prior().log_prob(z) + vae.likelihood(vae.decoder(z)).log_prob(x)).double()  # type: ignore[attr-defined,operator]
    log_volume = math.log(8.0 / 60) * 2
    exact_log_px = torch.logsumexp(log_joint, 0) + log_volume
    torch.testing.assert_close(torch.tensor(grid.log_px, dtype=torch.float64), exact_log_px, atol=1e-6, rtol=0)
    torch.testing.assert_close(grid.log_density.reshape(-1), log_joint - exact_log_px, atol=1e-6, rtol=0)
    assert grid.site == "z"


def test_posterior_on_grid_agrees_with_importance_sampling() -> None:
    """With its own bounds, the grid's log p(x) of a built VAE is within 0.1 nats of a 20000-sample importance estimate."""
    vae = small_model("vae")
    x = torch.rand(784).round()
    grid = posterior_on_grid(vae, x, size=100)
    estimate = float(log_marginal_likelihood(vae.model, vae.guide, x[None], num_samples=20000)[0])
    assert abs(grid.log_px - estimate) < 0.1, (grid.log_px, estimate)


@pytest.fixture(scope="module")
def fake_runs(fake_mnist_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run folders of a VAE and a class-conditional VAE (z_dim 2, hidden (8,)): 1 epoch on the fake MNIST."""
    runs = {}
    for family in ("vae", "conditional"):
        out = tmp_path_factory.mktemp(family)
        config = pvae.TrainConfig(model=family, data_dir=str(fake_mnist_root), epochs=1, val_size=100, hidden=(8,),
                                  z_dim=2, device="cpu", out=str(out))
        pvae.train(config, overwrite=True, progress=False)
        runs[family] = out
    return runs


def test_sample_run_draws_one_class(fake_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sample_run --label 3 on a conditional run draws all 16 samples with y = 3, the same figure for the same seed."""
    classes: list[Tensor] = []
    real_generate = plots.generate

    def spy(model: GraphicalModel, num: int, y: Tensor | None = None, **kw: object) -> Tensor:
        classes.append(y if y is not None else torch.tensor([]))
        return real_generate(model, num, y, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(plots, "generate", spy)
    path = sample_run(fake_runs["conditional"], out=tmp_path, label=3, num=16, device="cpu")
    assert path == tmp_path / "samples_label3.png"
    assert png_size(path) == (4 * 84, 4 * 84 + 60), png_size(path)
    assert torch.equal(classes[0], torch.full((16,), 3)), classes
    again = sample_run(fake_runs["conditional"], out=tmp_path / "again", label=3, num=16, device="cpu")
    other = sample_run(fake_runs["conditional"], out=tmp_path / "other", label=3, num=16, device="cpu", seed=1)
    assert again.read_bytes() == path.read_bytes(), "the same seed drew another figure"
    assert other.read_bytes() != path.read_bytes(), "seed 1 drew the figure of seed 0"
    with pytest.raises(ValueError, match=r"expected a label in 0\.\.9 \(the model's classes\), got 10"):
        sample_run(fake_runs["conditional"], out=tmp_path, label=10, device="cpu")


def test_sample_run_refuses_a_label_for_a_model_without_labels(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    """A label for a VAE run is refused with one line naming the fix; without a label samples.png is drawn."""
    with pytest.raises(ValueError) as err:
        sample_run(fake_runs["vae"], out=tmp_path, label=3, device="cpu")
    assert str(err.value) == "this run's model takes no labels; drop --label", str(err.value)
    assert not (tmp_path / "samples_label3.png").exists()
    path = sample_run(fake_runs["vae"], out=tmp_path, num=10, device="cpu")
    assert png_size(path) == (4 * 84, 3 * 84 + 60), png_size(path)  # 3 rows of 4, the last two blank


def test_plot_run_of_a_conditional_run(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    """plot_run on a conditional run draws the class grid and says why it leaves out the manifold and the posteriors."""
    figures = plot_run(fake_runs["conditional"], out=tmp_path, device="cpu")
    names = sorted(p.name for p in figures.files)
    assert names == sorted(["curves.png", "reconstructions.png", "samples.png", "interpolations.png",
                            "latent_space.png", "class_grid.png"]), names
    for name in names:
        assert png_size(tmp_path / name) == RUN_FIGURES[name], name
    reasons = [s for s in figures.skipped if s.startswith("manifold.png and posteriors.png")]
    assert len(reasons) == 1 and "the model takes labels y" in reasons[0], figures.skipped
    assert NO_LABELS not in figures.skipped


def test_plot_run_of_a_vae_run(fake_runs: dict[str, Path], tmp_path: Path) -> None:
    """plot_run on a VAE run with z_dim 2 draws the manifold and the posteriors, and skips the class grid saying why."""
    figures = plot_run(fake_runs["vae"], out=tmp_path, device="cpu", num_posterior_images=1)
    names = {p.name for p in figures.files}
    assert {"manifold.png", "latent_space.png", "interpolations.png"} <= names, names
    assert "class_grid.png" not in names
    assert png_size(tmp_path / "manifold.png") == RUN_FIGURES["manifold.png"]
    assert png_size(tmp_path / "posteriors.png") == (1080, 390)  # 7.2 x 2.6 in: one image
    assert NO_LABELS in figures.skipped, figures.skipped
