"""Latent priors behind one interface (DESIGN §4).

Every prior is a :class:`Prior`: ``log_prob(z)`` (the learned prior, up to a constant),
``inference_log_prob(z)`` (the prior the posterior chains use while training),
``set_stage(k, bank)`` (called before every iteration with the stage of the schedule) and
``train_step(z_post, streams, bank)`` (one update of the prior's own parameters). The training
loop and the evaluations call only these; they never test which prior they hold.

- :class:`GaussianPrior`: ``N(0, I)``, nothing to learn (the paper's SRI / "0 stages").
- :class:`AdaptivePrior`: ``log p_k(z) = sum_{i<k} f_i(z) - ||z||^2 / 2`` (paper Eq. 5),
  learned by adaptive multi-stage NCE (Algorithm 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from latent_ebm import rng
from latent_ebm.config import Config, num_stages
from latent_ebm.langevin import langevin
from latent_ebm.memory import MemoryBank
from latent_ebm.nets import RatioNet
from latent_ebm.rng import Streams

__all__ = [
    "PRIORS",
    "AdaptivePrior",
    "GaussianPrior",
    "Prior",
    "build_prior",
    "nce_loss",
    "stage_of",
]


def nce_loss(f_num: torch.Tensor, f_den: torch.Tensor) -> torch.Tensor:
    """Logistic NCE loss (paper Eq. 4) for a log-ratio ``f = log(q / p)``.

    ``softplus(-f(z_q)).mean() + softplus(f(z_p)).mean()``: ``f_num`` ``(B,)`` are its values
    at numerator samples (aggregated posterior), ``f_den`` ``(B',)`` at denominator samples
    (current prior). At chance the loss is ``2 log 2``; its minimiser is the true log-ratio.
    """
    return F.softplus(-f_num).mean() + F.softplus(f_den).mean()


def stage_of(iteration: int, iters: int, stages: int) -> int:
    """Stage ``k`` of Algorithm 1 at ``iteration`` (0-based) of ``iters``, ``K = stages``.

    ``K`` stages of ``iters / K`` iterations (remainders spread evenly); ``iteration == iters``
    gives ``K``: every ratio is frozen into the final prior.
    """
    return 0 if stages == 0 else min(iteration * stages // iters, stages)


def _gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * z.pow(2).sum(-1)


class Prior(nn.Module):
    """The interface every prior implements. Shapes: ``z`` is ``(B, nz)``."""

    def __init__(self, nz: int) -> None:
        super().__init__()
        self.nz = nz

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, nz)`` -> ``(B,)``: log density of the prior learned so far, up to a constant."""
        raise NotImplementedError

    def inference_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The prior that the training-time posterior chains sample under (default: current)."""
        return self.log_prob(z)

    def set_stage(self, stage: int, bank: MemoryBank) -> None:
        """Move to stage ``stage`` of the schedule (no-op for a prior without stages)."""

    def train_step(
        self, z_post: torch.Tensor, streams: Streams, bank: MemoryBank
    ) -> dict[str, float]:
        """One update of the prior from posterior samples ``z_post``; returns scalars to log."""
        return {}

    def sample(
        self,
        z0: torch.Tensor,
        steps: int,
        step_size: float,
        randn: Callable[[int], torch.Tensor] | None = None,
        trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Prior samples by Langevin dynamics on ``log_prob`` from ``z0 ~ N(0, I)``."""
        return langevin(z0, self.log_prob, steps, step_size, randn=randn, trajectory=trajectory)

    def optimizer_state(self) -> list[dict[str, Any]]:
        """State of the prior's optimisers (for checkpoints)."""
        return []

    def load_optimizer_state(self, states: list[dict[str, Any]]) -> None:
        """Restore :meth:`optimizer_state`."""


class GaussianPrior(Prior):
    """``p(z) = N(0, I)``: the generator with a Gaussian prior (K = 0)."""

    @classmethod
    def from_config(cls, cfg: Config) -> GaussianPrior:
        return cls(cfg.model.nz)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return _gaussian_log_prob(z)

    def sample(
        self,
        z0: torch.Tensor,
        steps: int,
        step_size: float,
        randn: Callable[[int], torch.Tensor] | None = None,
        trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``z0`` is already an exact sample."""
        return (z0, z0[None]) if trajectory else z0


class AdaptivePrior(Prior):
    """Adaptive multi-stage NCE prior (paper §3.2, Algorithm 1).

    During stage ``k`` the prior is ``p_k(z) = prod_{i<k} r_i(z) N(0, I)`` with the earlier
    ratios frozen, and ``f_k = log r_k`` is trained by :func:`nce_loss` between posterior
    samples (numerator, ``q_k``) and samples of ``p_k`` (denominator): exact ``N(0, I)`` draws
    in stage 0, then rows of the memory-bank snapshot (``persistent``) or a prior chain on
    ``p_k`` (``langevin``). All ``K`` ratio networks and their Adam optimisers exist from the
    start; ratio ``k`` and its optimiser are first used in stage ``k``.

    Arguments:
        nz: latent dimension.
        stages: K.
        hidden: ratio-network width.
        lr, betas: Adam settings of each ratio network.
        prior_samples: ``"persistent"`` or ``"langevin"``.
        prior_steps, prior_step_size: the prior chain of the ``langevin`` mode.
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
    ) -> None:
        super().__init__(nz)
        self.ratios = nn.ModuleList(RatioNet(nz, hidden) for _ in range(stages))
        self.register_buffer("stage", torch.zeros((), dtype=torch.long))
        self.optims = [torch.optim.Adam(r.parameters(), lr=lr, betas=betas) for r in self.ratios]
        self.prior_samples = prior_samples
        self.prior_steps = prior_steps
        self.prior_step_size = prior_step_size
        self._freeze()

    @classmethod
    def from_config(cls, cfg: Config) -> AdaptivePrior:
        p = cfg.prior
        return cls(
            cfg.model.nz,
            num_stages(cfg),
            cfg.model.ratio_hidden,
            p.lr,
            (cfg.train.beta1, cfg.train.beta2),
            p.prior_samples,
            p.prior_steps,
            p.prior_step_size,
        )

    @property
    def num_frozen(self) -> int:
        """Number of ratios in the current prior (= the stage index)."""
        return int(self.stage)

    def _freeze(self) -> None:
        for i, r in enumerate(self.ratios):
            trainable = i == self.num_frozen
            r.requires_grad_(trainable)
            r.train(trainable)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_{i<k} f_i(z) - ||z||^2 / 2`` (paper Eq. 5), ``(B, nz)`` -> ``(B,)``."""
        out = _gaussian_log_prob(z)
        for r in self.ratios[: self.num_frozen]:
            out = out + r(z)
        return out

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
        z0 = streams.normal(rng.PRIOR_DRAW, self.nz)
        noise = streams.chain_noise(rng.PRIOR_NOISE, self.nz)
        return langevin(z0, self.log_prob, self.prior_steps, self.prior_step_size, randn=noise)

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

    def optimizer_state(self) -> list[dict[str, Any]]:
        return [o.state_dict() for o in self.optims]

    def load_optimizer_state(self, states: list[dict[str, Any]]) -> None:
        for o, s in zip(self.optims, states, strict=True):
            o.load_state_dict(s)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._freeze()


PRIORS: dict[str, type[Prior]] = {"gaussian": GaussianPrior, "adaptive": AdaptivePrior}


def build_prior(cfg: Config) -> Prior:
    """The prior named by ``cfg.prior.kind``."""
    return PRIORS[cfg.prior.kind].from_config(cfg)
