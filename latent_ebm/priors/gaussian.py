"""The Gaussian prior ``N(0, I)``: nothing to learn (the paper's SRI, "0 stages")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from latent_ebm.priors.base import Prior, gaussian_log_prob

if TYPE_CHECKING:
    from latent_ebm.config import Config

__all__ = ["GaussianPrior"]


class GaussianPrior(Prior):
    """``p(z) = N(0, I)``: the generator with a Gaussian prior (K = 0)."""

    needs_chain = False  # the chains' N(0, I) starts are exact samples

    @classmethod
    def from_config(cls, cfg: Config) -> GaussianPrior:
        return cls(cfg.model.nz)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return gaussian_log_prob(z)

    def stage_log_ratios(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """No ratio: ``N(0, I)`` is normalised (``log Z = 0`` exactly)."""
        return []
