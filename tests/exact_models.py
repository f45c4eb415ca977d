"""Models whose log p(x) is known in closed form or by quadrature, for the estimators' exactness tests."""

from __future__ import annotations

import math

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


class TwoDimensionalLatent:
    """p(z) = N(0, I_2), eight binary pixels x_j ~ Bernoulli(sigmoid(a_j . tanh(B z + c) + d_j)): a non-Gaussian
    posterior, whose evidence a grid over z computes to many digits. Subclasses add a guide."""

    x_dim = 8

    def __init__(self, seed: int = 0) -> None:
        super().__init__()  # cooperative, for a subclass that is also a torch.nn.Module
        gen = torch.Generator().manual_seed(seed)
        self.B = 1.5 * torch.randn(4, 2, generator=gen, dtype=F64)
        self.c = torch.randn(4, generator=gen, dtype=F64)
        self.A = 2.0 * torch.randn(8, 4, generator=gen, dtype=F64)
        self.d = torch.randn(8, generator=gen, dtype=F64)

    def logits(self, z: Tensor) -> Tensor:
        return torch.tanh(z @ self.B.T + self.c) @ self.A.T + self.d

    def model(self, x: Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.logits(z)).to_event(1), obs=x)

    def _grid(self, x: Tensor, half_width: float, points: int) -> tuple[Tensor, Tensor, float]:
        """log p(z_g) p(x|z_g) ``(G, N)`` on a square grid, its points ``(G, 2)`` and its spacing h."""
        axis = torch.linspace(-half_width, half_width, points, dtype=F64)
        z = torch.cartesian_prod(axis, axis)
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px_z = dist.Bernoulli(logits=self.logits(z)[:, None, :]).log_prob(x).sum(-1)
        return log_pz[:, None] + log_px_z, z, (axis[1] - axis[0]).item()

    def posterior_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and marginal standard deviations ``(N, 2)`` each, from a 101 x 101 grid."""
        log_joint, z, _ = self._grid(x, 8.0, 101)
        post = torch.softmax(log_joint, dim=0)  # (G, N)
        loc = post.T @ z
        return loc, (post.T @ z**2 - loc**2).sqrt()

    def log_px_by_quadrature(self, x: Tensor, half_width: float = 8.0, points: int = 801) -> Tensor:
        """log sum_g p(z_g) p(x|z_g) h^2 on a square grid of spacing h: ``(N,)``."""
        log_joint, _, h = self._grid(x, half_width, points)
        return log_joint.logsumexp(0) + 2 * math.log(h)
