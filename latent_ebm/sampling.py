"""Test-time sampling from a trained model (paper §3.2 "Test time sampling", ARCHITECTURE §7).

- ``langevin``: a prior chain on the learned ``log p(z)`` from ``N(0, I)``
  (:meth:`latent_ebm.priors.Prior.sample`; paper A.3: 100 steps of size 0.1).
- ``mala``: Metropolis-adjusted Langevin on ``log p(z)`` from ``N(0, I)``
  (:func:`latent_ebm.langevin.mala`; ``steps`` proposals, each chain's step size adapted in
  the first half from ``step_size``): its samples follow the learned prior itself, not a
  short chain's approximation of it, so its FID measures the prior's density.
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

__all__ = [
    "METHODS",
    "MULTINOMIAL_LIMIT",
    "check_sharpen",
    "resample",
    "sample_latents",
    "sharpen_suffix",
    "sir_weights",
]

METHODS = ("langevin", "mala", "sir")
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
) -> torch.Tensor:
    """``n`` latent samples ``(n, nz)`` of the learned prior, made in batches; images are
    ``model.decode(z)``.

    Arguments:
        method: ``"langevin"`` (prior chain of ``steps`` steps of ``step_size``), ``"mala"``
            (``steps`` Metropolis-adjusted proposals, initial step ``step_size``) or ``"sir"``
            (``proposals`` Gaussian proposals per sample, resampled by importance weight).
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
        else:
            streams = rng.Streams(seed, b, m * proposals, slice(None), device)
            candidates = streams.normal(rng.PRIOR_DRAW, model.nz)
            logw = sir_weights(model, candidates)
            g = rng.generator_for(seed, b, rng.PRIOR_NOISE, device=device)
            z = candidates[resample(logw, m, g)]
        out.append(z.detach())
    return torch.cat(out)
