"""Caches: build a value once, then read it back from a file. One policy for every cache.

The library caches decoded data sets (:func:`cached_arrays`, an ``.npz`` beside the source) and
trained FID classifiers (:mod:`latent_ebm.evaluation.classifier`, a ``.pt`` in the cache
folder). Both go through :func:`load_or_build`, whose policy is:

- **where**: the cache's own path first, then its fallback (if any) in the cache folder;
- **valid**: the reader accepts the file (same source fingerprint, settings and format, and
  a value that agrees with what the set must hold); otherwise the value is rebuilt and the
  file overwritten (a value that disagrees, with a warning: someone wrote that file);
- **damaged**: a file the reader cannot parse is rebuilt (quietly or with a warning);
- **fallback**: when the path's folder is not writable, the fallback is written, with a warning;
- **atomic**: written through :func:`latent_ebm.files.write_atomic`; a write that fails is a
  warning (the value is still returned and is built again next time).

Cache files never execute code when read: ``np.load(allow_pickle=False)`` and
``torch.load(weights_only=True)``.

The cache folder (:func:`cache_dir`) is ``$LATENT_EBM_CACHE`` when set, else a subfolder of
:data:`USER_CACHE` (``~/.cache/latent-ebm``), which also holds downloaded data sets.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
import zipfile
from collections.abc import Callable
from typing import IO, Any, TypeVar

import numpy as np

from latent_ebm.data.dataset import SPLIT_KEYS
from latent_ebm.data.images import image_file_stats
from latent_ebm.errors import LatentEBMError, one_line
from latent_ebm.files import write_atomic

__all__ = [
    "CACHE_ENV_VAR",
    "USER_CACHE",
    "cache_dir",
    "cached_arrays",
    "fingerprint",
    "load_or_build",
]

CACHE_ENV_VAR = "LATENT_EBM_CACHE"
USER_CACHE = pathlib.Path("~/.cache/latent-ebm")  # expanded when used: $HOME may change
_CACHE_VERSION = 1  # bump when decoding changes: older array caches are rebuilt

T = TypeVar("T")


def cache_dir(default: str) -> pathlib.Path:
    """The folder of a cache: ``$LATENT_EBM_CACHE`` when set, else ``~/.cache/latent-ebm/<default>``
    (e.g. ``classifiers``, or a data set's name). Not created here: :func:`write_atomic` does.
    """
    env = os.environ.get(CACHE_ENV_VAR)
    return pathlib.Path(env).expanduser() if env else USER_CACHE.expanduser() / default


def load_or_build(
    path: pathlib.Path,
    read: Callable[[pathlib.Path], T | None],
    build: Callable[[], T],
    write: Callable[[T, IO[bytes]], None],
    *,
    what: str,
    fallback: pathlib.Path | None = None,
    warn_damaged: bool = True,
) -> tuple[T, pathlib.Path | None]:
    """The value cached at ``path`` (or ``fallback``), else ``build()`` it and cache it.

    Arguments:
        path: the cache file.
        read: a file's value, or ``None`` when the file is valid but stale (other source,
            settings or format; the reader may warn); an exception means a damaged file.
        build: computes the value when no file holds it.
        write: serialises the value to an open binary file.
        what: the value in messages, e.g. ``"the decoded svhn arrays"``.
        fallback: read after ``path``, and written instead when ``path``'s folder is not
            writable (with a warning); ``None``: no second place.
        warn_damaged: warn when a damaged file is rebuilt (else rebuild it silently).

    Returns:
        ``(value, file)``: the file it was read from or written to, ``None`` if writing failed.
    """
    for candidate in (path, fallback):
        if candidate is None or not candidate.is_file():
            continue
        try:
            value = read(candidate)
        except Exception as exc:  # whatever a damaged file makes the reader raise: rebuild
            if warn_damaged:
                warnings.warn(
                    f"the cache of {what} {candidate} is unreadable ({one_line(exc)}); "
                    f"rebuilding it",
                    stacklevel=3,
                )
            continue
        if value is not None:
            return value, candidate

    value = build()
    target = path
    if fallback is not None and not os.access(path.parent, os.W_OK):
        target = fallback
        warnings.warn(f"{path.parent} is not writable: caching {what} in {target}", stacklevel=4)
    try:
        write_atomic(target, lambda f: write(value, f))
    except OSError as exc:
        warnings.warn(
            f"could not write the cache of {what} {target} ({one_line(exc)}); it will be built "
            f"again next time",
            stacklevel=4,
        )
        return value, None
    return value, target


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


_Check = Callable[[dict[str, np.ndarray]], str | None]  # arrays -> what is wrong, or None


def _read_arrays(
    path: pathlib.Path, key: str, check: _Check | None, what: str
) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose fingerprint is ``key``; ``None`` when stale, of another
    layout or (with a warning) when ``check`` finds them wrong. A damaged file raises (zip CRCs
    catch flipped bytes), and so does one whose members are compressed or claim more bytes
    than the file holds (``np.savez`` stores them as they are), before any array is read."""
    size = path.stat().st_size
    with path.open("rb") as f:
        with zipfile.ZipFile(f) as archive:
            members = archive.infolist()
        stored = all(m.compress_type == zipfile.ZIP_STORED for m in members)
        if not stored or sum(m.file_size for m in members) > size:
            raise ValueError("its members are compressed or claim more bytes than it holds")
        f.seek(0)
        with np.load(f, allow_pickle=False) as z:
            if str(z["fingerprint"]) != key:
                return None
            arrays = {k: z[k] for k in SPLIT_KEYS}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),):
            return None
    problem = check(arrays) if check is not None else None
    if problem is not None:
        warnings.warn(
            f"the cache of {what} {path} disagrees with the data set ({problem}); rebuilding it",
            stacklevel=5,
        )
        return None
    return arrays


def cached_arrays(
    name: str,
    folder: str | os.PathLike,
    filename: str,
    source: Any,
    build: Callable[[], dict[str, np.ndarray]],
    check: _Check | None = None,
) -> dict[str, np.ndarray]:
    """Decoded arrays from the cache ``folder/filename`` when it matches ``source``, else
    ``build()`` them and write the cache (:func:`load_or_build`).

    The cache is an uncompressed ``.npz`` with ``train_x``, ``train_y``, ``test_x``, ``test_y``
    and the JSON of ``source`` (a fingerprint, see :func:`fingerprint`, plus every setting
    that changes the arrays). When ``folder`` is not writable it lives in :func:`cache_dir`
    ``(name)`` instead, named ``<hash of folder>-<filename>``. A damaged cache is silently
    rebuilt; one whose arrays ``check`` finds wrong (it returns what is wrong, else ``None``;
    :func:`latent_ebm.data.dataset.array_problem`) is rebuilt with a warning.

    Returns:
        ``{"train_x": uint8 (N, C, H, W), "train_y": int64 (N,), "test_x", "test_y"}``.

    Raises:
        LatentEBMError: what ``build`` raises, or built arrays that ``check`` finds wrong.
    """
    folder = pathlib.Path(folder)
    key = json.dumps({"version": _CACHE_VERSION, "source": source}, sort_keys=True)
    where = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    what = f"the decoded {name} arrays"

    def checked_build() -> dict[str, np.ndarray]:
        arrays = build()
        problem = check(arrays) if check is not None else None
        if problem is not None:
            raise LatentEBMError(
                f"the {name} files in {folder} do not hold a valid data set ({problem}); "
                f"replace them with good copies"
            )
        return arrays

    arrays, _ = load_or_build(
        folder / filename,
        lambda path: _read_arrays(path, key, check, what),
        checked_build,
        lambda value, f: np.savez(f, fingerprint=np.array(key), **value),
        what=what,
        fallback=cache_dir(name) / f"{where}-{filename}",
        warn_damaged=False,
    )
    return arrays
