"""Evaluations of a trained model (paper Section 5, DESIGN §7).

- :func:`reconstruct` and :func:`recon_mse`: test reconstruction error (Table 1): posterior
  chain under the learned model from ``N(0, I)``, per-pixel squared error between ``x`` and
  ``g(z)`` in ``[-1, 1]``, averaged over the split. Seeded: the chain noise of batch ``b`` is
  stream ``(seed, b)``, so the same model gives the same number.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.data import to_float
from latent_ebm.model import LatentEBM

__all__ = ["recon_mse", "reconstruct"]


def reconstruct(
    model: LatentEBM,
    images: torch.Tensor,
    steps: int,
    step_size: float,
    *,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = False,
) -> torch.Tensor:
    """``g(z)`` at posterior samples ``z ~ p(z | x)`` for ``uint8`` images ``(N, C, H, W)``.

    Returns float reconstructions in ``[-1, 1]``, ``(N, C, H, W)``, on the CPU.
    """
    device = next(model.parameters()).device
    out = []
    starts = range(0, len(images), batch_size)
    for b, i in enumerate(tqdm(starts, desc="reconstruct", disable=not progress)):
        x = to_float(images[i : i + batch_size]).to(device)
        streams = rng.Streams(seed, b, len(x), slice(None), device)
        z0 = streams.normal(rng.POSTERIOR_INIT, model.nz)
        noise = streams.chain_noise(rng.POSTERIOR_NOISE, model.nz)
        z = model.infer(x, z0, steps, step_size, noise)
        with torch.no_grad():
            out.append(model.generator(z).cpu())
    return torch.cat(out)


def recon_mse(
    model: LatentEBM,
    images: torch.Tensor,
    steps: int,
    step_size: float,
    *,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = False,
) -> float:
    """Per-pixel mean squared error in ``[-1, 1]`` of :func:`reconstruct` over ``images``."""
    recon = reconstruct(
        model, images, steps, step_size, seed=seed, batch_size=batch_size, progress=progress
    )
    return float((recon - to_float(images)).pow(2).mean())
