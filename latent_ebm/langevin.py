"""The chains of the library (ARCHITECTURE §2).

:func:`langevin`, the unadjusted chain that serves every training-time chain and the paper's
test-time sampler:

    z <- z + (s^2 / 2) * grad_z log p(z) + s * eps,   eps ~ N(0, I)

(paper Eq. 3, the step-size convention of the LEBM reference code); :func:`mala`, the same
proposal with a Metropolis-Hastings correction, whose stationary law is exactly ``p``.

When a chain diverges, :func:`remedy` says which setting to change: a network's learning rate
when that network's part of the log-density is already not finite where the chain starts (no
step size helps then), else the chain's step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from latent_ebm.errors import ChainDivergedError

__all__ = ["Cause", "Setting", "finite_at", "langevin", "mala", "remedy"]


@dataclass(frozen=True)
class Setting:
    """A config field and its value, as a message names them: ``train.lr (now 1e+30)``."""

    name: str
    value: float

    def __str__(self) -> str:
        return f"{self.name} (now {self.value:g})"


@dataclass(frozen=True)
class Cause:
    """A part of a chain's log-density (a network's term, ``(B, D)`` -> ``(B,)``), what to call
    it in a message, and the setting that trained it (its learning rate)."""

    what: str
    log_prob: Callable[[torch.Tensor], torch.Tensor]
    setting: Setting


def finite_at(log_prob: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> bool:
    """Whether ``log_prob`` (``(B, D)`` -> ``(B,)``) and its gradient are finite (no NaN/Inf)
    at every row of ``z`` ``(B, D)``, computed in float32."""
    z = z.detach().float().requires_grad_(True)
    with torch.enable_grad(), torch.autocast(z.device.type, enabled=False):
        value = log_prob(z)
        (grad,) = torch.autograd.grad(value.sum(), z, allow_unused=True)
    finite = bool(torch.isfinite(value).all())
    return finite and (grad is None or bool(torch.isfinite(grad).all()))


def remedy(z0: torch.Tensor, causes: Sequence[Cause], step: Setting) -> str:
    """What to change after a chain started at ``z0`` ``(B, D)`` diverged.

    Each part of its log-density (``causes``) is evaluated, with its gradient, at the start
    ``z0``: a part that is already not finite (NaN/Inf) there comes from a network whose
    weights diverged, whatever the step size, and the remedy is to lower the setting that
    trained it. Only when every part is finite at the start is the chain's step size ``step``
    to blame. Returns the remedy as a clause, e.g. ``"the generator's log-likelihood is not
    finite (NaN/Inf) where the chain starts: its weights diverged; lower train.lr (now
    1e+30)"``.
    """
    bad = [c for c in causes if not finite_at(c.log_prob, z0)]
    if not bad:
        return f"lower {step}"
    what = " and ".join(c.what for c in bad)
    verb, whose = ("is", "its") if len(bad) == 1 else ("are", "their")
    settings = " and ".join(str(c.setting) for c in bad)
    return (
        f"{what} {verb} not finite (NaN/Inf) where the chain starts: {whose} weights "
        f"diverged; lower {settings}"
    )


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
