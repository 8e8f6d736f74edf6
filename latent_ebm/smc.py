"""Normalising constants by sequential Monte Carlo along a path of densities (issue 31).

The path starts at ``p_0 = N(0, I)`` in ``R^D`` and multiplies in one log-ratio per stage:

    p_k(z) = N(z; 0, I) exp(sum_{i<=k} f_i(z)) / Z_k,   Z_k = E_{N(0, I)}[exp(sum_{i<=k} f_i)]

(a multi-stage prior's stages, ARCHITECTURE §1, or a tempered path ``exp(beta_k f)``).
Sequential Monte Carlo samplers (Del Moral, Doucet & Jasra 2006), of which annealed importance
sampling (Neal 2001) is the case without resampling, estimate every ``log Z_k`` from ``N``
weighted particles ``(z_n, w_n)``:

1. ``z_n ~ N(0, I)``, ``w_n = 1``;
2. at stage ``k``: the incremental weight is ``exp(f_k(z_n))``, and

       log Z_k = log Z_{k-1} + log sum_n W_n exp(f_k(z_n)),   W_n = w_n / sum_m w_m,

   then ``w_n <- w_n exp(f_k(z_n))``; the effective sample size
   ``ESS = (sum w)^2 / sum w^2`` is recorded; when ``ESS / N`` is below a threshold the
   particles are resampled (systematic resampling) and their weights reset to 1;
3. every particle takes a few Metropolis-adjusted Langevin moves (:func:`langevin.mala`)
   that leave ``p_k`` invariant, so the particles follow the path.

``Z_k`` is estimated without bias, ``log Z_k`` with a downward bias of about half the
estimate's relative variance. Independent repeats (:func:`smc_log_z`) give a standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

import torch

from latent_ebm.errors import LatentEBMError
from latent_ebm.langevin import mala

__all__ = [
    "Path",
    "SMCResult",
    "smc_adaptive",
    "smc_log_normalisers",
    "smc_log_z",
    "stages",
    "systematic_resample",
    "tempered",
]

LogDensity = Callable[[torch.Tensor], torch.Tensor]


class Path(NamedTuple):
    """A path of densities: the increments ``f_k`` and the targets ``sum_{i<=k} f_i``.

    Each is a callable ``(B, D)`` -> ``(B,)``. The targets are what the moves of stage ``k``
    aim at (besides ``N(0, I)``); a path can give them more cheaply than the sum of its
    increments (``beta_k f`` on a tempered path).
    """

    increments: list[LogDensity]
    targets: list[LogDensity]


def _running_sum(parts: Sequence[LogDensity]) -> LogDensity:
    return lambda z: torch.stack([f(z) for f in parts]).sum(0)


def stages(log_ratios: Sequence[LogDensity], temperatures: int = 1) -> Path:
    """The path of a product of ratios: stage ``k`` adds ``f_k`` in ``temperatures`` equal
    steps, ``T``; step ``j`` of stage ``k`` has increment ``f_k / T`` and target
    ``sum_{i<k} f_i + (j / T) f_k``. Step ``k T`` is ``p_k`` itself, so the path's ``log Z``
    at steps ``T, 2T, ..., KT`` are the stages' (with ``T = 1``: increment ``f_k``, target
    ``sum_{i<=k} f_i``).

    Raises:
        LatentEBMError: ``temperatures`` below 1.
    """
    if isinstance(temperatures, bool) or not isinstance(temperatures, int) or temperatures < 1:
        raise LatentEBMError(
            f"the temperatures per stage must be a whole number >= 1, got {temperatures!r}"
        )
    ratios = list(log_ratios)
    if temperatures == 1:
        return Path(ratios, [_running_sum(ratios[: k + 1]) for k in range(len(ratios))])
    increments: list[LogDensity] = []
    targets: list[LogDensity] = []
    for k, f in enumerate(ratios):
        before = _running_sum(ratios[:k]) if k else (lambda z: z.new_zeros(len(z)))
        for j in range(1, temperatures + 1):
            increments.append(lambda z, f=f: f(z) / temperatures)
            targets.append(lambda z, b=before, f=f, t=j / temperatures: b(z) + t * f(z))
    return Path(increments, targets)


def tempered(f: LogDensity, betas: Sequence[float]) -> Path:
    """The tempered path ``N(0, I) exp(beta_j f)`` for ``beta_0 = 0 < beta_1 < ... < beta_J``.

    Increment ``j`` is ``(beta_j - beta_{j-1}) f``, target ``beta_j f``; stage ``j``'s
    ``log Z`` is ``log E_{N(0, I)}[exp(beta_j f)]`` (annealed importance sampling, Neal 2001,
    when nothing is resampled).

    Raises:
        LatentEBMError: ``betas`` does not start at 0 or does not increase.
    """
    b = [float(x) for x in betas]
    if not b or b[0] != 0.0 or any(hi <= lo for lo, hi in pairwise(b)):
        raise LatentEBMError(
            f"the temperatures {b} must start at 0 and increase; pass e.g. 0, 0.1, ..., 1"
        )
    increments = [(lambda z, d=hi - lo: d * f(z)) for lo, hi in pairwise(b)]
    targets = [(lambda z, t=t: t * f(z)) for t in b[1:]]
    return Path(increments, targets)


@dataclass(frozen=True)
class SMCResult:
    """What one SMC run returns; ``K`` stages, ``N`` particles, ``D = nz``.

    Attributes:
        log_z: ``(K + 1,)`` float64, ``log Z_k`` for ``k = 0..K`` (``log Z_0 = 0``).
        ess: ``(K + 1,)`` float64, the effective sample size after stage ``k``'s weighting
            and before any resampling (``N`` at stage 0).
        resampled: ``(K + 1,)`` bool, whether the particles were resampled at stage ``k``.
        acceptance: ``(K + 1,)`` float64, the moves' mean acceptance at stage ``k`` (NaN where
            no move was made, and at stage 0).
        particles: ``(N, D)``, the final particles (detached).
        weights: ``(N,)`` float64, their normalised weights (summing to 1).
        steps: ``(K + 1,)``, the tempering steps of each stage (:func:`smc_adaptive`).
    """

    log_z: torch.Tensor
    ess: torch.Tensor
    resampled: torch.Tensor
    acceptance: torch.Tensor
    particles: torch.Tensor
    weights: torch.Tensor
    steps: torch.Tensor | None = None


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices ``(N,)`` of systematic resampling of ``N`` particles of log-weights ``log_w``
    ``(N,)``: one uniform ``u``, positions ``(u + n) / N`` on the cumulative normalised
    weights."""
    n = len(log_w)
    cdf = torch.softmax(log_w, 0).cumsum(0)
    u = torch.rand((), generator=generator, dtype=cdf.dtype, device=cdf.device)
    positions = (u + torch.arange(n, dtype=cdf.dtype, device=cdf.device)) / n
    return torch.searchsorted(cdf, positions).clamp(max=n - 1)


def _check(nz: int, particles: int, moves: int, step_size: float, ess_threshold: float) -> None:
    if nz < 1 or particles < 1 or moves < 0:
        raise LatentEBMError(
            f"SMC needs nz >= 1, particles >= 1 and moves >= 0 (got {nz}, {particles}, "
            f"{moves}); pass positive sizes"
        )
    if not (step_size > 0 and math.isfinite(step_size)):
        raise LatentEBMError(f"SMC step size {step_size} must be a positive number; pass e.g. 0.1")
    if not 0.0 <= ess_threshold <= 1.0:
        raise LatentEBMError(f"SMC ESS threshold {ess_threshold} must lie in [0, 1]; pass e.g. 0.5")


def _result(
    log_z: list[float],
    ess: list[float],
    resampled: list[bool],
    acceptance: list[float],
    z: torch.Tensor,
    log_w: torch.Tensor,
    steps: list[int] | None = None,
) -> SMCResult:
    """The :class:`SMCResult` of per-stage lists, the final particles and their log-weights."""
    return SMCResult(
        log_z=torch.tensor(log_z, dtype=torch.float64),
        ess=torch.tensor(ess, dtype=torch.float64),
        resampled=torch.tensor(resampled),
        acceptance=torch.tensor(acceptance, dtype=torch.float64),
        particles=z.detach(),
        weights=torch.softmax(log_w, 0),
        steps=None if steps is None else torch.tensor(steps),
    )


def _finite(values: torch.Tensor, particles: int, nz: int, k: int) -> torch.Tensor:
    """A stage's log-ratio values ``(N,)`` in float64, or a one-line error."""
    inc = values.detach().to(torch.float64)
    if inc.shape != (particles,) or torch.isnan(inc).any() or (inc == math.inf).any():
        raise LatentEBMError(
            f"SMC stage {k}'s log-ratio gave shape {tuple(inc.shape)} with NaN or +inf "
            f"values; it must map (N, {nz}) to finite (N,) log-ratios"
        )
    return inc


class _Mover:
    """One SMC step: weight by the increment, resample when the ESS falls below the threshold,
    then ``moves`` MALA steps on the new target (step size adapted between steps)."""

    def __init__(self, moves: int, step_size: float, threshold: float, g: torch.Generator) -> None:
        self.moves, self.s, self.threshold, self.g = moves, step_size, threshold, g

    def __call__(
        self, z: torch.Tensor, log_w: torch.Tensor, inc: torch.Tensor, target: LogDensity
    ) -> tuple[torch.Tensor, torch.Tensor, float, float, bool, float]:
        """``(z, log_w, log Z increment, ESS, resampled, acceptance)`` after the step."""
        # log Z_k - log Z_{k-1} = log sum_n W_n exp(f_k(z_n)). With the weights kept
        # unnormalised, it is lse(log w + f) - lse(log w): exactly 0 when f is 0.
        before = torch.logsumexp(log_w, 0)
        log_w = log_w + inc
        after = torch.logsumexp(log_w, 0)
        ess = torch.exp(2 * after - torch.logsumexp(2 * log_w, 0)).item()
        resample = ess < self.threshold * len(z)
        if resample:
            z = z[systematic_resample(log_w, self.g)]
            log_w = torch.zeros_like(log_w)
        rate = math.nan
        if self.moves:  # MALA on p(z) ∝ N(z; 0, I) exp(target(z))
            z, rate = mala(
                z,
                lambda x: target(x) - 0.5 * x.pow(2).sum(-1),
                self.moves,
                self.s,
                generator=self.g,
                adapt=0,
            )
            self.s *= math.exp(rate - 0.574)
        return z, log_w, (after - before).item(), ess, resample, rate


def smc_log_normalisers(
    path: Path | Sequence[LogDensity],
    nz: int,
    particles: int,
    *,
    generator: torch.Generator,
    moves: int = 5,
    step_size: float = 0.1,
    ess_threshold: float = 0.5,
    dtype: torch.dtype = torch.float32,
) -> SMCResult:
    """Estimate ``log Z_k`` for every stage of ``path`` by SMC (module docstring).

    Arguments:
        path: a :class:`Path`, or the log-ratios ``f_1..f_K`` (each ``(B, D)`` -> ``(B,)``),
            read as :func:`stages` of them.
        nz: ``D``, the dimension of ``z``.
        particles: ``N``.
        generator: the source of every random number (start, resampling, moves).
        moves: MALA steps per stage targeting ``p_k`` (0: annealed importance sampling
            without moves). Every step is an exact ``p_k``-invariant MALA step: the step size
            is not adapted within a stage; between stages it is scaled by
            ``exp(acceptance - 0.574)`` (population-level adaptation).
        step_size: the first stage's MALA step size.
        ess_threshold: resample when ``ESS / N`` falls below it (0: never, 1: every stage).
        dtype: the particles' dtype (weights are kept in float64).

    Returns:
        An :class:`SMCResult`.

    Raises:
        LatentEBMError: a size or setting is out of range, or an increment is NaN or ``+inf``.
        ChainDivergedError: a move reached NaN or Inf.
    """
    _check(nz, particles, moves, step_size, ess_threshold)
    if not isinstance(path, Path):
        path = stages(path)
    device = generator.device
    z = torch.randn((particles, nz), generator=generator, dtype=dtype, device=device)
    log_w = torch.zeros(particles, dtype=torch.float64, device=device)  # unnormalised
    log_z, ess, resampled, acceptance = [0.0], [float(particles)], [False], [math.nan]
    step = _Mover(moves, float(step_size), ess_threshold, generator)
    for k, (f, target) in enumerate(zip(path.increments, path.targets, strict=True), 1):
        with torch.no_grad():
            inc = _finite(f(z), particles, nz, k)
        z, log_w, d_log_z, ess_k, resample, rate = step(z, log_w, inc, target)
        log_z.append(log_z[-1] + d_log_z)
        ess.append(ess_k)
        resampled.append(resample)
        acceptance.append(rate)
    return _result(log_z, ess, resampled, acceptance, z, log_w)


def smc_log_z(
    path: Path | Sequence[LogDensity],
    nz: int,
    particles: int,
    *,
    repeats: int,
    generator: torch.Generator,
    **kwargs: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log Z_k`` with a standard error from ``repeats`` independent runs of
    :func:`smc_log_normalisers` (same arguments, one after another from ``generator``).

    Returns:
        The mean ``(K + 1,)`` of the runs' ``log Z_k`` and its standard error
        ``std / sqrt(repeats)`` ``(K + 1,)``, both float64.

    Raises:
        LatentEBMError: ``repeats < 2`` (no standard error), or as
            :func:`smc_log_normalisers`.
    """
    if repeats < 2:
        raise LatentEBMError(f"a standard error needs repeats >= 2 (got {repeats}); pass 2 or more")
    runs = torch.stack(
        [
            smc_log_normalisers(path, nz, particles, generator=generator, **kwargs).log_z
            for _ in range(repeats)
        ]
    )
    return runs.mean(0), runs.std(0) / math.sqrt(repeats)


def smc_adaptive(
    log_ratios: Sequence[LogDensity],
    nz: int,
    particles: int,
    *,
    generator: torch.Generator,
    min_steps: int = 10,
    conditional_ess: float = 0.5,
    max_steps: int = 2000,
    moves: int = 5,
    step_size: float = 0.1,
    ess_threshold: float = 0.5,
) -> SMCResult:
    """:func:`smc_log_normalisers` along the stages of ``log_ratios`` with adaptive tempering
    (Jasra et al. 2011): within stage ``k`` the target is ``sum_{i<k} f_i + beta f_k``, and
    each step raises ``beta`` by the largest amount (at most ``1 / min_steps``) that keeps the
    conditional ESS of the step's weights, ``(sum_n W_n e^{d f_n})^2 / sum_n W_n e^{2 d f_n}``,
    at or above ``conditional_ess``; found by bisection. A sharp ratio then gets as many steps
    as it needs, a flat one ``min_steps``.

    Returns:
        An :class:`SMCResult` by stage (``K + 1`` entries): ``log_z``, the smallest ESS within
        each stage, whether it resampled at all, the mean acceptance; and ``steps``.

    Raises:
        LatentEBMError: as :func:`smc_log_normalisers`, or a stage needs more than
            ``max_steps`` steps (the message names it).
    """
    _check(nz, particles, moves, step_size, ess_threshold)
    z = torch.randn((particles, nz), generator=generator, device=generator.device)
    log_w = torch.zeros(particles, dtype=torch.float64, device=z.device)
    log_z, ess, resampled, acceptance, steps = [0.0], [float(particles)], [False], [math.nan], [0]
    step = _Mover(moves, float(step_size), ess_threshold, generator)
    ratios = list(log_ratios)
    for k, f in enumerate(ratios, 1):
        before = _running_sum(ratios[: k - 1]) if k > 1 else (lambda x: x.new_zeros(len(x)))
        beta, n, stage_log_z, low, rates, any_resample = 0.0, 0, 0.0, math.inf, [], False
        while beta < 1.0:
            n += 1
            if n > max_steps:
                raise LatentEBMError(
                    f"SMC stage {k} needed more than {max_steps} tempering steps (beta "
                    f"reached {beta:.3g}): the ratio is too sharp for {particles} particles; "
                    "raise --particles"
                )
            with torch.no_grad():
                values = _finite(f(z), particles, nz, k)
            d = _tempering_step(log_w, values, min(1.0 - beta, 1.0 / min_steps), conditional_ess)
            beta = 1.0 if d >= 1.0 - beta - 1e-12 else beta + d
            target = lambda x, b=before, t=beta, f=f: b(x) + t * f(x)  # noqa: E731
            z, log_w, d_log_z, ess_k, resample, rate = step(z, log_w, d * values, target)
            stage_log_z += d_log_z
            low, any_resample = min(low, ess_k), any_resample or resample
            rates.append(rate)
        log_z.append(log_z[-1] + stage_log_z)
        ess.append(low)
        resampled.append(any_resample)
        acceptance.append(math.fsum(rates) / len(rates))
        steps.append(n)
    return _result(log_z, ess, resampled, acceptance, z, log_w, steps)


def _tempering_step(log_w: torch.Tensor, values: torch.Tensor, most: float, target: float) -> float:
    """The largest ``d <= most`` whose conditional ESS fraction is ``>= target``."""
    w = torch.softmax(log_w, 0)

    def cess(d: float) -> float:
        a = torch.log(w) + d * values
        return torch.exp(2 * torch.logsumexp(a, 0) - torch.logsumexp(a + d * values, 0)).item()

    if cess(most) >= target:
        return most
    lo, hi = 0.0, most
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cess(mid) >= target else (lo, mid)
    return max(lo, most * 1e-9)
