"""File helpers: atomic writes, so a crash or a full disk never leaves a half-written file in
place (the cache folder and its policy: :mod:`latent_ebm.data.cache`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["save_atomic", "write_atomic"]


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
