"""File helpers: atomic writes, so a crash or a full disk never leaves a half-written file in
place, and a loader of ``torch.save`` files that never runs code (the cache folder and its
policy: :mod:`latent_ebm.data.cache`)."""

from __future__ import annotations

import fcntl
import os
import pickle
import pickletools
import re
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "NotRegularFileError",
    "UnsafeFileError",
    "WeightsFileError",
    "load_weights",
    "open_regular",
    "remove_abandoned_temporaries",
    "save_atomic",
    "special_kind",
    "write_atomic",
]

# The temporary file of write_atomic: ".<name>.<random>.tmp" (tempfile's random part).
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]+\.tmp")


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file ``.<name>.<random>.tmp`` beside ``path``, then
    rename it over ``path``.

    The temporary file stays locked (``fcntl.flock``) until it is renamed or removed: that
    tells it from the file of a killed writer (:func:`remove_abandoned_temporaries`).

    Raises:
        OSError: the write failed (e.g. a full disk); ``path`` is untouched and the temporary
            file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _locked_temporary(path)
    held = os.dup(fd)  # holds the lock after `f` is closed, until the rename
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~_umask())  # a plain file's mode, not mkstemp's private 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.close(held)


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file for :func:`write_atomic` of ``path``, locked: descriptor, name."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits only on a cleaner that is removing it
            if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        except OSError:  # a file system without locks: unlocked, which cleaners keep
            return fd, tmp
        os.close(fd)  # a cleaner took it for a killed writer's file before it was locked


def remove_abandoned_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`write_atomic` in ``folder`` (not its subfolders)
    whose writer is gone (killed mid-write), and return them.

    A writer holds its temporary file locked until the rename, so a file whose lock this call
    can take has no writer; a file that another process is writing is kept, however old.
    A folder that cannot be read, and files that vanish meanwhile, are skipped.
    """
    removed = []
    try:
        entries = [e for e in os.scandir(folder) if _TEMPORARY.fullmatch(e.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            if os.path.samestat(os.fstat(fd), os.lstat(entry.path)):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


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


class WeightsFileError(Exception):
    """A file that :func:`load_weights` cannot read as a ``torch.save`` file of tensors and
    plain values (damaged, truncated, empty, a folder, another format). The message names the
    file, says what is wrong (:attr:`reason`) and asks for a good copy; it never relays torch's
    advice to load with ``weights_only=False``, which would let the file run code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # what is wrong, without the file's name


class UnsafeFileError(WeightsFileError):
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


class NotRegularFileError(OSError):
    """A path that is a named pipe (FIFO), a device or a socket (:attr:`kind`, e.g. ``"a
    device"``), where a file is expected."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a file")
        self.kind = kind


def special_kind(mode: int) -> str | None:
    """What a file of ``st_mode`` ``mode`` is when it is neither a regular file nor a folder
    (``"a named pipe (FIFO)"``, ``"a device"``, ``"a socket"``), else ``None``."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return None


def open_regular(path: str | Path, fifo: bool = False) -> IO[bytes]:
    """``path`` opened for reading in binary, refused before anything is read when it is not
    a regular file: opened without blocking, so a named pipe with no writer does not hang.

    ``fifo``: a named pipe is returned too, still non-blocking (the caller waits for data).

    Raises:
        FileNotFoundError: no file at ``path``.
        IsADirectoryError: ``path`` is a folder.
        NotRegularFileError: ``path`` is a device, a socket, or (without ``fifo``) a named
            pipe; its message says which.
        OSError: it cannot be opened (permissions, an I/O error).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    f = os.fdopen(fd, "rb")
    mode = os.fstat(fd).st_mode
    kind = special_kind(mode)
    if stat.S_ISDIR(mode) or (kind is not None and not (fifo and stat.S_ISFIFO(mode))):
        f.close()
        if kind is None:
            raise IsADirectoryError(21, "Is a directory", str(path))
        raise NotRegularFileError(path, kind)
    if kind is None:
        os.set_blocking(fd, True)
    return f


def load_weights(path: str | Path) -> Any:
    """``torch.load`` of ``path`` onto the CPU with ``weights_only=True``: tensors, numbers,
    strings and containers of them (and plain numpy arrays, which earlier checkpoints held);
    nothing in the file can run code.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: the file names any other class or function (e.g. an object whose
            unpickling calls ``os.system``); nothing of it ran.
        WeightsFileError: any other file it cannot read (a folder, a named pipe, a device or
            a socket, refused before it is opened for reading; unreadable, empty,
            truncated, a pickle of another protocol or program, not a torch file): one line
            that says what is wrong.
    """
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols: its reason is ours
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            with torch.serialization.safe_globals(_NUMPY_GLOBALS), open_regular(path) as f:
                return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except NotRegularFileError as e:  # a FIFO would hang, a device never end
        reason = f"it is {e.kind}, not a file"
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            reason = f"it holds a reference to {found.group(1)}, and loading it could run code"
            raise UnsafeFileError(
                f"{path} refused: {reason} (latent-ebm files hold only tensors and plain "
                "values); use files from sources you trust, written by latent-ebm",
                reason,
            ) from None
        reason = _reason(e)
    except OSError as e:  # a folder, no permission, an I/O error
        reason = f"it cannot be read: {e.strerror or _first_sentence(e)}"
    except Exception as e:  # a truncated or foreign file fails in many ways inside torch
        reason = _reason(e)
    raise WeightsFileError(
        f"{path} is not a weights file latent-ebm can read ({reason}); replace it with a good copy",
        reason,
    )


def _first_sentence(e: BaseException) -> str:
    """The first sentence of an exception's message on one line, clipped; never torch's advice
    (its sentences on ``weights_only`` are dropped)."""
    text = " ".join(str(e).split())
    sentences = [s for s in re.split(r"(?<=[.;])\s+", text) if s]
    kept = [s for s in sentences if not _ADVICE.search(s)]
    first = (kept[0] if kept else "").rstrip(".;") or type(e).__name__
    return first if len(first) <= 150 else first[:150] + "..."


# Sentences of torch's messages that advise what latent-ebm must never do, or are not about
# the file.
_ADVICE = re.compile(r"weights_only|file an issue|trusted source|documentation|PyTorch 2\.6", re.I)


def _reason(e: BaseException) -> str:
    """What is wrong with a file that ``torch.load(weights_only=True)`` raised ``e`` for."""
    text = " ".join(str(e).split())
    unpickler = re.search(r"WeightsUnpickler error: (.*?)(?: Check the documentation|$)", text)
    if unpickler:  # the safe unpickler met an instruction it does not know
        detail = unpickler.group(1).strip().rstrip(".")[:150]
        opcode = re.fullmatch(r"Unsupported operand (\d+)", detail)
        op = pickletools.code2op.get(chr(int(opcode.group(1)))) if opcode else None
        if op is not None:
            detail = f"the {op.name} instruction of pickle protocol {op.proto}"
        return (
            f"its pickle uses {detail}, which the safe loader refuses; latent-ebm writes "
            "pickle protocol 2"
        )
    if isinstance(e, EOFError):
        return "it is empty or cut short"
    if "zip archive" in text:
        return f"a truncated or damaged zip archive ({_first_sentence(e)})"
    if "magic number" in text or isinstance(e, pickle.UnpicklingError | KeyError):
        return f"not a torch.save file ({type(e).__name__}: {_first_sentence(e)})"
    return f"{type(e).__name__}: {_first_sentence(e)}"
