"""A graphical model pvae did not write, trained, evaluated, drawn and plotted by every pvae command.

The model has two latent variables per image, a "content" code c and a "style" code s, each with
its own prior, and the guide proposes both from the image:

    c_i ~ N(0, I_a),  s_i ~ Laplace(0, 1)^b,  x_i ~ Bernoulli(decoder(c_i, s_i))      i = 1..N
    q(c_i | x_i) q(s_i | x_i, c_i)

All pvae asks of it (see pvae/protocol.py): a torch Module whose constructor takes ``x_dim`` and
``num_data`` (plus arguments of its own, given as ``--model-args``), and ``model(x)``/``guide(x)``
with every sample site inside ``pyro.plate("data", ...)``. From the command line, with this folder
on the Python path:

    PYTHONPATH=examples pvae train --model own_model:TwoCodeVAE --model-args '{"content_dim": 8}' --out runs/own
    PYTHONPATH=examples pvae evaluate runs/own --num-samples 1000   # rebuilt from config.json
    PYTHONPATH=examples pvae graph runs/own; PYTHONPATH=examples pvae plot runs/own

Run this file (``--smoke`` for a seconds-long check) to do the same from Python.
"""

from __future__ import annotations

import argparse

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.nn import functional as F


class TwoCodeVAE(PyroModule):
    """p(c) p(s) p(x | c, s) with guide q(c | x) q(s | x, c); sizes ``content_dim`` and ``style_dim``."""

    def __init__(self, x_dim: int, num_data: int | None = None, content_dim: int = 8, style_dim: int = 2,
                 hidden: int = 200) -> None:
        super().__init__()
        self.x_dim, self.num_data, self.content_dim, self.style_dim = x_dim, num_data, content_dim, style_dim
        self.decoder = nn.Sequential(nn.Linear(content_dim + style_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.content_encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * content_dim))
        self.style_encoder = nn.Sequential(nn.Linear(x_dim + content_dim, hidden), nn.Tanh(),
                                           nn.Linear(hidden, 2 * style_dim))

    def _plate(self, x: Tensor) -> pyro.plate:
        # A minibatch is a subsample of the N images, so Pyro scales its log-densities by N / B.
        if self.num_data is None or x.shape[0] >= self.num_data:
            return pyro.plate("data", x.shape[0])
        return pyro.plate("data", self.num_data, subsample=torch.arange(x.shape[0], device=x.device))

    def model(self, x: Tensor) -> None:
        with self._plate(x):
            c = pyro.sample("c", dist.Normal(x.new_zeros(self.content_dim), 1.0).to_event(1))
            s = pyro.sample("s", dist.Laplace(x.new_zeros(self.style_dim), 1.0).to_event(1))
            logits = self.decoder(torch.cat([c, s], -1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(self, x: Tensor) -> None:
        with self._plate(x):
            loc, raw = self.content_encoder(x).chunk(2, -1)
            c = pyro.sample("c", dist.Normal(loc, F.softplus(raw) + 1e-6).to_event(1))
            inputs = torch.cat([x.expand(c.shape[:-1] + x.shape[-1:]), c], -1)
            loc, raw = self.style_encoder(inputs).chunk(2, -1)
            pyro.sample("s", dist.Normal(loc, F.softplus(raw) + 1e-6).to_event(1))


def main() -> None:
    import pvae

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a seconds-long run on 400 images")
    parser.add_argument("--out", default="runs/examples/own_model")
    args = parser.parse_args()
    config = pvae.TrainConfig(
        model="own_model:TwoCodeVAE", model_args='{"content_dim": 8, "style_dim": 2}',
        epochs=1 if args.smoke else 20, train_size=400 if args.smoke else None, val_size=100 if args.smoke else 10_000,
        out=args.out,
    )
    result = pvae.train(config, overwrite=True, progress=False)
    # Rebuilt from the run folder alone: the import path and model_args in config.json.
    evaluation = pvae.evaluate_run(result.run_dir, num_samples=50 if args.smoke else 1000)
    print(f"test ELBO {evaluation['elbo']:.2f}, KL terms {evaluation['kl_by_site']}, "
          f"log p(x) {evaluation['log_px']:.2f} ± {evaluation['log_px_stderr']:.2f} nats per image")
    files = pvae.write_graphs(pvae.rebuild_model(*pvae.load_run(result.run_dir), torch.device("cpu")), result.run_dir)
    print("graphs:", ", ".join(str(p) for p in files.dot + files.rendered + files.figure))


if __name__ == "__main__":
    main()
