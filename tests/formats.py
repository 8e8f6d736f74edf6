"""Writers of tiny data set files in exactly the official layouts, for tests.

Each writer builds the expected arrays first, in the library's layout (images ``uint8``
``(N, C, H, W)``, labels ``int64`` ``(N,)``), then encodes them the way the publisher did, so a
test compares what a loader returns with what was written.
"""

from __future__ import annotations

import builtins
import gzip
import io
import pathlib
import pickle
import struct
import tarfile
import zipfile
from typing import ClassVar

import numpy as np
from PIL import Image

__all__ = [
    "CELEBA_SHAPE",
    "IDX_FILES",
    "cifar10_tar",
    "idx_bytes",
    "py2_pickle",
    "smooth_images",
    "write_celeba",
    "write_cifar10",
    "write_file",
    "write_idx_set",
    "write_imagefolder",
    "write_svhn",
]

CELEBA_SHAPE = (218, 178)  # (height, width) of an aligned CelebA image


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The IDX encoding of ``array``: magic, then big-endian uint32 sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_file(path: pathlib.Path, payload: bytes) -> pathlib.Path:
    """Write ``payload``, gzip-compressed when the name ends in ``.gz``."""
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


IDX_FILES = (  # (images, labels) of the train, then the test split
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)


def write_idx_set(
    folder: pathlib.Path, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four gzipped IDX files of MNIST / Fashion-MNIST: random 28x28 images, labels
    ``i % 10`` (every class in each split once it has 10 images).

    Returns:
        ``train_x`` ``(N, 1, 28, 28)``, ``train_y``, ``test_x``, ``test_y``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    splits = zip(("train", "test"), (n_train, n_test), IDX_FILES, strict=True)
    for split, n, (images, labels) in splits:
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_file(folder / images, idx_bytes(x))
        write_file(folder / labels, idx_bytes(y))
        out[f"{split}_x"], out[f"{split}_y"] = x[:, None], y.astype(np.int64)
    return out


def smooth_images(n: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``uint8`` ``(n, height, width, 3)`` images of smooth colour gradients (they survive JPEG
    and have structure a wrong crop would show), different for each image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(-1, 1, size=(3, 3))
        phase = rng.uniform(0, 6, size=3)
        for ch in range(3):
            wave = np.sin(6 * (a[ch] * yy + b[ch] * xx) + phase[ch]) + c[ch] * yy
            out[i, :, :, ch] = np.clip(127.5 + 90 * wave, 0, 255).astype(np.uint8)
    return out


def write_svhn(
    folder: pathlib.Path, n_train: int = 5, n_test: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``train_32x32.mat`` and ``test_32x32.mat``: ``X`` ``uint8`` ``(32, 32, 3, N)``,
    ``y`` ``uint8`` ``(N, 1)`` in ``1..10`` (10 for the digit 0), MATLAB v5, compressed.

    Returns:
        ``train_x`` ``(n_train, 3, 32, 32)``, ``train_y`` (digits ``0..9``), ``test_x``,
        ``test_y``. Every digit, 0 included, occurs when ``n_train >= 10``.
    """
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    expected = {}
    for split, n, filename in (
        ("train", n_train, "train_32x32.mat"),
        ("test", n_test, "test_32x32.mat"),
    ):
        images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        digits = (np.arange(n) + rng.integers(10)) % 10
        x = np.asfortranarray(images.transpose(2, 3, 1, 0))  # X[h, w, c, n] = image n
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / filename, {"X": x, "y": y}, do_compression=True)
        expected[f"{split}_x"], expected[f"{split}_y"] = images, digits.astype(np.int64)
    return expected


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did for CIFAR-10 (protocol 2): ``bytes`` and ``str`` become
    Python 2 ``str`` opcodes (read back as ``bytes`` with ``encoding="bytes"``), and numpy's
    array reconstructor is named ``numpy.core.multiarray._reconstruct``. The only globals are
    numpy's, as in the published files."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled the way the CIFAR-10 batches were (see :class:`_Py2Pickler`)."""
    out = io.BytesIO()
    _Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def cifar10_tar(path: pathlib.Path, members: dict[str, bytes]) -> pathlib.Path:
    """Write a tar.gz holding ``cifar-10-batches-py/`` and each ``members`` file in it."""
    with tarfile.open(path, "w:gz") as tar:
        folder = tarfile.TarInfo("cifar-10-batches-py")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        tar.addfile(folder)
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def write_cifar10(
    folder: pathlib.Path, n_per_batch: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write ``cifar-10-python.tar.gz`` as published: ``data_batch_1`` .. ``data_batch_5``,
    ``test_batch`` (pickled dicts with bytes keys ``batch_label``, ``labels``, ``data``
    ``uint8`` ``(n, 3072)``, ``filenames``), ``batches.meta`` and ``readme.html``.

    Returns:
        ``train_x`` ``(5 n_per_batch, 3, 32, 32)`` in batch order, ``train_y``, ``test_x``,
        ``test_y``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    members, xs, ys = {}, [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        images = rng.integers(0, 256, size=(n_per_batch, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(n_per_batch) * 3 + i) % 10]
        batch = {
            b"batch_label": f"batch {i + 1} of 6".encode(),
            b"labels": labels,
            b"data": images.reshape(n_per_batch, 3072),  # R plane, G plane, B plane, row-major
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(n_per_batch)],
        }
        members[name] = py2_pickle(batch)
        xs.append(images)
        ys.append(np.array(labels, dtype=np.int64))
    label_names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    label_names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    meta = {b"num_cases_per_batch": n_per_batch, b"label_names": label_names, b"num_vis": 3072}
    members["batches.meta"] = py2_pickle(meta)
    members["readme.html"] = b"<html></html>"
    cifar10_tar(folder / "cifar-10-python.tar.gz", members)
    return {
        "train_x": np.concatenate(xs[:5]),
        "train_y": np.concatenate(ys[:5]),
        "test_x": xs[5],
        "test_y": ys[5],
    }


def write_celeba(
    folder: pathlib.Path,
    n: int = 10,
    partition: bool = True,
    zip: bool = False,  # write img_align_celeba.zip instead of the folder (shadows the builtin)
    seed: int = 0,
) -> dict[str, object]:
    """Write ``n`` 178x218 JPEGs named ``000001.jpg``... into ``img_align_celeba/`` (or into
    ``img_align_celeba.zip`` under that folder name) and ``list_eval_partition.txt``.

    Partitions are contiguous like the official ones: the first 60% train (0), the next 20%
    valid (1), the rest test (2).

    Returns:
        ``names`` (file names), ``partition`` (their partitions) and ``paths`` (the JPEGs on
        disk; for the zip, a copy in ``folder/jpeg-copies``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    height, width = CELEBA_SHAPE
    images = smooth_images(n, height, width, seed)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    parts = [0 if i < 0.6 * n else 1 if i < 0.8 * n else 2 for i in range(n)]
    target = folder / ("jpeg-copies" if zip else "img_align_celeba")
    target.mkdir(exist_ok=True)
    paths = []
    for name, image in builtins.zip(names, images, strict=True):
        Image.fromarray(image).save(target / name, quality=90)
        paths.append(target / name)
    if zip:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
            archive.writestr("img_align_celeba/", b"")  # the folder entry, as in the original
            for path in paths:
                archive.write(path, f"img_align_celeba/{path.name}")
    if partition:
        lines = "".join(f"{name} {p}\n" for name, p in builtins.zip(names, parts, strict=True))
        (folder / "list_eval_partition.txt").write_text(lines)
    return {"names": names, "partition": parts, "paths": paths}


def write_imagefolder(
    folder: pathlib.Path,
    n: int = 10,
    size: int | tuple[int, int] = 8,
    classes: list[str] | None = None,
    split: bool = False,
    seed: int = 0,
    mode: str = "RGB",
    suffix: str = ".png",
) -> dict[str, tuple[np.ndarray, int]]:
    """Write ``n`` images (``size`` square, or ``(width, height)``) under ``folder``.

    Layout: ``folder/img_000.png``; with ``classes``, ``folder/<class>/img_000.png`` with image
    ``i`` in class ``classes[i % len(classes)]``; with ``split``, under ``train/`` (the first
    ``n - n // 4`` images) and ``test/``. ``mode`` ``"L"`` writes grayscale images.

    Returns:
        Relative path -> (``uint8`` ``(C, H, W)`` pixels written, label: the index of the class
        in ``sorted(classes)``, or 0).
    """
    width, height = (size, size) if isinstance(size, int) else size
    images = smooth_images(n, height, width, seed)
    order = sorted(classes) if classes else []
    written = {}
    for i, image in enumerate(images):
        parts = []
        if split:
            parts.append("train" if i < n - n // 4 else "test")
        label = 0
        if classes:
            cls = classes[i % len(classes)]
            parts.append(cls)
            label = order.index(cls)
        rel = "/".join([*parts, f"img_{i:03d}{suffix}"])
        pil = Image.fromarray(image)
        if mode == "L":
            pil = pil.convert("L")
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        pil.save(folder / rel)
        pixels = np.asarray(pil)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        written[rel] = (pixels, label)
    return written
