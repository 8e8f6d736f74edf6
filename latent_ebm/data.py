"""Data sets: a registry of loaders that return whole splits as ``uint8`` image tensors.

Every loader returns a :class:`Dataset` holding ``(N, C, H, W)`` ``uint8`` images (values
``0..255``) and ``int64`` labels for a train and a test split; :func:`to_float` scales a batch
to ``[-1, 1]``. Each source is read from its own published file format (readers in
:mod:`latent_ebm.formats`):

- ``digits``: scikit-learn's bundled 8x8 digits (1,797 images), always available offline. It
  has no official split: a fixed permutation (``numpy.random.default_rng(0)``) puts 80% (1,437)
  in train and 20% (360) in test.
- ``mnist``, ``fashion-mnist``: the four IDX files ``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``.
  Missing MNIST files are downloaded (official source, then a mirror; MD5 verified). Missing
  Fashion-MNIST files are an error that says how to get them
  (``apt-get install dataset-fashion-mnist`` on Debian).
- ``svhn``: ``train_32x32.mat`` (73,257 images) and ``test_32x32.mat`` (26,032), labels
  ``0..9`` (the files' label 10 is the digit 0). Downloaded when missing (MD5 verified).
- ``cifar10``: ``cifar-10-python.tar.gz`` (50,000 train, 10,000 test), read without
  extracting. Downloaded when missing (MD5 verified).
- ``celeba``: the aligned images, folder ``img_align_celeba/`` or ``img_align_celeba.zip``,
  with ``list_eval_partition.txt``. Each 178x218 image is cropped to its central 178x178 square
  and resized to ``size`` (64). Train: the first 40,000 images of the official train partition
  (paper Appendix A.1); test: the official test partition (19,962). Labels are 0. Not
  downloadable (Google Drive): a missing file is an error that says where to get it.
- ``celeba-hq``: a folder of CelebA-HQ images of any resolution, read like ``imagefolder``,
  resized to ``size`` (128).
- ``imagefolder``: any folder of images (:func:`latent_ebm.formats.scan_image_folder` gives the
  split and labels), each cropped to its central square and resized to ``size`` (64); one
  channel when every image is grayscale, else RGB.

The sets read from ``.mat``, tar or image files are decoded once: the arrays and a fingerprint
of the source go to a cache file beside it (:func:`latent_ebm.cache.cached_arrays`), e.g.
``svhn.cache.npz`` or ``celeba-64px.cache.npz``; a changed source rebuilds it.

Data directory (:func:`resolve_data_dir`), first that applies:

1. the ``data_dir`` argument (``--data-dir``): files are looked up directly in it;
2. ``$LATENT_EBM_DATA/<name>`` when the environment variable ``LATENT_EBM_DATA`` is set;
3. a system folder when one exists (``/usr/share/datasets/fashion-mnist``, from the Debian
   package ``dataset-fashion-mnist``);
4. ``~/.cache/latent-ebm/<name>``.

Adding a data set is one loader function ``(root, allow_download, size) -> Dataset`` plus one
entry in ``_LOADERS`` (and in ``_NATIVE_SIZE`` or ``_DEFAULT_SIZE``, optionally
``_SYSTEM_DIRS``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.request
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latent_ebm import cache, formats
from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "DATASETS",
    "Dataset",
    "dataset_info",
    "download",
    "holdout_split",
    "load_dataset",
    "resolve_data_dir",
    "to_float",
    "to_uint8",
]

ENV_VAR = "LATENT_EBM_DATA"
_TIMEOUT_S = 10.0  # per-URL network timeout of a download


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


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    md5: str | None = None,
    size: int | None = None,
) -> pathlib.Path:
    """Download a file, trying each URL in turn, and move it atomically to ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, are checked against ``md5`` (skipped
    when ``None``), then ``os.replace``-d into place; nothing is left behind on failure.
    ``size`` (bytes, optional) is only quoted in the error message.

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
            f"cannot create {dest.parent} to download {dest.name}{_size_note(size)} into "
            f"({one_line(exc)}); "
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
        f"could not download {dest.name}{_size_note(size)} into {dest.parent} "
        f"({'; '.join(failures)}); download it by hand from {urls[0]} and put it in "
        f"{dest.parent} (or pass --data-dir)"
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
    size: int | None = None,
) -> Dataset:
    """Load data set ``name`` (one of :data:`DATASETS`) into memory.

    Arguments:
        name: Registry name.
        data_dir: Folder holding the files (see :func:`resolve_data_dir`); ignored by ``digits``.
        download: Whether missing files may be downloaded (for sources that support it).
        holdout: Return the anomaly protocol's split without this class (:func:`holdout_split`).
        size: Image side in pixels for ``celeba`` (default 64), ``celeba-hq`` (128) and
            ``imagefolder`` (64); ``None`` is the default. The other sets have a fixed size:
            only ``None`` or their own size is accepted.

    Raises:
        LatentEBMError: unknown name, a bad size, or a missing or corrupt file.
    """
    root = resolve_data_dir(name, data_dir)
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise LatentEBMError(f"image size must be a positive integer, not {size!r}")
        native = _NATIVE_SIZE.get(name)
        if native is not None and size != native:
            raise LatentEBMError(
                f"{name} images are {native}x{native}: the size is fixed; leave the size unset "
                f"(data.size) or set it to {native}"
            )
    data = _LOADERS[name](root, download, size)
    return data if holdout is None else holdout_split(data, holdout)


def _size_note(size: int | None) -> str:
    """`` (182,040,794 bytes, 182 MB)``, or nothing when the size is unknown."""
    return "" if size is None else f" ({size:,} bytes, {size / 1e6:,.0f} MB)"


def _from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Dataset:
    """A :class:`Dataset` from ``train_x``, ``train_y``, ``test_x``, ``test_y`` arrays."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    return Dataset(
        name, tensors["train_x"], tensors["train_y"], tensors["test_x"], tensors["test_y"]
    )


# Loaders: (root, allow_download, size) -> Dataset; size is None or checked by load_dataset.


def _load_digits(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
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
        images, labels = formats.read_idx(images_path), formats.read_idx(labels_path)
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


def _load_mnist(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    def fetch(path: pathlib.Path) -> None:
        urls = [base + path.name for base in _MNIST_URLS]
        if not allow_download:
            raise LatentEBMError(
                f"{path.name} not found in {root}; download it from {urls[0]} into that folder "
                f"(or allow downloading)"
            )
        download(urls, path, _MNIST_MD5[path.name])

    return _load_idx_dataset("mnist", root, fetch)


def _load_fashion_mnist(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    def fetch(path: pathlib.Path) -> None:
        raise LatentEBMError(
            f"{path.name} not found in {root}; on Debian run `apt-get install "
            f"dataset-fashion-mnist`, or download the four files from {_FASHION_REPO} into "
            f"{root} (or into any folder and pass --data-dir)"
        )

    return _load_idx_dataset("fashion-mnist", root, fetch)


@dataclass(frozen=True)
class _Official:
    """A file downloadable from its publisher."""

    url: str
    md5: str
    size: int  # bytes


_OFFICIAL = {
    "train_32x32.mat": _Official(
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
        182_040_794,
    ),
    "test_32x32.mat": _Official(
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
        64_275_384,
    ),
    "cifar-10-python.tar.gz": _Official(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        170_498_071,
    ),
}


def _official_file(root: pathlib.Path, filename: str, allow_download: bool) -> pathlib.Path:
    """``root/filename``, downloaded from its publisher first when missing and allowed."""
    path, spec = root / filename, _OFFICIAL[filename]
    if not path.is_file():
        if not allow_download:
            raise LatentEBMError(
                f"{filename}{_size_note(spec.size)} not found in {root}; download it from "
                f"{spec.url} into that folder (or allow downloading, or pass --data-dir)"
            )
        download([spec.url], path, spec.md5, spec.size)
    return path


def _check_official(path: pathlib.Path) -> None:
    """A file of exactly the official size must have the official MD5 (bytes damaged in place);
    a file of another size is left to the decoder, which rejects a truncated one."""
    spec = _OFFICIAL[path.name]
    if path.stat().st_size != spec.size:
        return
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != spec.md5:
        raise LatentEBMError(
            f"{path} has the official size but MD5 checksum {digest.hexdigest()} != expected "
            f"{spec.md5}: it is corrupt; {formats.REDOWNLOAD} from {spec.url}"
        )


def _load_svhn(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    files = [_official_file(root, f, allow_download) for f in ("train_32x32.mat", "test_32x32.mat")]

    def build() -> dict[str, np.ndarray]:
        splits = {}
        for split, path in zip(("train", "test"), files, strict=True):
            _check_official(path)
            splits[f"{split}_x"], splits[f"{split}_y"] = formats.read_svhn_mat(path)
        return splits

    source = [cache.fingerprint(path) for path in files]
    return _from_arrays("svhn", cache.cached_arrays("svhn", root, "svhn.cache.npz", source, build))


def _load_cifar10(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    path = _official_file(root, "cifar-10-python.tar.gz", allow_download)

    def build() -> dict[str, np.ndarray]:
        _check_official(path)
        (train_x, train_y), (test_x, test_y) = formats.read_cifar10_tar(path)
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    source = cache.fingerprint(path)
    arrays = cache.cached_arrays("cifar10", root, "cifar10.cache.npz", source, build)
    return _from_arrays("cifar10", arrays)


_CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
_CELEBA_TRAIN = 40_000  # training images: the first of the official train partition (paper A.1)


def _load_celeba(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    size = size or _DEFAULT_SIZE["celeba"]
    folder, archive = root / "img_align_celeba", root / "img_align_celeba.zip"
    partition = root / "list_eval_partition.txt"
    images = folder if folder.is_dir() else archive if archive.is_file() else None
    if images is None:
        raise LatentEBMError(
            f"CelebA not found in {root}: put there the aligned images, as the folder "
            f"img_align_celeba/ (202,599 JPEGs, about 1.4 GB) or the archive img_align_celeba.zip "
            f"(1,443,490,838 bytes, 1.4 GB), and the official split list_eval_partition.txt "
            f"(202,599 lines); get them from {_CELEBA_PAGE} (Align&Cropped Images, Google "
            f"Drive), or pass --data-dir"
        )
    limit = _CELEBA_TRAIN

    def build() -> dict[str, np.ndarray]:
        names = formats.list_images(images)
        if partition.is_file():
            by_base = {name.rsplit("/", 1)[-1]: name for name in names}
            split = formats.read_celeba_partition(partition)
            train = sorted(f for f, p in split.items() if p == 0)[:limit]
            test = sorted(f for f, p in split.items() if p == 2)
            missing = [f for f in train + test if f not in by_base]
            if missing:
                raise LatentEBMError(
                    f"{images} lacks {missing[0]} and {len(missing) - 1} more image(s) listed in "
                    f"{partition.name}; the images are incomplete: download them again"
                )
            train, test = [by_base[f] for f in train], [by_base[f] for f in test]
        else:
            warnings.warn(
                f"{partition} not found: splitting CelebA by file order (first {limit:,} train, "
                f"last 10% test); get the official file from {_CELEBA_PAGE} for the paper's split",
                stacklevel=5,
            )
            n_test = max(1, len(names) // 10)
            train, test = names[: len(names) - n_test][:limit], names[len(names) - n_test :]
        if not train or not test:
            raise LatentEBMError(f"{images} holds too few images for a train and a test split")
        x = formats.read_images(images, train + test, size)
        zeros = np.zeros(len(x), dtype=np.int64)
        n = len(train)
        return {"train_x": x[:n], "train_y": zeros[:n], "test_x": x[n:], "test_y": zeros[n:]}

    source = {
        "images": cache.fingerprint(images),
        "partition": cache.fingerprint(partition),
        "size": size,
        "train": limit,
    }
    arrays = cache.cached_arrays("celeba", root, f"celeba-{size}px.cache.npz", source, build)
    return _from_arrays("celeba", arrays)


def _load_folder(name: str, root: pathlib.Path, size: int, missing: str) -> Dataset:
    """An image folder (:func:`latent_ebm.formats.scan_image_folder`); ``missing`` is the error
    message when it holds no images."""
    source = cache.fingerprint(root) if root.is_dir() else None
    if source is None or source[0] == 0:
        raise LatentEBMError(missing)

    def build() -> dict[str, np.ndarray]:
        train, train_y, test, test_y = formats.scan_image_folder(root)
        x = formats.read_images(root, train + test, size, keep_gray=True)
        return {
            "train_x": x[: len(train)],
            "train_y": train_y,
            "test_x": x[len(train) :],
            "test_y": test_y,
        }

    key = {"images": source, "size": size}
    return _from_arrays(
        name, cache.cached_arrays(name, root, f"{name}-{size}px.cache.npz", key, build)
    )


def _load_celeba_hq(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    return _load_folder(
        "celeba-hq",
        root,
        size or _DEFAULT_SIZE["celeba-hq"],
        f"no CelebA-HQ images found in {root}; CelebA-HQ (30,000 images) is built from CelebA "
        f"and its delta files by dataset_tool.py create_celebahq of "
        f"https://github.com/tkarras/progressive_growing_of_gans (which writes TFRecords: save "
        f"the images as files), or comes as a ready-made folder of PNG/JPEG images (1024x1024 "
        f"or 256x256); put the images in {root} (or pass --data-dir)",
    )


def _load_imagefolder(root: pathlib.Path, allow_download: bool, size: int | None) -> Dataset:
    return _load_folder(
        "imagefolder",
        root,
        size or _DEFAULT_SIZE["imagefolder"],
        f"no image files ({', '.join(formats.IMAGE_SUFFIXES)}) found in {root}; pass --data-dir "
        f"with a folder of images (a subfolder per class gives labels; train/ and test/ "
        f"subfolders give the split)",
    )


_LOADERS: dict[str, Callable[[pathlib.Path, bool, int | None], Dataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion-mnist": _load_fashion_mnist,
    "svhn": _load_svhn,
    "cifar10": _load_cifar10,
    "celeba": _load_celeba,
    "celeba-hq": _load_celeba_hq,
    "imagefolder": _load_imagefolder,
}
_NATIVE_SIZE = {"digits": 8, "mnist": 28, "fashion-mnist": 28, "svhn": 32, "cifar10": 32}
_DEFAULT_SIZE = {"celeba": 64, "celeba-hq": 128, "imagefolder": 64}  # resized sets
_CHANNELS = {"digits": 1, "mnist": 1, "fashion-mnist": 1}  # the rest: RGB (3)
# Training images of the published splits; CelebA-HQ: 90% of its 30,000 (the image-folder
# split); an arbitrary image folder: unknown until read.
_NUM_TRAIN = {
    "digits": 1437,
    "mnist": 60_000,
    "fashion-mnist": 60_000,
    "svhn": 73_257,
    "cifar10": 50_000,
    "celeba": _CELEBA_TRAIN,
    "celeba-hq": 27_000,
}
_SYSTEM_DIRS: dict[str, pathlib.Path] = {
    "fashion-mnist": pathlib.Path("/usr/share/datasets/fashion-mnist"),
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)  # the registry's names


def dataset_info(
    name: str, size: int | None = None, holdout: int | None = None
) -> tuple[tuple[int, int, int], int | None]:
    """What a data set holds, without reading its files: the image shape ``(C, H, W)`` at
    ``size`` (as :func:`load_dataset`) and the number of training images (``None`` where it
    depends on the files: an image folder, or a ``holdout`` split).

    An image folder of grey images loads with one channel; this says 3.
    """
    _check_name(name)
    side = size or _NATIVE_SIZE.get(name) or _DEFAULT_SIZE[name]
    num_train = None if holdout is not None else _NUM_TRAIN.get(name)
    return (_CHANNELS.get(name, 3), side, side), num_train


def _check_name(name: str) -> None:
    if name not in _LOADERS:
        raise LatentEBMError(f"unknown data set {name!r}; choose one of: {', '.join(_LOADERS)}")
