"""The latent EBM prior learned by maximum likelihood with a prior Langevin chain
(Pang et al. 2020): ``log p(z) = f(z) - ||z||^2 / 2``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from latent_ebm.errors import LatentEBMError
from latent_ebm.memory import MemoryBank
from latent_ebm.nets import RatioNet
from latent_ebm.priors.base import Prior, gaussian_log_prob
from latent_ebm.rng import Streams

if TYPE_CHECKING:
    from latent_ebm.config import Config

__all__ = ["LEBMPrior"]


class LEBMPrior(Prior):
    """Latent EBM prior learned by maximum likelihood (Pang et al. 2020; ARCHITECTURE §4).

    ``p(z) ∝ exp(f(z)) N(0, I)``, i.e. ``log p(z) = f(z) - ||z||^2 / 2``, with ``f`` a
    :class:`~latent_ebm.nets.RatioNet`. The gradient of the log-likelihood of the posterior
    samples is ``E_post[grad f] - E_prior[grad f]``, so each step minimises
    ``f(z_prior).mean() - f(z_post).mean()`` with ``z_prior`` from a prior Langevin chain on
    ``log p`` started at ``N(0, I)`` (``prior_steps`` steps of ``prior_step_size``; LEBM: 60
    steps of 0.4). The posterior chains sample under ``log p`` (the default
    :meth:`inference_log_prob`); LEBM's 20 posterior steps are ``train.post_steps`` of the
    training config, not set here.

    Arguments:
        nz: latent dimension.
        hidden: width of ``f``.
        lr, betas: Adam settings.
        prior_steps, prior_step_size: the prior chain.
    """

    def __init__(
        self,
        nz: int,
        hidden: int = 200,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.5, 0.999),
        prior_steps: int = 60,
        prior_step_size: float = 0.4,
    ) -> None:
        super().__init__(nz)
        self.energy = RatioNet(nz, hidden)
        # The output bias of f adds a constant to log p that maximum likelihood cannot
        # determine: its gradient is zero up to rounding, which Adam would amplify into a
        # random walk. It stays at 0.
        self.energy.net[-1].bias.requires_grad_(False)
        trainable = [p for p in self.energy.parameters() if p.requires_grad]
        self.optims = [torch.optim.Adam(trainable, lr=lr, betas=betas)]
        self.prior_steps = prior_steps
        self.prior_step_size = prior_step_size

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Maximum likelihood needs posterior samples under the prior being learned."""
        if cfg.prior.inference != "current":
            raise LatentEBMError(
                "config field 'prior.inference' must be 'current' for prior.kind=lebm (maximum "
                "likelihood learns from posterior samples under its own prior); "
                f"got '{cfg.prior.inference}'. It applies to adaptive and nce"
            )

    @classmethod
    def from_config(cls, cfg: Config) -> LEBMPrior:
        p = cfg.prior
        betas = (cfg.train.beta1, cfg.train.beta2)
        return cls(
            cfg.model.nz, cfg.model.ratio_hidden, p.lr, betas, p.prior_steps, p.prior_step_size
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``f(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        return self.energy(z) + gaussian_log_prob(z)

    def prior_samples(self, streams: Streams) -> torch.Tensor:
        """The training prior chain: ``(B, nz)`` from ``N(0, I)`` draws of the iteration."""
        return self.chain_samples(streams, self.prior_steps, self.prior_step_size)

    def train_step(
        self, z_post: torch.Tensor, streams: Streams, bank: MemoryBank
    ) -> dict[str, float]:
        """One Adam step on ``f(z_prior).mean() - f(z_post).mean()``; logs ``loss_ebm``."""
        z_prior = self.prior_samples(streams)
        loss = self.energy(z_prior).mean() - self.energy(z_post.detach()).mean()
        self.optims[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optims[0].step()
        return {"loss_ebm": loss.item()}
