"""Readers of the data sets' published file formats.

Readers return numpy arrays: images ``uint8`` ``(N, C, H, W)``, labels ``int64`` ``(N,)``. A
missing, truncated, corrupt or malicious file is a one-line :class:`LatentEBMError`, never a
traceback from numpy, scipy, pickle or Pillow.

- :func:`read_idx`: IDX ``*-ubyte[.gz]`` (MNIST, Fashion-MNIST).
- :func:`read_svhn_mat`: SVHN's cropped digits ``train_32x32.mat`` / ``test_32x32.mat``.
- :func:`read_cifar10_tar`: ``cifar-10-python.tar.gz``, read in place with a restricted unpickler.
- :func:`list_images`, :func:`read_images`: image files in a folder or a ``.zip`` (CelebA,
  CelebA-HQ, any image folder), centre-cropped to the largest square and resized.
- :func:`read_celeba_partition`, :func:`scan_image_folder`: which files form which split.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pathlib
import pickle
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "IMAGE_SUFFIXES",
    "REDOWNLOAD",
    "image_file_stats",
    "list_images",
    "read_celeba_partition",
    "read_cifar10_tar",
    "read_idx",
    "read_images",
    "read_svhn_mat",
    "scan_image_folder",
]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".webp")  # matched case-insensitively
REDOWNLOAD = "delete it and download it again"  # the remedy of a damaged official file


# IDX (MNIST, Fashion-MNIST).


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed when the name ends in ``.gz``).

    Format: two zero bytes, type code ``0x08`` (``uint8``), the number of dimensions ``D``, then
    ``D`` big-endian ``uint32`` sizes, then the data in C order.

    Returns:
        A writable ``uint8`` array of the shape given by the header.

    Raises:
        LatentEBMError: missing, unreadable, corrupt or truncated file, or another type code.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise LatentEBMError(f"{path} does not exist; check the data directory")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise LatentEBMError(
            f"{path} is not a valid gzip file or is corrupt ({one_line(exc)}); {REDOWNLOAD}"
        ) from None
    except OSError as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)})") from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise LatentEBMError(f"{path} is not a valid IDX file (bad magic number); {REDOWNLOAD}")
    type_code, ndim = raw[2], raw[3]
    if type_code != 0x08:
        raise LatentEBMError(
            f"{path} holds IDX type code 0x{type_code:02x} but only unsigned bytes (0x08) are "
            f"supported; {REDOWNLOAD}"
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise LatentEBMError(f"{path} is truncated inside its IDX header; {REDOWNLOAD}")
    dims = struct.unpack(f">{ndim}I", raw[4:offset])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - offset != count:
        raise LatentEBMError(
            f"{path} is truncated or corrupt: its header promises {count} data bytes but it "
            f"holds {len(raw) - offset}; {REDOWNLOAD}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=offset).reshape(dims).copy()


# SVHN (MATLAB v5 .mat).


def read_svhn_mat(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN's ``train_32x32.mat`` or ``test_32x32.mat`` (the "cropped digits" format).

    The file holds ``X``, ``uint8`` ``(32, 32, 3, N)`` (height, width, RGB, image) and ``y``,
    ``(N, 1)`` labels ``1..10`` where ``10`` is the digit 0.

    Returns:
        Images ``uint8`` ``(N, 3, 32, 32)`` and labels ``int64`` ``(N,)`` in ``0..9``.

    Raises:
        LatentEBMError: not a MATLAB file, truncated or corrupt, or without SVHN's arrays.
    """
    import scipy.io  # deferred: importing scipy is slow

    path = pathlib.Path(path)
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


# CIFAR-10 (tar.gz of pickled batches).

_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_MAX_MEMBER_BYTES = 1 << 28  # a CIFAR batch is ~31 MB; refuse absurd members


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

    Raises:
        LatentEBMError: not a tar.gz, truncated, a batch missing, damaged or malicious.
    """
    path = pathlib.Path(path)
    wanted = {f"{_CIFAR_DIR}/{name}" for name in (*_CIFAR_TRAIN, _CIFAR_TEST)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:  # one pass: seeking back in a gzip stream decompresses again
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


# Image files: folders and zip archives.


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def image_file_stats(folder: pathlib.Path) -> list[tuple[str, int, int]]:
    """``(relative posix name, bytes, mtime_ns)`` of every image file under ``folder``, sorted;
    hidden files and folders (names starting with ``.``) are skipped."""
    found, stack = [], [folder]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(pathlib.Path(entry.path))
                elif _is_image(entry.name) and entry.is_file():
                    stat = entry.stat()
                    name = pathlib.Path(entry.path).relative_to(folder).as_posix()
                    found.append((name, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def list_images(source: str | os.PathLike) -> list[str]:
    """The image files (:data:`IMAGE_SUFFIXES`) under a folder (recursive) or in a ``.zip``.

    Returns:
        Sorted names relative to the folder (posix separators), or member names of the archive.

    Raises:
        LatentEBMError: unreadable folder, or a damaged zip file.
    """
    source = pathlib.Path(source)
    if source.is_dir():
        try:
            return [name for name, _, _ in image_file_stats(source)]
        except OSError as exc:
            raise LatentEBMError(f"could not list {source} ({one_line(exc)})") from None
    with _open_zip(source) as archive:
        return sorted(
            info.filename
            for info in archive.infolist()
            if not info.is_dir()
            and not info.filename.startswith("__MACOSX/")
            and _is_image(info.filename)
        )


def _open_zip(path: pathlib.Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise LatentEBMError(
            f"{path} is not a valid zip file or is truncated ({one_line(exc)}); {REDOWNLOAD}"
        ) from None


def _decode(raw: io.BytesIO | pathlib.Path, size: int) -> np.ndarray:
    """One image -> ``uint8`` ``(3, size, size)``: RGB, largest central square, resized."""
    from PIL import Image  # deferred: only the image loaders need Pillow

    with Image.open(raw) as img:
        rgb = img.convert("RGB")
    width, height = rgb.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    if side != size:  # Pillow's bicubic filter widens with the scale factor: antialiased
        square = square.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(square).transpose(2, 0, 1)


def read_images(
    source: str | os.PathLike, names: Sequence[str], size: int, *, keep_gray: bool = False
) -> np.ndarray:
    """Decode image files, centre-crop each to its largest central square, resize to ``size``.

    Arguments:
        source: a folder, or a ``.zip`` archive.
        names: files relative to the folder, or member names of the archive.
        size: output side in pixels (Pillow's bicubic filter, antialiased when shrinking).
        keep_gray: return one channel when every image is grayscale (its three channels equal
            after conversion to RGB); else always RGB.

    Returns:
        ``uint8`` ``(len(names), C, size, size)``, ``C`` 3 (or 1, see ``keep_gray``).

    Raises:
        LatentEBMError: a missing, truncated or undecodable file, naming it.
    """
    source = pathlib.Path(source)
    out = np.empty((len(names), 3, size, size), dtype=np.uint8)
    gray = keep_gray
    with contextlib.ExitStack() as stack:
        archive = None if source.is_dir() else stack.enter_context(_open_zip(source))
        for i, name in enumerate(names):
            where = f"{source / name}" if archive is None else f"{name} in {source}"
            try:
                raw = source / name if archive is None else io.BytesIO(archive.read(name))
                out[i] = _decode(raw, size)
            except Exception as exc:  # Pillow and zipfile raise many types for a damaged file
                what = "it" if archive is None else "the archive"
                raise LatentEBMError(
                    f"{where} is missing, truncated or not an image ({one_line(exc)}); "
                    f"replace {what} or delete it"
                ) from None
            gray = gray and bool((out[i, 0] == out[i, 1]).all() and (out[i, 1] == out[i, 2]).all())
    return np.ascontiguousarray(out[:, :1]) if gray and len(names) else out


def read_celeba_partition(path: str | os.PathLike) -> dict[str, int]:
    """Read CelebA's ``list_eval_partition.txt``: lines ``000001.jpg 0`` (0 train, 1 valid, 2 test).

    Returns:
        File name -> partition.

    Raises:
        LatentEBMError: unreadable file or a malformed line (naming its number).
    """
    path = pathlib.Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)}); {REDOWNLOAD}") from None
    partition = {}
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise LatentEBMError(
                f"{path} line {number} is not '<file> <0|1|2>' (it reads {line.strip()[:40]!r}); "
                f"{REDOWNLOAD}"
            )
        partition[fields[0]] = int(fields[1])
    return partition


def scan_image_folder(
    root: str | os.PathLike,
) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Split an image folder into train and test files and label them.

    Splits: ``root/train`` and ``root/test`` when both exist; else every image under ``root``,
    sorted, shuffled by ``numpy.random.default_rng(0)``, the first 90% (``int(0.9 N)``) train
    and the rest test. Labels: when no image sits directly in the split's folder, each image's
    class is its first-level subfolder (``<split>/<class>/...``), numbered in the sorted order of
    all class names; else every label is 0.

    Returns:
        ``(train_files, train_labels, test_files, test_labels)``: names relative to ``root``,
        labels ``int64`` ``(N,)``.

    Raises:
        LatentEBMError: unreadable folder, or fewer than one image in a split.
    """
    root = pathlib.Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        splits = [[f"{s}/{n}" for n in list_images(root / s)] for s in ("train", "test")]
        inner = [[n.split("/", 1)[1] for n in files] for files in splits]
    else:
        files = list_images(root)
        if len(files) < 2:
            raise LatentEBMError(
                f"{root} holds {len(files)} image file(s) ({', '.join(IMAGE_SUFFIXES)}); "
                f"put at least 2 images in it (or train/ and test/ subfolders)"
            )
        order = np.random.default_rng(0).permutation(len(files))
        n_train = int(0.9 * len(files))
        splits = [[files[i] for i in order[:n_train]], [files[i] for i in order[n_train:]]]
        inner = splits
    for split, files in zip(("train", "test"), splits, strict=True):
        if not files:
            raise LatentEBMError(f"{root / split} holds no image files; put images in it")
    by_class = all("/" in name for names in inner for name in names)
    classes = sorted({name.split("/", 1)[0] for names in inner for name in names})
    index = {c: i for i, c in enumerate(classes)}
    labels = [
        np.array([index[n.split("/", 1)[0]] if by_class else 0 for n in names], dtype=np.int64)
        for names in inner
    ]
    return splits[0], labels[0], splits[1], labels[1]
