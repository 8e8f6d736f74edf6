"""The one Langevin chain function that serves every chain of the library (ARCHITECTURE §2).

    z <- z + (s^2 / 2) * grad_z log p(z) + s * eps,   eps ~ N(0, I)

(paper Eq. 3, the step-size convention of the LEBM reference code).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from latent_ebm.errors import ChainDivergedError

__all__ = ["langevin"]


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
    bad = ~torch.isfinite(z).all(dim=-1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        shown = ", ".join(map(str, rows[:8])) + (", ..." if len(rows) > 8 else "")
        raise ChainDivergedError(
            f"Langevin chain diverged (NaN/Inf) after {steps} steps of size {step_size} "
            f"in {len(rows)} of {len(z)} rows (rows {shown})",
            rows,
        )
    return (z, torch.stack(states)) if states is not None else z
