"""The in-memory data set: :class:`Dataset`, its pixel scaling and the anomaly protocol's split.

Images are held as ``uint8`` ``(N, C, H, W)`` (values ``0..255``) and scaled per batch, so a
whole split costs one byte per pixel; :func:`to_float` maps them to ``[-1, 1]``, the range of
the generator's ``tanh`` output, and :func:`to_uint8` maps generated images back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latent_ebm.errors import LatentEBMError

__all__ = [
    "SPLIT_KEYS",
    "Dataset",
    "array_problem",
    "from_arrays",
    "holdout_split",
    "to_float",
    "to_uint8",
]

SPLIT_KEYS = ("train_x", "train_y", "test_x", "test_y")  # the arrays of a data set's splits


@dataclass
class Dataset:
    """A data set held in memory.

    Attributes:
        name: Registry name, e.g. ``"mnist"``.
        train_x: Training images, ``uint8`` ``(N, C, H, W)``, values ``0..255``, contiguous.
        train_y: Training labels, ``int64`` ``(N,)``.
        test_x: Test images, ``uint8`` ``(M, C, H, W)``.
        test_y: Test labels, ``int64`` ``(M,)``.
        holdout: The class held out of training by :func:`holdout_split`, else ``None``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    holdout: int | None = None  # the anomalous class of a hold-one-class-out split

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape ``(C, H, W)``."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """One more than the largest label of either split (labels are ``0..K-1``)."""
        return int(torch.cat([self.train_y, self.test_y]).max()) + 1


def array_problem(
    arrays: dict[str, np.ndarray],
    *,
    channels: tuple[int, ...],
    size: int,
    classes: int | None,
) -> str | None:
    """What makes a data set's split arrays disagree with what the set must hold, or ``None``.

    ``arrays`` holds ``train_x``, ``train_y``, ``test_x``, ``test_y`` (numpy); each split must
    hold at least one image, images ``uint8`` ``(N, C, size, size)`` with ``C`` one of
    ``channels`` (the same in both splits), labels ``int64`` ``(N,)`` in ``0..classes-1``
    (``classes`` ``None``: any label ``>= 0``).
    """
    for key in SPLIT_KEYS:
        if not isinstance(arrays.get(key), np.ndarray):
            return f"{key} is missing"
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4:
            return f"{split}_x is {x.dtype} of {x.ndim} dimensions, not uint8 (N, C, H, W)"
        if y.dtype != np.int64 or y.shape != (len(x),):
            return f"{split}_y is {y.dtype} {y.shape}, not int64 ({len(x)},)"
        if len(x) == 0:
            return f"the {split} split is empty"
        c, h, w = x.shape[1:]
        if c not in channels or (h, w) != (size, size):
            wanted = " or ".join(f"{n}x{size}x{size}" for n in channels)
            return f"{split}_x holds images of {c}x{h}x{w}, not {wanted}"
        low, high = int(y.min()), int(y.max())
        if low < 0 or (classes is not None and high >= classes):
            bad = low if low < 0 else high
            valid = f"0..{classes - 1}" if classes is not None else "0 or more"
            return f"{split}_y holds label {bad}, outside {valid}"
    if arrays["train_x"].shape[1] != arrays["test_x"].shape[1]:
        return "the train and test images differ in channels"
    return None


def from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Dataset:
    """A :class:`Dataset` from numpy ``train_x``, ``train_y``, ``test_x``, ``test_y`` arrays
    (made contiguous; the tensors share their memory)."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return Dataset(
        name, tensors["train_x"], tensors["train_y"], tensors["test_x"], tensors["test_y"]
    )


def holdout_split(data: Dataset, holdout: int, seed: int = 0) -> Dataset:
    """Hold-one-class-out split of the anomaly protocol (ARCHITECTURE §7, after LEBM/MEG).

    Train and test are pooled and shuffled with ``seed``; the first 80% without class
    ``holdout`` is the new training split, the remaining 20% plus every image of class
    ``holdout`` the new test split (labels kept: ``test_y == holdout`` marks the anomalies).
    """
    labels = torch.cat([data.train_y, data.test_y])
    classes = sorted(set(labels.tolist()))
    if holdout not in classes:
        raise LatentEBMError(
            f"holdout class {holdout} is not a label of {data.name} "
            f"(labels {classes[0]}..{classes[-1]})"
        )
    images = torch.cat([data.train_x, data.test_x])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    first = torch.zeros(len(labels), dtype=torch.bool)
    first[order[: int(0.8 * len(labels))]] = True
    anomalous = labels == holdout
    train, test = first & ~anomalous, ~first | anomalous
    # Keep the shuffled order inside each split.
    train_idx, test_idx = order[train[order]], order[test[order]]
    return Dataset(
        data.name,
        images[train_idx].contiguous(),
        labels[train_idx],
        images[test_idx].contiguous(),
        labels[test_idx],
        holdout,
    )


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Scale ``uint8`` images ``(B, C, H, W)`` to ``float32`` in ``[-1, 1]``: ``x / 127.5 - 1``."""
    return (x.to(torch.float32) - 127.5) / 127.5  # exact subtraction first: no cancellation


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_float`: images in ``[-1, 1]`` (clamped) to ``uint8`` ``0..255``."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
