"""A model whose log p(x) and posterior are known in closed form, for the estimators' exactness tests."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from scipy import stats
from torch import Tensor

F64 = torch.float64


class LinearGaussian:
    """p(z) = N(0, I_m), p(x|z) = N(W z + b, s^2 I_d): log p(x) = log N(x; b, W W^T + s^2 I) exactly,
    and the posterior p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1."""

    def __init__(self, x_dim: int = 5, z_dim: int = 2, noise: float = 0.7, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.W = torch.randn(x_dim, z_dim, generator=gen, dtype=F64)
        self.b = torch.randn(x_dim, generator=gen, dtype=F64)
        self.s, self.x_dim, self.z_dim = noise, x_dim, z_dim
        self.post_cov = torch.linalg.inv(torch.eye(z_dim, dtype=F64) + self.W.T @ self.W / noise**2)

    def sample_x(self, n: int, seed: int = 1) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen, dtype=F64)
        return z @ self.W.T + self.b + self.s * torch.randn(n, self.x_dim, generator=gen, dtype=F64)

    def log_px(self, x: Tensor) -> Tensor:
        """Closed form, by scipy: ``(N,)``."""
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.x_dim, dtype=F64)
        logpdf = stats.multivariate_normal(self.b.numpy(), cov.numpy()).logpdf(x.numpy())
        return torch.as_tensor(logpdf, dtype=F64).reshape(-1)

    def posterior(self, x: Tensor) -> dist.MultivariateNormal:
        loc = (x - self.b) @ self.W @ self.post_cov / self.s**2
        return dist.MultivariateNormal(loc, covariance_matrix=self.post_cov)

    def shifted_posterior(self, x: Tensor, shift: float, widen: float) -> dist.MultivariateNormal:
        """The posterior moved by ``shift`` in every coordinate, its Cholesky factor ``widen`` times wider."""
        post = self.posterior(x)
        return dist.MultivariateNormal(post.loc + shift, scale_tril=widen * post.scale_tril)

    def model(self, x: Tensor, num_data: int | None = None) -> None:
        plate = pyro.plate("data", x.shape[0]) if num_data is None else pyro.plate("data", num_data, subsample=torch.arange(x.shape[0]))
        with plate:
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def exact_guide(self, x: Tensor, num_data: int | None = None) -> None:
        plate = pyro.plate("data", x.shape[0]) if num_data is None else pyro.plate("data", num_data, subsample=torch.arange(x.shape[0]))
        with plate:
            pyro.sample("z", self.posterior(x))
