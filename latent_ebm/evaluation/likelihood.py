"""Likelihoods of a trained model (issue 31): the prior's normalising constants, the prior's
cross-entropy on the aggregate posterior of the test images, and ``log p(x)``.

- :func:`prior_normalisers`: ``log Z_k`` of every stage ``p_0 .. p_K`` of a prior
  (``p_0 = N(0, I)``), by sequential Monte Carlo along its stages (:mod:`latent_ebm.smc`,
  :func:`latent_ebm.sampling.prior_path`), with a standard error from independent repeats.
  ``gaussian`` has no ratio: ``log Z = 0`` exactly; ``lebm`` is annealed in ``beta``.
- :func:`prior_nll`: ``-E_q[log p_k(z)]`` for every stage, ``z`` the posterior samples of
  the test images (the run's own chain): the aggregate posterior's cross-entropy under the
  normalised prior, in nats. On one generator every prior sees the same ``z``, so differences
  between priors are differences of ``KL(q || p)``.
- :func:`log_px`: ``log p(x)`` of each image by importance sampling: proposals from a
  Gaussian fitted to ``chains`` posterior chains of the image (a scale mixture of the fit and
  twice its width, so that the proposal's tails cover the posterior's), the prior normalised
  by :func:`prior_normalisers`. In expectation a lower bound on ``log p(x)`` (Jensen), tight
  as the proposal approaches the posterior.

Bits per dimension use the density of ``x`` in the ``[-1, 1]`` pixel units of training
(:func:`latent_ebm.data.to_float`) times the volume of one 8-bit bin, ``(1 / 127.5)^D``:
``bpd = (-log p(x) + D log 127.5) / (D log 2)``, the midpoint convention (a density at the
bin's centre; no dequantisation noise was trained with).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.data import to_float
from latent_ebm.evaluation.metrics import posterior_samples
from latent_ebm.evaluation.request import Request, SMCSettings
from latent_ebm.model import LatentEBM
from latent_ebm.priors import Prior
from latent_ebm.smc import smc_adaptive

__all__ = [
    "LOG_BIN",
    "Normalisers",
    "bits_per_dim",
    "log_px",
    "prior_log_densities",
    "prior_nll",
    "prior_normalisers",
]

_SE = 0.25  # the largest standard error of a converged log Z_k, nats
LOG_BIN = math.log(127.5)  # -log of one 8-bit bin's width in [-1, 1] pixel units


@dataclass(frozen=True)
class Normalisers:
    """``log Z_k`` of a prior's stages ``k = 0..K`` (``K = 1`` for a prior annealed in
    ``beta``), over :attr:`SMCSettings.repeats` SMC runs.

    Attributes:
        log_z: ``(K + 1,)``, the mean over the runs (``log Z_0 = 0``).
        se: ``(K + 1,)``, its standard error.
        ess: ``(K + 1,)``, the smallest effective sample size over each stage's tempering
            steps, as a fraction of the particles, averaged over the runs.
        acceptance: the MALA moves' mean acceptance (NaN without moves).
        steps: ``(K + 1,)``, each stage's tempering steps, averaged over the runs.
        drift: ``(K + 1,)``, ``log_z`` minus the estimate at half the tempering steps (the
            convergence check of :func:`prior_normalisers`).
        converged: every stage's ``|drift|`` is at most ``0.1 + 3 se`` (``se`` of the
            difference) and its standard error at most :data:`_SE` nats: more tempering did
            not move the estimate, and the repeats agree.
    """

    log_z: torch.Tensor
    se: torch.Tensor
    ess: torch.Tensor
    acceptance: float
    steps: torch.Tensor
    drift: torch.Tensor
    converged: bool

    def describe(self) -> list[dict[str, float]]:
        """One entry per stage for a report: ``stage``, ``log_z``, ``log_z_se``, ``ess``,
        ``steps``, ``drift``."""
        rows = zip(self.log_z, self.se, self.ess, self.steps, self.drift, strict=True)
        return [
            {
                "stage": k,
                "log_z": float(v),
                "log_z_se": float(e),
                "ess": float(f),
                "steps": float(n),
                "drift": float(d),
            }
            for k, (v, e, f, n, d) in enumerate(rows)
        ]


def prior_normalisers(
    prior: Prior, settings: SMCSettings, seed: int = 0, progress: bool = False
) -> Normalisers:
    """Every stage's ``log Z_k`` of ``prior`` (module docstring), on the prior's device.

    Adaptive tempering within each stage (:func:`latent_ebm.smc.smc_adaptive`): at least
    ``2 * settings.temperatures`` steps, more where a ratio is sharp, ``settings.moves`` MALA
    moves on each, ``settings.repeats`` runs (run ``r`` seeded by ``(seed, r)``). The same
    runs at half the steps are the convergence check (:attr:`Normalisers.drift`): ``log Z``
    is a lower bound in expectation that rises towards the truth as the path gets finer, so a
    prior whose moves cannot follow its path shows it there. Exactly 0 for a prior without
    ratios.
    """
    settings.check()
    ratios = prior.stage_log_ratios()
    if not ratios:
        zero = torch.zeros(1, dtype=torch.float64)
        one = torch.ones(1, dtype=torch.float64)
        return Normalisers(zero, zero.clone(), one, math.nan, zero.clone(), zero.clone(), True)
    device = next(iter(prior.parameters())).device
    by_steps = {}
    bar = tqdm(total=2 * settings.repeats, desc="SMC log Z", disable=not progress)
    for fine in (False, True):
        runs = []
        for r in range(settings.repeats):
            g = rng.generator_for(seed, rng.SMC, r, int(fine), device=device)
            runs.append(
                smc_adaptive(
                    ratios,
                    prior.nz,
                    settings.particles,
                    generator=g,
                    min_steps=settings.temperatures * (2 if fine else 1),
                    moves=settings.moves,
                    step_size=settings.step_size,
                )
            )
            bar.update()
        by_steps[fine] = runs
    bar.close()
    (coarse, c_se), (log_z, se) = (_mean_se([o.log_z for o in by_steps[f]]) for f in (0, 1))
    runs = by_steps[True]
    drift = log_z - coarse
    return Normalisers(
        log_z,
        se,
        torch.stack([o.ess for o in runs]).mean(0) / settings.particles,
        float(torch.stack([o.acceptance[1:] for o in runs]).nanmean()),
        torch.stack([o.steps for o in runs]).double().mean(0),
        drift,
        bool((drift.abs() <= 0.1 + 3 * (se**2 + c_se**2).sqrt()).all() and (se <= _SE).all()),
    )


def _mean_se(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack(values)
    return x.mean(0), x.std(0) / math.sqrt(len(x))


def prior_log_densities(prior: Prior, z: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """``log p_k(z)``, normalised, for every stage ``k`` of ``log_z`` ``(K + 1,)``:
    ``(K + 1, N)`` float64, ``z`` ``(N, nz)``."""
    base = -0.5 * z.pow(2).sum(-1).double() - 0.5 * z.shape[1] * math.log(2 * math.pi)
    with torch.no_grad():
        parts = [f(z).double() for f in prior.stage_log_ratios()]
    rows = [base]
    for f in parts:
        rows.append(rows[-1] + f)
    return torch.stack(rows) - log_z.to(z.device)[:, None]


def prior_nll(prior: Prior, z: torch.Tensor, normalisers: Normalisers) -> list[dict[str, float]]:
    """The cross-entropy ``-E_q[log p_k(z)]`` (nats) of the samples ``z`` ``(N, nz)`` under
    every stage ``k`` of ``prior``, with its standard error: the samples' (``std / sqrt N``)
    and ``log Z_k``'s, added in quadrature. One entry per stage, with :meth:`Normalisers.
    describe`'s fields."""
    logp = prior_log_densities(prior, z, normalisers.log_z)
    out = []
    for k, row in enumerate(logp):
        se = math.hypot(float(row.std()) / math.sqrt(len(row)), float(normalisers.se[k]))
        out.append({"nll": -float(row.mean()), "se": se, **normalisers.describe()[k]})
    return out


def log_px(
    model: LatentEBM,
    images: torch.Tensor,
    log_z: float,
    *,
    chains: int,
    samples: int,
    steps: int,
    step_size: float,
    seed: int = 0,
    start: str = "noise",
    batch_size: int = 100,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(x)`` (nats) of each ``uint8`` image by importance sampling (module docstring),
    and each estimate's effective sample size, both ``(N,)`` float64.

    The proposal of each image is a Gaussian fitted at its posterior mode: ``chains``
    posterior chains (:func:`posterior_samples`, ``steps`` of ``step_size`` from ``start``)
    find it (the endpoint of highest ``log p(x, z)``, refined by :data:`_ASCENT` Adam steps),
    and the Hessian of ``-log p(x, z)`` there gives the covariance ``H^{-1}`` (eigenvalues
    held at or above :data:`_CURVATURE`). ``samples`` proposals come from the scale mixture
    ``0.5 N(m, H^{-1}) + 0.5 N(m, 4 H^{-1})``, whose wider half covers a posterior wider or
    less Gaussian than the fit. ``log_z`` is the prior's ``log Z_K``
    (:func:`prior_normalisers`).
    """
    device = model.device
    nz, dims = model.nz, images[0].numel()
    # log N(x; g(z), sigma^2 I) and log N(z; 0, I) constants, and log Z_K
    const = -0.5 * dims * math.log(2 * math.pi * model.sigma**2)
    const -= 0.5 * nz * math.log(2 * math.pi) + log_z
    g = rng.generator_for(seed, rng.IMPORTANCE, device=device)
    values, ess = [], []
    starts = range(0, len(images), batch_size)
    for b, i in enumerate(tqdm(starts, desc="log p(x)", disable=not progress)):
        x = to_float(images[i : i + batch_size]).to(device)
        part = images[i : i + batch_size]
        mode, chol = _laplace(model, x, part, chains, steps, step_size, seed + b, start)
        for j in range(len(x)):
            scale = torch.where(torch.rand((samples, 1), generator=g, device=device) < 0.5, 1, 2)
            eps = torch.randn((samples, nz), generator=g, device=device)
            z = mode[j] + scale * (eps @ chol[j].T)
            # log q: the mixture of N(m, c^2 L L^T), c = 1, 2, at z = m + c' L eps.
            white = (scale * eps).double()
            parts = [-0.5 * (white / c).pow(2).sum(-1) - nz * math.log(c) for c in (1.0, 2.0)]
            log_q = torch.logsumexp(torch.stack(parts), 0) - math.log(2)
            log_q -= chol[j].diagonal().log().sum().double() + 0.5 * nz * math.log(2 * math.pi)
            with torch.no_grad():
                xj = x[j : j + 1]
                joint = [
                    model.log_joint(xj.expand(len(zk), *x.shape[1:]), zk).double()
                    for zk in z.split(batch_size * 4)
                ]
            w = torch.cat(joint) + const - log_q
            values.append(torch.logsumexp(w, 0) - math.log(samples))
            ess.append(torch.exp(2 * torch.logsumexp(w, 0) - torch.logsumexp(2 * w, 0)))
    return torch.stack(values).cpu(), torch.stack(ess).cpu()


_ASCENT = 500  # Adam steps (lr 0.01) from the best chain endpoint to the posterior mode
_CURVATURE = 0.5  # the smallest eigenvalue of the Laplace precision


def _laplace(
    model: LatentEBM,
    x: torch.Tensor,
    images: torch.Tensor,
    chains: int,
    steps: int,
    step_size: float,
    seed: int,
    start: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior mode ``(B, nz)`` of each image of ``x`` (``images`` as ``uint8``) and
    the Cholesky factor ``(B, nz, nz)`` of its Laplace covariance (:func:`log_px`)."""
    nz, rows = model.nz, len(x)
    many = images.repeat_interleave(chains, 0)
    z = posterior_samples(
        model, many, steps, step_size, seed=seed, start=start, batch_size=len(many)
    )
    with torch.no_grad():
        best = model.log_joint(x.repeat_interleave(chains, 0), z).view(rows, chains).argmax(1)
    mode = z.view(rows, chains, nz)[torch.arange(rows), best].clone().requires_grad_()
    opt = torch.optim.Adam([mode], lr=0.01)
    for _ in range(_ASCENT):
        opt.zero_grad()
        (-model.log_joint(x, mode).sum()).backward()
        opt.step()
    mode = mode.detach().requires_grad_()
    grad = torch.autograd.grad(model.log_joint(x, mode).sum(), mode, create_graph=True)[0]
    # Images are independent: row d of every image's Hessian is the gradient of sum_b grad_bd.
    rows_d = [torch.autograd.grad(grad[:, d].sum(), mode, retain_graph=True)[0] for d in range(nz)]
    hessian = -torch.stack(rows_d, 1).detach().double()  # (B, nz, nz) of -log p(x, z)
    vals, vecs = torch.linalg.eigh(0.5 * (hessian + hessian.transpose(1, 2)))
    cov = vecs @ torch.diag_embed(1 / vals.clamp(min=_CURVATURE)) @ vecs.transpose(1, 2)
    return mode.detach(), torch.linalg.cholesky(cov).to(mode.dtype)


def bits_per_dim(nll_nats: float, dims: int) -> float:
    """Bits per dimension of an 8-bit image of ``dims`` values whose continuous ``-log p(x)``
    is ``nll_nats`` (module docstring's midpoint convention)."""
    return (nll_nats + dims * LOG_BIN) / (dims * math.log(2))


def prior_nll_report(r: Request) -> dict[str, Any]:
    """``eval --metric prior-nll``: :func:`prior_nll` of the run's posterior samples of the test
    split, for every stage; its value is the final prior's."""
    post = r.posterior_chain()
    z = posterior_samples(
        r.model, r.data.test_x, post["steps"], post["step_size"], seed=r.seed,
        start=post["start"], batch_size=r.batch_size, progress=r.progress,
    )  # fmt: skip
    norm = _normalise(r)
    stages = prior_nll(r.model.prior, z, norm)
    return {
        "converged": norm.converged,
        "value": stages[-1]["nll"],
        "se": stages[-1]["se"],
        "unit": "nats per latent vector",
        "stages": stages,
        "acceptance": norm.acceptance,
        "split": "test",
        "n": len(z),
        "settings": {**post, "seed": r.seed, **_smc_fields(r.smc)},
    }


def nll_report(r: Request) -> dict[str, Any]:
    """``eval --metric nll``: ``-log p(x)`` of the test split's first ``n`` images
    (:func:`log_px`; all of them by default), mean and
    standard error over the images (``log Z_K``'s added in quadrature), in nats per image and
    bits per dimension; the proposals' mean effective sample size."""
    post = r.posterior_chain()
    norm = _normalise(r)
    values, ess = log_px(
        r.model, r.data.test_x[: r.n], float(norm.log_z[-1]), chains=r.chains, samples=r.samples,
        steps=post["steps"], step_size=post["step_size"], seed=r.seed, start=post["start"],
        batch_size=r.batch_size, progress=r.progress,
    )  # fmt: skip
    nll = -float(values.mean())
    se = math.hypot(float(values.std()) / math.sqrt(len(values)), float(norm.se[-1]))
    dims = r.data.test_x[0].numel()
    return {
        "value": nll,
        "se": se,
        "unit": "nats per image",
        "bits_per_dim": bits_per_dim(nll, dims),
        "bits_per_dim_se": se / (dims * math.log(2)),
        "discretisation": "density in [-1, 1] pixel units times the 8-bit bin (1/127.5)^D",
        "ess": float(ess.mean()),
        "log_z": float(norm.log_z[-1]),
        "log_z_se": float(norm.se[-1]),
        "converged": norm.converged,
        "split": "test",
        "n": len(values),
        "settings": {
            **post, "seed": r.seed, "chains": r.chains, "samples": r.samples,
            **_smc_fields(r.smc),
        },
    }  # fmt: skip


def _smc_fields(smc: SMCSettings) -> dict[str, Any]:
    return {
        "particles": smc.particles,
        "repeats": smc.repeats,
        "temperatures": smc.temperatures,
        "moves": smc.moves,
    }


def _normalise(r: Request) -> Normalisers:
    """:func:`prior_normalisers` of the request's prior, with a warning where it did not
    converge."""
    norm = prior_normalisers(r.model.prior, r.smc, r.seed, r.progress)
    if not norm.converged:
        k = int(norm.drift.abs().argmax())
        warnings.warn(
            f"log Z of stage {k} moved by {float(norm.drift[k]):.3g} nats when the tempering "
            "steps were doubled: the normalising constant has not converged and the likelihoods "
            "are not reliable (a lower bound on log Z makes the NLL too low); raise "
            "--temperatures, --moves or --particles",
            stacklevel=2,
        )
    return norm
