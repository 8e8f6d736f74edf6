"""Latent priors behind one interface (DESIGN §4).

Every prior is a :class:`Prior`: ``log_prob(z)`` (the learned prior, up to a constant),
``inference_log_prob(z)`` (the prior the posterior chains use while training),
``set_stage(k, bank)`` (called before every iteration with the stage of the schedule) and
``train_step(z_post, streams, bank)`` (one update of the prior's own parameters). The training
loop and the evaluations call only these; they never test which prior they hold.

- :class:`GaussianPrior`: ``N(0, I)``, nothing to learn (the paper's SRI / "0 stages").
- :class:`AdaptivePrior`: ``log p_k(z) = sum_{i<k} f_i(z) - ||z||^2 / 2`` (paper Eq. 5),
  learned by adaptive multi-stage NCE (Algorithm 1); with ``K = 1`` it is the ``nce`` prior
  (one ratio, the paper's Table 3 "1 stage").
- :class:`TREPrior`: the same form with ``K`` ratios learned together by non-adaptive
  telescoping ratio estimation on waymarks (Rhodes et al. 2020; Table 3 "non-adaptive").
- :class:`LEBMPrior`: ``log p(z) = f(z) - ||z||^2 / 2`` learned by maximum likelihood with a
  prior Langevin chain (Pang et al. 2020).

Which class ``prior.kind`` names is the table :data:`PRIORS`.
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
    "LEBMPrior",
    "Prior",
    "TREPrior",
    "build_prior",
    "nce_loss",
    "stage_of",
    "tre_waymarks",
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
        self.optims: list[torch.optim.Optimizer] = []  # a subclass's optimisers, checkpointed

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
        return [o.state_dict() for o in self.optims]

    def load_optimizer_state(self, states: list[dict[str, Any]]) -> None:
        """Restore :meth:`optimizer_state`."""
        for o, state in zip(self.optims, states, strict=True):
            o.load_state_dict(state)


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
    """Adaptive multi-stage NCE prior (paper §3.2, Algorithm 1); ``prior.kind`` ``adaptive``,
    and ``nce`` for ``K = 1`` (:func:`latent_ebm.config.num_stages` gives 1 for it).

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

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._freeze()


def tre_waymarks(z_p: torch.Tensor, z_q: torch.Tensor, stages: int) -> torch.Tensor:
    """Waymarks of telescoping ratio estimation (Rhodes et al. 2020, DESIGN §4).

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


class TREPrior(Prior):
    """Non-adaptive telescoping ratio estimation prior (Rhodes et al. 2020; paper Table 3
    "non-adaptive"; DESIGN §4).

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
        self,
        nz: int,
        stages: int,
        hidden: int = 200,
        lr: float = 5e-5,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> None:
        super().__init__(nz)
        if stages < 1:
            raise ValueError(f"TREPrior needs at least one ratio, got stages={stages}")
        self.ratios = nn.ModuleList(RatioNet(nz, hidden) for _ in range(stages))
        self.optims = [torch.optim.Adam(self.ratios.parameters(), lr=lr, betas=betas)]

    @classmethod
    def from_config(cls, cfg: Config) -> TREPrior:
        p = cfg.prior
        return cls(
            cfg.model.nz, p.stages, cfg.model.ratio_hidden, p.lr, (cfg.train.beta1, cfg.train.beta2)
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``sum_j f_j(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        out = _gaussian_log_prob(z)
        for r in self.ratios:
            out = out + r(z)
        return out

    def inference_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``N(0, I)``: the posterior chains of training never see the learned ratios."""
        return _gaussian_log_prob(z)

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


class LEBMPrior(Prior):
    """Latent EBM prior learned by maximum likelihood (Pang et al. 2020; DESIGN §4).

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
    def from_config(cls, cfg: Config) -> LEBMPrior:
        p = cfg.prior
        betas = (cfg.train.beta1, cfg.train.beta2)
        return cls(
            cfg.model.nz, cfg.model.ratio_hidden, p.lr, betas, p.prior_steps, p.prior_step_size
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``f(z) - ||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
        return self.energy(z) + _gaussian_log_prob(z)

    def prior_samples(self, streams: Streams) -> torch.Tensor:
        """The training prior chain: ``(B, nz)`` from ``N(0, I)`` draws of the iteration."""
        z0 = streams.normal(rng.PRIOR_DRAW, self.nz)
        noise = streams.chain_noise(rng.PRIOR_NOISE, self.nz)
        return langevin(z0, self.log_prob, self.prior_steps, self.prior_step_size, randn=noise)

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


# ``nce`` is the adaptive prior with one stage: num_stages gives K = 1 for it.
PRIORS: dict[str, type[Prior]] = {
    "gaussian": GaussianPrior,
    "nce": AdaptivePrior,
    "adaptive": AdaptivePrior,
    "tre": TREPrior,
    "lebm": LEBMPrior,
}


def build_prior(cfg: Config) -> Prior:
    """The prior named by ``cfg.prior.kind``."""
    return PRIORS[cfg.prior.kind].from_config(cfg)
