"""The loaders: each reads one data set from its published files into a :class:`Dataset`.

A loader is ``(root, allow_download, size) -> Dataset``: ``root`` is the folder of the files
(:func:`latent_ebm.data.resolve_data_dir`), ``allow_download`` whether missing files may be
fetched, and ``size`` the image side, already checked and defaulted by
:func:`latent_ebm.data.load_dataset` (sets of a fixed size ignore it). Readers of the formats
are in :mod:`.formats` and :mod:`.images`.

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
  and resized to ``size``. Train: the first 40,000 images of the official train partition
  (paper Appendix A.1); test: the official test partition (19,962). Labels are 0. Not
  downloadable (Google Drive): a missing file is an error that says where to get it.
- ``celeba-hq``: a folder of CelebA-HQ images of any resolution, read like ``imagefolder``.
- ``imagefolder``: any folder of images (:func:`latent_ebm.data.images.scan_image_folder` gives
  the split and labels), each cropped to its central square and resized to ``size``; one
  channel when every image is grayscale, else RGB.

The sets read from ``.mat``, tar or image files are decoded once: the arrays and a fingerprint
of the source go to a cache file beside it (:func:`latent_ebm.data.cache.cached_arrays`), e.g.
``svhn.cache.npz`` or ``celeba-64px.cache.npz``; a changed source rebuilds it.
"""

from __future__ import annotations

import functools
import pathlib
import warnings
from collections.abc import Callable

import numpy as np
import torch

from latent_ebm.data import cache, formats, images
from latent_ebm.data.dataset import Dataset, array_problem, from_arrays
from latent_ebm.data.download import check_official, download, official_file
from latent_ebm.errors import LatentEBMError

__all__ = [
    "CELEBA_TRAIN",
    "Loader",
    "load_celeba",
    "load_celeba_hq",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_imagefolder",
    "load_mnist",
    "load_svhn",
]

Loader = Callable[[pathlib.Path, bool, int], Dataset]  # (root, allow_download, size) -> Dataset


def _holds(
    channels: tuple[int, ...], size: int, classes: int | None
) -> Callable[[dict[str, np.ndarray]], str | None]:
    """The check of a set's decoded arrays (:func:`latent_ebm.data.dataset.array_problem`): its
    cache is rebuilt, and its decoded files refused, when they disagree."""
    return functools.partial(array_problem, channels=channels, size=size, classes=classes)


def load_digits(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """scikit-learn's 8x8 digits, split 80/20 by a fixed permutation; ``root`` is ignored."""
    from sklearn.datasets import load_digits as sklearn_digits  # deferred: scikit-learn is slow

    bunch = sklearn_digits()
    pixels = np.rint(bunch.data * 255.0 / 16.0).astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    n_train = int(0.8 * len(labels))  # 1,437 of 1,797
    train, test = order[:n_train], order[n_train:]
    return Dataset(
        name="digits",
        train_x=torch.from_numpy(np.ascontiguousarray(pixels[train])),
        train_y=torch.from_numpy(labels[train]),
        test_x=torch.from_numpy(np.ascontiguousarray(pixels[test])),
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


_IDX_CLASSES = 10  # MNIST's digits, Fashion-MNIST's garments: labels 0..9


def _load_idx_dataset(
    name: str, root: pathlib.Path, fetch: Callable[[pathlib.Path], None], size: int
) -> Dataset:
    """Read the IDX train/test pairs from ``root``; ``fetch(path)`` is called for a missing file.

    Images must be ``size`` x ``size`` and labels in ``0..9``.

    Raises:
        LatentEBMError: a missing, corrupt or hostile file (:func:`formats.read_idx`), images
            of another size, a label out of range, or files that do not belong together.
    """
    splits = []
    for images_name, labels_name in _IDX_FILES:
        images_path, labels_path = root / images_name, root / labels_name
        for path in (images_path, labels_path):
            if not path.is_file():
                fetch(path)
        pixels, labels = formats.read_idx(images_path), formats.read_idx(labels_path)
        if pixels.ndim != 3:
            raise LatentEBMError(f"{images_path} is not an IDX image file (expected 3 dimensions)")
        if labels.ndim != 1:
            raise LatentEBMError(f"{labels_path} is not an IDX label file (expected 1 dimension)")
        if pixels.shape[1:] != (size, size):
            h, w = pixels.shape[1:]
            raise LatentEBMError(
                f"{images_path} holds {h}x{w} images, but {name} images are {size}x{size}: it "
                f"is not a {name} file; delete it and download it again"
            )
        if labels.size and labels.max() >= _IDX_CLASSES:
            row = int(labels.argmax())
            raise LatentEBMError(
                f"{labels_path} holds label {labels[row]} (row {row}), outside the {name} "
                f"classes 0..{_IDX_CLASSES - 1}: it is corrupt; delete it and download it again"
            )
        if len(pixels) != len(labels):
            raise LatentEBMError(
                f"{images_path} holds {len(pixels)} images but {labels_path} holds {len(labels)} "
                f"labels; the files do not belong together: delete both and download them again"
            )
        x = torch.from_numpy(pixels).unsqueeze(1).contiguous()  # (N, 1, H, W)
        splits.append((x, torch.from_numpy(labels.astype(np.int64))))
    (train_x, train_y), (test_x, test_y) = splits
    if train_x.shape[1:] != test_x.shape[1:]:
        raise LatentEBMError(
            f"train and test images in {root} differ in size ({tuple(train_x.shape[2:])} vs "
            f"{tuple(test_x.shape[2:])}); delete the files and download them again"
        )
    return Dataset(name, train_x, train_y, test_x, test_y)


def load_mnist(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """MNIST's four IDX files; missing ones are downloaded (MD5 verified) when allowed."""

    def fetch(path: pathlib.Path) -> None:
        urls = [base + path.name for base in _MNIST_URLS]
        if not allow_download:
            raise LatentEBMError(
                f"{path.name} not found in {root}; download it from {urls[0]} into that folder "
                f"(or allow downloading)"
            )
        download(urls, path, _MNIST_MD5[path.name])

    return _load_idx_dataset("mnist", root, fetch, size)


def load_fashion_mnist(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """Fashion-MNIST's four IDX files; a missing one is an error that says how to get it."""

    def fetch(path: pathlib.Path) -> None:
        raise LatentEBMError(
            f"{path.name} not found in {root}; on Debian run `apt-get install "
            f"dataset-fashion-mnist`, or download the four files from {_FASHION_REPO} into "
            f"{root} (or into any folder and pass --data-dir)"
        )

    return _load_idx_dataset("fashion-mnist", root, fetch, size)


def load_svhn(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """SVHN's ``train_32x32.mat`` and ``test_32x32.mat``, downloaded when missing and allowed."""
    files = [official_file(root, f, allow_download) for f in ("train_32x32.mat", "test_32x32.mat")]

    def build() -> dict[str, np.ndarray]:
        splits = {}
        for split, path in zip(("train", "test"), files, strict=True):
            check_official(path)
            splits[f"{split}_x"], splits[f"{split}_y"] = formats.read_svhn_mat(path)
        return splits

    source = [cache.fingerprint(path) for path in files]
    check = _holds((3,), 32, 10)
    arrays = cache.cached_arrays("svhn", root, "svhn.cache.npz", source, build, check)
    return from_arrays("svhn", arrays)


def load_cifar10(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """``cifar-10-python.tar.gz``, downloaded when missing and allowed."""
    path = official_file(root, "cifar-10-python.tar.gz", allow_download)

    def build() -> dict[str, np.ndarray]:
        check_official(path)
        (train_x, train_y), (test_x, test_y) = formats.read_cifar10_tar(path)
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    source = cache.fingerprint(path)
    check = _holds((3,), 32, 10)
    arrays = cache.cached_arrays("cifar10", root, "cifar10.cache.npz", source, build, check)
    return from_arrays("cifar10", arrays)


_CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_TRAIN = 40_000  # training images: the first of the official train partition (paper A.1)


def load_celeba(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
    """The aligned CelebA images (folder or zip) with the official partition, at ``size``."""
    folder, archive = root / "img_align_celeba", root / "img_align_celeba.zip"
    partition = root / "list_eval_partition.txt"
    source = folder if folder.is_dir() else archive if archive.is_file() else None
    if source is None:
        raise LatentEBMError(
            f"CelebA not found in {root}: put there the aligned images, as the folder "
            f"img_align_celeba/ (202,599 JPEGs, about 1.4 GB) or the archive img_align_celeba.zip "
            f"(1,443,490,838 bytes, 1.4 GB), and the official split list_eval_partition.txt "
            f"(202,599 lines); get them from {_CELEBA_PAGE} (Align&Cropped Images, Google "
            f"Drive), or pass --data-dir"
        )
    limit = CELEBA_TRAIN

    def build() -> dict[str, np.ndarray]:
        names = images.list_images(source)
        if partition.is_file():
            by_base = {name.rsplit("/", 1)[-1]: name for name in names}
            split = images.read_celeba_partition(partition)
            train = sorted(f for f, p in split.items() if p == 0)[:limit]
            test = sorted(f for f, p in split.items() if p == 2)
            missing = [f for f in train + test if f not in by_base]
            if missing:
                raise LatentEBMError(
                    f"{source} lacks {missing[0]} and {len(missing) - 1} more image(s) listed in "
                    f"{partition.name}; the images are incomplete: download them again"
                )
            train, test = [by_base[f] for f in train], [by_base[f] for f in test]
        else:
            warnings.warn(
                f"{partition} not found: splitting CelebA by file order (first {limit:,} train, "
                f"last 10% test); get the official file from {_CELEBA_PAGE} for the paper's split",
                stacklevel=6,
            )
            n_test = max(1, len(names) // 10)
            train, test = names[: len(names) - n_test][:limit], names[len(names) - n_test :]
        if not train or not test:
            raise LatentEBMError(f"{source} holds too few images for a train and a test split")
        x = images.read_images(source, train + test, size)
        zeros = np.zeros(len(x), dtype=np.int64)
        n = len(train)
        return {"train_x": x[:n], "train_y": zeros[:n], "test_x": x[n:], "test_y": zeros[n:]}

    key = {
        "images": cache.fingerprint(source),
        "partition": cache.fingerprint(partition),
        "size": size,
        "train": limit,
    }
    filename, check = f"celeba-{size}px.cache.npz", _holds((3,), size, 1)
    arrays = cache.cached_arrays("celeba", root, filename, key, build, check)
    return from_arrays("celeba", arrays)


def _folder_loader(name: str, missing: str) -> Loader:
    """The loader of an image folder (:func:`latent_ebm.data.images.scan_image_folder`) named
    ``name``; ``missing``, formatted with ``root``, is the error when it holds no images."""

    def load(root: pathlib.Path, allow_download: bool, size: int) -> Dataset:
        source = cache.fingerprint(root) if root.is_dir() else None
        if source is None or source[0] == 0:
            raise LatentEBMError(missing.format(root=root))

        def build() -> dict[str, np.ndarray]:
            train, train_y, test, test_y = images.scan_image_folder(root)
            x = images.read_images(root, train + test, size, keep_gray=True)
            return {
                "train_x": x[: len(train)],
                "train_y": train_y,
                "test_x": x[len(train) :],
                "test_y": test_y,
            }

        key = {"images": source, "size": size}
        filename = f"{name}-{size}px.cache.npz"
        check = _holds((1, 3), size, None)  # grey folders load with one channel
        return from_arrays(name, cache.cached_arrays(name, root, filename, key, build, check))

    load.__doc__ = f"The {name} image folder at ``size`` (a cache file per size)."
    return load


load_celeba_hq = _folder_loader(
    "celeba-hq",
    "no CelebA-HQ images found in {root}; CelebA-HQ (30,000 images) is built from CelebA "
    "and its delta files by dataset_tool.py create_celebahq of "
    "https://github.com/tkarras/progressive_growing_of_gans (which writes TFRecords: save "
    "the images as files), or comes as a ready-made folder of PNG/JPEG images (1024x1024 "
    "or 256x256); put the images in {root} (or pass --data-dir)",
)
load_imagefolder = _folder_loader(
    "imagefolder",
    f"no image files ({', '.join(images.IMAGE_SUFFIXES)}) found in {{root}}; pass --data-dir "
    f"with a folder of images (a subfolder per class gives labels; train/ and test/ "
    f"subfolders give the split)",
)
