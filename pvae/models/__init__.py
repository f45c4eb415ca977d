"""The graphical models pvae builds, each one generative story of about a screen.

* :class:`~pvae.models.vae.VAE`: z -> x (Kingma & Welling 2014);
* :class:`~pvae.models.hierarchical.TwoLayerVAE`: z2 -> z1 -> x (Burda et al. 2016, section 5);
* :class:`~pvae.models.conditional.ConditionalVAE`: p(z) p(x | z, y), y observed;
* :class:`~pvae.models.semisupervised.SemiSupervisedVAE`: M2 (Kingma et al. 2014), y observed or enumerated.

:data:`~pvae.models.families.FAMILIES` is their table: what each supports, and its builder.
They share priors, likelihoods, posterior families and networks, and nothing above them; every
consumer is typed against :class:`pvae.protocol.GraphicalModel`, which a model of your own meets too.
"""

from pvae.models.conditional import ConditionalVAE
from pvae.models.families import FAMILIES, Family  # after the models it builds
from pvae.models.hierarchical import TopLayerPosterior, TwoLayerVAE
from pvae.models.semisupervised import SemiSupervisedVAE
from pvae.models.vae import VAE

__all__ = ["VAE", "TwoLayerVAE", "ConditionalVAE", "SemiSupervisedVAE", "TopLayerPosterior", "FAMILIES", "Family"]
