"""FID feature extractors and the Frechet distance (docs/ARCHITECTURE.md §7, paper Table 1).

FID fits a Gaussian to features of generated images and one to features of the training set and
reports the Frechet (2-Wasserstein) distance between them (Heusel et al. 2017):

    FID = ||mu_1 - mu_2||^2 + Tr(C_1 + C_2 - 2 (C_1 C_2)^{1/2}).

Two feature networks, both behind :class:`FeatureExtractor` (float images ``(B, C, H, W)`` in
``[-1, 1]`` -> features ``(B, dim)``):

- ``inception`` (:func:`inception_features`): the standard FID Inception-v3 pool-3 features
  (2048-d) from the usual weights file ``pt_inception-2015-12-05-6726825d.pth``, which the user
  supplies (no network access is assumed). Numbers comparable with published FIDs.
- ``classifier`` (:func:`latent_ebm.evaluation.classifier.classifier_features`): offline. A
  small CNN trained on the data set's training split (labels) and cached per data set; the
  features are its penultimate layer (128-d, after the ReLU). Numbers comparable only between
  runs that use the same classifier: every report records which features it used
  (:meth:`FeatureExtractor.describe`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from latent_ebm.data import to_float
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.inception import FIDInceptionV3, load_fid_inception

__all__ = [
    "FeatureExtractor",
    "InceptionFeatures",
    "extract",
    "frechet_distance",
    "gaussian_stats",
    "inception_features",
]


# Frechet distance.


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``, in float64.

    ``Tr((C_1 C_2)^{1/2})`` is the sum of the square roots of the eigenvalues of ``C_1 C_2``,
    which equal those of the symmetric PSD matrix ``S C_2 S`` with ``S = C_1^{1/2}`` (``AB`` and
    ``BA`` share their non-zero spectrum). Both square roots come from ``eigh`` of symmetric
    matrices with tiny negative eigenvalues (round-off) clipped to 0, so rank-deficient
    covariances (fewer samples than dimensions) give a finite answer, unlike ``sqrtm`` of the
    non-symmetric product.

    Arguments:
        mu1, mu2: means ``(D,)``.
        cov1, cov2: covariances ``(D, D)``, symmetric positive semi-definite.

    Returns:
        The distance, clipped at 0 (round-off can make an exact 0 slightly negative).
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    cov1, cov2 = (np.atleast_2d(np.asarray(c, np.float64)) for c in (cov1, cov2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(
            f"frechet_distance needs means (D,) and covariances (D, D) of one D; got "
            f"{mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise ValueError("frechet_distance got a NaN or Inf in a mean or covariance")
    w1, v1 = np.linalg.eigh((cov1 + cov1.T) / 2)
    sqrt1 = (v1 * np.sqrt(np.clip(w1, 0.0, None))) @ v1.T  # C_1^{1/2}
    middle = sqrt1 @ cov2 @ sqrt1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    tr_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt
    return float(max(value, 0.0))


def gaussian_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (unbiased, ``ddof=1``) of ``(N, D)`` features."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"gaussian_stats needs features (N, D) with N >= 2; got {x.shape}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


# The extractor interface.


class FeatureExtractor(ABC):
    """A frozen network mapping images to FID features.

    Attributes:
        name: ``"classifier"`` or ``"inception"``.
        dim: feature dimension D.
        device: where the network runs.
    """

    name: str
    dim: int
    device: torch.device

    def __init__(self, net: nn.Module, device: str | torch.device) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)``, float in ``[-1, 1]`` or uint8 -> ``(B, dim)`` float32 CPU."""
        if images.dtype == torch.uint8:
            images = to_float(images)
        with torch.no_grad():
            out = self.features(images.to(self.device, torch.float32))
        return out.float().cpu()

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Float images ``(B, C, H, W)`` in ``[-1, 1]`` on :attr:`device` -> ``(B, dim)``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What a report records about these features (``name``, ``dim``, provenance)."""


def extract(
    extractor: FeatureExtractor,
    images: torch.Tensor,
    batch_size: int = 500,
    progress: bool = False,
) -> torch.Tensor:
    """Features of many images, in batches: ``(N, C, H, W)`` -> ``(N, dim)`` float32 on the CPU.

    ``images`` are ``uint8`` (scaled by :func:`latent_ebm.data.to_float` per batch) or float in
    ``[-1, 1]``.
    """
    starts = range(0, len(images), batch_size)
    parts = [
        extractor(images[i : i + batch_size])
        for i in tqdm(starts, desc=f"{extractor.name} features", disable=not progress)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, extractor.dim)


# Standard features: the FID Inception-v3 network.


class InceptionFeatures(FeatureExtractor):
    """FID Inception-v3 pool-3 features (2048-d).

    Inputs are resized to 299x299 (bilinear, ``align_corners=False``, no antialiasing, as FID
    tools do), grayscale is repeated to 3 channels, and values stay in ``[-1, 1]`` (the range the
    TF-ported network expects).
    """

    name = "inception"
    dim = 2048

    def __init__(
        self, net: FIDInceptionV3, weights: Path, device: str | torch.device = "cpu"
    ) -> None:
        super().__init__(net, device)
        self.weights = weights

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[1] != 3:
            raise LatentEBMError(
                f"Inception features need 1- or 3-channel images, got {x.shape[1]} channels"
            )
        if x.shape[2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net(x)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "weights": str(self.weights)}


def inception_features(
    weights: str | Path, *, device: str | torch.device = "cpu"
) -> InceptionFeatures:
    """The standard FID features from the weights file ``weights``
    (``pt_inception-2015-12-05-6726825d.pth``), loaded strictly.

    Raises:
        LatentEBMError: missing or unreadable file, or a state dict of another layout.
    """
    path = Path(weights).expanduser()
    return InceptionFeatures(load_fid_inception(path), path, device)
