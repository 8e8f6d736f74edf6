"""Adaptive multi-stage NCE (paper §3.2, Algorithm 1) and its one-stage case, the ``nce``
prior (paper Table 3, "1 stage"): ``log p_k(z) = sum_{i<k} f_i(z) - ||z||^2 / 2`` (Eq. 5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from latent_ebm import rng
from latent_ebm.langevin import langevin, mala
from latent_ebm.memory import MemoryBank
from latent_ebm.priors.base import Refit, gaussian_log_prob, nce_loss
from latent_ebm.priors.ratio import RatioPrior
from latent_ebm.rng import Streams

if TYPE_CHECKING:
    from latent_ebm.config import Config

__all__ = ["AdaptivePrior", "NCEPrior"]


class AdaptivePrior(RatioPrior):
    """Adaptive multi-stage NCE prior (paper §3.2, Algorithm 1) in ``K = prior.stages``
    stages; :class:`NCEPrior` is its one-stage case.

    During stage ``k`` the prior is ``p_k(z) = prod_{i<k} r_i(z) N(0, I)`` with the earlier
    ratios frozen, and ``f_k = log r_k`` is trained by :func:`nce_loss` between posterior
    samples (numerator, ``q_k``) and samples of ``p_k`` (denominator): exact ``N(0, I)`` draws
    in stage 0, then rows of the memory-bank snapshot (``persistent``) or a prior chain on
    ``p_k`` (``langevin``). All ``K`` ratio networks and their Adam optimisers exist from the
    start; ratio ``k`` and its optimiser are first used in stage ``k``. The training-time
    posterior chains run under ``p_k`` (``inference="current"``, Algorithm 1) or under
    ``N(0, I)`` (``"gaussian"``, as TRE's always do: the generator then learns as under the
    Gaussian prior, and the prior is what the post-hoc refit learns; ARCHITECTURE §4).

    Arguments:
        nz: latent dimension.
        stages: K.
        hidden: ratio-network width.
        lr, betas: Adam settings of each ratio network.
        prior_samples: ``"persistent"`` or ``"langevin"``.
        prior_steps, prior_step_size: the prior chain of the ``langevin`` mode.
        inference: ``"current"`` or ``"gaussian"``.
    """

    def __init__(
        self,
        nz: int,
        stages: int,
        hidden: int = 200,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.5, 0.999),
        prior_samples: str = "persistent",
        prior_steps: int = 60,
        prior_step_size: float = 0.4,
        inference: str = "current",
    ) -> None:
        super().__init__(nz, stages, hidden)
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))
        self.optims = [torch.optim.Adam(r.parameters(), lr=lr, betas=betas) for r in self.ratios]
        self.prior_samples = prior_samples
        self.prior_steps = prior_steps
        self.prior_step_size = prior_step_size
        self.inference = inference
        self._freeze()

    @classmethod
    def from_config(cls, cfg: Config) -> AdaptivePrior:
        p = cfg.prior
        return cls(
            cfg.model.nz,
            cls.num_stages(cfg),
            cfg.model.ratio_hidden,
            p.lr,
            (cfg.train.beta1, cfg.train.beta2),
            p.prior_samples,
            p.prior_steps,
            p.prior_step_size,
            p.inference,
        )

    @classmethod
    def num_stages(cls, cfg: Config) -> int:
        """``K = prior.stages``."""
        return cfg.prior.stages

    @property
    def num_frozen(self) -> int:
        """Number of ratios in the current prior (= the stage index)."""
        return int(self.stage)

    @property
    def ratios_in_prior(self) -> int:
        """The ratios of the finished stages: ``p_k`` holds ``f_0 .. f_{k-1}``."""
        return self.num_frozen

    def _freeze(self) -> None:
        for i, r in enumerate(self.ratios):
            trainable = i == self.num_frozen
            r.requires_grad_(trainable)
            r.train(trainable)

    def inference_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``p_k`` (``inference="current"``) or ``N(0, I)`` (``"gaussian"``)."""
        return gaussian_log_prob(z) if self.inference == "gaussian" else self.log_prob(z)

    def set_stage(self, stage: int, bank: MemoryBank) -> None:
        """Stage transition (Alg. 1 step 5): freeze ``f_k``, add it to the prior, snapshot M."""
        if stage != self.num_frozen:
            self.stage.fill_(stage)
            bank.take_snapshot()
        self._freeze()

    def _noise_samples(self, streams: Streams, bank: MemoryBank) -> torch.Tensor:
        if self.num_frozen == 0:  # p_0 = N(0, I): exact draws
            return streams.normal(rng.PRIOR_DRAW, self.nz)
        if self.prior_samples == "persistent":
            return bank.draw(streams.randint(rng.PRIOR_DRAW, len(bank.snapshot)))
        return self.chain_samples(streams, self.prior_steps, self.prior_step_size)

    def train_step(
        self, z_post: torch.Tensor, streams: Streams, bank: MemoryBank
    ) -> dict[str, float]:
        """Alg. 1 step 3: one Adam step of ``f_k`` on the NCE loss; logs ``nce``."""
        k = self.num_frozen
        if k >= len(self.ratios):  # every stage finished
            return {}
        z_prior = self._noise_samples(streams, bank)
        f = self.ratios[k]
        loss = nce_loss(f(z_post.detach()), f(z_prior.detach()))
        self.optims[k].zero_grad(set_to_none=True)
        loss.backward()
        self.optims[k].step()
        return {"nce": loss.item()}

    def refit(self, z_q: torch.Tensor, settings: Refit, progress: bool = False) -> list[float]:
        """Algorithm 1 again, post hoc, on the final aggregate posterior ``z_q`` (ARCHITECTURE
        §4): for ``k = 0 .. K-1``, ``f_k`` is re-initialised and trained by :func:`nce_loss`
        between rows of ``z_q`` and samples of ``p_k = prod_{i<k} r_i N(0, I)`` (exact draws
        for ``k = 0``; then ``settings.noise`` samples of ``settings.chain_steps`` MALA steps
        from ``N(0, I)``, :func:`latent_ebm.langevin.mala`), for ``settings.steps / K``
        updates. Every ratio then belongs to the prior. Returns each stage's last NCE loss;
        :attr:`last_refit` holds each stage's :class:`~latent_ebm.priors.ratio.Fit`.

        With ``settings.holdout > 0`` (``refit.holdout``; beyond the paper) that
        fraction of ``z_q``'s rows and of each stage's noise is held out, and each stage stops
        by the held-out rule of :meth:`_fit`: ``settings.steps`` (or its share) is then a cap.
        Stage 0's held-out noise is its own ``N(0, I)`` draws.

        With ``settings.sampler == "chain"`` (``refit.sampler=chain``; beyond the paper)
        the noise of stage ``k`` is instead the test-time prior chain on ``p_k``: unadjusted
        Langevin from ``N(0, I)``, ``settings.chain_steps`` steps of ``settings.step_size``
        (``sample.steps`` and ``sample.step_size``). Ratio ``k`` then corrects what that chain
        produces rather than ``p_k``, so the product is fitted for the sampler that draws from
        it: its short chains, not its exact samples, approach ``z_q``."""
        stages = len(self.ratios)
        self.stage.fill_(stages)
        z_q, z_held = self.held_rows(z_q, settings)
        n_held = round(settings.holdout * settings.noise)
        self.last_refit = []
        for k in range(stages):
            g = rng.generator_for(settings.seed, rng.REFIT, k)
            noise, noise_held = None, z_held[:0]
            if k > 0:
                z0 = torch.randn(settings.noise, self.nz, generator=g).to(z_q.device)
                noise = self._refit_noise(z0, partial(self.log_prob_of_first, k), settings, g)
                noise, noise_held = self.held_rows(noise, settings)
            elif n_held:
                g_held = rng.generator_for(settings.seed, rng.REFIT, k, 1)
                noise_held = torch.randn(n_held, self.nz, generator=g_held).to(z_q.device)

            def loss(
                g: torch.Generator, k: int = k, noise: torch.Tensor | None = noise
            ) -> torch.Tensor:
                rows = torch.randint(len(z_q), (settings.batch,), generator=g)
                if noise is None:
                    z_p = torch.randn(settings.batch, self.nz, generator=g).to(z_q.device)
                else:
                    z_p = noise[torch.randint(len(noise), (settings.batch,), generator=g)]
                f = self.ratios[k]
                return nce_loss(f(z_q[rows.to(z_q.device)]), f(z_p))

            held = None
            if len(z_held) and len(noise_held):
                held = partial(_held_loss, self.ratios[k], z_held, noise_held)
            steps = settings.steps
            if not settings.per_stage:
                steps = settings.steps * (k + 1) // stages - settings.steps * k // stages
            part = dataclasses.replace(settings, steps=steps)
            fit = self._fit([k], loss, part, g, f"refit stage {k}", progress, held)
            self.last_refit.append(fit)
        self._freeze()
        return [fit.loss for fit in self.last_refit]

    @staticmethod
    def _refit_noise(
        z0: torch.Tensor,
        log_prob: Callable[[torch.Tensor], torch.Tensor],
        settings: Refit,
        g: torch.Generator,
    ) -> torch.Tensor:
        """Noise samples of one refit stage: ``settings.sampler``'s chains from ``z0``."""
        if settings.sampler == "chain":

            def randn(step: int) -> torch.Tensor:
                return torch.randn(z0.shape, generator=g).to(z0.device)

            return langevin(z0, log_prob, settings.chain_steps, settings.step_size, randn=randn)
        return mala(z0, log_prob, settings.chain_steps, settings.step_size, generator=g)[0]

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._freeze()


def _held_loss(f: torch.nn.Module, z_q: torch.Tensor, z_p: torch.Tensor) -> torch.Tensor:
    """:func:`nce_loss` of the ratio ``f`` between held-out rows ``z_q`` and noise ``z_p``."""
    return nce_loss(f(z_q), f(z_p))


class NCEPrior(AdaptivePrior):
    """The ``nce`` prior: :class:`AdaptivePrior` with one stage (``K = 1``) whatever
    ``prior.stages`` says: a single ratio learned by NCE against ``N(0, I)``."""

    @classmethod
    def num_stages(cls, cfg: Config) -> int:
        """Always 1."""
        return 1
