"""Non-adaptive telescoping ratio estimation (Rhodes et al. 2020; paper Table 3
"non-adaptive"): ``K`` ratios learned together on waymarks between ``N(0, I)`` and the
posterior."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from latent_ebm import rng
from latent_ebm.errors import LatentEBMError
from latent_ebm.memory import MemoryBank
from latent_ebm.priors.base import Betas, Refit, gaussian_log_prob, nce_loss
from latent_ebm.priors.ratio import RatioPrior
from latent_ebm.rng import Streams

if TYPE_CHECKING:
    from latent_ebm.config import Config

__all__ = ["TREPrior", "tre_waymarks"]


def tre_waymarks(z_p: torch.Tensor, z_q: torch.Tensor, stages: int) -> torch.Tensor:
    """Waymarks of telescoping ratio estimation (Rhodes et al. 2020, ARCHITECTURE §4).

    ``z_j = sqrt(1 - a_j^2) z_p + a_j z_q`` with ``a_j = j / K``, ``j = 0..K``: ``z_0 = z_p``
    (prior draws), ``z_K = z_q`` (posterior samples), paired row by row.

    Arguments:
        z_p: ``(B, nz)`` draws from ``N(0, I)``.
        z_q: ``(B, nz)`` posterior samples.
        stages: K >= 1.

    Returns:
        ``(K + 1, B, nz)``.
    """
    a = torch.arange(stages + 1, dtype=z_p.dtype, device=z_p.device) / stages
    a = a[:, None, None]
    return (1 - a**2).sqrt() * z_p + a * z_q


class TREPrior(RatioPrior):
    """Non-adaptive telescoping ratio estimation prior (Rhodes et al. 2020; paper Table 3
    "non-adaptive"; ARCHITECTURE §4).

    ``log p(z) = sum_{j<K} f_j(z) - ||z||^2 / 2``, the same form as Eq. 5, but all ``K`` ratio
    networks are trained together at every iteration, and the training-time posterior chains
    always sample under ``N(0, I)`` (:meth:`inference_log_prob`): nothing adapts to the prior
    being learned. Ratio ``j`` separates waymark ``z_{j+1}`` (numerator) from ``z_j``
    (denominator) of :func:`tre_waymarks` by :func:`nce_loss`; the log-ratios telescope to
    ``log q(z) / N(z; 0, I)``. One Adam optimiser updates all ratios on the sum of the ``K``
    losses.

    Arguments:
        nz: latent dimension.
        stages: K >= 1, number of ratios (waymarks ``K + 1``).
        hidden: ratio-network width.
        lr, betas: Adam settings.
    """

    def __init__(
        self, nz: int, stages: int, hidden: int = 200, lr: float = 5e-5, betas: Betas = (0.5, 0.999)
    ) -> None:
        if stages < 1:
            raise ValueError(f"TREPrior needs at least one ratio, got stages={stages}")
        super().__init__(nz, stages, hidden)
        self.optims = [torch.optim.Adam(self.ratios.parameters(), lr=lr, betas=betas)]

    @classmethod
    def from_config(cls, cfg: Config) -> TREPrior:
        p = cfg.prior
        betas = (cfg.train.beta1, cfg.train.beta2)
        return cls(cfg.model.nz, p.stages, cfg.model.ratio_hidden, p.lr, betas)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """``prior.stages`` is the number of ratios: at least one."""
        if cfg.prior.stages < 1:
            raise LatentEBMError(
                "config field 'prior.stages' must be >= 1 for prior.kind=tre (the number of "
                f"ratios), got {cfg.prior.stages}"
            )

    def inference_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``N(0, I)``: the posterior chains of training never see the learned ratios."""
        return gaussian_log_prob(z)

    def train_step(
        self, z_post: torch.Tensor, streams: Streams, bank: MemoryBank
    ) -> dict[str, float]:
        """One Adam step of every ratio on its waymark pair; logs ``nce`` (mean over ratios)
        and ``nce_j`` per ratio."""
        z_p = streams.normal(rng.PRIOR_DRAW, self.nz)
        w = tre_waymarks(z_p, z_post.detach(), len(self.ratios))
        losses = torch.stack([nce_loss(f(w[j + 1]), f(w[j])) for j, f in enumerate(self.ratios)])
        self.optims[0].zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optims[0].step()
        values = losses.tolist()
        return {"nce": sum(values) / len(values)} | {f"nce_{j}": v for j, v in enumerate(values)}

    def refit(self, z_q: torch.Tensor, settings: Refit, progress: bool = False) -> list[float]:
        """:meth:`train_step`'s waymark losses, post hoc, on the final aggregate posterior
        ``z_q`` (ARCHITECTURE §4): every ratio re-initialised, then ``settings.steps`` updates
        of all of them together. Returns each ratio's last NCE loss. With ``settings.holdout >
        0`` the held-out stopping rule of :meth:`_fit` (the sum of the waymark losses on held-out
        rows of ``z_q`` paired with fixed ``N(0, I)`` draws) ends the fit;
        :attr:`last_refit` holds its :class:`~latent_ebm.priors.ratio.Fit`."""
        g = rng.generator_for(settings.seed, rng.REFIT, 0)
        z_q, z_held = self.held_rows(z_q, settings)
        last: list[torch.Tensor] = []

        def waymark_losses(z_p: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
            w = tre_waymarks(z_p, z, len(self.ratios))
            return [nce_loss(f(w[j + 1]), f(w[j])) for j, f in enumerate(self.ratios)]

        def loss(g: torch.Generator) -> torch.Tensor:
            rows = torch.randint(len(z_q), (settings.batch,), generator=g)
            z_p = torch.randn(settings.batch, self.nz, generator=g).to(z_q.device)
            last[:] = waymark_losses(z_p, z_q[rows.to(z_q.device)])
            return torch.stack(last).sum()

        held = None
        if len(z_held):
            g_held = rng.generator_for(settings.seed, rng.REFIT, 0, 1)
            p_held = torch.randn(z_held.shape, generator=g_held).to(z_q.device)

            def held() -> torch.Tensor:
                return torch.stack(waymark_losses(p_held, z_held)).sum()

        fit = self._fit(range(len(self.ratios)), loss, settings, g, "refit", progress, held)
        self.last_refit = [fit]
        return [v.item() for v in last]
