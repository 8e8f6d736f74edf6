"""Data sets: a registry of loaders that return whole splits as ``uint8`` image tensors.

Every loader returns a :class:`Dataset` holding ``(N, C, H, W)`` ``uint8`` images (values
``0..255``) and ``int64`` labels for a train and a test split; :func:`to_float` scales a batch
to ``[-1, 1]``. Each source is read from its own published file format:

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), always available offline. It
  has no official split: a fixed permutation (``numpy.random.default_rng(0)``) puts 80% (1,437)
  in train and 20% (360) in test.
- ``mnist``, ``fashion-mnist``: the four IDX files ``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``.
  Missing MNIST files are downloaded (official source, then a mirror; MD5 verified). Missing
  Fashion-MNIST files are an error that says how to get them
  (``apt-get install dataset-fashion-mnist`` on Debian).

Data directory (:func:`resolve_data_dir`), first that applies:

1. the ``data_dir`` argument (``--data-dir``): files are looked up directly in it;
2. ``$LATENT_EBM_DATA/<name>`` when the environment variable ``LATENT_EBM_DATA`` is set;
3. a system folder when one exists (``/usr/share/datasets/fashion-mnist``, from the Debian
   package ``dataset-fashion-mnist``);
4. ``~/.cache/latent-ebm/<name>``.

Adding a data set is one loader function ``(root, allow_download) -> Dataset`` plus one entry in
``_LOADERS`` (and optionally ``_SYSTEM_DIRS``).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pathlib
import struct
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "DATASETS",
    "Dataset",
    "download",
    "holdout_split",
    "load_dataset",
    "read_idx",
    "resolve_data_dir",
    "to_float",
    "to_uint8",
]

ENV_VAR = "LATENT_EBM_DATA"
_TIMEOUT_S = 10.0  # per-URL network timeout of a download
_REDOWNLOAD = "delete it and download it again"


@dataclass
class Dataset:
    """A data set held in memory.

    Attributes:
        name: Registry name, e.g. ``"mnist"``.
        train_x: Training images, ``uint8`` ``(N, C, H, W)``, values ``0..255``, contiguous.
        train_y: Training labels, ``int64`` ``(N,)``.
        test_x: Test images, ``uint8`` ``(M, C, H, W)``.
        test_y: Test labels, ``int64`` ``(M,)``.
        holdout: The class held out of training by :func:`holdout_split`, else ``None``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    holdout: int | None = None  # the anomalous class of a hold-one-class-out split

    @property
    def shape(self) -> tuple[int, int, int]:
        """The image shape ``(C, H, W)``."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        """One more than the largest label of either split (labels are ``0..K-1``)."""
        return int(torch.cat([self.train_y, self.test_y]).max()) + 1


def holdout_split(data: Dataset, holdout: int, seed: int = 0) -> Dataset:
    """Hold-one-class-out split of the anomaly protocol (DESIGN §7, after LEBM/MEG).

    Train and test are pooled and shuffled with ``seed``; the first 80% without class
    ``holdout`` is the new training split, the remaining 20% plus every image of class
    ``holdout`` the new test split (labels kept: ``test_y == holdout`` marks the anomalies).
    """
    labels = torch.cat([data.train_y, data.test_y])
    classes = sorted(set(labels.tolist()))
    if holdout not in classes:
        raise LatentEBMError(
            f"holdout class {holdout} is not a label of {data.name} "
            f"(labels {classes[0]}..{classes[-1]})"
        )
    images = torch.cat([data.train_x, data.test_x])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    first = torch.zeros(len(labels), dtype=torch.bool)
    first[order[: int(0.8 * len(labels))]] = True
    anomalous = labels == holdout
    train, test = first & ~anomalous, ~first | anomalous
    # Keep the shuffled order inside each split.
    train_idx, test_idx = order[train[order]], order[test[order]]
    return Dataset(
        data.name,
        images[train_idx].contiguous(),
        labels[train_idx],
        images[test_idx].contiguous(),
        labels[test_idx],
        holdout,
    )


def to_float(x: torch.Tensor) -> torch.Tensor:
    """Scale ``uint8`` images ``(B, C, H, W)`` to ``float32`` in ``[-1, 1]``: ``x / 127.5 - 1``."""
    return (x.to(torch.float32) - 127.5) / 127.5  # exact subtraction first: no cancellation


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_float`: images in ``[-1, 1]`` (clamped) to ``uint8`` ``0..255``."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


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
            f"{path} is not a valid gzip file or is corrupt ({one_line(exc)}); {_REDOWNLOAD}"
        ) from None
    except OSError as exc:
        raise LatentEBMError(f"could not read {path} ({one_line(exc)})") from None

    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise LatentEBMError(f"{path} is not a valid IDX file (bad magic number); {_REDOWNLOAD}")
    type_code, ndim = raw[2], raw[3]
    if type_code != 0x08:
        raise LatentEBMError(
            f"{path} holds IDX type code 0x{type_code:02x} but only unsigned bytes (0x08) are "
            f"supported; {_REDOWNLOAD}"
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise LatentEBMError(f"{path} is truncated inside its IDX header; {_REDOWNLOAD}")
    dims = struct.unpack(f">{ndim}I", raw[4:offset])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - offset != count:
        raise LatentEBMError(
            f"{path} is truncated or corrupt: its header promises {count} data bytes but it "
            f"holds {len(raw) - offset}; {_REDOWNLOAD}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=offset).reshape(dims).copy()


def download(urls: Sequence[str], dest: str | os.PathLike, md5: str | None = None) -> pathlib.Path:
    """Download a file, trying each URL in turn, and move it atomically to ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, are checked against ``md5`` (skipped
    when ``None``), then ``os.replace``-d into place; nothing is left behind on failure.

    Returns:
        ``dest`` as a path.

    Raises:
        LatentEBMError: every URL failed (offline, HTTP error, checksum mismatch); the message
            names the file and the URL to fetch it from by hand.
    """
    dest = pathlib.Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LatentEBMError(
            f"cannot create {dest.parent} to download {dest.name} into ({one_line(exc)}); "
            f"pass --data-dir with a writable folder"
        ) from None
    failures = []
    for url in urls:
        tmp_name = None
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            digest = hashlib.md5()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r,
            ):
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if md5 is not None and digest.hexdigest() != md5:
                failures.append(f"{url}: MD5 checksum {digest.hexdigest()} != expected {md5}")
                continue
            os.replace(tmp_name, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            failures.append(f"{url}: {one_line(exc)}")
        finally:
            if tmp_name is not None and os.path.exists(tmp_name):
                os.remove(tmp_name)
    raise LatentEBMError(
        f"could not download {dest.name} into {dest.parent} ({'; '.join(failures)}); download it "
        f"by hand from {urls[0]} and put it in {dest.parent} (or pass --data-dir)"
    )


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> pathlib.Path:
    """Return the folder of data set ``name``'s files.

    Order: ``data_dir`` itself, else ``$LATENT_EBM_DATA/<name>``, else the system folder when it
    exists (``/usr/share/datasets/fashion-mnist``), else ``~/.cache/latent-ebm/<name>``.
    """
    _check_name(name)
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR]).expanduser() / name
    system_dir = _SYSTEM_DIRS.get(name)
    if system_dir is not None and system_dir.is_dir():
        return system_dir
    return pathlib.Path.home() / ".cache" / "latent-ebm" / name


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    holdout: int | None = None,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) into memory.

    Arguments:
        name: Registry name.
        data_dir: Folder holding the files (see :func:`resolve_data_dir`); ignored by ``digits``.
        download: Whether missing files may be downloaded (for sources that support it).
        holdout: Return the anomaly protocol's split without this class (:func:`holdout_split`).

    Raises:
        LatentEBMError: unknown name, or a missing or corrupt file.
    """
    root = resolve_data_dir(name, data_dir)
    data = _LOADERS[name](root, download)
    return data if holdout is None else holdout_split(data, holdout)


# Loaders: (root, allow_download) -> Dataset.


def _load_digits(root: pathlib.Path, allow_download: bool) -> Dataset:
    from sklearn.datasets import load_digits  # deferred: importing scikit-learn is slow

    bunch = load_digits()
    images = np.rint(bunch.data * 255.0 / 16.0).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    n_train = int(0.8 * len(labels))  # 1,437 of 1,797
    train, test = order[:n_train], order[n_train:]
    return Dataset(
        name="digits",
        train_x=torch.from_numpy(np.ascontiguousarray(images[train])),
        train_y=torch.from_numpy(labels[train]),
        test_x=torch.from_numpy(np.ascontiguousarray(images[test])),
        test_y=torch.from_numpy(labels[test]),
    )


_IDX_FILES = (  # (images, labels) per split
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)
_MNIST_URLS = (
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
)
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_FASHION_REPO = "https://github.com/zalandoresearch/fashion-mnist"


def _load_idx_dataset(
    name: str, root: pathlib.Path, fetch: Callable[[pathlib.Path], None]
) -> Dataset:
    """Read the IDX train/test pairs from ``root``; ``fetch(path)`` is called for a missing file."""
    splits = []
    for images_name, labels_name in _IDX_FILES:
        images_path, labels_path = root / images_name, root / labels_name
        for path in (images_path, labels_path):
            if not path.is_file():
                fetch(path)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3:
            raise LatentEBMError(f"{images_path} is not an IDX image file (expected 3 dimensions)")
        if labels.ndim != 1:
            raise LatentEBMError(f"{labels_path} is not an IDX label file (expected 1 dimension)")
        if len(images) != len(labels):
            raise LatentEBMError(
                f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
                f"labels; the files do not belong together: delete both and download them again"
            )
        x = torch.from_numpy(images).unsqueeze(1).contiguous()  # (N, 1, H, W)
        splits.append((x, torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = splits
    if train_x.shape[1:] != test_x.shape[1:]:
        raise LatentEBMError(
            f"train and test images in {root} differ in size ({tuple(train_x.shape[2:])} vs "
            f"{tuple(test_x.shape[2:])}); delete the files and download them again"
        )
    return Dataset(name, train_x, train_y, test_x, test_y)


def _load_mnist(root: pathlib.Path, allow_download: bool) -> Dataset:
    def fetch(path: pathlib.Path) -> None:
        urls = [base + path.name for base in _MNIST_URLS]
        if not allow_download:
            raise LatentEBMError(
                f"{path.name} not found in {root}; download it from {urls[0]} into that folder "
                f"(or allow downloading)"
            )
        download(urls, path, _MNIST_MD5[path.name])

    return _load_idx_dataset("mnist", root, fetch)


def _load_fashion_mnist(root: pathlib.Path, allow_download: bool) -> Dataset:
    def fetch(path: pathlib.Path) -> None:
        raise LatentEBMError(
            f"{path.name} not found in {root}; on Debian run `apt-get install "
            f"dataset-fashion-mnist`, or download the four files from {_FASHION_REPO} into "
            f"{root} (or into any folder and pass --data-dir)"
        )

    return _load_idx_dataset("fashion-mnist", root, fetch)


_LOADERS: dict[str, Callable[[pathlib.Path, bool], Dataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion-mnist": _load_fashion_mnist,
}
_SYSTEM_DIRS: dict[str, pathlib.Path] = {
    "fashion-mnist": pathlib.Path("/usr/share/datasets/fashion-mnist"),
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)  # the registry's names


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise LatentEBMError(f"unknown data set {name!r}; choose one of: {', '.join(_LOADERS)}")
