"""File helpers: atomic writes, so a crash or a full disk never leaves a half-written file in
place, and a loader of ``torch.save`` files that never runs code (the cache folder and its
policy: :mod:`latent_ebm.data.cache`)."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = ["UnsafeFileError", "load_weights", "save_atomic", "write_atomic"]


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file ``.<name>.<random>.tmp`` beside ``path``, then
    rename it over ``path``.

    Raises:
        OSError: the write failed (e.g. a full disk); ``path`` is untouched and the temporary
            file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # a plain file's mode, not mkstemp's private 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file beside ``path``, then rename it over ``path``.

    Raises:
        OSError: the write failed (e.g. a full disk: ``torch.save`` reports that as a
            ``RuntimeError``, turned into an ``OSError`` here); ``path`` is untouched and the
            temporary file is removed.
    """

    def write(f: IO[bytes]) -> None:
        try:
            torch.save(obj, f)
        except RuntimeError as e:  # torch's zip writer: "[enforce fail at inline_container..."
            raise OSError(f"write failed, is the disk full? ({' '.join(str(e).split())})") from e

    write_atomic(path, write)


class UnsafeFileError(Exception):
    """A ``torch.save`` file holds something other than tensors and plain values: loading it
    could run code, so :func:`load_weights` refused it."""


# What numpy arrays of earlier checkpoints (numpy's global random state) unpickle through:
# array reconstruction only, no callable of the user's choosing.
# numpy 2 keeps its core in ``numpy._core``; numpy 1 (``numpy>=1.24`` is allowed) in ``numpy.core``.
_RECONSTRUCT = (getattr(np, "_core", None) or np.core).multiarray._reconstruct
_NUMPY_GLOBALS: list[Any] = [
    _RECONSTRUCT,
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),  # the name numpy 1 wrote
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def load_weights(path: str | Path) -> Any:
    """``torch.load`` of ``path`` onto the CPU with ``weights_only=True``: tensors, numbers,
    strings and containers of them (and plain numpy arrays, which earlier checkpoints held);
    nothing in the file can run code.

    Raises:
        UnsafeFileError: the file names any other class or function (e.g. an object whose
            unpickling calls ``os.system``); nothing of it ran.
        FileNotFoundError, OSError, RuntimeError, ...: a missing, truncated or foreign file.
    """
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if not found:  # a corrupt file, not a foreign object
            raise
        raise UnsafeFileError(
            f"{path} refused: it holds a reference to {found.group(1)}, and loading it could "
            "run code (latent-ebm files hold only tensors and plain values); use files "
            "from sources you trust, written by latent-ebm"
        ) from None
