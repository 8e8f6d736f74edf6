"""The cache of decoded data sets: decode a source once, then read an ``.npz`` beside it.

A cache is valid while the source's :func:`fingerprint` (size and modification time of a file;
count, bytes, newest modification and names of a folder's images) and the decoding settings are
those it was written with; otherwise, or when it is damaged, it is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from latent_ebm.errors import LatentEBMError, one_line
from latent_ebm.files import cache_dir, write_atomic
from latent_ebm.formats import image_file_stats

__all__ = ["cached_arrays", "fingerprint"]

_CACHE_VERSION = 1  # bump when decoding changes: older caches are rebuilt
_SPLIT_KEYS = ("train_x", "train_y", "test_x", "test_y")


def fingerprint(path: str | os.PathLike) -> list[Any] | None:
    """What identifies a source's content cheaply, so a changed source rebuilds its cache.

    A file: ``[bytes, mtime_ns]``. A folder: ``[image files, total bytes, max mtime_ns, SHA-1 of
    the sorted names]`` over its image files (recursive). Missing: ``None``.
    """
    path = pathlib.Path(path)
    try:
        if path.is_dir():
            files = image_file_stats(path)
            names = hashlib.sha1("\n".join(n for n, _, _ in files).encode()).hexdigest()
            return [
                len(files),
                sum(s for _, s, _ in files),
                max((t for *_, t in files), default=0),
                names,
            ]
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)})") from None


def _read_cache(path: pathlib.Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose fingerprint is ``key``; ``None`` when absent, stale or
    damaged (zip CRCs catch flipped bytes)."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f, np.load(f, allow_pickle=False) as z:
            if str(z["fingerprint"]) != key:
                return None
            arrays = {k: z[k] for k in _SPLIT_KEYS}
    except Exception:  # a damaged cache is rebuilt silently, whatever numpy raises
        return None
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),):
            return None
    return arrays


def cached_arrays(
    name: str,
    folder: str | os.PathLike,
    filename: str,
    source: Any,
    build: Callable[[], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Decoded arrays from the cache ``folder/filename`` when it matches ``source``, else
    ``build()`` them and write the cache.

    The cache is an uncompressed ``.npz`` with ``train_x``, ``train_y``, ``test_x``, ``test_y``
    and the JSON of ``source`` (a fingerprint, see :func:`fingerprint`, plus every setting
    that changes the arrays), written atomically. When ``folder`` is not writable it lives in
    :func:`latent_ebm.files.cache_dir` ``(name)`` instead (with a warning when written), named
    ``<hash of folder>-<filename>``. A damaged cache is silently rebuilt; a cache that
    cannot be written is a warning.

    Returns:
        ``{"train_x": uint8 (N, C, H, W), "train_y": int64 (N,), "test_x", "test_y"}``.
    """
    folder = pathlib.Path(folder)
    key = json.dumps({"version": _CACHE_VERSION, "source": source}, sort_keys=True)
    where = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    fallback = cache_dir(name) / f"{where}-{filename}"
    for path in (folder / filename, fallback):
        arrays = _read_cache(path, key)
        if arrays is not None:
            return arrays

    arrays = build()
    path = folder / filename
    if not os.access(folder, os.W_OK):
        path = fallback
        warnings.warn(
            f"{folder} is not writable: caching the decoded {name} arrays in {path}", stacklevel=4
        )
    try:
        write_atomic(path, lambda f: np.savez(f, fingerprint=np.array(key), **arrays))
    except OSError as exc:
        warnings.warn(
            f"could not write the {name} cache {path} ({one_line(exc)}); the files will be "
            f"decoded again next time",
            stacklevel=4,
        )
    return arrays
