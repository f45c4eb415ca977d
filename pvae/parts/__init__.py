"""Parts of a graphical model: priors p(z), likelihoods p(x|·), posterior families q(z|·), the
networks they use, the registry of their names (``mog:10``, ``gaussian:learned``, ``flow:4``) and
their builders. Parts import nothing above them (no models, runs or command line)."""
