"""The Pyro behaviour pvae relies on that Pyro does not document as public API, in one place.

Each function names what it reads and is pinned by ``tests/inference/test_pyro_internals.py``, so
that a Pyro release that changes it fails there, with its name, rather than as a wrong number
somewhere downstream.
"""

from __future__ import annotations

from typing import Any

from pyro.poutine.util import site_is_subsample

__all__ = ["enumerated_dim", "is_subsample_site"]


def enumerated_dim(site: dict[str, Any]) -> int | None:
    """The tensor dimension an enumeration handler put a sample site's values in, or ``None`` when
    the site was not enumerated. Pyro's ``EnumMessenger`` records it as ``infer["_enumerate_dim"]``."""
    dim = site["infer"].get("_enumerate_dim")
    return None if dim is None else int(dim)


def is_subsample_site(site: dict[str, Any]) -> bool:
    """Whether a sample message or trace site is a plate's subsample site (which images are in the
    batch), not a latent. Pyro marks it by the private distribution class ``_Subsample``."""
    return bool(site_is_subsample(site))
