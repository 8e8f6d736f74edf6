"""What a report function of :mod:`latent_ebm.evaluation` reads (:class:`Request`: a loaded
run and the settings of :func:`~latent_ebm.evaluation.evaluate_run`), and the checks of those
settings before any work (:func:`check_options`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from latent_ebm.config import Config, check_seed
from latent_ebm.data import Dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.classifier import FEATURES
from latent_ebm.model import LatentEBM
from latent_ebm.posterior import STARTS
from latent_ebm.sampling import METHODS

__all__ = ["FID_METHODS", "Request", "SMCSettings", "check_options"]

FID_METHODS = (*METHODS, "aggregate")  # "aggregate": g at the aggregate posterior, a ceiling


@dataclass(frozen=True)
class SMCSettings:
    """How a prior's normalising constants are estimated (``eval --metric prior-nll`` and
    ``nll``; ``--particles``, ``--repeats``, ``--temperatures``, ``--moves``).

    Arguments:
        particles: ``N`` of each run.
        repeats: independent runs, for the standard error (at least 2).
        temperatures: path steps per stage (at least; :func:`latent_ebm.smc.smc_adaptive`).
        moves: MALA steps per path step.
        step_size: the first MALA step size (adapted between path steps).
    """

    particles: int = 2000
    repeats: int = 4
    temperatures: int = 10
    moves: int = 5
    step_size: float = 0.1

    def check(self) -> None:
        """Raise ``LatentEBMError`` naming the option that is out of range."""
        for name, value, low in (
            ("--particles", self.particles, 2),
            ("--repeats", self.repeats, 2),
            ("--temperatures", self.temperatures, 1),
            ("--moves", self.moves, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise LatentEBMError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise LatentEBMError(f"the SMC step size must be positive, got {self.step_size}")


@dataclass(frozen=True)
class Request:
    """A loaded run and the settings of :func:`evaluate_run`: what a report function reads."""

    run_dir: Path
    cfg: Config
    model: LatentEBM
    data: Dataset
    device: torch.device
    steps: int | None
    step_size: float | None
    start: str
    seed: int
    n: int
    features: str
    weights: str | Path | None
    method: str
    proposals: int
    last: int
    holdout: int | None
    batch_size: int
    progress: bool
    smc: SMCSettings
    chains: int
    samples: int

    def chain(self, steps: int, step_size: float) -> dict[str, Any]:
        """The chain's ``steps`` and ``step_size``: the request's, else the given defaults."""
        return {
            "steps": steps if self.steps is None else self.steps,
            "step_size": step_size if self.step_size is None else self.step_size,
        }

    def posterior_chain(self) -> dict[str, Any]:
        """The posterior chain and its start: by default the run's chain from that start
        (``noise``: ``train.post_steps``; ``amortised``: ``train.warm_steps``)."""
        t = self.cfg.train
        return {**self.chain(t.chain_steps(self.start), t.post_step_size), "start": self.start}


def check_options(
    metric: str,
    steps: int | None,
    step_size: float | None,
    start: str,
    seed: int,
    n: int,
    features: str,
    method: str,
    proposals: int,
    last: int,
    smc: SMCSettings,
    chains: int,
    samples: int,
) -> None:
    """The checks of :func:`~latent_ebm.evaluation.evaluate_run`'s settings, before any work
    (the defaults pass)."""
    check_seed(seed, "--seed")
    if start not in STARTS:
        raise LatentEBMError(f"unknown --start '{start}' (choose from {', '.join(STARTS)})")
    if start != "noise" and metric == "fid":
        raise LatentEBMError("--start applies to the posterior chains of recon and anomaly")
    if steps is not None and steps < 0:
        raise LatentEBMError(f"--steps must be >= 0, got {steps}")
    if step_size is not None and not (step_size > 0 and math.isfinite(step_size)):
        raise LatentEBMError(f"--step-size must be positive, got {step_size}")
    if metric == "fid":
        if n < 2:
            raise LatentEBMError(f"--n must be at least 2 for fid (a covariance), got {n}")
        if features not in FEATURES:
            raise LatentEBMError(f"unknown --features '{features}' (choose {', '.join(FEATURES)})")
        if method not in FID_METHODS:
            raise LatentEBMError(
                f"unknown --method '{method}' (choose from {', '.join(FID_METHODS)})"
            )
    if metric == "nll" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise LatentEBMError(f"--n must be a whole number >= 1 for nll (test images), got {n!r}")
    if proposals < 1:
        raise LatentEBMError(f"--proposals must be at least 1, got {proposals}")
    if last < 1:
        raise LatentEBMError(f"--last must be at least 1, got {last}")
    smc.check()
    for name, value, low in (("--chains", chains, 2), ("--samples", samples, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise LatentEBMError(f"{name} must be a whole number >= {low}, got {value!r}")
