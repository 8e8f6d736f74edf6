"""The chains of the library (ARCHITECTURE §2).

:func:`langevin`, the unadjusted chain that serves every training-time chain and the paper's
test-time sampler:

    z <- z + (s^2 / 2) * grad_z log p(z) + s * eps,   eps ~ N(0, I)

(paper Eq. 3, the step-size convention of the LEBM reference code); :func:`mala`, the same
proposal with a Metropolis-Hastings correction, whose stationary law is exactly ``p``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from latent_ebm.errors import ChainDivergedError

__all__ = ["langevin", "mala"]


def langevin(
    z0: torch.Tensor,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    step_size: float,
    *,
    noise: bool = True,
    randn: Callable[[int], torch.Tensor] | None = None,
    trajectory: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` Langevin updates from ``z0`` on the density ``log_prob``.

    Gradients are taken with respect to ``z`` only (``torch.autograd.grad``), so no network
    weight accumulates a gradient inside a chain; the returned ``z`` is detached.

    Arguments:
        z0: initial state, ``(B, D)``.
        log_prob: maps ``(B, D)`` to per-row log densities ``(B,)`` (up to a constant).
        steps: number of updates.
        step_size: ``s``.
        noise: add the ``s * eps`` term (``False`` gives gradient ascent).
        randn: ``randn(step)`` returns the ``(B, D)`` noise of that step, called for steps
            0, 1, ... in order; default ``torch.randn_like``.
        trajectory: also return every state.

    Returns:
        The final ``z``, ``(B, D)``; with ``trajectory``, also the states ``(steps + 1, B, D)``.

    Raises:
        ChainDivergedError: the chain reached a NaN or Inf (its message lists the rows).
    """
    z = z0.detach()
    states = [z] if trajectory else None
    half_s2 = 0.5 * step_size**2
    for step in range(steps):
        z.requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(log_prob(z).sum(), z)
        z = z.detach() + half_s2 * grad
        if noise:
            eps = randn(step) if randn is not None else torch.randn_like(z)
            z = z + step_size * eps
        if states is not None:
            states.append(z)
    _check_finite(z, f"Langevin chain diverged (NaN/Inf) after {steps} steps of size {step_size}")
    return (z, torch.stack(states)) if states is not None else z


def _check_finite(z: torch.Tensor, what: str) -> None:
    bad = ~torch.isfinite(z).all(dim=-1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
        raise ChainDivergedError(f"{what} in {len(rows)} of {len(z)} rows (rows {shown})", rows)


def _value_and_grad(
    log_prob: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        value = log_prob(z)
        (grad,) = torch.autograd.grad(value.sum(), z)
    return value.detach(), grad


def mala(
    z0: torch.Tensor,
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    steps: int,
    step_size: float,
    *,
    generator: torch.Generator | None = None,
    adapt: int | None = None,
    target: float = 0.574,
) -> tuple[torch.Tensor, float]:
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996) from ``z0`` on ``log_prob``.

    Each step proposes ``z' = z + (s^2 / 2) grad log p(z) + s eps`` and accepts it with
    probability ``min(1, p(z') k(z | z') / (p(z) k(z' | z)))``, ``k`` the Gaussian proposal
    density, so every chain leaves ``p`` invariant: unlike :func:`langevin`, a longer chain
    does not drift away from ``p`` by the step size's bias.

    Each chain has its own step size ``s``, starting at ``step_size``. During the first
    ``adapt`` steps (default ``steps // 2``) it is multiplied by ``exp(0.1 (a - target))``
    after every step, ``a`` that step's acceptance probability (0.574 is optimal for MALA);
    afterwards it is fixed, and the chain is an exact MALA chain from where adaptation left it.

    Arguments:
        z0: initial state ``(B, D)``.
        log_prob: ``(B, D)`` -> ``(B,)``, up to a constant.
        steps: number of proposals.
        step_size: initial ``s``.
        generator: the source of every random number (proposals and acceptances).
        adapt: steps of step-size adaptation.
        target: acceptance probability the adaptation aims at.

    Returns:
        The final ``z`` ``(B, D)`` (detached) and the mean acceptance probability over the
        steps after adaptation (over all steps if there are none).

    Raises:
        ChainDivergedError: a chain reached a NaN or Inf.
    """
    adapt = steps // 2 if adapt is None else adapt
    z = z0.detach()
    s = torch.full((len(z), 1), float(step_size), dtype=z.dtype, device=z.device)
    value, grad = _value_and_grad(log_prob, z)
    accepted: list[torch.Tensor] = []
    for step in range(steps):
        mean = z + 0.5 * s**2 * grad
        eps = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        proposal = mean + s * eps
        value_p, grad_p = _value_and_grad(log_prob, proposal)
        back = z - (proposal + 0.5 * s**2 * grad_p)
        log_k_back = -back.pow(2).sum(-1) / (2 * s[:, 0] ** 2)
        log_k_fwd = -eps.pow(2).sum(-1) / 2
        log_a = (value_p - value + log_k_back - log_k_fwd).nan_to_num(nan=-math.inf)
        a = log_a.clamp(max=0).exp()
        u = torch.rand(len(z), generator=generator, dtype=z.dtype, device=z.device)
        take = u < a
        z = torch.where(take[:, None], proposal, z)
        value = torch.where(take, value_p, value)
        grad = torch.where(take[:, None], grad_p, grad)
        if step < adapt:
            s = s * torch.exp(0.1 * (a[:, None] - target))
        if step >= adapt or adapt >= steps:
            accepted.append(a.mean())
    _check_finite(z, f"MALA chain diverged (NaN/Inf) after {steps} steps")
    rate = torch.stack(accepted).mean().item() if accepted else 0.0
    return z, rate
