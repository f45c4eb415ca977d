"""Views: figures and diagrams of a model or of numbers (images, latent spaces, curves, the
graphical model as a plate diagram). These modules import matplotlib; :mod:`pvae` itself, the
training and the evaluation do not, so importing pvae stays light."""
