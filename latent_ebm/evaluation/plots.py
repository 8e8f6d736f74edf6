"""Figures and sample files, made from a run's saved checkpoint and logs (never inside the
training loop).

- :func:`save_grid`: a grid of images as PNG (paper Figure 2).
- :func:`plot_nce_curves`: NCE loss per stage against iteration, with the chance level
  ``2 log 2`` (paper Figure 4).
- :func:`plot_quality`: the in-training FID and recon MSE against iterations and training time,
  with the stage boundaries (``quality.png``).
- :func:`transition_strip`: prior Langevin chains from ``p_0`` towards the learned prior
  (paper Figure 3).
- :func:`run_figures`: every figure of a run directory (``latent-ebm plot``).
- :func:`sample_run`: samples of a run as a PNG grid and an ``.npz`` (``latent-ebm sample``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from latent_ebm import rng
from latent_ebm.config import Config, check_seed, num_stages
from latent_ebm.data import to_float, to_uint8
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.metrics import reconstruct
from latent_ebm.evaluation.sizes import check_sampling
from latent_ebm.files import remove_abandoned_temporaries, write_atomic
from latent_ebm.model import LatentEBM
from latent_ebm.priors import stage_of
from latent_ebm.rundir import (
    check_creatable,
    check_writable_file,
    clean_temporaries,
    load_data,
    load_run,
    read_metrics,
    split_metrics,
)
from latent_ebm.sampling import METHODS, check_sharpen, sample_latents, sharpen_suffix

__all__ = [
    "check_checkpoint",
    "image_grid",
    "plot_nce_curves",
    "plot_quality",
    "recon_pairs",
    "run_figures",
    "sample_run",
    "save_figure",
    "save_grid",
    "transition_strip",
]


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images ``(N, C, H, W)`` in ``[-1, 1]`` into one ``uint8`` array ``(H', W', C)``."""
    n, c, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    x = to_uint8(images)
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        grid[top : top + h, left : left + w] = x[i].permute(1, 2, 0).numpy()
    return grid


def recon_pairs(images: torch.Tensor, recon: torch.Tensor, nrow: int = 10) -> np.ndarray:
    """Images (``uint8`` ``(N, C, H, W)``) beside their reconstructions (``[-1, 1]``): two
    :func:`image_grid` side by side, one ``uint8`` array ``(H', W', C)``."""
    real, fake = image_grid(to_float(images), nrow), image_grid(recon, nrow)
    gap = np.full((real.shape[0], 4, real.shape[2]), 255, np.uint8)
    return np.concatenate([real, gap, fake], 1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write :func:`image_grid` of ``images`` to a PNG, upscaled so small images stay visible;
    atomically (:func:`_write_file`)."""
    grid = image_grid(images, nrow)
    scale = max(1, 1024 // max(grid.shape[:2]))
    grid = grid.repeat(scale, 0).repeat(scale, 1)
    image = grid[..., 0] if grid.shape[-1] == 1 else grid
    return _write_file(
        path, lambda f: plt.imsave(f, image, cmap="gray", vmin=0, vmax=255, format="png")
    )


def _write_file(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """:func:`latent_ebm.files.write_atomic`: a failed write (e.g. a full disk) leaves no
    partial file; returns ``path``.

    Raises:
        LatentEBMError: the write failed.
    """
    try:
        write_atomic(path, write)
    except OSError as e:
        raise LatentEBMError(f"could not write {path} ({e.strerror or e})") from None
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG, atomically, and close it.

    Raises:
        LatentEBMError: the write failed.
    """
    try:
        return _write_file(path, lambda f: fig.savefig(f, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


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
    return save_figure(fig, path)


def stage_starts(cfg: Config) -> list[int]:
    """The iterations at which a new stage of ``cfg``'s schedule begins (after the first)."""
    iters, k = cfg.train.iters, num_stages(cfg)
    return [t for t in range(1, iters) if stage_of(t, iters, k) != stage_of(t - 1, iters, k)]


def plot_quality(metrics: list[dict[str, Any]], cfg: Config, path: str | Path) -> Path | None:
    """The in-training evaluations of a run (``train.eval_every``): FID and recon MSE against
    iterations (left) and training time (right, evaluations excluded), the stage boundaries
    as dotted lines; ``None`` when ``metrics`` (:func:`latent_ebm.rundir.read_metrics`) holds
    no evaluation."""
    losses, evals = split_metrics(metrics)
    if not evals:
        return None
    # Training time at each logged iteration, to place the stage boundaries on the time axis.
    known = sorted({(0, 0.0), *((m["iteration"], m["time"]) for m in losses + evals)})
    scale, unit = (60, "min") if evals[-1]["time"] >= 120 else (1, "s")
    starts = stage_starts(cfg)
    x_axes = [
        ([m["iteration"] for m in evals], starts, "iteration"),
        (
            [m["time"] / scale for m in evals],
            list(np.interp(starts, *zip(*known, strict=True)) / scale),
            f"training time ({unit})",
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex="col")
    for row, (key, label) in enumerate(
        (("fid", "FID (classifier features)"), ("recon", "recon MSE"))
    ):
        for col, (x, bounds, xlabel) in enumerate(x_axes):
            ax = axes[row, col]
            ax.plot(x, [m["eval"].get(key, math.nan) for m in evals], marker="o", ms=3)
            for i, b in enumerate(bounds):
                ax.axvline(b, color="gray", ls=":", lw=1, label="new stage" if i == 0 else None)
            ax.set_ylabel(label)
            if row == 1:
                ax.set_xlabel(xlabel)
    if starts:
        axes[0, 0].legend(fontsize=8)
    n = cfg.train.eval_n
    fig.suptitle(
        f"In-training quality: FID of {n} prior samples, MSE of {n} test images", fontsize=10
    )
    fig.tight_layout()
    return save_figure(fig, path)


def transition_strip(
    model: LatentEBM,
    path: str | Path,
    *,
    chains: int = 8,
    steps: int = 200,
    step_size: float = 0.1,
    columns: int = 11,
    seed: int = 0,
) -> Path:
    """Langevin transition from ``p_0`` towards the learned prior (paper Figure 3).

    Each row is one prior chain from ``z ~ N(0, I)``; the columns show ``g(z_t)`` at
    ``columns`` evenly spaced steps ``t = 0 .. steps``.
    """
    device = model.device
    streams = rng.Streams(seed, 0, chains, slice(None), device)
    z0 = streams.normal(rng.PRIOR_DRAW, model.nz)
    noise = streams.chain_noise(rng.PRIOR_NOISE, model.nz)
    _, traj = model.prior.sample(z0, steps, step_size, noise, trajectory=True)
    if len(traj) == 1:  # an exact sampler has no transition: repeat its sample
        traj = traj.expand(steps + 1, -1, -1)
    at = torch.linspace(0, steps, columns).round().long()
    images = model.decode(traj[at].transpose(0, 1).reshape(-1, model.nz))
    return save_grid(images, path, nrow=columns)


def run_figures(run_dir: str | Path, seed: int = 0) -> list[Path]:
    """Make every figure of a trained run in ``run_dir``; returns their paths.

    ``samples.png`` (prior Langevin, ``sample.steps`` of ``sample.step_size``, Figure 2),
    ``reconstructions.png`` (test images beside their reconstructions, Figure 5),
    ``transition.png`` (Figure 3), ``nce_loss.png`` (Figure 4, for priors that log NCE) and
    ``quality.png`` (:func:`plot_quality`, for runs with in-training evaluations).
    """
    check_seed(seed, "--seed")
    run_dir = Path(run_dir)
    cfg, model, _ = load_run(run_dir)
    metrics = read_metrics(run_dir)  # checked before any figure is written
    clean_temporaries(run_dir)  # the files of killed writers: plots, evaluations, samples
    s = cfg.sample
    z = sample_latents(model, s.grid, steps=s.steps, step_size=s.step_size, seed=seed)
    paths = [save_grid(model.decode(z), run_dir / "samples.png")]
    n_recon = 10 * max(1, s.grid // 20)
    test_x = load_data(cfg).test_x[:n_recon]
    recon = reconstruct(model, test_x, cfg.train.post_steps, cfg.train.post_step_size, seed=seed)
    both = torch.from_numpy(recon_pairs(test_x, recon)).permute(2, 0, 1)[None].float()
    paths.append(save_grid(both / 127.5 - 1, run_dir / "reconstructions.png", nrow=1))
    paths.append(transition_strip(model, run_dir / "transition.png", seed=seed))
    curves = [plot_nce_curves(metrics, run_dir / "nce_loss.png")]
    curves.append(plot_quality(metrics, cfg, run_dir / "quality.png"))
    return paths + [c for c in curves if c]


def check_checkpoint(checkpoint: str) -> None:
    """``--checkpoint`` names ``last`` (``checkpoint.pt``) or ``best`` (``best.pt``).

    Raises:
        LatentEBMError: anything else.
    """
    if checkpoint not in ("last", "best"):
        raise LatentEBMError(f"--checkpoint must be last or best, got {checkpoint!r}")


def sample_run(
    run_dir: str | Path,
    n: int = 100,
    *,
    method: str = "langevin",
    steps: int | None = None,
    step_size: float | None = None,
    proposals: int = 10,
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    checkpoint: str = "last",
    sharpen: float = 1.0,
) -> tuple[Path, Path]:
    """Sample ``n`` images of a trained run; write them as a PNG grid and an ``.npz``.

    Latents by :func:`latent_ebm.sampling.sample_latents` (``method`` ``langevin``: the prior
    chain, ``steps`` and ``step_size`` by default the run's ``sample`` ones; ``sir``: sampling
    importance resampling of ``proposals`` draws each), images ``g(z)``. The files are
    ``out.png`` and ``out.npz`` (``images``: ``uint8`` ``(n, C, H, W)``, ``z``: ``(n, nz)``),
    ``out`` by default ``RUN/samples/<method>`` (``<method>-best`` for ``checkpoint`` ``best``:
    the model of ``best.pt``, :func:`latent_ebm.rundir.checkpoint_file`; ``-sharpen<beta>``
    added for ``sharpen`` other than 1). ``sharpen``: sample the prior
    :meth:`~latent_ebm.priors.Prior.sharpened` by that factor (beyond the paper).

    Returns:
        The paths of the PNG grid and of the ``.npz``.

    Every argument is checked before any work, ``out`` included; the files are written
    atomically.

    Raises:
        LatentEBMError: unknown method, ``n`` or ``proposals`` below 1, ``steps`` below 0,
            ``step_size`` or ``sharpen`` not positive, a bad seed, an ``out`` that cannot be
            written, no such run (or a bad config or checkpoint), a full disk.
    """
    if method not in METHODS:
        raise LatentEBMError(f"unknown --method '{method}' (choose from {', '.join(METHODS)})")
    if n < 1 or proposals < 1:
        raise LatentEBMError("--n and --proposals must be at least 1")
    if steps is not None and steps < 0:
        raise LatentEBMError(f"--steps must be >= 0, got {steps}")
    if step_size is not None and not (step_size > 0 and math.isfinite(step_size)):
        raise LatentEBMError(f"--step-size must be positive, got {step_size}")
    check_seed(seed, "--seed")
    run_dir = Path(run_dir)
    check_checkpoint(checkpoint)
    check_sharpen(sharpen)
    suffix = "" if checkpoint == "last" else f"-{checkpoint}"
    suffix += sharpen_suffix(sharpen)
    prefix = Path(out) if out is not None else run_dir / "samples" / f"{method}{suffix}"
    if out is not None:
        check_creatable(prefix.parent, "--out")
        for suffix in (".png", ".npz"):  # e.g. a folder there: refused before the work
            check_writable_file(prefix.with_suffix(suffix), "--out")
    cfg, model, _ = load_run(run_dir, checkpoint=checkpoint)
    clean_temporaries(run_dir)  # the files of killed writers: plots, evaluations, samples
    remove_abandoned_temporaries(prefix.parent)  # and those of a sample into --out
    model.prior = model.prior.sharpened(sharpen)
    options = "--n and " + ("--proposals" if method == "sir" else "--steps")
    chain_steps = cfg.sample.steps if steps is None else steps
    check_sampling(model, n, chain_steps, method=method, proposals=proposals, options=options)
    diagnostics: list[dict[str, float]] = []
    z = sample_latents(
        model,
        n,
        method=method,
        steps=cfg.sample.steps if steps is None else steps,
        step_size=cfg.sample.step_size if step_size is None else step_size,
        proposals=proposals,
        seed=seed,
        progress=progress,
        diagnostics=diagnostics,
    )
    images = model.decode(z)
    grid = save_grid(images, prefix.with_suffix(".png"))
    arrays = {"images": to_uint8(images).numpy(), "z": z.cpu().numpy()}
    if diagnostics:  # smc: each batch's final ESS, and the budget per sample
        arrays["ess"] = np.array([d["ess"] for d in diagnostics])
        arrays["gradient_evaluations"] = np.array(diagnostics[0]["gradient_evaluations"])
    npz = _write_file(prefix.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
    return grid, npz
