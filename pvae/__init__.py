"""pvae: variational autoencoders written as Pyro probabilistic programs.

The generative model p_theta(z) p_theta(x|z) is a Pyro ``model``, the encoder q_phi(z|x) a Pyro
``guide``, and SVI fits both (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").

Priors, likelihoods and posterior families are small duck-typed objects (:mod:`pvae.priors`,
:mod:`pvae.likelihoods`, :mod:`pvae.guides`); both Laplace classes live there under that name.
"""

from pvae.ais import (
    AISEstimate,
    BDMCResult,
    SimulatedData,
    ais_estimate,
    ais_log_marginal_likelihood,
    bdmc,
    simulate_data,
)
from pvae.checkpoint import CheckpointError
from pvae.compare import Comparison, compare_runs
from pvae.components import (
    GUIDES,
    LIKELIHOODS,
    MODELS,
    PRIORS,
    build_guide,
    build_likelihood,
    build_model,
    build_prior,
    build_vae,
    check_config,
)
from pvae.config import TrainConfig
from pvae.errors import ConfigError
from pvae.data import DataNotFoundError, ImageData, load_data
from pvae.evaluate import ElboTerms, active_units_by_site, classify, elbo_terms, evaluate_run
from pvae.graph import graph_source, graph_structure, model_graph, plot_graphical_model, write_graphs
from pvae.guides import DiagonalPosterior, FlowPosterior, FullCovariancePosterior, PosteriorFamily
from pvae.importance import (
    ImportanceEstimate,
    active_units,
    importance_estimate,
    latent_activity,
    log_importance_weights,
    log_marginal_likelihood,
)
from pvae.iwae import IWAE_ELBO
from pvae.likelihoods import Bernoulli, Beta, ContinuousBernoulli, DiscretizedLogistic, Gaussian, Likelihood
from pvae.models import VAE, ConditionalVAE, SemiSupervisedVAE, TwoLayerVAE
from pvae.objectives import SemiSupervisedObjective, build_objective, training_objective
from pvae.plots import plot_class_grid, plot_run, sample_run
from pvae.quadrature import posterior_on_grid
from pvae.predictive import central_latents, generate, reconstruct
from pvae.priors import DiagonalNormal, FlowPrior, MixtureOfGaussians, Prior, StandardNormal, StudentT, VampPrior
from pvae.protocol import GraphicalModel, label_mode
from pvae.runs import OpenRun, RunFolderError, load_run, open_run, rebuild_model
from pvae.train import TrainResult, train
from pvae.version import __version__

__all__ = [
    "GraphicalModel",
    "label_mode",
    "VAE",
    "TwoLayerVAE",
    "ConditionalVAE",
    "SemiSupervisedVAE",
    "Prior",
    "StandardNormal",
    "DiagonalNormal",
    "MixtureOfGaussians",
    "VampPrior",
    "StudentT",
    "FlowPrior",
    "Likelihood",
    "Bernoulli",
    "ContinuousBernoulli",
    "Gaussian",
    "Beta",
    "DiscretizedLogistic",
    "PosteriorFamily",
    "DiagonalPosterior",
    "FullCovariancePosterior",
    "FlowPosterior",
    "TrainConfig",
    "ConfigError",
    "train",
    "TrainResult",
    "elbo_terms",
    "classify",
    "active_units_by_site",
    "reconstruct",
    "generate",
    "central_latents",
    "sample_run",
    "plot_class_grid",
    "graph_structure",
    "build_objective",
    "training_objective",
    "SemiSupervisedObjective",
    "ElboTerms",
    "evaluate_run",
    "compare_runs",
    "Comparison",
    "log_marginal_likelihood",
    "ais_estimate",
    "ais_log_marginal_likelihood",
    "AISEstimate",
    "bdmc",
    "BDMCResult",
    "simulate_data",
    "SimulatedData",
    "importance_estimate",
    "ImportanceEstimate",
    "log_importance_weights",
    "latent_activity",
    "active_units",
    "IWAE_ELBO",
    "plot_run",
    "posterior_on_grid",
    "write_graphs",
    "graph_source",
    "model_graph",
    "plot_graphical_model",
    "load_data",
    "ImageData",
    "DataNotFoundError",
    "CheckpointError",
    "RunFolderError",
    "load_run",
    "rebuild_model",
    "open_run",
    "OpenRun",
    "build_model",
    "build_vae",
    "check_config",
    "MODELS",
    "build_prior",
    "build_likelihood",
    "build_guide",
    "PRIORS",
    "LIKELIHOODS",
    "GUIDES",
    "__version__",
]
