"""The family of priors of paper Eq. 5: ``N(0, I)`` reweighted by learned density ratios."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.nets import RatioNet, xavier_init
from latent_ebm.priors.base import Prior, Refit, gaussian_log_prob

__all__ = ["Fit", "RatioPrior", "hold_out"]

_HOLDOUT = 1 << 20  # the sub-stream of rng.REFIT that chooses the held-out rows


@dataclass(frozen=True)
class Fit:
    """What one fit of :meth:`RatioPrior._fit` did.

    Arguments:
        loss: the training loss of its last update.
        updates: the updates of the weights it kept: all it ran, or, with the held-out
            stopping rule, those of its best measurement.
        held: the held-out loss of the weights it kept (``None`` without a held-out set).
    """

    loss: float
    updates: int
    held: float | None = None


def hold_out(
    x: torch.Tensor, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x``'s rows split at random into ``(fit, held)``, ``held`` holding ``round(fraction *
    len(x))`` of them (none when ``fraction`` is 0: then ``fit`` is ``x`` itself)."""
    n = round(fraction * len(x))
    if n == 0:
        return x, x[:0]
    if n >= len(x):
        raise ValueError(f"holding out {n} of {len(x)} rows leaves none to fit")
    order = torch.randperm(len(x), generator=generator).to(x.device)
    return x[order[n:]], x[order[:n]]


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
        self.last_refit: list[Fit] = []  # each fit of the last refit, in order (not saved)

    @staticmethod
    def held_rows(z_q: torch.Tensor, settings: Refit) -> tuple[torch.Tensor, torch.Tensor]:
        """The refit rows ``z_q`` split into ``(fit, held)`` by :func:`hold_out` with
        ``settings.holdout``, seeded by ``settings.seed``."""
        g = rng.generator_for(settings.seed, rng.REFIT, _HOLDOUT)
        return hold_out(z_q, settings.holdout, g)

    @property
    def ratios_in_prior(self) -> int:
        """``n``: how many ratios (the first ones) the current prior includes."""
        return len(self.ratios)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_{i<n} f_i(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        return self.log_prob_of_first(self.ratios_in_prior, z)

    def stage_log_ratios(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The ratios in the prior, ``f_1..f_n`` (:meth:`Prior.stage_log_ratios`)."""
        return list(self.ratios[: self.ratios_in_prior])

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
        held: Callable[[], torch.Tensor] | None = None,
    ) -> Fit:
        """Refit helper: re-initialise the ratios ``ratios`` (Xavier, seeded by ``generator``),
        then up to ``settings.steps`` Adam updates of them on ``loss(generator)``.

        With ``held`` (the loss on held-out rows), the held-out stopping rule: ``held()`` is
        measured every ``settings.check`` updates and after the last; the fit stops after
        ``settings.patience`` measurements without a new lowest value, and the ratios return
        to the weights of the lowest. A NaN measurement counts as no improvement."""
        nets = [self.ratios[i] for i in ratios]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            for f in nets:
                xavier_init(f)
        params = [p for f in nets for p in f.parameters()]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=settings.lr, betas=settings.betas)
        value, kept, best, since, state = float("nan"), settings.steps, math.inf, 0, None
        bar = tqdm(range(1, settings.steps + 1), desc=desc, disable=not progress, leave=False)
        for step in bar:
            out = loss(generator)
            opt.zero_grad(set_to_none=True)
            out.backward()
            opt.step()
            value = out.item()
            if held is None or (step % settings.check and step != settings.steps):
                continue
            with torch.no_grad():
                h = held().item()
            if h < best:
                best, kept, since = h, step, 0
                state = [p.detach().clone() for p in params]
            else:
                since += 1
                if since >= settings.patience:
                    break
        bar.close()
        if state is not None:
            with torch.no_grad():
                for p, saved in zip(params, state, strict=True):
                    p.copy_(saved)
        for p in params:
            p.requires_grad_(False)
        return Fit(value, kept, None if held is None else best)
