"""The interface every latent prior implements, and what several priors share: the
logistic NCE loss (paper Eq. 4), the stage schedule of Algorithm 1 and the ``N(0, I)`` base
density (ARCHITECTURE §4)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from latent_ebm import rng
from latent_ebm.langevin import langevin
from latent_ebm.memory import MemoryBank
from latent_ebm.nets import RatioNet
from latent_ebm.rng import Streams

if TYPE_CHECKING:  # config imports the priors' registry: no import back at runtime
    from latent_ebm.config import Config

__all__ = ["Betas", "Prior", "Refit", "gaussian_log_prob", "nce_loss", "stage_of"]

Betas = tuple[float, float]  # Adam's (beta1, beta2)


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


@dataclass(frozen=True)
class Refit:
    """Settings of a post-hoc refit (:meth:`Prior.refit`, ARCHITECTURE §4; the config
    section ``refit``).

    Arguments:
        steps: Adam updates in all (an adaptive prior splits them evenly over its stages),
            or, with ``per_stage``, the updates of each adaptive stage.
        per_stage: ``steps`` counts per adaptive stage, not in all.
        batch: rows of each side of an NCE update.
        lr, betas: Adam settings.
        chain_steps: chain steps that draw an adaptive stage's noise samples of ``p_k``.
        sampler: ``"mala"`` (exact MALA chains, initial step ``step_size``, adapted) or
            ``"chain"`` (unadjusted Langevin of step ``step_size``: the test-time prior chain).
        step_size: the chains' (initial) step size.
        noise: how many samples of ``p_k`` each adaptive stage draws.
        seed: seeds every number the refit draws.
        holdout: the fraction of the rows (and of each adaptive stage's noise) held out for
            the stopping rule (:meth:`~latent_ebm.priors.ratio.RatioPrior._fit`); 0: none.
        check: updates between two measurements of the held-out loss.
        patience: measurements without a new best after which a fit stops.
    """

    steps: int
    per_stage: bool = False
    batch: int = 500
    lr: float = 1e-3
    betas: Betas = (0.5, 0.999)
    chain_steps: int = 400
    noise: int = 10_000
    sampler: str = "mala"
    step_size: float = 0.1
    seed: int = 0
    holdout: float = 0.0
    check: int = 250
    patience: int = 4


def gaussian_log_prob(z: torch.Tensor) -> torch.Tensor:
    """``log N(z; 0, I)`` up to a constant: ``-||z||^2 / 2``, ``(B, nz)`` -> ``(B,)``."""
    return -0.5 * z.pow(2).sum(-1)


class Prior(nn.Module):
    """The interface every prior implements. Shapes: ``z`` is ``(B, nz)``.

    A new prior subclasses this, implements :meth:`from_config` and :meth:`log_prob` (and
    :meth:`train_step` if it learns), overrides :meth:`num_stages` if it has a stage schedule
    and :meth:`check_config` if it constrains config fields, and adds one line to
    :data:`latent_ebm.priors.PRIORS`. Nothing else names it: the loop, the evaluations and
    config validation reach it through the registry.
    """

    #: ``False`` where ``z0 ~ N(0, I)`` already is an exact sample of the prior, so that
    #: :meth:`sample` returns it without running a chain.
    needs_chain: bool = True
    refits: bool = False  # whether :meth:`refit` learns anything

    def __init__(self, nz: int) -> None:
        super().__init__()
        self.nz = nz
        self.optims: list[torch.optim.Optimizer] = []  # a subclass's optimisers, checkpointed

    @classmethod
    def from_config(cls, cfg: Config) -> Prior:
        """The prior that ``cfg`` (``model`` and ``prior`` sections) describes."""
        raise NotImplementedError

    @classmethod
    def num_stages(cls, cfg: Config) -> int:
        """Stages ``K`` of the training schedule (:func:`stage_of`); 0: no schedule."""
        return 0

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Raise ``LatentEBMError`` naming a config field this prior cannot work with."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, nz)`` -> ``(B,)``: log density of the prior learned so far, up to a constant."""
        raise NotImplementedError

    def stage_log_ratios(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The log-ratios ``f_1..f_n``, in stage order, whose product with ``N(0, I)`` is this
        prior: the path along which its normalising constant is estimated
        (:mod:`latent_ebm.smc`). By default one stage, the prior's whole log-density relative
        to ``N(0, I)`` (annealed in ``beta`` by the path, as for ``lebm``); the ratio priors
        give their ratios, ``N(0, I)`` none."""
        return [lambda z: self.log_prob(z) - gaussian_log_prob(z)]

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

    def chain_samples(self, streams: Streams, steps: int, step_size: float) -> torch.Tensor:
        """Samples of the current prior for a training update, ``(B, nz)``: ``steps``
        Langevin steps on :meth:`log_prob` from the iteration's ``N(0, I)`` draws (streams
        ``PRIOR_DRAW`` for the start, ``PRIOR_NOISE`` for the chain)."""
        z0 = streams.normal(rng.PRIOR_DRAW, self.nz)
        noise = streams.chain_noise(rng.PRIOR_NOISE, self.nz)
        return langevin(z0, self.log_prob, steps, step_size, randn=noise)

    def sample(
        self,
        z0: torch.Tensor,
        steps: int,
        step_size: float,
        randn: Callable[[int], torch.Tensor] | None = None,
        trajectory: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Prior samples by Langevin dynamics on ``log_prob`` from ``z0 ~ N(0, I)``, or
        ``z0`` itself where that is already exact (:attr:`needs_chain`); with ``trajectory``
        also the states ``(steps + 1, B, nz)`` (``(1, B, nz)`` without a chain)."""
        if not self.needs_chain:
            return (z0, z0[None]) if trajectory else z0
        return langevin(z0, self.log_prob, steps, step_size, randn=randn, trajectory=trajectory)

    def sharpened(self, beta: float) -> Prior:
        """The prior whose learned log-density relative to ``N(0, I)`` is ``beta`` times this
        one's: ``N(0, I) r(z)^beta`` for the ratio priors, ``exp(beta f(z)) N(0, I)`` for
        ``lebm``. A copy, with the last layer of every learned network (weight and bias) times
        ``beta``; this prior itself for ``beta = 1`` or with nothing learned (``gaussian``).
        ``beta > 1`` sharpens the prior, much as a lower temperature would (beyond the paper;
        ``sample --sharpen``, ``eval --sharpen``; RESULTS, "Sharpening").

        Raises:
            ValueError: ``beta`` not positive and finite.
        """
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"sharpening must be positive and finite, got {beta!r}")
        if beta == 1 or not any(isinstance(m, RatioNet) for m in self.modules()):
            return self
        out = copy.deepcopy(self)
        with torch.no_grad():
            for net in out.modules():
                if isinstance(net, RatioNet):
                    net.net[-1].weight.mul_(beta)
                    net.net[-1].bias.mul_(beta)
        return out

    def optimizer_state(self) -> list[dict[str, Any]]:
        """State of the prior's optimisers (for checkpoints)."""
        return [o.state_dict() for o in self.optims]

    def load_optimizer_state(self, states: list[dict[str, Any]]) -> None:
        """Restore :meth:`optimizer_state`."""
        for o, state in zip(self.optims, states, strict=True):
            o.load_state_dict(state)

    def refit(self, z_q: torch.Tensor, settings: Refit, progress: bool = False) -> list[float]:
        """Re-learn the prior on ``z_q`` ``(N, nz)``, samples of the final aggregate posterior,
        after training (ARCHITECTURE §4); returns the last loss of each fitted part. The
        default has nothing to refit and returns ``[]``."""
        return []
