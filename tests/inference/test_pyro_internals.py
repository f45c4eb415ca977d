"""The Pyro internals pvae relies on (pvae/inference/pyro_internals.py) behave as it assumes."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from pvae.inference.pyro_internals import enumerated_dim, is_subsample_site


def _program() -> None:
    with pyro.plate("data", 10, subsample_size=4):
        y = pyro.sample("y", dist.Categorical(torch.ones(3) / 3), infer={"enumerate": "parallel"})
        pyro.sample("z", dist.Normal(y.float(), 1.0))


def test_enumerated_dim_is_the_dimension_enumeration_used() -> None:
    """Under poutine.enum, the enumerated site reports the dimension its 3 values lie along; other sites none."""
    trace = poutine.trace(poutine.enum(_program, first_available_dim=-2)).get_trace()
    dim = enumerated_dim(trace.nodes["y"])
    assert dim == -2, f"expected y enumerated along dim -2, got {dim}"
    assert trace.nodes["y"]["value"].shape[dim] == 3, trace.nodes["y"]["value"].shape
    assert enumerated_dim(trace.nodes["z"]) is None


def test_no_enumeration_without_the_handler() -> None:
    """A site marked for enumeration but traced without poutine.enum is drawn, not enumerated."""
    trace = poutine.trace(_program).get_trace()
    assert enumerated_dim(trace.nodes["y"]) is None
    assert trace.nodes["y"]["value"].shape == (4,)


def test_the_plate_subsample_site_is_recognised_and_nothing_else() -> None:
    """The plate's subsample site (the batch's indices) is a subsample site; y and z are not."""
    trace = poutine.trace(_program).get_trace()
    flags = {name: is_subsample_site(site) for name, site in trace.nodes.items() if site["type"] == "sample"}
    assert flags == {"data": True, "y": False, "z": False}, flags
