"""The family of priors of paper Eq. 5: ``N(0, I)`` reweighted by learned density ratios."""

from __future__ import annotations

import torch
from torch import nn

from latent_ebm.nets import RatioNet
from latent_ebm.priors.base import Prior, gaussian_log_prob

__all__ = ["RatioPrior"]


class RatioPrior(Prior):
    """``log p(z) = sum_{i<n} f_i(z) - ||z||^2 / 2`` (paper Eq. 5): ``N(0, I)`` times the
    first ``n`` of ``K`` ratios ``r_i = exp(f_i)``, each ``f_i`` a
    :class:`~latent_ebm.nets.RatioNet` in ``self.ratios``.

    Subclasses choose ``n`` (:attr:`ratios_in_prior`, default all ``K``) and how the ratios
    learn. The networks are built in index order, so their initial weights are the same
    draws of the torch generator whichever subclass builds them.

    Arguments:
        nz: latent dimension.
        stages: K, number of ratio networks.
        hidden: width of each ratio network.
    """

    def __init__(self, nz: int, stages: int, hidden: int) -> None:
        super().__init__(nz)
        self.ratios = nn.ModuleList(RatioNet(nz, hidden) for _ in range(stages))

    @property
    def ratios_in_prior(self) -> int:
        """``n``: how many ratios (the first ones) the current prior includes."""
        return len(self.ratios)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_{i<n} f_i(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        out = gaussian_log_prob(z)
        for r in self.ratios[: self.ratios_in_prior]:
            out = out + r(z)
        return out
