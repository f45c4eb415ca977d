"""pvae: variational autoencoders written as Pyro probabilistic programs.

The generative model p_theta(z) p_theta(x|z) is a Pyro ``model``, the encoder q_phi(z|x) a Pyro
``guide``, and SVI fits both (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").

Priors, likelihoods and posterior families are small duck-typed objects (:mod:`pvae.parts.priors`,
:mod:`pvae.parts.likelihoods`, :mod:`pvae.parts.guides`); both Laplace classes live there under that name.

The package is laid out by layer (``data``, ``parts``, ``models``, ``inference``, ``training``,
``views``, ``runs``, then the command line), imports running downwards only. Every public name is
re-exported here and imported on first use, so ``import pvae`` loads neither matplotlib nor Graphviz.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pvae.version import __version__

# public name -> the module that defines it, imported when the name is first read (PEP 562)
_LAZY: dict[str, str] = {
    "AISEstimate": "pvae.inference.ais",
    "AISSettings": "pvae.inference.ais",
    "BDMCResult": "pvae.inference.ais",
    "SimulatedData": "pvae.inference.ais",
    "ais_estimate": "pvae.inference.ais",
    "ais_log_marginal_likelihood": "pvae.inference.ais",
    "bdmc": "pvae.inference.ais",
    "simulate_data": "pvae.inference.ais",
    "CheckpointError": "pvae.runs.checkpoint",
    "Comparison": "pvae.runs.compare",
    "compare_runs": "pvae.runs.compare",
    "GUIDES": "pvae.parts.build",
    "LIKELIHOODS": "pvae.parts.build",
    "MODELS": "pvae.models.families",
    "PRIORS": "pvae.parts.build",
    "build_guide": "pvae.parts.build",
    "build_likelihood": "pvae.parts.build",
    "build_model": "pvae.runs.build",
    "build_prior": "pvae.parts.build",
    "build_vae": "pvae.runs.build",
    "check_config": "pvae.runs.build",
    "TrainConfig": "pvae.runs.config",
    "ConfigError": "pvae.errors",
    "DataNotFoundError": "pvae.data",
    "ImageData": "pvae.data",
    "load_data": "pvae.data",
    "ElboTerms": "pvae.inference.elbo",
    "active_units_by_site": "pvae.inference.elbo",
    "classify": "pvae.inference.elbo",
    "elbo_terms": "pvae.inference.elbo",
    "evaluate_run": "pvae.runs.evaluate",
    "evaluate_with": "pvae.runs.evaluate",
    "Evaluation": "pvae.runs.evaluate",
    "EvaluationSettings": "pvae.runs.evaluate",
    "graph_source": "pvae.views.graph",
    "graph_structure": "pvae.inference.structure",
    "model_structure": "pvae.inference.structure",
    "ModelStructure": "pvae.inference.structure",
    "model_graph": "pvae.views.graph",
    "plot_graphical_model": "pvae.views.graph",
    "write_graphs": "pvae.views.graph",
    "DiagonalPosterior": "pvae.parts.guides",
    "FlowPosterior": "pvae.parts.guides",
    "FullCovariancePosterior": "pvae.parts.guides",
    "PosteriorFamily": "pvae.parts.guides",
    "ImportanceEstimate": "pvae.inference.importance",
    "active_units": "pvae.inference.importance",
    "importance_estimate": "pvae.inference.importance",
    "latent_activity": "pvae.inference.importance",
    "log_importance_weights": "pvae.inference.importance",
    "log_marginal_likelihood": "pvae.inference.importance",
    "IWAE_ELBO": "pvae.inference.iwae",
    "Bernoulli": "pvae.parts.likelihoods",
    "Beta": "pvae.parts.likelihoods",
    "ContinuousBernoulli": "pvae.parts.likelihoods",
    "DiscretizedLogistic": "pvae.parts.likelihoods",
    "Gaussian": "pvae.parts.likelihoods",
    "Likelihood": "pvae.parts.likelihoods",
    "VAE": "pvae.models",
    "ConditionalVAE": "pvae.models",
    "SemiSupervisedVAE": "pvae.models",
    "TwoLayerVAE": "pvae.models",
    "SemiSupervisedObjective": "pvae.training.objectives",
    "build_objective": "pvae.training.objectives",
    "training_objective": "pvae.training.objectives",
    "plot_class_grid": "pvae.views.plots",
    "plot_run": "pvae.runs.figures",
    "sample_run": "pvae.runs.figures",
    "posterior_on_grid": "pvae.inference.quadrature",
    "central_latents": "pvae.inference.predictive",
    "generate": "pvae.inference.predictive",
    "reconstruct": "pvae.inference.predictive",
    "DiagonalNormal": "pvae.parts.priors",
    "FlowPrior": "pvae.parts.priors",
    "MixtureOfGaussians": "pvae.parts.priors",
    "Prior": "pvae.parts.priors",
    "StandardNormal": "pvae.parts.priors",
    "StudentT": "pvae.parts.priors",
    "VampPrior": "pvae.parts.priors",
    "GraphicalModel": "pvae.protocol",
    "label_mode": "pvae.protocol",
    "OpenRun": "pvae.runs.folder",
    "RunFolderError": "pvae.runs.folder",
    "load_run": "pvae.runs.folder",
    "open_run": "pvae.runs.folder",
    "rebuild_model": "pvae.runs.folder",
    "TrainResult": "pvae.runs.train",
    "train": "pvae.runs.train",
    "__version__": "pvae.version",
}

if TYPE_CHECKING:  # the names as a type checker and an IDE see them
    from pvae.data import DataNotFoundError, ImageData, load_data
    from pvae.errors import ConfigError
    from pvae.inference.ais import (
        AISEstimate,
        AISSettings,
        BDMCResult,
        SimulatedData,
        ais_estimate,
        ais_log_marginal_likelihood,
        bdmc,
        simulate_data,
    )
    from pvae.inference.elbo import ElboTerms, active_units_by_site, classify, elbo_terms
    from pvae.inference.importance import (
        ImportanceEstimate,
        active_units,
        importance_estimate,
        latent_activity,
        log_importance_weights,
        log_marginal_likelihood,
    )
    from pvae.inference.iwae import IWAE_ELBO
    from pvae.inference.predictive import central_latents, generate, reconstruct
    from pvae.inference.quadrature import posterior_on_grid
    from pvae.inference.structure import ModelStructure, model_structure
    from pvae.models import VAE, ConditionalVAE, SemiSupervisedVAE, TwoLayerVAE
    from pvae.models.families import MODELS
    from pvae.parts.build import GUIDES, LIKELIHOODS, PRIORS, build_guide, build_likelihood, build_prior
    from pvae.parts.guides import DiagonalPosterior, FlowPosterior, FullCovariancePosterior, PosteriorFamily
    from pvae.parts.likelihoods import Bernoulli, Beta, ContinuousBernoulli, DiscretizedLogistic, Gaussian, Likelihood
    from pvae.parts.priors import (
        DiagonalNormal,
        FlowPrior,
        MixtureOfGaussians,
        Prior,
        StandardNormal,
        StudentT,
        VampPrior,
    )
    from pvae.protocol import GraphicalModel, label_mode
    from pvae.runs.build import build_model, build_vae, check_config
    from pvae.runs.checkpoint import CheckpointError
    from pvae.runs.compare import Comparison, compare_runs
    from pvae.runs.config import TrainConfig
    from pvae.runs.evaluate import Evaluation, EvaluationSettings, evaluate_run, evaluate_with
    from pvae.runs.figures import plot_run, sample_run
    from pvae.runs.folder import OpenRun, RunFolderError, load_run, open_run, rebuild_model
    from pvae.runs.train import TrainResult, train
    from pvae.training.objectives import SemiSupervisedObjective, build_objective, training_objective
    from pvae.version import __version__
    from pvae.views.graph import graph_source, graph_structure, model_graph, plot_graphical_model, write_graphs
    from pvae.views.plots import plot_class_grid



def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # read once, then an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
    "model_structure",
    "ModelStructure",
    "build_objective",
    "training_objective",
    "SemiSupervisedObjective",
    "ElboTerms",
    "evaluate_run",
    "evaluate_with",
    "Evaluation",
    "EvaluationSettings",
    "compare_runs",
    "Comparison",
    "log_marginal_likelihood",
    "ais_estimate",
    "ais_log_marginal_likelihood",
    "AISEstimate",
    "AISSettings",
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
