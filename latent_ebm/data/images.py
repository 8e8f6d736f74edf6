"""Readers of image files in a folder or a ``.zip`` (CelebA, CelebA-HQ, any image folder).

Images are decoded with Pillow, centre-cropped to their largest square and resized; results are
numpy ``uint8`` ``(N, C, H, W)``, labels ``int64`` ``(N,)``. A missing, truncated or undecodable
file is a one-line :class:`LatentEBMError` naming it, never a traceback from Pillow or zipfile.

- :func:`list_images`, :func:`read_images`: the image files of a folder or archive, decoded.
- :func:`read_celeba_partition`, :func:`scan_image_folder`: which files form which split.
- :func:`image_file_stats`: names, sizes and times, for the cache's fingerprint of a folder.
"""

from __future__ import annotations

import contextlib
import io
import os
import pathlib
import zipfile
from collections.abc import Sequence

import numpy as np

from latent_ebm.data.formats import REDOWNLOAD
from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "image_file_stats",
    "list_images",
    "read_celeba_partition",
    "read_images",
    "scan_image_folder",
]

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".webp")  # matched case-insensitively
MAX_PIXELS = 1 << 26  # 8192 x 8192: a larger image is refused before it is decoded
_MAX_MEMBER_BYTES = 1 << 28  # an image in a zip: CelebA's are ~10 kB, an 8192^2 BMP ~200 MB
_MAX_PARTITION_BYTES = 1 << 24  # list_eval_partition.txt: 202,599 lines, ~2.8 MB


def _is_image(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def image_file_stats(folder: pathlib.Path) -> list[tuple[str, int, int]]:
    """``(relative posix name, bytes, mtime_ns)`` of every image file under ``folder``, sorted;
    hidden files and folders (names starting with ``.``) are skipped. A folder reached twice
    (through a symbolic link, e.g. one that points back up) is read once."""
    found, stack = [], [folder]
    seen = {_identity(folder)}
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    identity = _identity(pathlib.Path(entry.path))
                    if identity not in seen:  # a link cycle would otherwise never end
                        seen.add(identity)
                        stack.append(pathlib.Path(entry.path))
                elif _is_image(entry.name) and entry.is_file():
                    stat = entry.stat()
                    name = pathlib.Path(entry.path).relative_to(folder).as_posix()
                    found.append((name, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


def _identity(folder: pathlib.Path) -> tuple[int, int]:
    """A folder's (device, inode): the same for every path that leads to it."""
    stat = folder.stat()
    return stat.st_dev, stat.st_ino


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


class _TooLarge(Exception):
    """An image or archive member larger than the readers accept (the message says how)."""


def _decode(raw: io.BytesIO | pathlib.Path, size: int) -> np.ndarray:
    """One image -> ``uint8`` ``(3, size, size)``: RGB, largest central square, resized.

    Raises:
        _TooLarge: the header declares more than :data:`MAX_PIXELS` pixels (nothing decoded).
    """
    from PIL import Image  # deferred: only the image loaders need Pillow

    with Image.open(raw) as img:  # reads the header only
        width, height = img.size
        if width * height > MAX_PIXELS:
            raise _TooLarge(
                f"it declares {width}x{height} = {width * height:,} pixels, more than the "
                f"{MAX_PIXELS:,} accepted"
            )
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
            what = "it" if archive is None else "the archive"
            try:
                raw = source / name if archive is None else io.BytesIO(_read_member(archive, name))
                out[i] = _decode(raw, size)
            except _TooLarge as exc:
                raise LatentEBMError(
                    f"{where} is too large: {exc}; replace {what} or delete it"
                ) from None
            except Exception as exc:  # Pillow and zipfile raise many types for a damaged file
                raise LatentEBMError(
                    f"{where} is missing, truncated or not an image ({one_line(exc)}); "
                    f"replace {what} or delete it"
                ) from None
            gray = gray and bool((out[i, 0] == out[i, 1]).all() and (out[i, 1] == out[i, 2]).all())
    return np.ascontiguousarray(out[:, :1]) if gray and len(names) else out


def _read_member(archive: zipfile.ZipFile, name: str) -> bytes:
    """The bytes of an archive member, refused before reading when it declares more than
    :data:`_MAX_MEMBER_BYTES` (zipfile stops at the declared size, so a member that expands
    beyond it is an error, not a flood)."""
    size = archive.getinfo(name).file_size
    if size > _MAX_MEMBER_BYTES:
        raise _TooLarge(
            f"it declares {size:,} bytes uncompressed, more than the {_MAX_MEMBER_BYTES:,} "
            f"accepted for an image"
        )
    return archive.read(name)


def read_celeba_partition(path: str | os.PathLike) -> dict[str, int]:
    """Read CelebA's ``list_eval_partition.txt``: lines ``000001.jpg 0`` (0 train, 1 valid, 2 test).

    Returns:
        File name -> partition.

    Raises:
        LatentEBMError: unreadable file or a malformed line (naming its number).
    """
    path = pathlib.Path(path)
    try:
        with path.open("rb") as f:  # never more than a partition list can be
            raw = f.read(_MAX_PARTITION_BYTES + 1)
        if len(raw) > _MAX_PARTITION_BYTES:
            raise LatentEBMError(
                f"{path} is larger than {_MAX_PARTITION_BYTES:,} bytes: it is not CelebA's "
                f"partition list (about 2.8 MB); {REDOWNLOAD}"
            )
        lines = raw.decode("utf-8").splitlines()
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
