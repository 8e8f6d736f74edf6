"""Hostile inputs (issue 30, classes 9, 10 and two messages of 12): data files, config files and
weights files that lie about their sizes, expand without bound or are not what they claim. Each
gives one line that names the file and what to do, fast and in bounded memory; a failed
download leaves no trace."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import time
import tracemalloc
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from latent_ebm import data
from latent_ebm.config import load_config, resolve_config
from latent_ebm.errors import LatentEBMError
from latent_ebm.rundir import CHECKPOINT, CONFIG
from tests.conftest import TINY, assert_one_line, run_cli
from tests.formats import (
    IDX_FILES,
    cifar10_tar,
    idx_bytes,
    write_file,
    write_idx_set,
    write_svhn,
)

SETS = [a for s in TINY for a in ("--set", s)]
TRAIN_IMAGES, TRAIN_LABELS = IDX_FILES[0]


def _one_line(exc: pytest.ExceptionInfo, *expected: str) -> str:
    """The error's message: one short line holding each of ``expected``."""
    message = str(exc.value)
    assert "\n" not in message and len(message) < 600, message
    for e in expected:
        assert e in message, message
    return message


# 9. Data files.


def _idx_header(type_code: int, dims: tuple[int, ...]) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


HOSTILE_IDX = {
    # 255 dimensions of size 0: 0 data bytes, an array of more dimensions than numpy allows
    "ndim 255": _idx_header(0x08, (0,) * 255),
    # 65536**4 == 2**64: the product wraps to 0 in 64 bits, so 0 data bytes "match"
    "product wraps": _idx_header(0x08, (65536, 65536, 65536, 65536)),
    "product huge": _idx_header(0x08, (2**32 - 1, 2**32 - 1, 2**32 - 1)) + bytes(100),
    "type code 0xff": _idx_header(0xFF, (5, 28, 28)) + bytes(5 * 28 * 28),
    "no dimensions": _idx_header(0x08, ()) + bytes(1),
}


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("hostile", list(HOSTILE_IDX), ids=list(HOSTILE_IDX))
def test_a_hostile_idx_header_is_one_line(tmp_path: Path, hostile: str, suffix: str) -> None:
    write_idx_set(tmp_path)
    name = TRAIN_IMAGES if suffix else TRAIN_IMAGES.removesuffix(".gz")
    path = write_file(tmp_path / name, HOSTILE_IDX[hostile])
    with pytest.raises(LatentEBMError) as info:
        data.formats.read_idx(path)
    _one_line(info, str(path), "download it again")


def test_a_hostile_idx_header_through_the_command_line(tmp_path: Path, capsys) -> None:
    write_idx_set(tmp_path / "mnist")
    write_file(tmp_path / "mnist" / TRAIN_IMAGES, HOSTILE_IDX["ndim 255"])
    code, _, err = run_cli(
        ["train", "--out", tmp_path / "run", "--no-progress", "--no-eval", *SETS,
         "--set", "data.name=mnist", "--data-dir", tmp_path / "mnist"],
        capsys,
    )  # fmt: skip
    assert_one_line(code, err, TRAIN_IMAGES, "255")
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def _gzip_stream(header: bytes, zeros: int) -> bytes:
    """gzip of ``header`` followed by ``zeros`` zero bytes, compressed in pieces (a "bomb")."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        f.write(header)
        block = bytes(1 << 20)
        for _ in range(zeros >> 20):
            f.write(block)
    return out.getvalue()


def test_a_gzip_bomb_stops_at_the_declared_size(tmp_path: Path) -> None:
    """A 2-image header followed by 32 MB of zeros: refused after reading little more than the
    header declares, never the whole expansion."""
    blob = _gzip_stream(_idx_header(0x08, (2, 28, 28)), 32 << 20)
    assert len(blob) < 100_000
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(blob)
    tracemalloc.start()
    try:
        with pytest.raises(LatentEBMError) as info:
            data.formats.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _one_line(info, str(path), "more data than its header declares")
    assert peak < 8 << 20, f"{peak:,} bytes held: the file was decompressed whole"


def test_an_idx_header_declaring_gigabytes_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / TRAIN_LABELS
    path.write_bytes(gzip.compress(_idx_header(0x08, (3_000_000_000,)) + bytes(1000)))
    with pytest.raises(LatentEBMError) as info:
        data.formats.read_idx(path)
    _one_line(info, str(path), "3,000,000,000")


@pytest.mark.parametrize("bad", [10, 255])
def test_labels_outside_the_class_range_are_refused(tmp_path: Path, bad: int) -> None:
    write_idx_set(tmp_path)
    labels = np.array([1, 2, bad, 3], dtype=np.uint8)
    images = np.zeros((4, 28, 28), np.uint8)
    write_file(tmp_path / TRAIN_IMAGES, idx_bytes(images))
    write_file(tmp_path / TRAIN_LABELS, idx_bytes(labels))
    with pytest.raises(LatentEBMError) as info:
        data.load_dataset("mnist", tmp_path, download=False)
    _one_line(info, TRAIN_LABELS, f"label {bad}", "0..9")


def test_idx_images_of_another_size_are_refused(tmp_path: Path) -> None:
    write_idx_set(tmp_path)
    write_file(tmp_path / TRAIN_IMAGES, idx_bytes(np.zeros((20, 32, 32), np.uint8)))
    with pytest.raises(LatentEBMError) as info:
        data.load_dataset("fashion-mnist", tmp_path)
    _one_line(info, TRAIN_IMAGES, "32x32", "28x28")


def _rewrite_cache(path: Path, change: str) -> None:
    """Rewrite a decoded-array cache, fingerprint kept, with arrays that disagree with the set."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    if change == "image shape":
        arrays["test_x"] = np.zeros((len(arrays["test_y"]), 3, 28, 28), np.uint8)
    elif change == "channels":
        arrays["train_x"] = arrays["train_x"][:, :1].copy()
        arrays["test_x"] = arrays["test_x"][:, :1].copy()
    elif change == "label range":
        arrays["train_y"] = arrays["train_y"] + 100
    elif change == "negative label":
        arrays["test_y"] = arrays["test_y"] - 50
    elif change == "no test rows":
        arrays["test_x"], arrays["test_y"] = arrays["test_x"][:0], arrays["test_y"][:0]
    elif change == "dtype":
        arrays["train_x"] = arrays["train_x"].astype(np.int16)
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "change",
    ["image shape", "channels", "label range", "negative label", "no test rows", "dtype"],
)
def test_a_cache_that_disagrees_with_the_set_is_rebuilt(tmp_path: Path, change: str) -> None:
    expected = write_svhn(tmp_path, n_train=12, n_test=4)
    data.load_dataset("svhn", tmp_path)
    cache = tmp_path / "svhn.cache.npz"
    _rewrite_cache(cache, change)
    if change == "dtype":  # another layout: rebuilt quietly, as before
        loaded = data.load_dataset("svhn", tmp_path)
    else:
        with pytest.warns(UserWarning, match="disagrees with the data set"):
            loaded = data.load_dataset("svhn", tmp_path)
    for key, value in expected.items():
        assert np.array_equal(getattr(loaded, key).numpy(), value), key
    with np.load(cache) as z:  # and written again, right
        assert np.array_equal(z["test_x"], expected["test_x"])
        assert np.array_equal(z["train_y"], expected["train_y"])


def _png(width: int, height: int, rows: int) -> bytes:
    """A greyscale PNG declaring ``width`` x ``height`` whose data holds ``rows`` zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes((width + 1) * rows), 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    from tests.formats import write_imagefolder

    write_imagefolder(tmp_path, n=4)
    (tmp_path / "huge.png").write_bytes(_png(20_000, 20_000, 1))  # 400 M pixels, 1 row of data
    (tmp_path / "big.png").write_bytes(_png(9_000, 9_000, 1))  # below Pillow's own limit
    for name in ("huge.png", "big.png"):
        with pytest.raises(LatentEBMError) as info:
            data.images.read_images(tmp_path, [name], 8)
        _one_line(info, name, "pixels")


def test_a_zip_member_expanding_beyond_the_limit_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member that expands past the limit on an image's bytes (256 MiB; 1 MiB here, so that
    the test stays small) is refused on its declared size, without decompressing it."""
    monkeypatch.setattr(data.images, "_MAX_MEMBER_BYTES", 1 << 20)
    archive = tmp_path / "img_align_celeba.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("img_align_celeba/000001.jpg", bytes(4 << 20))  # 4 MB of zeros, 4 kB zipped
    with pytest.raises(LatentEBMError) as info:
        data.images.read_images(archive, ["img_align_celeba/000001.jpg"], 8)
    _one_line(info, "000001.jpg", "bytes")


def test_an_image_folder_with_a_link_cycle_is_read_once(tmp_path: Path) -> None:
    from tests.formats import write_imagefolder

    write_imagefolder(tmp_path, n=10)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "up").symlink_to(tmp_path)  # a/up/a/up/... never ends
    loaded = data.load_dataset("imagefolder", tmp_path, size=8)
    assert len(loaded.train_x) + len(loaded.test_x) == 10


def test_an_svhn_file_expanding_beyond_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its compressed variables are counted in chunks before scipy reads them (limit 1 GiB;
    1 MiB here, so that the test stays small)."""
    import scipy.io

    monkeypatch.setattr(data.formats, "MAT_MAX_BYTES", 1 << 20)
    path = tmp_path / "train_32x32.mat"
    x, y = np.zeros((32, 32, 3, 1500), np.uint8), np.ones((1500, 1), np.uint8)  # 4.6 MB of zeros
    scipy.io.savemat(path, {"X": x, "y": y}, do_compression=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(LatentEBMError) as info:
        data.formats.read_svhn_mat(path)
    _one_line(info, str(path), "expands to more than")


def test_a_cifar_archive_expanding_beyond_the_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused at the header of the member that passes the limit (1 GiB; 1 MiB here)."""
    monkeypatch.setattr(data.formats, "_MAX_TAR_BYTES", 1 << 20)
    path = cifar10_tar(tmp_path / "cifar-10-python.tar.gz", {"padding": bytes(4 << 20)})
    with pytest.raises(LatentEBMError) as info:
        data.formats.read_cifar10_tar(path)
    _one_line(info, str(path), "not the CIFAR-10 python archive")


def test_a_bad_classifier_cache_is_retrained_with_a_plain_warning(
    tmp_path: Path, digits, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latent_ebm.evaluation import classifier

    monkeypatch.setattr(classifier, "_MIN_STEPS", 2)
    monkeypatch.setattr(classifier, "_EPOCHS", 0)
    _bad_weights("pickle protocol 5", tmp_path / "classifier-digits.pt")
    with pytest.warns(UserWarning) as caught:
        classifier.classifier_features(digits, tmp_path)
    messages = " ".join(str(w.message) for w in caught)
    assert "pickle protocol 4" in messages and "rebuilding" in messages, messages
    _no_torch_advice(messages)


# 12. A failed download removes what it created.


def _offline(url: str, timeout: float) -> io.BytesIO:
    raise urllib.error.URLError("no network")


class _CutShort(io.BytesIO):
    def read(self, size: int = -1) -> bytes:
        if self.tell() >= 1000:
            raise ConnectionResetError("connection reset by peer")
        return super().read(min(size, 1000))


@pytest.mark.parametrize("failure", ["offline", "cut short"])
def test_a_failed_download_leaves_no_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    serve = _offline if failure == "offline" else lambda url, timeout: _CutShort(bytes(5000))
    monkeypatch.setattr(urllib.request, "urlopen", serve)
    for name, target in (("mnist", "a/b/mnist"), ("svhn", "c/svhn")):
        with pytest.raises(LatentEBMError) as info:
            data.load_dataset(name, tmp_path / target)
        _one_line(info, "download")
    assert list(tmp_path.iterdir()) == []  # neither the folders nor their parents remain


def test_a_failed_download_keeps_what_was_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: _CutShort(bytes(5000)))
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(LatentEBMError):
        data.load_dataset("mnist", folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"


# 10. Config files.


def _train_config(path: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    """``train --config PATH --dry-run``: exit status and stderr."""
    code, _, err = run_cli(
        ["train", "--out", tmp_path / "run", "--config", path, "--dry-run"], capsys
    )
    return code, err


def _alias_bomb(levels: int, width: int = 10) -> str:
    """The billion-laughs YAML on ``train.lr``: level ``i`` a list of ``width`` aliases of level
    ``i - 1``, so the last one stands for ``width ** levels`` strings."""
    parts = [f"&l0 [{','.join(['lol'] * width)}]"]
    parts += [f"&l{i} [{','.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return f"train:\n  lr: [{', '.join(parts)}]\n"


@pytest.mark.parametrize("levels", [5, 9])
def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys, levels: int) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(levels))
    assert path.stat().st_size < 600
    start = time.perf_counter()
    code, err = _train_config(path, tmp_path, capsys)
    assert time.perf_counter() - start < 1.0
    assert_one_line(code, err, str(path), "alias")
    assert len(err) < 400, err[:1000]


def test_a_runs_config_yaml_with_aliases_is_refused(tmp_path: Path) -> None:
    path = tmp_path / CONFIG
    path.write_text("data: &d {name: digits}\nmodel: *d\n")
    with pytest.raises(LatentEBMError) as info:
        load_config(path)
    _one_line(info, str(path), "alias")


def test_an_alias_in_a_set_value_is_refused(tmp_path: Path) -> None:
    bomb = "[" + ", ".join(["&a [1, 2, 3, 4, 5, 6, 7, 8]"] + ["*a"] * 5) + "]"
    with pytest.raises(LatentEBMError) as info:
        resolve_config(overrides=[f"train.lr={bomb}"])
    _one_line(info, "train.lr", "alias")


LONG = "x" * 100_000


@pytest.mark.parametrize(
    "overrides",
    [
        [f"train.lr={LONG}"],  # a long bad value
        [f"train.{LONG}=1"],  # a long unknown field
        [f"{LONG}.lr=1"],  # a long unknown section
        [f"train.lr=[{', '.join(['1'] * 2000)}]"],  # a long list
        [f"train.lr={LONG}=1"],
        [f"{LONG}"],  # not section.field=value
        [f"train.lr={'[' * 5000}"],  # deeply nested
        [f"train.iters={'9' * 5000}"],  # an integer Python will not convert
        [f"data.name={'x' * 5000}"],  # a long choice (validation quotes it)
        [f"train.device={'x' * 5000}"],
        [f"train.seed=-{'1' * 4000}"],
        [f"refit.holdout={'9' * 4000}"],
    ],
    ids=[
        *("value", "field", "section", "list", "equals", "no-equals", "nested", "digits"),
        *("choice", "device", "seed", "fraction"),
    ],
)
def test_a_long_bad_override_gives_a_short_line(tmp_path: Path, capsys, overrides: list) -> None:
    args = ["train", "--out", tmp_path / "run", "--dry-run"]
    code, _, err = run_cli([*args, *[a for o in overrides for a in ("--set", o)]], capsys)
    assert_one_line(code, err)
    assert len(err) < 400, err[:1000]


@pytest.mark.parametrize(
    "text",
    [
        f"train:\n  lr: {LONG}\n",
        f"train:\n  {LONG}: 1\n",
        f"{LONG}:\n  lr: 1\n",
        "train:\n  lr: " + "[" * 5000 + "\n",
        "train:\n  iters: " + "9" * 5000 + "\n",
        "train:\n  lr: 2001-13-45\n",  # a timestamp YAML cannot build
        "train: " + "{a: " * 2000 + "1" + "}" * 2000 + "\n",
    ],
    ids=["value", "field", "section", "nested", "digits", "timestamp", "nested-map"],
)
def test_a_bad_config_file_gives_a_short_line(tmp_path: Path, capsys, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, err = _train_config(path, tmp_path, capsys)
    assert_one_line(code, err, str(path))
    assert len(err) < 400 + len(str(path)), err[:1000]


def test_a_huge_config_file_is_refused_without_reading_it_whole(tmp_path: Path, capsys) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("train:\n  lr: 0.001\n" + "# padding\n" * 300_000)
    code, err = _train_config(path, tmp_path, capsys)
    assert_one_line(code, err, str(path), "bytes")


# 12. A bad weights file says what is wrong with it, never torch's advice.


def _bad_weights(kind: str, path: Path) -> Path:
    if kind == "pickle protocol 5":
        path.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=5))
    elif kind == "zip of pickle protocol 5":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=5))
            z.writestr("archive/version", "3\n")
    elif kind == "text":
        path.write_text("hello world")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        torch.save({"a": torch.zeros(100)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "folder":
        path.mkdir()
    return path


WEIGHTS = ["pickle protocol 5", "zip of pickle protocol 5", "text", "empty", "truncated", "folder"]


def _no_torch_advice(err: str) -> None:
    for advice in ("weights_only", "Re-running", "file an issue", "trusted source"):
        assert advice not in err, err


@pytest.mark.parametrize("kind", WEIGHTS)
def test_a_bad_weights_file_says_what_is_wrong(tmp_path: Path, kind: str) -> None:
    from latent_ebm.files import WeightsFileError, load_weights

    path = _bad_weights(kind, tmp_path / "w.pt")
    with pytest.raises(WeightsFileError) as info:
        load_weights(path)
    _one_line(info, str(path))
    _no_torch_advice(str(info.value))


@pytest.mark.parametrize("kind", ["pickle protocol 5", "zip of pickle protocol 5", "text"])
def test_bad_inception_weights_and_checkpoints_are_one_line(
    tiny_run: Path,
    tmp_path: Path,
    capsys,
    kind: str,
) -> None:
    weights = _bad_weights(kind, tmp_path / "pt_inception.pth")
    args = ["eval", tiny_run, "--metric", "fid", "--features", "inception", "--weights", weights]
    code, _, err = run_cli([*args, "--n", "10", "--no-progress"], capsys)
    assert_one_line(code, err, str(weights))
    _no_torch_advice(err)
    _bad_weights(kind, tiny_run / CHECKPOINT)
    code, _, err = run_cli(["eval", tiny_run, "--metric", "recon", "--no-progress"], capsys)
    assert_one_line(code, err, CHECKPOINT)
    _no_torch_advice(err)
    assert "warning" not in err.lower()
