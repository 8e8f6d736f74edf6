"""The evaluation metrics of a trained model (paper Section 5, ARCHITECTURE §7), as functions of a
model and images; :mod:`latent_ebm.evaluation` runs them on a run directory.

- ``recon`` (Table 1): per-pixel MSE in ``[-1, 1]`` between test images and ``g(z)`` at
  posterior samples under the learned model (:func:`recon_mse`).
- ``fid`` (Table 1): Frechet distance between Gaussian fits of features of generated images
  and of the training split (:func:`fid`), with the offline classifier features or the standard
  Inception-v3 pool-3 features (:mod:`latent_ebm.evaluation.features`).
- ``anomaly`` (Table 2): on a hold-one-class-out run, score ``-log p(x, z)`` at a posterior
  sample, AUPRC with the held-out class as positive (:func:`anomaly_auprc`).

Everything is seeded: the posterior chain of batch ``b`` uses the streams ``(seed, b)``. Its
start is the paper's ``N(0, I)`` draw or, with ``start="amortised"``, the amortiser's draw
(ARCHITECTURE §2).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.data import to_float
from latent_ebm.model import LatentEBM
from latent_ebm.posterior import chain_start
from latent_ebm.sampling import sample_latents

__all__ = [
    "anomaly_auprc",
    "anomaly_scores",
    "auprc",
    "fid",
    "fid_at",
    "posterior_quality",
    "posterior_samples",
    "recon_mse",
    "reconstruct",
    "reference_stats",
]


def posterior_samples(
    model: LatentEBM,
    images: torch.Tensor,
    steps: int,
    step_size: float,
    *,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = False,
    start: str = "noise",
) -> torch.Tensor:
    """``z ~ p(z | x)`` ``(N, nz)`` by the posterior chain for ``uint8`` images, started at
    ``start`` (:func:`latent_ebm.posterior.chain_start`): ``noise``, ``N(0, I)`` (the paper),
    or ``amortised``, a draw of the model's amortiser."""
    device = model.device
    out = []
    starts = range(0, len(images), batch_size)
    for b, i in enumerate(tqdm(starts, desc="posterior", disable=not progress)):
        x = to_float(images[i : i + batch_size]).to(device)
        streams = rng.Streams(seed, b, len(x), slice(None), device)
        z0 = chain_start(model, x, streams, start)
        noise = streams.chain_noise(rng.POSTERIOR_NOISE, model.nz)
        out.append(model.infer(x, z0, steps, step_size, noise))
    return torch.cat(out)


def posterior_quality(
    model: LatentEBM,
    images: torch.Tensor,
    steps: int,
    step_size: float,
    *,
    chains: int = 4,
    batch_size: int = 100,
    **kwargs: Any,
) -> dict[str, float]:
    """How good the posterior chain's final samples are, measured directly: ``chains``
    chains per ``uint8`` image (:func:`posterior_samples`, same keywords, e.g. ``start``).

    Returns:
        ``log_joint``: the mean of ``log p(x, z)`` (+ const) at the final samples (higher:
        nearer the posterior's mode region); ``spread``: the standard deviation of the
        ``chains`` samples of one image, per latent dimension, averaged over both (the
        posterior's width as the chains see it; a collapsed start gives too little).
    """
    x = images.repeat_interleave(chains, 0)
    z = posterior_samples(model, x, steps, step_size, batch_size=batch_size, **kwargs)
    device = z.device
    with torch.no_grad():
        log_joint = torch.cat(
            [
                model.log_joint(to_float(x[i : i + batch_size]).to(device), z[i : i + batch_size])
                for i in range(0, len(x), batch_size)
            ]
        )
    spread = z.view(len(images), chains, -1).std(1).mean()
    return {"log_joint": float(log_joint.mean()), "spread": float(spread)}


def reconstruct(model: LatentEBM, images: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """``g(z)`` ``(N, C, H, W)`` in ``[-1, 1]`` at :func:`posterior_samples` (same arguments)."""
    return model.decode(posterior_samples(model, images, *args, **kwargs))


def recon_mse(model: LatentEBM, images: torch.Tensor, *args: Any, **kwargs: Any) -> float:
    """Per-pixel mean squared error in ``[-1, 1]`` of :func:`reconstruct` over ``images``."""
    return float((reconstruct(model, images, *args, **kwargs) - to_float(images)).pow(2).mean())


def anomaly_scores(
    model: LatentEBM, images: torch.Tensor, *args: Any, batch_size: int = 100, **kwargs: Any
) -> torch.Tensor:
    """``-log p(x, z)`` ``(N,)`` at posterior samples: higher means more anomalous."""
    z = posterior_samples(model, images, *args, batch_size=batch_size, **kwargs)
    device = z.device
    with torch.no_grad():
        return torch.cat(
            [
                -model.log_joint(
                    to_float(images[i : i + batch_size]).to(device), z[i : i + batch_size]
                )
                for i in range(0, len(images), batch_size)
            ]
        ).cpu()


def auprc(labels: np.ndarray | torch.Tensor, scores: np.ndarray | torch.Tensor) -> float:
    """Area under the precision-recall curve (average precision) for positives ``labels == 1``.

    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds, highest first: the
    step-wise estimate scikit-learn's ``average_precision_score`` computes.
    """
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ValueError("auprc needs at least one positive label")
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each tied score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def anomaly_auprc(
    model: LatentEBM, images: torch.Tensor, anomalous: torch.Tensor, *args: Any, **kwargs: Any
) -> float:
    """AUPRC of :func:`anomaly_scores` for the 0/1 labels ``anomalous`` ``(N,)``."""
    return auprc(anomalous.numpy(), anomaly_scores(model, images, *args, **kwargs).numpy())


def fid(
    model: LatentEBM,
    train_images: torch.Tensor,
    extractor: Any,
    *,
    n: int = 50_000,
    seed: int = 0,
    batch_size: int = 500,
    progress: bool = False,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    **sample_kwargs: Any,
) -> float:
    """FID between ``n`` generated images and ``train_images`` (``uint8``) in ``extractor``'s
    feature space; ``sample_kwargs`` go to :func:`latent_ebm.sampling.sample_latents`.

    ``reference``: the mean and covariance of ``train_images``' features, if already at hand
    (:func:`reference_stats`), e.g. for repeated evaluations during training."""
    z = sample_latents(
        model, n, seed=seed, batch_size=batch_size, progress=progress, **sample_kwargs
    )
    return fid_at(model, z, train_images, extractor, batch_size, progress, reference)


def fid_at(
    model: LatentEBM,
    z: torch.Tensor,
    train_images: torch.Tensor,
    extractor: Any,
    batch_size: int = 500,
    progress: bool = False,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> float:
    """FID of the images ``g(z)`` of given latents ``z`` ``(n, nz)`` against ``train_images``:
    :func:`fid` for latents from anywhere, e.g. samples of the aggregate posterior (the FID
    that a prior matching it exactly would give, ARCHITECTURE §7)."""
    from latent_ebm.evaluation.features import frechet_distance, gaussian_stats

    fake = torch.cat(
        [
            extractor(model.decode(z[i : i + batch_size]))
            for i in tqdm(range(0, len(z), batch_size), desc="features", disable=not progress)
        ]
    )
    if reference is None:
        reference = reference_stats(train_images, extractor, batch_size, progress)
    return frechet_distance(*gaussian_stats(fake), *reference)


def reference_stats(
    images: torch.Tensor, extractor: Any, batch_size: int = 500, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of ``extractor``'s features of ``images``
    (``uint8``): the reference side of :func:`fid`."""
    from latent_ebm.evaluation.features import extract, gaussian_stats

    return gaussian_stats(extract(extractor, images, batch_size=batch_size, progress=progress))
