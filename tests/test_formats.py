"""Tests for the paper-scale data sets: SVHN, CIFAR-10, CelebA, CelebA-HQ and image folders,
read from tiny files in the official layouts (tests/formats.py), their errors and the cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from latent_ebm import data
from latent_ebm.data import download, formats, sources
from latent_ebm.data.cache import CACHE_ENV_VAR
from latent_ebm.errors import LatentEBMError
from tests.formats import (
    CELEBA_SHAPE,
    cifar10_tar,
    py2_pickle,
    smooth_images,
    write_celeba,
    write_cifar10,
    write_imagefolder,
    write_svhn,
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fallback caches go to the test's folder, never to the user's."""
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "fallback-cache"))


def assert_dataset(ds: data.Dataset, expected: dict[str, np.ndarray]) -> None:
    """``ds`` holds exactly the expected arrays, as contiguous uint8 images and int64 labels."""
    for key in ("train_x", "train_y", "test_x", "test_y"):
        got = getattr(ds, key)
        assert got.dtype == (torch.uint8 if key.endswith("x") else torch.int64), key
        assert got.is_contiguous(), key
        assert np.array_equal(got.numpy(), expected[key]), key


def one_line_error(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def truncate(path: pathlib.Path, keep: float = 0.5) -> None:
    blob = path.read_bytes()
    path.write_bytes(blob[: int(len(blob) * keep)])


GARBAGE = b"this is not a data file\n" * 40


# SVHN.


def test_svhn_exact(tmp_path: pathlib.Path) -> None:
    expected = write_svhn(tmp_path, n_train=12, n_test=4)
    ds = data.load_dataset("svhn", tmp_path, download=False)
    assert ds.name == "svhn" and ds.shape == (3, 32, 32)
    assert ds.train_x.shape == (12, 3, 32, 32) and ds.test_x.shape == (4, 3, 32, 32)
    assert_dataset(ds, expected)
    assert 0 in ds.train_y.tolist() and int(ds.train_y.max()) == 9  # file label 10 -> digit 0
    assert ds.num_classes == 10


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong arrays"])
def test_svhn_corrupt(tmp_path: pathlib.Path, damage: str) -> None:
    import scipy.io

    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    if damage == "truncated":
        truncate(path)
    elif damage == "garbage":
        path.write_bytes(GARBAGE)
    else:
        scipy.io.savemat(path, {"X": np.zeros((28, 28, 5), np.uint8), "y": np.ones((5, 1))})
    with pytest.raises(LatentEBMError, match=r"test_32x32\.mat") as info:
        data.load_dataset("svhn", tmp_path, download=False)
    assert "download it again" in one_line_error(info)


def test_svhn_missing_offline(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatentEBMError, match=r"train_32x32\.mat") as info:
        data.load_dataset("svhn", tmp_path, download=False)
    message = one_line_error(info)
    assert "182,040,794 bytes" in message and "182 MB" in message
    assert "http://ufldl.stanford.edu/housenumbers/train_32x32.mat" in message
    assert str(tmp_path) in message


def test_svhn_download(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing files are fetched (here from file:// URLs) with their MD5 checked, then read."""
    expected = write_svhn(tmp_path / "server")
    for name in ("train_32x32.mat", "test_32x32.mat"):
        path = tmp_path / "server" / name
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        official = download.Official(path.as_uri(), md5, path.stat().st_size)
        monkeypatch.setitem(download.OFFICIAL, name, official)
    ds = data.load_dataset("svhn", tmp_path / "data")
    assert_dataset(ds, expected)
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == ["svhn.cache.npz", "test_32x32.mat", "train_32x32.mat"]  # no .part files


def test_download_checksum_mismatch(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "served.bin"
    source.write_bytes(b"some bytes")
    dest = tmp_path / "data" / "cifar-10-python.tar.gz"
    with pytest.raises(LatentEBMError, match="MD5 checksum") as info:
        download.download([source.as_uri()], dest, "0" * 32, 170_498_071)
    message = one_line_error(info)
    assert "cifar-10-python.tar.gz (170,498,071 bytes, 170 MB)" in message
    assert source.as_uri() in message and str(dest.parent) in message
    assert not dest.parent.exists()  # the bad download is not kept, nor the folder it made


def test_official_size_wrong_md5(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of the official size whose bytes differ from the official MD5 is reported."""
    write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    spec = download.OFFICIAL[path.name]
    fake = download.Official(spec.url, spec.md5, path.stat().st_size)  # as if full-size
    monkeypatch.setitem(download.OFFICIAL, path.name, fake)
    with pytest.raises(LatentEBMError, match="MD5 checksum") as info:
        data.load_dataset("svhn", tmp_path, download=False)
    assert "train_32x32.mat" in one_line_error(info) and spec.md5 in str(info.value)


# CIFAR-10.


def test_cifar10_exact(tmp_path: pathlib.Path) -> None:
    expected = write_cifar10(tmp_path, n_per_batch=3)
    ds = data.load_dataset("cifar10", tmp_path, download=False)
    assert ds.train_x.shape == (15, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert_dataset(ds, expected)
    # Batch order: data_batch_1's labels first; rows are R, G, B planes.
    assert ds.train_y[:3].tolist() == [0, 3, 6] and ds.train_y[3:6].tolist() == [1, 4, 7]
    assert ds.test_y.tolist() == [5, 8, 1]


def _cifar_members(batch: bytes | None = None) -> dict[str, bytes]:
    good = py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})
    members = {f"data_batch_{i}": good for i in range(1, 6)}
    members["test_batch"] = good
    if batch is not None:
        members["data_batch_3"] = batch
    return members


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("truncated", "not a valid tar.gz file or is truncated"),
        ("garbage", "not a valid tar.gz file"),
        ("plain tar", "not a valid tar.gz file"),
        ("missing batch", "lacks cifar-10-batches-py/data_batch_3"),
        ("truncated pickle", "data_batch_3 in .* is not a valid CIFAR-10 batch"),
        ("wrong shape", "data_batch_3 in .* does not hold CIFAR-10's uint8 data"),
        ("bad labels", "data_batch_3 in .* does not hold 2 labels in 0..9"),
    ],
)
def test_cifar10_corrupt(tmp_path: pathlib.Path, damage: str, match: str) -> None:
    path = tmp_path / "cifar-10-python.tar.gz"
    if damage == "truncated":
        write_cifar10(tmp_path)
        truncate(path, 0.7)
    elif damage == "garbage":
        path.write_bytes(GARBAGE)
    elif damage == "plain tar":
        cifar10_tar(tmp_path / "plain.tar.gz", _cifar_members())
        path.write_bytes(gzip.decompress((tmp_path / "plain.tar.gz").read_bytes()))
    elif damage == "missing batch":
        members = _cifar_members()
        del members["data_batch_3"]
        cifar10_tar(path, members)
    else:
        batch = {
            "truncated pickle": _cifar_members()["data_batch_1"][:40],
            "wrong shape": pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}),
            "bad labels": pickle.dumps(
                {b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 12]}
            ),
        }[damage]
        cifar10_tar(path, _cifar_members(batch))
    with pytest.raises(LatentEBMError, match=match) as info:
        data.load_dataset("cifar10", tmp_path, download=False)
    assert "cifar-10-python.tar.gz" in one_line_error(info)


class _Exploit:
    """Unpickling this would run ``os.system``: the restricted unpickler must refuse it."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_cifar10_malicious_pickle(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "pwned"
    payload = py2_pickle({b"data": _Exploit(marker), b"labels": [0]})
    cifar10_tar(tmp_path / "cifar-10-python.tar.gz", _cifar_members(payload))
    with pytest.raises(LatentEBMError, match=r"forbidden global (os|posix)\.system") as info:
        data.load_dataset("cifar10", tmp_path, download=False)
    assert "data_batch_3" in one_line_error(info)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes, unrestricted, do run the command
    assert marker.exists()


def test_cifar10_missing_offline(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatentEBMError, match=r"cifar-10-python\.tar\.gz") as info:
        data.load_dataset("cifar10", tmp_path, download=False)
    message = one_line_error(info)
    assert "170,498,071 bytes" in message and str(tmp_path) in message
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message


# CelebA.


def reference(path: pathlib.Path, size: int) -> np.ndarray:
    """Pillow's own decode, central 178x178 crop and bicubic resize: ``(3, size, size)``."""
    with Image.open(path) as img:
        square = img.convert("RGB").crop((0, 20, 178, 198))
    return np.asarray(square.resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)


def test_celeba_folder(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "CELEBA_TRAIN", 4)  # stands for the paper's 40,000
    written = write_celeba(tmp_path, n=10)  # partitions: 6 train, 2 valid, 2 test
    ds = data.load_dataset("celeba", tmp_path, size=16)
    assert ds.train_x.shape == (4, 3, 16, 16) and ds.test_x.shape == (2, 3, 16, 16)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_y.tolist() == [0] * 4 and ds.test_y.tolist() == [0] * 2
    paths = written["paths"]
    expected = np.stack([reference(p, 16) for p in paths[:4] + paths[8:]])
    assert np.array_equal(torch.cat([ds.train_x, ds.test_x]).numpy(), expected)

    # Independently of Pillow: close to the written pixels' central square, block-averaged.
    height, width = CELEBA_SHAPE
    originals = smooth_images(10, height, width)[:, 21:197, 1:177]  # 176 = 16 * 11
    blocks = originals.reshape(10, 16, 11, 16, 11, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2)
    got = torch.cat([ds.train_x, ds.test_x]).numpy().astype(float)
    assert np.abs(got - blocks[[0, 1, 2, 3, 8, 9]]).mean() < 3
    shifted = smooth_images(10, height, width)[:, :176, :176]  # a top crop would be far off
    shifted = shifted.reshape(10, 16, 11, 16, 11, 3).mean(axis=(2, 4)).transpose(0, 3, 1, 2)
    assert np.abs(got - shifted[[0, 1, 2, 3, 8, 9]]).mean() > 12


def test_celeba_zip_equals_folder(tmp_path: pathlib.Path) -> None:
    write_celeba(tmp_path / "folder", n=5)
    write_celeba(tmp_path / "zip", n=5, zip=True)
    assert not (tmp_path / "zip" / "img_align_celeba").exists()
    a = data.load_dataset("celeba", tmp_path / "folder", size=8)
    b = data.load_dataset("celeba", tmp_path / "zip", size=8)
    assert a.train_x.shape == (3, 3, 8, 8) and a.test_x.shape == (1, 3, 8, 8)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert (tmp_path / "zip" / "celeba-8px.cache.npz").is_file()


def test_celeba_default_size(tmp_path: pathlib.Path) -> None:
    write_celeba(tmp_path, n=5)
    assert data.load_dataset("celeba", tmp_path).shape == (3, 64, 64)
    assert (tmp_path / "celeba-64px.cache.npz").is_file()


def test_celeba_without_partition(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorted files: the last 10% (at least one) test, the first of the rest train."""
    monkeypatch.setattr(sources, "CELEBA_TRAIN", 6)
    written = write_celeba(tmp_path, n=20, partition=False)
    with pytest.warns(UserWarning, match=r"list_eval_partition\.txt not found"):
        ds = data.load_dataset("celeba", tmp_path, size=8)
    assert ds.train_x.shape[0] == 6 and ds.test_x.shape[0] == 2
    paths = written["paths"]
    assert np.array_equal(ds.train_x.numpy(), np.stack([reference(p, 8) for p in paths[:6]]))
    assert np.array_equal(ds.test_x.numpy(), np.stack([reference(p, 8) for p in paths[18:]]))


def test_celeba_missing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatentEBMError, match="CelebA not found") as info:
        data.load_dataset("celeba", tmp_path)
    message = one_line_error(info)
    for needle in (
        "img_align_celeba/",
        "img_align_celeba.zip (1,443,490,838 bytes",
        "list_eval_partition.txt",
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
        str(tmp_path),
    ):
        assert needle in message


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_celeba_bad_jpeg(tmp_path: pathlib.Path, damage: str) -> None:
    written = write_celeba(tmp_path, n=5)
    path = written["paths"][1]
    truncate(path) if damage == "truncated" else path.write_bytes(GARBAGE)
    with pytest.raises(LatentEBMError, match=r"000002\.jpg") as info:
        data.load_dataset("celeba", tmp_path, size=8)
    assert "not an image" in one_line_error(info)


def test_celeba_bad_zip(tmp_path: pathlib.Path) -> None:
    write_celeba(tmp_path, n=5, zip=True)
    truncate(tmp_path / "img_align_celeba.zip", 0.6)
    with pytest.raises(LatentEBMError, match=r"img_align_celeba\.zip") as info:
        data.load_dataset("celeba", tmp_path, size=8)
    one_line_error(info)


def test_celeba_bad_partition(tmp_path: pathlib.Path) -> None:
    write_celeba(tmp_path, n=5)
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(LatentEBMError, match=r"list_eval_partition\.txt line 2") as info:
        data.load_dataset("celeba", tmp_path, size=8)
    one_line_error(info)


def test_celeba_incomplete(tmp_path: pathlib.Path) -> None:
    write_celeba(tmp_path, n=5)
    (tmp_path / "img_align_celeba" / "000005.jpg").unlink()  # listed as test
    with pytest.raises(LatentEBMError, match=r"lacks 000005\.jpg") as info:
        data.load_dataset("celeba", tmp_path, size=8)
    one_line_error(info)


# Image folders and CelebA-HQ.


def test_imagefolder_flat(tmp_path: pathlib.Path) -> None:
    """No classes, no split folders: labels 0, a seeded 90/10 split of the sorted files."""
    written = write_imagefolder(tmp_path, n=20, size=8)
    ds = data.load_dataset("imagefolder", tmp_path, size=8)
    files = sorted(written)
    order = np.random.default_rng(0).permutation(20)
    train = np.stack([written[files[i]][0] for i in order[:18]])
    test = np.stack([written[files[i]][0] for i in order[18:]])
    labels = np.zeros(20, np.int64)
    expected = {"train_x": train, "train_y": labels[:18], "test_x": test, "test_y": labels[18:]}
    assert_dataset(ds, expected)  # PNGs already at the size: exact


def test_imagefolder_classes(tmp_path: pathlib.Path) -> None:
    written = write_imagefolder(tmp_path, n=30, size=8, classes=["zebra", "ant", "moth"])
    ds = data.load_dataset("imagefolder", tmp_path, size=8)
    assert ds.num_classes == 3
    got = sorted(
        (x.numpy().tobytes(), int(y))
        for x, y in zip(
            torch.cat([ds.train_x, ds.test_x]), torch.cat([ds.train_y, ds.test_y]), strict=True
        )
    )
    assert got == sorted((x.tobytes(), y) for x, y in written.values())  # ant 0, moth 1, zebra 2


def test_imagefolder_split_folders(tmp_path: pathlib.Path) -> None:
    written = write_imagefolder(tmp_path, n=8, size=8, classes=["b", "a"], split=True)
    ds = data.load_dataset("imagefolder", tmp_path, size=8)
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        names = sorted(n for n in written if n.startswith(f"{split}/"))
        assert np.array_equal(x.numpy(), np.stack([written[n][0] for n in names]))
        assert y.tolist() == [written[n][1] for n in names]
    assert ds.train_x.shape[0] == 6 and ds.test_x.shape[0] == 2


def test_imagefolder_gray_crop_resize(tmp_path: pathlib.Path) -> None:
    """Grayscale stays one channel; a non-square image is cropped to its central square."""
    written = write_imagefolder(tmp_path, n=4, size=(30, 20), mode="L", suffix=".bmp")
    ds = data.load_dataset("imagefolder", tmp_path, size=10)
    assert ds.shape == (1, 10, 10)
    first = sorted(written)[int(np.random.default_rng(0).permutation(4)[0])]
    with Image.open(tmp_path / first) as img:
        ref = np.asarray(img.crop((5, 0, 25, 20)).resize((10, 10), Image.Resampling.BICUBIC))
    assert np.array_equal(ds.train_x[0, 0].numpy(), ref)


def test_imagefolder_extensions_and_rgb(tmp_path: pathlib.Path) -> None:
    write_imagefolder(tmp_path, n=3, size=8, suffix=".png")
    write_imagefolder(tmp_path / "jpeg", n=3, size=8, suffix=".JPG", seed=1)
    write_imagefolder(tmp_path / "webp", n=3, size=8, suffix=".webp", seed=2)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(GARBAGE)  # hidden files are skipped
    ds = data.load_dataset("imagefolder", tmp_path, size=8)
    assert ds.shape == (3, 8, 8) and len(ds.train_x) + len(ds.test_x) == 9
    assert ds.num_classes == 1  # images sit at the top too: no classes


def test_imagefolder_empty_and_single(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatentEBMError, match="no image files") as info:
        data.load_dataset("imagefolder", tmp_path)
    assert "--data-dir" in one_line_error(info)
    write_imagefolder(tmp_path, n=1)
    with pytest.raises(LatentEBMError, match="at least 2 images"):
        data.load_dataset("imagefolder", tmp_path)


def test_celeba_hq(tmp_path: pathlib.Path) -> None:
    with pytest.raises(LatentEBMError, match="no CelebA-HQ images") as info:
        data.load_dataset("celeba-hq", tmp_path)
    message = one_line_error(info)
    assert "progressive_growing_of_gans" in message and str(tmp_path) in message
    write_imagefolder(tmp_path / "images", n=10, size=48, suffix=".jpg")
    ds = data.load_dataset("celeba-hq", tmp_path)
    assert ds.shape == (3, 128, 128) and (len(ds.train_x), len(ds.test_x)) == (9, 1)
    assert (tmp_path / "celeba-hq-128px.cache.npz").is_file()


# Sizes.


@pytest.mark.parametrize(("name", "native"), [("digits", 8), ("svhn", 32), ("cifar10", 32)])
def test_fixed_size(tmp_path: pathlib.Path, name: str, native: int) -> None:
    write_svhn(tmp_path)
    write_cifar10(tmp_path)
    assert data.load_dataset(name, tmp_path, size=native).shape[1:] == (native, native)
    with pytest.raises(LatentEBMError, match=f"{name} images are {native}x{native}: the size is"):
        data.load_dataset(name, tmp_path, size=64)


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_bad_size(tmp_path: pathlib.Path, size: object) -> None:
    with pytest.raises(LatentEBMError, match="positive integer"):
        data.load_dataset("imagefolder", tmp_path, size=size)


# The decoded-array cache.


def test_cache_second_load_does_not_decode(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_svhn(tmp_path)
    first = data.load_dataset("svhn", tmp_path)
    assert (tmp_path / "svhn.cache.npz").is_file()

    def refuse(path: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(formats, "read_svhn_mat", refuse)
    second = data.load_dataset("svhn", tmp_path)
    for key in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, key), getattr(second, key))


def test_cache_rebuilt_when_source_changes(tmp_path: pathlib.Path) -> None:
    write_cifar10(tmp_path, seed=0)
    first = data.load_dataset("cifar10", tmp_path)
    expected = write_cifar10(tmp_path, seed=1)
    path = tmp_path / "cifar-10-python.tar.gz"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = data.load_dataset("cifar10", tmp_path)
    assert not torch.equal(first.train_x, second.train_x)
    assert_dataset(second, expected)


def test_cache_folder_change_and_size(tmp_path: pathlib.Path) -> None:
    """A new image rebuilds a folder's cache; each size has its own cache file."""
    write_imagefolder(tmp_path, n=10, size=8)
    assert len(data.load_dataset("imagefolder", tmp_path, size=8).train_x) == 9
    write_imagefolder(tmp_path / "more", n=10, size=8, seed=3)
    assert len(data.load_dataset("imagefolder", tmp_path, size=8).train_x) == 18
    assert data.load_dataset("imagefolder", tmp_path, size=4).shape == (3, 4, 4)
    caches = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert caches == ["imagefolder-4px.cache.npz", "imagefolder-8px.cache.npz"]


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "garbage"])
def test_cache_corrupt_is_rebuilt_silently(tmp_path: pathlib.Path, damage: str) -> None:
    expected = write_svhn(tmp_path)
    data.load_dataset("svhn", tmp_path)
    cache = tmp_path / "svhn.cache.npz"
    if damage == "truncated":
        truncate(cache)
    elif damage == "garbage":
        cache.write_bytes(GARBAGE)
    else:
        blob = bytearray(cache.read_bytes())
        blob[len(blob) // 3] ^= 0xFF  # inside train_x: the zip CRC catches it
        cache.write_bytes(bytes(blob))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_dataset(data.load_dataset("svhn", tmp_path), expected)
    with np.load(cache) as z:
        assert np.array_equal(z["train_x"], expected["train_x"])  # rewritten


def test_cache_falls_back_when_folder_not_writable(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "read-only"
    expected = write_svhn(source)
    real_access = os.access

    def access(path: object, mode: int, **kwargs: object) -> bool:
        if pathlib.Path(path) == source and mode & os.W_OK:
            return False  # we run as root: chmod would not stop us
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    with pytest.warns(UserWarning, match="is not writable: caching the decoded svhn arrays in"):
        data.load_dataset("svhn", source)
    assert sorted(p.name for p in source.iterdir()) == ["test_32x32.mat", "train_32x32.mat"]
    (cache,) = (tmp_path / "fallback-cache").glob("*-svhn.cache.npz")

    monkeypatch.setattr(formats, "read_svhn_mat", None)  # the second load reads the fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_dataset(data.load_dataset("svhn", source), expected)
    assert cache.is_file()
