"""What every pvae consumer asks of a model: a Pyro model/guide pair over a plate of images.

Training, the traced engine, ``evaluate``, ``plot``, ``graph`` and the run folder are typed against
:class:`GraphicalModel`, and read everything else (which sites are latent, which observed, their
plates, shapes and distributions) from the model's traces (:mod:`pvae.inference.traces`). :class:`pvae.VAE <pvae.models.vae.VAE>`
is one implementation among several (:mod:`pvae.models`); a model of your own needs no pvae base
class. The contract:

* it is a ``torch.nn.Module`` (so its parameters are trained and saved with ``state_dict``);
* ``x_dim``: pixels per flattened image; ``num_data``: N, the size of the data plate (pvae sets it
  to the training-set size before training);
* ``model(x)`` and ``guide(x)`` -- or ``model(x, y)`` and ``guide(x, y)`` when labels are used --
  put every sample site inside one ``pyro.plate("data", ...)`` over the images, with the images
  ``x`` of shape ``(batch, x_dim)`` observed at one site of the model, and the guide proposing every
  latent site of the model (discrete ones may be marked ``infer={"enumerate": "parallel"}``, and are
  then summed out exactly);
* ``label_mode`` (optional, default ``"none"``): ``"observed"`` when ``y``, integer classes of shape
  ``(batch,)``, is always passed (a class-conditional model); ``"semi-supervised"`` when ``y`` is a
  sample site, observed when passed and latent (``y=None``) otherwise;
* ``num_classes``: the number of classes, required when labels are used;
* for ``"semi-supervised"`` also ``classifier_model(x, y)`` and ``classifier_guide(x, y)``, the
  classification term alpha * log q(y|x) on labelled images (Kingma et al. 2014, eq. 9), and a
  ``num_labelled`` attribute, which pvae sets to N_l before training.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, Protocol, runtime_checkable

from torch import Tensor
from torch.nn import Parameter

__all__ = ["GraphicalModel", "LabelMode", "LABEL_MODES", "DATA_PLATE", "label_mode", "num_classes"]

LabelMode = Literal["none", "observed", "semi-supervised"]
LABEL_MODES: tuple[str, ...] = ("none", "observed", "semi-supervised")
# The plate over the N i.i.d. images; every consumer splits log-densities image by image along it.
DATA_PLATE = "data"


@runtime_checkable
class GraphicalModel(Protocol):
    """A Pyro ``model``/``guide`` pair over images (see the module docstring for the contract)."""

    x_dim: int
    num_data: int | None

    # ``*args: Any, **kwargs: Any``: a model takes x alone or x and y, and either meets the protocol.

    def model(self, x: Tensor, *args: Any, **kwargs: Any) -> None:
        """The generative model p_theta(..., x); ``x`` observed, ``(batch, x_dim)``."""
        ...

    def guide(self, x: Tensor, *args: Any, **kwargs: Any) -> None:
        """The inference model q_phi(latents | x); the same latent site names as ``model``."""
        ...

    # What pvae calls of the torch.nn.Module the model is: declared so that consumers typed against
    # the protocol type-check. Their signatures are torch's (``*args``: whatever torch accepts).

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """theta and phi: every parameter of the model and the guide."""
        ...

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The parameters and buffers by name, as a checkpoint holds them."""
        ...

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """Restore :meth:`state_dict`'s output."""
        ...

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """Move parameters and buffers to a device or dtype (returns the model)."""
        ...

    def train(self, mode: bool = True) -> Any:
        """Training mode (returns the model)."""
        ...

    def eval(self) -> Any:
        """Evaluation mode (returns the model)."""
        ...


def label_mode(model: object) -> LabelMode:
    """How ``model`` uses labels: ``none``, ``observed`` or ``semi-supervised`` (its ``label_mode``).

    :raises ValueError: for any other value.
    """
    mode = getattr(model, "label_mode", "none")
    if mode not in LABEL_MODES:
        raise ValueError(f"label_mode must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    return mode  # type: ignore[return-value]


def num_classes(model: object) -> int:
    """The number of classes of a model that uses labels (its ``num_classes``).

    :raises ValueError: when the model uses labels but does not say how many classes there are.
    """
    count = getattr(model, "num_classes", None)
    if not isinstance(count, int) or count < 2:
        raise ValueError(f"a model with label_mode {label_mode(model)!r} must say how many classes there are: "
                         f"set its attribute num_classes (an integer >= 2), got {count!r}")
    return count
