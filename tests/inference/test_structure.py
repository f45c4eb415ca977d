"""A model's structure, read once (pvae.inference.structure): what each consumer reads of a model."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import Tensor, nn

from pvae.inference.structure import ModelStructure, model_structure
from pvae.protocol import GraphicalModel
from pvae.runs.build import build_model
from pvae.runs.config import TrainConfig


def small_model(family: str) -> GraphicalModel:
    """A model of ``family`` with tiny networks, on 784 pixels and N = 600 images (M2: 100 labelled)."""
    config = TrainConfig(model=family, z_dim=3, z1_dim=4, hidden=(8,), top_hidden=(8,),
                         labels=100 if family == "m2" else None)
    return build_model(config, 784, 600)


class MixtureVAE(nn.Module):
    """A model of one's own: a discrete cluster c (enumerated by the guide), a continuous z drawn
    given c, and binary images x given z; the guide draws c from x and z from x and c."""

    x_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Linear(2, self.x_dim)
        self.cluster = nn.Linear(self.x_dim, 3)
        self.encoder = nn.Linear(self.x_dim, 2)

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=x.new_zeros(3)))
            z = pyro.sample("z", dist.Normal(c.to(x).unsqueeze(-1).expand(*c.shape, 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        pyro.module("mixture", self)
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.cluster(x)), infer={"enumerate": "parallel"})
            pyro.sample("z", dist.Normal(self.encoder(x) + c.to(x).unsqueeze(-1), 1.0).to_event(1))


# family: (latent, observed, root_latent, discrete, enumerated, label, image, guide_dependencies)
EXPECTED: dict[str, tuple[list[str], list[str], list[str], list[str], list[str], str | None, str | None,
                          dict[str, list[str]]]] = {
    "vae": (["z"], ["x"], ["z"], [], [], None, "x", {"z": []}),
    "hierarchical": (["z2", "z1"], ["x"], ["z2"], [], [], None, "x", {"z1": [], "z2": ["z1"]}),
    # y is an input of the conditional VAE, read by x's likelihood, never a site.
    "conditional": (["z"], ["x"], ["z"], [], [], None, "x", {"z": []}),
    # M2 is read with y latent: a root of the model, enumerated by the guide, which draws z from it.
    "m2": (["y", "z"], ["x"], ["y", "z"], ["y"], ["y"], "y", "x", {"y": [], "z": ["y"]}),
    "mixture": (["c", "z"], ["x"], ["c"], ["c"], ["c"], None, "x", {"c": [], "z": ["c"]}),
}


def structure_of(family: str) -> ModelStructure:
    """The structure of one of the four families, or of the model of one's own."""
    if family == "mixture":
        return model_structure(MixtureVAE())  # type: ignore[arg-type]
    return model_structure(small_model(family))


@pytest.mark.parametrize("family", list(EXPECTED))
def test_structure_properties_of_every_family(family: str) -> None:
    """Latent, observed, root, discrete, enumerated, label and image sites and the guide's dependencies are read from the traces."""
    s = structure_of(family)
    seen = (s.latent, s.observed, s.root_latent, s.discrete, s.enumerated, s.label, s.image, s.guide_dependencies)
    assert seen == EXPECTED[family], f"{family}: read {seen}, expected {EXPECTED[family]}"


@pytest.mark.parametrize(("family", "expected"), [("vae", None), ("conditional", None), ("m2", "y")])
def test_label_is_the_site_labels_are_observed_at(family: str, expected: str | None) -> None:
    """ModelStructure.label: M2 observes y at its site "y"; a conditional VAE only reads y; a VAE takes none."""
    label = model_structure(small_model(family)).label
    assert label == expected, f"{family}: label {label}, expected {expected}"


def test_root_latent_ignores_inputs() -> None:
    """A latent drawn from an input only (the conditional model's labels) still counts as a root."""
    s = structure_of("conditional")
    assert s.model.inputs == ["y"] and s.root_latent == ["z"], (s.model.inputs, s.root_latent)


def test_structure_leaves_the_global_rng_alone_with_a_label_site() -> None:
    """Reading M2's label site (a trace with y observed) does not move torch's random state."""
    model = small_model("m2")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    model_structure(model)
    assert torch.equal(torch.rand(3), expected), "reading the structure consumed random numbers"
