"""Numerical precision of training: float32, or bfloat16 autocast (``train.precision``).

``bf16`` runs the matrix multiplies and convolutions of the posterior chain and of the
generator update in bfloat16 through ``torch.autocast`` (CPU and CUDA alike). Everything else
stays float32:

- parameters, their gradients and the optimiser states (autocast casts a float32 weight to
  bfloat16 inside the forward pass; the cast's backward returns a float32 gradient);
- the chain state ``z`` and ``grad_z log p(x, z)`` (the same cast rule, for ``z``);
- the log densities: ``x - g(z)`` mixes a float32 ``x`` with a bfloat16 ``g(z)``, so type
  promotion squares and sums the residual in float32;
- the prior's NCE or maximum-likelihood update, which runs outside the autocast region, and
  every evaluation and test-time sample (:mod:`latent_ebm.evaluation`, :mod:`latent_ebm.sampling`).

bfloat16 has float32's exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import torch

__all__ = ["DTYPES", "PRECISIONS", "autocast"]

PRECISIONS = ("fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the dtype of the counted kernels


def autocast(precision: str, device: torch.device | str) -> torch.autocast:
    """The autocast context of ``precision`` on ``device``'s type (disabled for ``fp32``).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
