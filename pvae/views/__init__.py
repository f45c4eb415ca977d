"""Views: figures and diagrams of a model or of numbers (images, latent spaces, curves, the
graphical model as a plate diagram). Importing :mod:`pvae` does not import matplotlib: these
modules load it when first used."""
