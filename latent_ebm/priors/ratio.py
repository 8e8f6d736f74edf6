"""The family of priors of paper Eq. 5: ``N(0, I)`` reweighted by learned density ratios."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from latent_ebm.nets import RatioNet, xavier_init
from latent_ebm.priors.base import Prior, Refit, gaussian_log_prob

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

    refits = True

    def __init__(self, nz: int, stages: int, hidden: int) -> None:
        super().__init__(nz)
        self.ratios = nn.ModuleList(RatioNet(nz, hidden) for _ in range(stages))

    @property
    def ratios_in_prior(self) -> int:
        """``n``: how many ratios (the first ones) the current prior includes."""
        return len(self.ratios)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_{i<n} f_i(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        return self.log_prob_of_first(self.ratios_in_prior, z)

    def log_prob_of_first(self, n: int, z: torch.Tensor) -> torch.Tensor:
        """``sum_{i<n} f_i(z) - ||z||^2 / 2`` for any ``n`` (``p_n`` of the stage schedule)."""
        out = gaussian_log_prob(z)
        for r in self.ratios[:n]:
            out = out + r(z)
        return out

    def _fit(
        self,
        ratios: Iterable[int],
        loss: Callable[[torch.Generator], torch.Tensor],
        settings: Refit,
        generator: torch.Generator,
        desc: str,
        progress: bool,
    ) -> float:
        """Refit helper: re-initialise the ratios ``ratios`` (Xavier, seeded by ``generator``),
        then ``settings.steps`` Adam updates of them on ``loss(generator)``; the last loss."""
        nets = [self.ratios[i] for i in ratios]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            for f in nets:
                xavier_init(f)
        params = [p for f in nets for p in f.parameters()]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas)
        value = float("nan")
        for _ in tqdm(range(settings.steps), desc=desc, disable=not progress, leave=False):
            out = loss(generator)
            opt.zero_grad(set_to_none=True)
            out.backward()
            opt.step()
            value = out.item()
        for p in params:
            p.requires_grad_(False)
        return value
