"""Inference on a fitted graphical model, from its traces: the shared per-site computation
(:mod:`~pvae.inference.traces`), a model's structure read once (:mod:`~pvae.inference.structure`),
the ELBO per site, importance sampling and the IWAE bound, AIS and BDMC, grid quadrature and
posterior predictive draws. Every estimator takes ``(model, guide, x, *args)`` and explicit settings."""
