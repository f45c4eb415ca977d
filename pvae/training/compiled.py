"""The training ELBO traced once per minibatch shape: SVI steps without Pyro's per-step Python.

At every step Pyro's ELBOs run the guide under a trace, replay the model against it, prune the
traces and score every site: some 600 Python calls, which cost 12-15% of a CPU step of the default
model over a hand-written loop (``bench/train_speed.py``). :class:`TracedELBO` records that
computation once with ``torch.jit.trace`` and replays the recorded graph at every later step with the
same minibatch shape; the model's parameters and buffers stay shared with the module, so the
optimizer's in-place updates are seen. Values, gradients and random draws are those of the eager
ELBO (``tests/training/test_compiled.py`` checks them for every built-in prior, likelihood, guide and
objective).

What a trace cannot keep is Python control flow that depends on tensor values, or Python state that
changes between steps (a counter, say): it is recorded the way it went the first time. So each new
shape's first two steps also compute the eager ELBO on the same draws, and a difference stops
training with an error that names ``engine='eager'``; a change that comes later is not seen, which
is why engine ``auto`` traces only the models pvae builds itself.
``torch.jit.trace`` is deprecated in favour of ``torch.compile``, which today cannot compile through
Pyro's effect handlers without breaking the graph at every site (and is slower than eager there).
"""

from __future__ import annotations

import warnings
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO
from torch import Tensor, nn

from pvae.devices import forked_rng
from pvae.training.warmup import LatentScale

__all__ = ["TracedELBO", "TracedELBOMismatch"]

# Steps of each new minibatch shape that are also computed eagerly and compared.
_CHECKED_STEPS = 2


class TracedELBOMismatch(RuntimeError):
    """The traced ELBO differs from the eager one: the model or guide branches on tensor values."""


class _SurrogateLoss(nn.Module):
    """The loss whose gradient the ELBO follows, as one module call (what ``torch.jit.trace`` records)."""

    def __init__(self, vae: nn.Module, objective: ELBO, *, scaled: bool = False) -> None:
        super().__init__()
        self.vae, self.objective, self.scaled = vae, objective, scaled

    def forward(self, *inputs: Tensor) -> Tensor:
        if self.scaled:  # the weight of the latent sites comes first (KL warm-up, beta; pvae.training.warmup)
            with LatentScale(inputs[0]):
                return self._loss(*inputs[1:])
        return self._loss(*inputs)

    def _loss(self, x: Tensor, *args: Tensor) -> Tensor:
        model, guide, objective = self.vae.model, self.vae.guide, self.objective
        with pyro.validation_enabled(False):
            if not isinstance(objective, Trace_ELBO):  # e.g. IWAE_ELBO: its loss is a plain function of x
                return objective.differentiable_loss(model, guide, x, *args)
            # As Pyro's JitTrace_ELBO: the surrogate alone. Trace_ELBO adds (value - surrogate) as a
            # Python float, which a trace would freeze; for reparameterized guides the two are equal.
            loss: Any = 0.0
            for model_trace, guide_trace in objective._get_traces(model, guide, (x, *args), {}):
                loss = loss + objective._differentiable_loss_particle(model_trace, guide_trace)[1]
            return loss / objective.num_particles


class TracedELBO:
    """``objective.differentiable_loss(vae.model, vae.guide, x)``, replayed from a trace per shape of ``x``.

    :param vae: the model; its ``model`` and ``guide`` take the minibatch ``x`` and, for a
        class-conditional model, its labels (tensors only, which the trace takes as inputs).
    :param objective: a Pyro ELBO (``Trace_ELBO``, ``TraceMeanField_ELBO``, ``IWAE_ELBO``).
    """

    def __init__(self, vae: nn.Module, objective: ELBO) -> None:
        self.vae, self.objective = vae, objective
        self._losses = {False: _SurrogateLoss(vae, objective), True: _SurrogateLoss(vae, objective, scaled=True)}
        self._traced: dict[tuple[Any, ...], Any] = {}
        self._checks_left: dict[tuple[Any, ...], int] = {}

    def differentiable_loss(self, model: Any, guide: Any, x: Tensor, *args: Tensor) -> Tensor:
        """The loss of minibatch ``x`` ``(batch, x_dim)`` (and its labels ``args``): a scalar, as the
        eager ELBO gives it.

        :raises TracedELBOMismatch: when the trace and the eager ELBO disagree on the same draws.
        """
        return self._run(model, guide, (x, *args), scaled=False)

    def differentiable_loss_scaled(self, scale: Tensor, model: Any, guide: Any, x: Tensor, *args: Tensor) -> Tensor:
        """The loss with the latent sites' scores weighted by ``scale``, a scalar tensor (KL warm-up
        and beta, :mod:`pvae.training.warmup`); one trace per shape serves every weight."""
        return self._run(model, guide, (scale, x, *args), scaled=True)

    def _run(self, model: Any, guide: Any, inputs: tuple[Tensor, ...], *, scaled: bool) -> Tensor:
        if model != self.vae.model or guide != self.vae.guide:
            raise ValueError("a TracedELBO computes the loss of the model and guide of the VAE it was built for")
        key = (scaled, *((tuple(t.shape), t.dtype, t.device) for t in inputs))
        traced = self._traced.get(key)
        if traced is None:
            traced = self._traced[key] = self._trace(inputs, scaled)
            self._checks_left[key] = _CHECKED_STEPS
        if self._checks_left[key] == 0:
            return _replay(traced, inputs)
        self._checks_left[key] -= 1
        return self._checked(traced, inputs, scaled)

    def _trace(self, inputs: tuple[Tensor, ...], scaled: bool) -> Any:
        # Tracing runs the loss once; forking the generators keeps that run's draws out of the
        # training's random stream, so a resumed run draws what an uninterrupted one does.
        with forked_rng(inputs[-1].device), warnings.catch_warnings():
            # the deprecation notice, and the tracer's notes on Python numbers it freezes
            warnings.simplefilter("ignore")
            return torch.jit.trace(self._losses[scaled], inputs, check_trace=False)

    def _checked(self, traced: Any, inputs: tuple[Tensor, ...], scaled: bool) -> Tensor:
        with forked_rng(inputs[-1].device), torch.no_grad(), pyro.validation_enabled(False):
            if scaled:
                with LatentScale(inputs[0]):
                    eager = self.objective.differentiable_loss(self.vae.model, self.vae.guide, *inputs[1:])
            else:
                eager = self.objective.differentiable_loss(self.vae.model, self.vae.guide, *inputs)
        loss = _replay(traced, inputs)  # the fork gave the generators back: the same draws as the eager run
        if not torch.isclose(loss.detach(), torch.as_tensor(eager, dtype=loss.dtype), rtol=1e-5, atol=1e-3):
            raise TracedELBOMismatch(
                f"the traced ELBO gives {loss.item():.6g} where Pyro's eager ELBO gives {float(eager):.6g} on the "
                "same draws: the model or guide branches on tensor values, which a trace cannot follow; "
                "train with engine='eager'"
            )
        return loss


def _replay(traced: Any, inputs: tuple[Tensor, ...]) -> Tensor:
    # TorchScript's executor re-optimizes a graph after its first runs, which changes the order of
    # float operations: a resumed run (whose trace is new) would then drift from an uninterrupted
    # one in the last bits. Unoptimized, every run of the graph computes the same: the speed comes
    # from skipping Pyro's Python, not from the optimizer.
    with torch.jit.optimized_execution(False):
        return traced(*inputs)
