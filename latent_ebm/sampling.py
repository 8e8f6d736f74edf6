"""Test-time sampling from a trained model (paper §3.2 "Test time sampling", ARCHITECTURE §7).

- ``langevin``: a prior chain on the learned ``log p(z)`` from ``N(0, I)``
  (:meth:`latent_ebm.priors.Prior.sample`; paper A.3: 100 steps of size 0.1).
- ``mala``: Metropolis-adjusted Langevin on ``log p(z)`` from ``N(0, I)``
  (:func:`latent_ebm.langevin.mala`; ``steps`` proposals, each chain's step size adapted in
  the first half from ``step_size``): its samples follow the learned prior itself, not a
  short chain's approximation of it, so its FID measures the prior's density.
- ``smc``: sequential Monte Carlo along the prior's stages (:func:`smc_samples`,
  :mod:`latent_ebm.smc`): particles from ``N(0, I)`` weighted by each ratio in turn (in
  tempered steps), resampled, and moved by MALA on each intermediate density; ``steps`` is
  its budget in gradient evaluations per sample, as for the chains.
- ``sir``: sampling-importance-resampling: ``M`` proposals from ``N(0, I)``, importance
  weights ``p(z) / N(z; 0, I)`` (``exp(sum_k f_k(z))`` for the multi-stage prior), then ``n``
  draws with replacement in proportion to the weights.

Both are seeded: batch ``b`` of a request uses the random streams ``(seed, b)``, so the same
model and seed give the same images.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.errors import LatentEBMError
from latent_ebm.langevin import mala
from latent_ebm.model import LatentEBM
from latent_ebm.priors import Prior
from latent_ebm.smc import Path, smc_log_normalisers, stages, systematic_resample

__all__ = [
    "METHODS",
    "MULTINOMIAL_LIMIT",
    "check_sharpen",
    "prior_path",
    "resample",
    "sample_latents",
    "sharpen_suffix",
    "sir_weights",
    "smc_samples",
    "smc_schedule",
]

METHODS = ("langevin", "mala", "sir", "smc")
MULTINOMIAL_LIMIT = 2**24  # torch.multinomial refuses more categories than this


def check_sharpen(beta: float) -> None:
    """``--sharpen``: a positive, finite factor of the prior's learned log-density
    (:meth:`latent_ebm.priors.Prior.sharpened`).

    Raises:
        LatentEBMError: anything else.
    """
    if isinstance(beta, bool) or not isinstance(beta, int | float):
        raise LatentEBMError(f"--sharpen must be a number, got {beta!r}")
    if not (beta > 0 and math.isfinite(beta)):
        raise LatentEBMError(
            f"--sharpen must be positive (1: the learned prior; above 1: sharper), got {beta}"
        )


def sharpen_suffix(beta: float) -> str:
    """What a file or report name gets for sharpening ``beta``: ``-sharpen<beta>``, nothing
    at 1 (``sample``'s ``langevin-sharpen2.npz``, ``eval``'s ``fid-sharpen2.json``)."""
    return "" if beta == 1 else f"-sharpen{beta:g}"


def sir_weights(model: LatentEBM, z: torch.Tensor) -> torch.Tensor:
    """Log importance weights ``log p(z) - log N(z; 0, I)`` of proposals ``z`` ``(M, nz)``."""
    with torch.no_grad():
        return model.prior.log_prob(z) + 0.5 * z.pow(2).sum(-1)


def resample(logw: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices ``(n,)`` drawn with replacement in proportion to ``exp(logw)`` ``(M,)``
    (SIR's resampling), seeded by ``generator``: ``torch.multinomial`` up to
    :data:`MULTINOMIAL_LIMIT` categories, beyond it inverse CDF (``searchsorted`` of uniform
    draws in the float64 cumulative weights), which has no limit on ``M``: a batch pools
    its ``m x proposals`` candidates, beyond the limit for large requests."""
    if len(logw) <= MULTINOMIAL_LIMIT:
        return torch.multinomial(torch.softmax(logw, 0), n, replacement=True, generator=generator)
    # float64: a float32 sum of more than 2**24 weights loses the small ones.
    cdf = torch.softmax(logw.double(), 0).cumsum(0)
    u = torch.rand(n, dtype=torch.float64, generator=generator, device=logw.device) * cdf[-1]
    return torch.searchsorted(cdf, u, right=True).clamp_(max=len(logw) - 1)


def prior_path(prior: Prior, temperatures: int) -> tuple[Path, int]:
    """The SMC path of ``prior`` from ``N(0, I)`` (:mod:`latent_ebm.smc`) and its number of
    stages ``K``: its :meth:`~latent_ebm.priors.Prior.stage_log_ratios`, ``temperatures``
    path steps each; stage ``k``'s density is the path's step ``k * temperatures``."""
    ratios = prior.stage_log_ratios()
    return stages(ratios, temperatures), len(ratios)


def smc_schedule(num_stages: int, steps: int) -> tuple[int, int]:
    """``(temperatures, moves)`` of the SMC sampler at a budget of ``steps`` gradient
    evaluations per sample. Each path step's MALA run of ``moves`` proposals costs
    ``moves + 1`` (its start's gradient too), so ``temperatures * K * (moves + 1) <= steps``
    where the budget allows: 5 moves per path step, as many tempered steps per stage as that
    pays for; at least 1 of each."""
    k = max(num_stages, 1)
    temperatures = max(1, steps // (6 * k))
    moves = max(1, steps // (temperatures * k) - 1)
    return temperatures, moves


def smc_samples(
    prior: Prior, n: int, steps: int, step_size: float, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """``n`` samples ``(n, nz)`` of ``prior`` by SMC along :func:`prior_path` at a budget of
    ``steps`` gradient evaluations each (:func:`smc_schedule`; the weights' ratio evaluations
    come on top), the final weighted particles resampled to equal weights (systematic).

    Returns:
        The samples, and what they cost and how good their weights were: ``ess`` (the
        effective sample size of the final weights, ``n`` for ``N(0, I)``, whose draws are
        exact), ``temperatures``, ``moves`` and ``gradient_evaluations`` per sample.
    """
    k = len(prior.stage_log_ratios())
    if k == 0:
        z = torch.randn((n, prior.nz), generator=generator, device=generator.device)
        return z, {"ess": float(n), "temperatures": 0, "moves": 0, "gradient_evaluations": 0}
    temperatures, moves = smc_schedule(k, steps)
    path, _ = prior_path(prior, temperatures)
    out = smc_log_normalisers(
        path, prior.nz, n, generator=generator, moves=moves, step_size=step_size
    )
    ess = float(1 / out.weights.pow(2).sum())
    z = out.particles[systematic_resample(out.weights.log(), generator)]
    cost = temperatures * k * (moves + 1)
    info = {"ess": ess, "temperatures": temperatures, "moves": moves}
    return z, {**info, "gradient_evaluations": cost}


def sample_latents(
    model: LatentEBM,
    n: int,
    *,
    method: str = "langevin",
    steps: int = 100,
    step_size: float = 0.1,
    proposals: int = 10,
    seed: int = 0,
    batch_size: int = 500,
    progress: bool = False,
    diagnostics: list[dict[str, float]] | None = None,
) -> torch.Tensor:
    """``n`` latent samples ``(n, nz)`` of the learned prior, made in batches; images are
    ``model.decode(z)``.

    Arguments:
        method: ``"langevin"`` (prior chain of ``steps`` steps of ``step_size``), ``"mala"``
            (``steps`` Metropolis-adjusted proposals, initial step ``step_size``) or ``"sir"``
            (``proposals`` Gaussian proposals per sample, resampled by importance weight)
            or ``"smc"`` (:func:`smc_samples` at a budget of ``steps`` gradient evaluations
            per sample, first step size ``step_size``; each batch is one particle system).
        diagnostics: with ``smc``, each batch's :func:`smc_samples` information is
            appended to it.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r} (choose from {METHODS})")
    device = model.device
    out = []
    starts = range(0, n, batch_size)
    for b, i in enumerate(tqdm(starts, desc=f"sample ({method})", disable=not progress)):
        m = min(batch_size, n - i)
        if method == "langevin":
            streams = rng.Streams(seed, b, m, slice(None), device)
            z0 = streams.normal(rng.PRIOR_DRAW, model.nz)
            noise = streams.chain_noise(rng.PRIOR_NOISE, model.nz)
            z = model.prior.sample(z0, steps, step_size, noise)
        elif method == "mala":
            streams = rng.Streams(seed, b, m, slice(None), device)
            z = streams.normal(rng.PRIOR_DRAW, model.nz)
            if model.prior.needs_chain:
                g = rng.generator_for(seed, b, rng.PRIOR_NOISE, device=device)
                z, _ = mala(z, model.prior.log_prob, steps, step_size, generator=g)
        elif method == "smc":
            g = rng.generator_for(seed, b, rng.PRIOR_NOISE, device=device)
            z, info = smc_samples(model.prior, m, steps, step_size, g)
            if diagnostics is not None:
                diagnostics.append(info)
        else:
            streams = rng.Streams(seed, b, m * proposals, slice(None), device)
            candidates = streams.normal(rng.PRIOR_DRAW, model.nz)
            logw = sir_weights(model, candidates)
            g = rng.generator_for(seed, b, rng.PRIOR_NOISE, device=device)
            z = candidates[resample(logw, m, g)]
        out.append(z.detach())
    return torch.cat(out)
