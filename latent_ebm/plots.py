"""Figures, made from a run's saved checkpoint and logs (never inside the training loop).

- :func:`save_grid`: a grid of images as PNG (paper Figure 2).
- :func:`plot_nce_curves`: NCE loss per stage against iteration, with the chance level
  ``2 log 2`` (paper Figure 4).
- :func:`run_figures`: the figures of a run directory: ``samples.png`` (prior Langevin,
  ``sample.steps`` steps of ``sample.step_size``), ``reconstructions.png`` (test images beside
  their reconstructions, Figure 5) and ``nce_loss.png``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from latent_ebm import rng
from latent_ebm.data import load_dataset, to_float
from latent_ebm.evaluate import reconstruct
from latent_ebm.train import load_run, read_metrics

__all__ = ["image_grid", "plot_nce_curves", "run_figures", "sample_images", "save_grid"]


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in ``[-1, 1]`` into one ``uint8`` array ``(H', W', C)``."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = x[i].permute(1, 2, 0).numpy()
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write :func:`image_grid` of ``images`` to a PNG, upscaled so small images stay visible."""
    grid = image_grid(images, nrow)
    scale = max(1, 512 // max(grid.shape[:2]))
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    plt.imsave(path, grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255)
    return Path(path)


def plot_nce_curves(metrics: list[dict[str, Any]], path: str | Path) -> Path | None:
    """NCE loss of each stage against iteration (paper Figure 4); ``None`` without NCE logs."""
    rows = [m for m in metrics if "nce" in m]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for stage in sorted({m["stage"] for m in rows}):
        its = [m["iteration"] for m in rows if m["stage"] == stage]
        ax.plot(its, [m["nce"] for m in rows if m["stage"] == stage], label=f"stage {stage}")
    ax.axhline(2 * math.log(2), color="gray", ls="--", lw=1, label="2 log 2 (chance)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("NCE loss (Eq. 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def sample_images(model: Any, n: int, steps: int, step_size: float, seed: int = 0) -> torch.Tensor:
    """``g(z)`` for ``n`` prior samples (Langevin on the learned prior from ``N(0, I)``)."""
    device = next(model.parameters()).device
    streams = rng.Streams(seed, 0, n, slice(None), device)
    z0 = streams.normal(rng.PRIOR_DRAW, model.nz)
    z = model.prior.sample(z0, steps, step_size, streams.chain_noise(rng.PRIOR_NOISE, model.nz))
    with torch.no_grad():
        return model.generator(z).cpu()


def run_figures(run_dir: str | Path, seed: int = 0) -> list[Path]:
    """Make the figures of a trained run in ``run_dir``; returns their paths."""
    run_dir = Path(run_dir)
    cfg, model, _ = load_run(run_dir)
    s = cfg.sample
    paths = [
        save_grid(sample_images(model, s.grid, s.steps, s.step_size, seed), run_dir / "samples.png")
    ]
    test_x = load_dataset(cfg.data.name, cfg.data.data_dir).test_x[: s.grid // 2]
    recon = reconstruct(model, test_x, cfg.train.post_steps, cfg.train.post_step_size, seed=seed)
    nrow = math.ceil(math.sqrt(len(test_x)))
    real = torch.from_numpy(image_grid(to_float(test_x), nrow))
    fake = torch.from_numpy(image_grid(recon, nrow))
    gap = torch.full((real.shape[0], 4, real.shape[2]), 255, dtype=torch.uint8)
    both = torch.cat([real, gap, fake], 1).permute(2, 0, 1)[None].float() / 127.5 - 1
    paths.append(save_grid(both, run_dir / "reconstructions.png", nrow=1))
    curve = plot_nce_curves(read_metrics(run_dir), run_dir / "nce_loss.png")
    return paths + ([curve] if curve else [])
