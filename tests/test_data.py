"""Tests for latent_ebm.data: exact arrays from tiny IDX files, every error path, digits split."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pathlib
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from latent_ebm import data
from latent_ebm.data import formats, sources
from latent_ebm.errors import LatentEBMError
from tests.formats import idx_bytes, write_file

TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
DEBIAN_FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def make_idx_set(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """Write 5 train and 3 test 28x28 images with known pixels and labels into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        TRAIN_IMAGES: (np.arange(5 * 28 * 28) * 7 % 256).astype(np.uint8).reshape(5, 28, 28),
        TRAIN_LABELS: np.array([3, 1, 4, 1, 5], dtype=np.uint8),
        TEST_IMAGES: (255 - np.arange(3 * 28 * 28) % 256).astype(np.uint8).reshape(3, 28, 28),
        TEST_LABELS: np.array([9, 2, 6], dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_file(folder / name, idx_bytes(array))
    return arrays


# IDX data sets.


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_dataset_exact(tmp_path: pathlib.Path, name: str) -> None:
    arrays = make_idx_set(tmp_path)
    ds = data.load_dataset(name, tmp_path)
    assert ds.name == name
    assert ds.shape == (1, 28, 28)
    assert ds.num_classes == 10
    assert ds.train_x.dtype == torch.uint8 and ds.test_x.dtype == torch.uint8
    assert ds.train_y.dtype == torch.int64 and ds.test_y.dtype == torch.int64
    assert ds.train_x.shape == (5, 1, 28, 28) and ds.test_x.shape == (3, 1, 28, 28)
    assert ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    assert np.array_equal(ds.train_x[:, 0].numpy(), arrays[TRAIN_IMAGES])
    assert np.array_equal(ds.test_x[:, 0].numpy(), arrays[TEST_IMAGES])
    assert ds.train_y.tolist() == [3, 1, 4, 1, 5]
    assert ds.test_y.tolist() == [9, 2, 6]


def test_load_dataset_accepts_str_dir(tmp_path: pathlib.Path) -> None:
    make_idx_set(tmp_path)
    assert data.load_dataset("mnist", str(tmp_path), download=False).train_y.tolist()[0] == 3


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4), (0, 5)])
def test_read_idx_round_trip(tmp_path: pathlib.Path, suffix: str, shape: tuple[int, ...]) -> None:
    array = (np.arange(int(np.prod(shape))) * 13 % 256).astype(np.uint8).reshape(shape)
    path = write_file(tmp_path / f"x-ubyte{suffix}", idx_bytes(array))
    out = formats.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == shape
    assert np.array_equal(out, array)
    out[...] = 0  # writable, so torch.from_numpy does not warn


def _truncated_gz(path: pathlib.Path) -> None:
    blob = gzip.compress(idx_bytes(np.zeros((5, 28, 28), np.uint8)))
    path.write_bytes(blob[: len(blob) // 2])


def _not_gzip(path: pathlib.Path) -> None:
    path.write_bytes(idx_bytes(np.zeros((5, 28, 28), np.uint8)))  # plain bytes named .gz


def _truncated_data(path: pathlib.Path) -> None:
    blob = idx_bytes(np.zeros((5, 28, 28), np.uint8))
    write_file(path, blob[:-100])  # header says 5 images, fewer bytes follow


def _bad_magic(path: pathlib.Path) -> None:
    write_file(path, b"\x01\x02" + idx_bytes(np.zeros((5, 28, 28), np.uint8))[2:])


def _wrong_type_code(path: pathlib.Path) -> None:
    write_file(path, idx_bytes(np.zeros((5, 28, 28), np.uint8), type_code=0x0D))


def _short_header(path: pathlib.Path) -> None:
    write_file(path, b"\x00\x00\x08\x03\x00\x00")


@pytest.mark.parametrize(
    "corrupt",
    [_truncated_gz, _not_gzip, _truncated_data, _bad_magic, _wrong_type_code, _short_header],
)
def test_corrupt_file_is_clear_error(tmp_path: pathlib.Path, corrupt: object) -> None:
    make_idx_set(tmp_path)
    corrupt(tmp_path / TRAIN_IMAGES)
    with pytest.raises(LatentEBMError, match=TRAIN_IMAGES) as info:
        data.load_dataset("fashion-mnist", tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "download it again" in message or "0x08" in message


def test_count_mismatch(tmp_path: pathlib.Path) -> None:
    make_idx_set(tmp_path)
    write_file(tmp_path / TEST_LABELS, idx_bytes(np.array([1, 2], dtype=np.uint8)))
    with pytest.raises(LatentEBMError, match="holds 3 images") as info:
        data.load_dataset("mnist", tmp_path, download=False)
    assert TEST_LABELS in str(info.value) and TEST_IMAGES in str(info.value)


def test_wrong_rank(tmp_path: pathlib.Path) -> None:
    make_idx_set(tmp_path)
    write_file(tmp_path / TRAIN_LABELS, idx_bytes(np.zeros((5, 2), np.uint8)))
    with pytest.raises(LatentEBMError, match=TRAIN_LABELS):
        data.load_dataset("mnist", tmp_path, download=False)


def test_missing_fashion_mnist_file(tmp_path: pathlib.Path) -> None:
    make_idx_set(tmp_path)
    (tmp_path / TEST_LABELS).unlink()
    with pytest.raises(LatentEBMError) as info:
        data.load_dataset("fashion-mnist", tmp_path)
    message = str(info.value)
    assert TEST_LABELS in message and str(tmp_path) in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


# MNIST download.


@pytest.fixture
def served(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """Serve test-made MNIST files from the mirror (the first source is offline); record URLs."""
    arrays = make_idx_set(tmp_path / "source")
    blobs = {name: (tmp_path / "source" / name).read_bytes() for name in FILES}
    requested: list[str] = []

    def fake_urlopen(url: str, timeout: float) -> io.BytesIO:
        requested.append(url)
        assert timeout <= 10
        if url.startswith(sources._MNIST_URLS[0]):
            raise urllib.error.URLError("offline")
        return io.BytesIO(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    md5 = {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}
    monkeypatch.setattr(sources, "_MNIST_MD5", md5)
    return {"arrays": arrays, "requested": requested}


def test_mnist_download_ok(tmp_path: pathlib.Path, served: dict) -> None:
    dest = tmp_path / "cache"
    ds = data.load_dataset("mnist", dest)
    assert np.array_equal(ds.train_x[:, 0].numpy(), served["arrays"][TRAIN_IMAGES])
    assert ds.test_y.tolist() == [9, 2, 6]
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no temporary files left
    assert len(served["requested"]) == 8  # each file: official source failed, then the mirror
    assert data.load_dataset("mnist", dest).train_y.tolist() == [3, 1, 4, 1, 5]
    assert len(served["requested"]) == 8  # second load reads the cache


def test_mnist_download_checksum_mismatch(
    tmp_path: pathlib.Path, served: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sources._MNIST_MD5, TRAIN_IMAGES, "0" * 32)
    dest = tmp_path / "cache"
    with pytest.raises(LatentEBMError, match="MD5 checksum") as info:
        data.load_dataset("mnist", dest)
    assert TRAIN_IMAGES in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists()  # the bad download is not kept, nor the folder it made


def test_mnist_offline(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, timeout: float) -> io.BytesIO:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(LatentEBMError, match=TRAIN_IMAGES) as info:
        data.load_dataset("mnist", tmp_path)
    message = str(info.value)
    assert "http://yann.lecun.com/exdb/mnist/" + TRAIN_IMAGES in message
    assert str(tmp_path) in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_mnist_no_download(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(url: str, timeout: float) -> io.BytesIO:
        raise AssertionError("must not touch the network")

    monkeypatch.setattr(urllib.request, "urlopen", forbidden)
    with pytest.raises(LatentEBMError, match=TRAIN_IMAGES):
        data.load_dataset("mnist", tmp_path, download=False)


# Digits, scaling, registry.


def test_digits() -> None:
    ds = data.load_dataset("digits")
    assert ds.train_x.shape == (1437, 1, 8, 8) and ds.test_x.shape == (360, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    both = torch.cat([ds.train_x, ds.test_x])
    assert int(both.min()) == 0 and int(both.max()) == 255
    assert ds.shape == (1, 8, 8) and ds.num_classes == 10
    assert set(torch.cat([ds.train_y, ds.test_y]).tolist()) == set(range(10))
    again = data.load_dataset("digits", "/nonexistent")  # data_dir ignored
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)

    # Train and test split the 1,797 images: as a multiset they are exactly sklearn's originals.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    originals = np.rint(bunch.data * 255 / 16).astype(np.uint8)
    expected = sorted(
        (row.tobytes(), int(y)) for row, y in zip(originals, bunch.target, strict=True)
    )
    labels = torch.cat([ds.train_y, ds.test_y])
    got = sorted((x.numpy().tobytes(), int(y)) for x, y in zip(both, labels, strict=True))
    assert len(got) == 1797 and got == expected


def test_to_float_exact() -> None:
    x = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).reshape(1, 1, 2, 3)
    y = data.to_float(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    assert y.flatten()[0].item() == -1.0 and y.flatten()[-1].item() == 1.0
    assert torch.equal(y, x.double().div(127.5).sub(1).float())  # correctly rounded
    everything = data.to_float(torch.arange(256, dtype=torch.uint8))
    assert torch.equal(everything, -everything.flip(0))  # symmetric about 127.5


def test_unknown_name() -> None:
    with pytest.raises(LatentEBMError, match="digits, mnist, fashion-mnist"):
        data.load_dataset("cifar100")
    assert tuple(data.DATASETS) == (
        "digits",
        "mnist",
        "fashion-mnist",
        "svhn",
        "cifar10",
        "celeba",
        "celeba-hq",
        "imagefolder",
    )


def test_resolve_data_dir_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    spec = dataclasses.replace(data.DATASETS["fashion-mnist"], system_dir=system)
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", spec)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    cache = tmp_path / "home" / ".cache" / "latent-ebm"

    assert data.resolve_data_dir("fashion-mnist", None) == cache / "fashion-mnist"  # no system
    system.mkdir()
    assert data.resolve_data_dir("fashion-mnist", None) == system
    assert data.resolve_data_dir("mnist", None) == cache / "mnist"
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert data.resolve_data_dir("fashion-mnist", None) == tmp_path / "env" / "fashion-mnist"
    assert data.resolve_data_dir("mnist", None) == tmp_path / "env" / "mnist"
    assert data.resolve_data_dir("mnist", tmp_path / "explicit") == tmp_path / "explicit"
    with pytest.raises(LatentEBMError, match="unknown data set"):
        data.resolve_data_dir("nope", None)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    ds = data.load_dataset("fashion-mnist")
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.shape == (1, 28, 28) and ds.num_classes == 10
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
