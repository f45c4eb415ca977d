"""pvae: variational autoencoders written as Pyro probabilistic programs.

The generative model p_theta(z) p_theta(x|z) is a Pyro ``model``, the encoder q_phi(z|x) a Pyro
``guide``, and SVI fits both (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").
"""

from pvae.checkpoint import CheckpointError
from pvae.components import build_likelihood, build_prior, build_vae
from pvae.config import ConfigError, TrainConfig
from pvae.data import DataNotFoundError, ImageData, load_data
from pvae.evaluate import ElboTerms, elbo_terms, evaluate_run
from pvae.likelihoods import Bernoulli, Likelihood
from pvae.model import VAE
from pvae.priors import Prior, StandardNormal
from pvae.runs import RunFolderError, load_run, rebuild_model
from pvae.train import TrainResult, train
from pvae.version import __version__

__all__ = [
    "VAE",
    "Prior",
    "StandardNormal",
    "Likelihood",
    "Bernoulli",
    "TrainConfig",
    "ConfigError",
    "train",
    "TrainResult",
    "elbo_terms",
    "ElboTerms",
    "evaluate_run",
    "load_data",
    "ImageData",
    "DataNotFoundError",
    "CheckpointError",
    "RunFolderError",
    "load_run",
    "rebuild_model",
    "build_vae",
    "build_prior",
    "build_likelihood",
    "__version__",
]
