"""Readers of the data sets' published binary formats (image files: :mod:`.images`).

Readers return numpy arrays: images ``uint8`` ``(N, C, H, W)``, labels ``int64`` ``(N,)``. A
missing, truncated, corrupt or malicious file is a one-line :class:`LatentEBMError`, never a
traceback from numpy, scipy or pickle.

- :func:`read_idx`: IDX ``*-ubyte[.gz]`` (MNIST, Fashion-MNIST).
- :func:`read_svhn_mat`: SVHN's cropped digits ``train_32x32.mat`` / ``test_32x32.mat``.
- :func:`read_cifar10_tar`: ``cifar-10-python.tar.gz``, read in place with a restricted unpickler.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pathlib
import pickle
import struct
import tarfile
import zlib
from typing import IO, Any

import numpy as np

from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "IDX_MAX_BYTES",
    "MAT_MAX_BYTES",
    "REDOWNLOAD",
    "read_cifar10_tar",
    "read_idx",
    "read_svhn_mat",
]

REDOWNLOAD = "delete it and download it again"  # the remedy of a damaged official file


# IDX (MNIST, Fashion-MNIST).


_IDX_MAX_DIMS = 8  # an IDX file of images has 3 dimensions, of labels 1
IDX_MAX_BYTES = 1 << 28  # data bytes of one IDX file; MNIST's largest holds 47,040,000
_CHUNK = 1 << 20  # bytes decompressed at a time


def read_idx(path: str | os.PathLike, max_bytes: int = IDX_MAX_BYTES) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when the name ends in ``.gz``).

    Format: two zero bytes, type code ``0x08`` (``uint8``), the number of dimensions ``D``, then
    ``D`` big-endian ``uint32`` sizes, then the data in C order.

    The header is checked before any data is read (1 to 8 dimensions, at most ``max_bytes``
    data bytes, as many as a plain file holds); a compressed file is decompressed in chunks and
    refused as soon as it holds more than its header declares, so a small "gzip bomb" costs
    no more memory than the header's size.

    Returns:
        A writable ``uint8`` array of the shape given by the header.

    Raises:
        LatentEBMError: missing, unreadable, corrupt or truncated file, another type code, a
            header of too many dimensions or bytes, or more data than the header declares.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise LatentEBMError(f"{path} does not exist; check the data directory")
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            return _read_idx_stream(f, path, max_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise LatentEBMError(
            f"{path} is not a valid gzip file or is corrupt ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    except OSError as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)})") from None


def _read_idx_stream(f: IO[bytes], path: pathlib.Path, max_bytes: int) -> np.ndarray:
    """The array of an open IDX stream (see :func:`read_idx`)."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
        raise LatentEBMError(f"{path} is not a valid IDX file (bad magic number); {REDOWNLOAD}")
    type_code, ndim = magic[2], magic[3]
    if type_code != 0x08:
        raise LatentEBMError(
            f"{path} holds IDX type code 0x{type_code:02x} but only unsigned bytes (0x08) are "
            f"supported; {REDOWNLOAD}"
        )
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise LatentEBMError(
            f"{path} declares {ndim} dimensions in its IDX header (1 to {_IDX_MAX_DIMS} are "
            f"valid): it is corrupt; {REDOWNLOAD}"
        )
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise LatentEBMError(f"{path} is truncated inside its IDX header; {REDOWNLOAD}")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    count = math.prod(dims)  # exact: Python integers do not wrap
    shape = "x".join(map(str, dims))
    if count > max_bytes:
        raise LatentEBMError(
            f"{path} declares {shape} = {count:,} data bytes in its IDX header, more than the "
            f"{max_bytes:,} an IDX file may hold here: it is corrupt; {REDOWNLOAD}"
        )
    if not isinstance(f, gzip.GzipFile):  # a plain file: its size says it all, before reading
        held = os.fstat(f.fileno()).st_size - 4 - 4 * ndim
        if held != count:
            raise LatentEBMError(
                f"{path} is truncated or corrupt: its header promises {count:,} data bytes "
                f"({shape}) but it holds {held:,}; {REDOWNLOAD}"
            )
    data = bytearray()
    while len(data) < count:  # grows with what arrives, not with what the header claims
        chunk = f.read(min(_CHUNK, count - len(data)))
        if not chunk:
            raise LatentEBMError(
                f"{path} is truncated: its header promises {count:,} data bytes ({shape}) but "
                f"it holds {len(data):,}; {REDOWNLOAD}"
            )
        data += chunk
    if f.read(1):
        raise LatentEBMError(
            f"{path} holds more data than its header declares ({count:,} bytes, {shape}): it "
            f"is corrupt; {REDOWNLOAD}"
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# SVHN (MATLAB v5 .mat).


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN's ``train_32x32.mat`` or ``test_32x32.mat`` (the "cropped digits" format).

    The file holds ``X``, ``uint8`` ``(32, 32, 3, N)`` (height, width, RGB, image) and ``y``,
    ``(N, 1)`` labels ``1..10`` where ``10`` is the digit 0.

    Before scipy reads it, the file's compressed variables are decompressed in chunks, and
    counted, not kept: one that expands beyond :data:`MAT_MAX_BYTES` is refused.

    Returns:
        Images ``uint8`` ``(N, 3, 32, 32)`` and labels ``int64`` ``(N,)`` in ``0..9``.

    Raises:
        LatentEBMError: not a MATLAB file, truncated or corrupt, larger than
            :data:`MAT_MAX_BYTES` once decompressed, or without SVHN's arrays.
    """
    import scipy.io  # deferred: importing scipy is slow

    path = pathlib.Path(path)
    try:
        expanded = _mat_expanded_bytes(path, MAT_MAX_BYTES)
    except OSError as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)})") from None
    except zlib.error as exc:
        raise LatentEBMError(
            f"{path} holds a corrupt compressed variable ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    if expanded > MAT_MAX_BYTES:
        raise LatentEBMError(
            f"{path} expands to more than {MAT_MAX_BYTES:,} bytes, more than SVHN's files "
            f"hold (the training file about 225 MB): it is not SVHN's file; {REDOWNLOAD}"
        )
    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as exc:  # a damaged file makes scipy raise almost any type
        raise LatentEBMError(
            f"{path} is not a valid MATLAB file or is truncated ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    x, y = mat.get("X"), mat.get("y")
    if (
        not isinstance(x, np.ndarray)
        or x.dtype != np.uint8
        or x.ndim != 4
        or x.shape[:3] != (32, 32, 3)
    ):
        raise LatentEBMError(
            f"{path} does not hold SVHN's uint8 image array X of shape (32, 32, 3, N); {REDOWNLOAD}"
        )
    n = x.shape[3]
    if not isinstance(y, np.ndarray) or y.size != n or y.dtype.kind not in "uif":
        raise LatentEBMError(f"{path} does not hold {n} SVHN labels y; {REDOWNLOAD}")
    labels = y.reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() > 10 or (labels % 1 != 0).any()):
        raise LatentEBMError(f"{path} holds labels outside 1..10; {REDOWNLOAD}")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return images, labels.astype(np.int64) % 10  # label 10 is the digit 0


MAT_MAX_BYTES = 1 << 30  # an SVHN file decompressed: the training file is ~225 MB
_MI_COMPRESSED = 15  # the MATLAB v5 type of a zlib-compressed element


def _mat_expanded_bytes(path: pathlib.Path, limit: int) -> int:
    """The bytes of a MATLAB v5 file's top-level elements once decompressed, counted chunk by
    chunk without keeping them; counting stops as soon as ``limit`` is passed. A file of
    another layout (v7.3, truncated) counts what it can and is left to scipy's reader.

    Raises:
        OSError: the file cannot be read.
        zlib.error: a compressed element is corrupt.
    """
    total = 0
    with path.open("rb") as f:
        header = f.read(128)  # text, subsystem offset, version, endian indicator
        endian = {b"IM": "<", b"MI": ">"}.get(header[126:128])
        if endian is None:
            return 0
        while total <= limit and len(tag := f.read(8)) == 8:
            kind, nbytes = struct.unpack(f"{endian}II", tag)
            if kind >> 16:  # a "small element": its data sits in the tag itself
                continue
            if kind != _MI_COMPRESSED:
                total += nbytes
                f.seek(nbytes + (-nbytes) % 8, os.SEEK_CUR)  # elements are padded to 8 bytes
                continue
            stream, left = zlib.decompressobj(), nbytes
            while left and total <= limit:
                chunk = f.read(min(left, _CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
                while chunk and total <= limit:  # at most _CHUNK bytes out per call
                    total += len(stream.decompress(chunk, _CHUNK))
                    chunk = stream.unconsumed_tail
    return total


# CIFAR-10 (tar.gz of pickled batches).

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_MAX_MEMBER_BYTES = 1 << 28  # a CIFAR batch is ~31 MB; refuse absurd members
_MAX_TAR_BYTES = 1 << 30  # the archive decompressed: the official one is ~185 MB
_MAX_TAR_MEMBERS = 1000  # the official archive has 9


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch pickle needs: an ``ndarray`` and its ``dtype``."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "ndarray")] = np.ndarray
        allowed[(module, "dtype")] = np.dtype
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global outside :func:`_numpy_globals`, so a crafted pickle cannot run code."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}") from None


def _read_cifar_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Unpickle one batch: ``{b"data": uint8 (n, 3072), b"labels": [n ints]}`` -> arrays."""
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # a damaged pickle raises almost any type
        raise LatentEBMError(
            f"{where} is not a valid CIFAR-10 batch ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        raise LatentEBMError(
            f"{where} does not hold CIFAR-10's uint8 data array of shape (n, 3072); {REDOWNLOAD}"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        y = np.zeros(0, dtype=np.int64)  # reported below
    if y.shape != (len(data),) or (y.size and (y.min() < 0 or y.max() > 9)):
        raise LatentEBMError(f"{where} does not hold {len(data)} labels in 0..9; {REDOWNLOAD}")
    return data.reshape(-1, 3, 32, 32).copy(), y  # rows are R, G, B planes, each row-major


def read_cifar10_tar(
    path: str | os.PathLike,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Read ``cifar-10-python.tar.gz`` without extracting it.

    Members ``cifar-10-batches-py/data_batch_1`` .. ``data_batch_5`` (training, in that order)
    and ``test_batch`` are pickled dicts (loaded with ``encoding="bytes"``) whose ``b"data"`` is
    ``uint8`` ``(10000, 3072)``, each row the red, green and blue 32x32 planes in row-major
    order, and ``b"labels"`` a list of ``0..9``. Unpickling allows only numpy's array classes.

    Returns:
        ``((train_x, train_y), (test_x, test_y))``: images ``uint8`` ``(N, 3, 32, 32)`` and
        labels ``int64`` ``(N,)``; 50,000 and 10,000 images for the official file.

    Reading stops once every batch is found; an archive whose members reach past
    :data:`_MAX_TAR_BYTES` decompressed bytes, or number over :data:`_MAX_TAR_MEMBERS`, is
    refused at the member's header, before its data is decompressed.

    Raises:
        LatentEBMError: not a tar.gz, truncated, too large, a batch missing, damaged or
            malicious.
    """
    path = pathlib.Path(path)
    wanted = {f"{_CIFAR_DIR}/{name}" for name in (*_CIFAR_TRAIN, _CIFAR_TEST)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for count, member in enumerate(tar, 1):  # one pass: seeking back decompresses again
                if count > _MAX_TAR_MEMBERS or member.offset_data + member.size > _MAX_TAR_BYTES:
                    raise LatentEBMError(
                        f"{path} holds more than {_MAX_TAR_MEMBERS:,} members or "
                        f"{_MAX_TAR_BYTES:,} bytes decompressed (the official archive: 9 and "
                        f"about 185 MB): it is not the CIFAR-10 python archive; {REDOWNLOAD}"
                    )
                if member.name not in wanted or member.name in batches:
                    continue
                where = f"{member.name} in {path}"
                if not member.isfile() or member.size > _MAX_MEMBER_BYTES:
                    raise LatentEBMError(f"{where} is not a CIFAR-10 batch file; {REDOWNLOAD}")
                f = tar.extractfile(member)
                raw = f.read() if f is not None else b""
                if len(raw) != member.size:
                    raise EOFError(f"{member.name} is cut short")
                batches[member.name] = _read_cifar_batch(raw, where)
                if len(batches) == len(wanted):
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise LatentEBMError(
            f"{path} is not a valid tar.gz file or is truncated ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    missing = sorted(wanted - set(batches))
    if missing:
        raise LatentEBMError(
            f"{path} lacks {', '.join(missing)}: it is not the CIFAR-10 python archive; "
            f"{REDOWNLOAD}"
        )
    train = [batches[f"{_CIFAR_DIR}/{name}"] for name in _CIFAR_TRAIN]
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return (train_x, train_y), batches[f"{_CIFAR_DIR}/{_CIFAR_TEST}"]
