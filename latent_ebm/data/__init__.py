"""Data sets: a registry with one record per set, and the loaders behind it.

:func:`load_dataset` returns a :class:`Dataset` holding ``(N, C, H, W)`` ``uint8`` images
(values ``0..255``) and ``int64`` labels for a train and a test split; :func:`to_float` scales a
batch to ``[-1, 1]``. :func:`dataset_info` gives a set's image shape and size without reading
its files (``--dry-run``, the benchmarks).

The package:

- :mod:`.dataset`: the :class:`Dataset` type, pixel scaling, the anomaly protocol's
  :func:`holdout_split`;
- :mod:`.sources`: one loader per set (what each set is, and its files);
- :mod:`.formats`, :mod:`.images`: readers of the published file formats;
- :mod:`.download`: HTTP download with MD5 checks; the publishers' files;
- :mod:`.cache`: the cache policy (decoded arrays beside their source) and the cache folder.

Data directory (:func:`resolve_data_dir`), first that applies:

1. the ``data_dir`` argument (``--data-dir``): files are looked up directly in it;
2. ``$LATENT_EBM_DATA/<name>`` when the environment variable ``LATENT_EBM_DATA`` is set;
3. the set's system folder when it exists (``/usr/share/datasets/fashion-mnist``, from the
   Debian package ``dataset-fashion-mnist``);
4. ``~/.cache/latent-ebm/<name>``.

Adding a data set is one loader ``(root, allow_download, size) -> Dataset`` in
:mod:`.sources` plus one :class:`DatasetSpec` record in :data:`DATASETS` (its channels, image
side, whether it is resized, training images and system folder).
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from latent_ebm.data import sources
from latent_ebm.data.cache import USER_CACHE
from latent_ebm.data.dataset import (
    SPLIT_KEYS,
    Dataset,
    array_problem,
    holdout_split,
    to_float,
    to_uint8,
)
from latent_ebm.data.sources import CELEBA_TRAIN
from latent_ebm.errors import LatentEBMError

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "Dataset",
    "DatasetSpec",
    "dataset_info",
    "holdout_split",
    "load_dataset",
    "resolve_data_dir",
    "to_float",
    "to_uint8",
]

ENV_VAR = "LATENT_EBM_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    """What the library knows about a data set before reading its files.

    Attributes:
        name: Registry name (``data.name``), e.g. ``"mnist"``.
        loader: ``(root, allow_download, size) -> Dataset`` (:mod:`latent_ebm.data.sources`);
            ``size`` is :attr:`size` unless the set is resizable and another was asked for.
        channels: Image channels ``C`` (1 grey, 3 RGB). An image folder says 3: it loads with
            one channel only when every image is grey, which only reading it tells.
        size: Image side ``H = W`` in pixels: the native side of a fixed-size set, the
            default side of a resizable one.
        resizable: Whether the images are resized on loading (any ``size`` may be asked for).
        num_train: Training images of the published split; ``None`` when only the files tell.
        system_dir: A folder where a system package installs the files, if any.
        classes: Labels are ``0..classes-1``; ``None`` when only the files tell (a folder's
            subfolders).
    """

    name: str
    loader: sources.Loader
    channels: int
    size: int
    resizable: bool = False
    num_train: int | None = None
    system_dir: pathlib.Path | None = None
    classes: int | None = None


_SPECS = (
    DatasetSpec("digits", sources.load_digits, channels=1, size=8, num_train=1437, classes=10),
    DatasetSpec("mnist", sources.load_mnist, channels=1, size=28, num_train=60_000, classes=10),
    DatasetSpec(
        "fashion-mnist",
        sources.load_fashion_mnist,
        channels=1,
        size=28,
        num_train=60_000,
        system_dir=pathlib.Path("/usr/share/datasets/fashion-mnist"),
        classes=10,
    ),
    DatasetSpec("svhn", sources.load_svhn, channels=3, size=32, num_train=73_257, classes=10),
    DatasetSpec("cifar10", sources.load_cifar10, channels=3, size=32, num_train=50_000, classes=10),
    DatasetSpec(
        "celeba",
        sources.load_celeba,
        channels=3,
        size=64,
        resizable=True,
        num_train=CELEBA_TRAIN,
        classes=1,  # unlabelled: every label 0
    ),
    # CelebA-HQ: 90% of its 30,000 images (the image-folder split).
    DatasetSpec(
        "celeba-hq", sources.load_celeba_hq, channels=3, size=128, resizable=True, num_train=27_000
    ),
    DatasetSpec("imagefolder", sources.load_imagefolder, channels=3, size=64, resizable=True),
)
# The registry: name -> record, in the order choices are listed.
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def _spec(name: str) -> DatasetSpec:
    """The record of ``name``; an unknown name is a :class:`LatentEBMError` listing the choices."""
    if name not in DATASETS:
        shown = name if len(name) <= 60 else f"{name[:60]}..."
        raise LatentEBMError(f"unknown data set {shown!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve_data_dir(name: str, data_dir: str | os.PathLike | None) -> pathlib.Path:
    """Return the folder of data set ``name``'s files.

    Order: ``data_dir`` itself, else ``$LATENT_EBM_DATA/<name>``, else the set's system folder
    when it exists (``/usr/share/datasets/fashion-mnist``), else ``~/.cache/latent-ebm/<name>``.
    """
    spec = _spec(name)
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return pathlib.Path(os.environ[ENV_VAR]).expanduser() / name
    if spec.system_dir is not None and spec.system_dir.is_dir():
        return spec.system_dir
    return USER_CACHE.expanduser() / name


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
        size: Image side in pixels for the resizable sets: ``celeba`` (default 64),
            ``celeba-hq`` (128) and ``imagefolder`` (64); ``None`` is the default. The other
            sets have a fixed size: only ``None`` or their own size is accepted.

    Raises:
        LatentEBMError: unknown name, a bad size, a missing or corrupt file, or files that
            load to arrays the set's record refuses (:func:`array_problem`: image shape,
            channels, labels out of ``0..classes-1``, an empty split).
    """
    root = resolve_data_dir(name, data_dir)
    spec = DATASETS[name]
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise LatentEBMError(f"image size must be a positive integer, not {size!r}")
        if not spec.resizable and size != spec.size:
            raise LatentEBMError(
                f"{name} images are {spec.size}x{spec.size}: the size is fixed; leave the size "
                f"unset (data.size) or set it to {spec.size}"
            )
    data = spec.loader(root, download, size or spec.size)
    # What any loader returns must agree with the record, so that training and evaluation
    # never meet another shape or label range than the config was checked against.
    channels = (1, spec.channels) if spec.resizable else (spec.channels,)  # grey folders: 1
    arrays = {key: getattr(data, key).numpy() for key in SPLIT_KEYS}
    problem = array_problem(arrays, channels=channels, size=size or spec.size, classes=spec.classes)
    if problem is not None:
        raise LatentEBMError(
            f"the {name} data in {root} is not a valid {name} data set ({problem}); replace "
            f"its files with good copies"
        )
    return data if holdout is None else holdout_split(data, holdout)


def dataset_info(
    name: str, size: int | None = None, holdout: int | None = None
) -> tuple[tuple[int, int, int], int | None]:
    """What a data set holds, without reading its files: the image shape ``(C, H, W)`` at
    ``size`` (as :func:`load_dataset`) and the number of training images (``None`` where it
    depends on the files: an image folder, or a ``holdout`` split).

    An image folder of grey images loads with one channel; this says 3.
    """
    spec = _spec(name)
    side = size or spec.size
    num_train = None if holdout is not None else spec.num_train
    return (spec.channels, side, side), num_train
