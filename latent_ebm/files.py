"""File helpers: atomic writes (a crash or a full disk never leaves a half-written file in
place) and the folder of the library's caches."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["CACHE_ENV_VAR", "cache_dir", "save_atomic", "write_atomic"]

CACHE_ENV_VAR = "LATENT_EBM_CACHE"


def cache_dir(default: str) -> Path:
    """The folder of a cache: ``$LATENT_EBM_CACHE`` when set, else ``~/.cache/latent-ebm/<default>``
    (e.g. ``classifiers``, or a data set's name). Not created here: :func:`write_atomic` does.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latent-ebm" / default


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it over ``path``.

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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` to a temporary file beside ``path``, then rename it over ``path``.

    Raises:
        OSError: the write failed (e.g. a full disk); ``path`` is untouched and the temporary
            file is removed.
    """
    write_atomic(path, lambda f: torch.save(obj, f))
