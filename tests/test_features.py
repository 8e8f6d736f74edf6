"""Tests for latent_ebm.evaluation.features and latent_ebm.evaluation.classifier: Frechet
distance against closed forms, the cached digits classifier, and the FID Inception-v3 layout
(built, saved, loaded strictly)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time

import numpy as np
import pytest
import scipy.linalg
import torch

from latent_ebm.data import load_dataset, to_float
from latent_ebm.data.cache import CACHE_ENV_VAR
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation import classifier
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.evaluation.features import (
    extract,
    frechet_distance,
    gaussian_stats,
    inception_features,
)
from latent_ebm.evaluation.inception import FID_INCEPTION_PARAMETERS, FIDInceptionV3

FASHION = pathlib.Path("/usr/share/datasets/fashion-mnist")


def rotation(d: int, seed: int) -> np.ndarray:
    """A random orthogonal ``(d, d)`` matrix."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


def closed_form(mu1, a, mu2, b) -> float:
    """FID of ``N(mu1, Q diag(a) Q^T)`` and ``N(mu2, Q diag(b) Q^T)`` (one eigenbasis Q)."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


# Frechet distance.


def test_frechet_diagonal_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 4.0, 6), rng.uniform(0.1, 4.0, 6)
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(closed_form(mu1, a, mu2, b), rel=1e-6)


def test_frechet_shared_eigenbasis_closed_form() -> None:
    rng = np.random.default_rng(1)
    q = rotation(8, 1)
    a, b = rng.uniform(0.01, 9.0, 8), rng.uniform(0.01, 9.0, 8)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(closed_form(mu1, a, mu2, b), rel=1e-6)


def test_frechet_general_matches_sqrtm() -> None:
    # Non-commuting, well-conditioned covariances: scipy's sqrtm of the product is accurate here.
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, 5)), rng.standard_normal((5, 5))
    c1, c2 = x @ x.T + 0.5 * np.eye(5), y @ y.T + 0.5 * np.eye(5)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    tr_sqrt = np.trace(scipy.linalg.sqrtm(c1 @ c2)).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_sqrt
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-6)  # symmetric


def test_frechet_self_is_zero() -> None:
    x = np.random.default_rng(3).standard_normal((500, 20)) * np.linspace(0.1, 5.0, 20)
    mu, cov = gaussian_stats(x)
    assert abs(frechet_distance(mu, cov, mu, cov)) < 1e-6 * np.trace(cov)


def test_frechet_rank_deficient_samples() -> None:
    # 10 samples of 50-d features: covariances of rank 9.
    rng = np.random.default_rng(4)
    mu1, cov1 = gaussian_stats(rng.standard_normal((10, 50)))
    mu2, cov2 = gaussian_stats(rng.standard_normal((10, 50)) + 0.5)
    d = frechet_distance(mu1, cov1, mu2, cov2)
    assert np.isfinite(d) and d > 0
    assert abs(frechet_distance(mu1, cov1, mu1, cov1)) < 1e-6 * np.trace(cov1)


@pytest.mark.parametrize("tiny", [1e-12, 0.0])
def test_frechet_near_singular_closed_form(tiny: float) -> None:
    # Half the eigenvalues are 1e-12 (or exactly 0), in a rotated basis.
    rng = np.random.default_rng(5)
    q = rotation(12, 5)
    a = np.r_[rng.uniform(0.5, 2.0, 6), np.full(6, tiny)]
    b = np.r_[rng.uniform(0.5, 2.0, 6), np.full(6, tiny)]
    mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert np.isfinite(got) and got >= 0
    assert got == pytest.approx(closed_form(mu1, a, mu2, b), rel=1e-6)
    # Both singular in the same directions and equal: exactly 0 after clipping.
    c = q @ np.diag(a) @ q.T
    assert 0 <= frechet_distance(mu1, c, mu1, c) < 1e-6 * np.trace(c)


def test_frechet_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one D"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_gaussian_stats_matches_numpy() -> None:
    x = np.random.default_rng(6).standard_normal((40, 7)).astype(np.float32)
    for given in (x, torch.from_numpy(x)):
        mu, cov = gaussian_stats(given)
        assert mu.dtype == cov.dtype == np.float64
        np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x.astype(np.float64), rowvar=False), rtol=1e-12)
    assert gaussian_stats(x[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(x[:1])


# The offline classifier.


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("classifiers")
    ds = load_dataset("digits")
    start = time.perf_counter()
    extractor = classifier_features(ds, cache)
    return ds, cache, extractor, time.perf_counter() - start


@pytest.fixture
def fast_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Train for 5 steps only and record each training run's data set name."""
    calls: list[str] = []
    train = classifier._train

    def counted(dataset, **kwargs):
        calls.append(dataset.name)
        return train(dataset, **kwargs)

    monkeypatch.setattr(classifier, "_MIN_STEPS", 5)
    monkeypatch.setattr(classifier, "_EPOCHS", 0)
    monkeypatch.setattr(classifier, "_train", counted)
    return calls


def test_classifier_digits_accuracy_and_features(digits_classifier) -> None:
    ds, cache, extractor, seconds = digits_classifier
    print(f"digits classifier: test accuracy {extractor.test_accuracy:.4f}, {seconds:.1f} s")
    assert extractor.test_accuracy >= 0.95
    assert extractor.name == "classifier"
    feats = extract(extractor, ds.test_x, batch_size=100)
    assert feats.shape == (len(ds.test_x), extractor.dim) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # after the ReLU
    # uint8 and float input agree; the batch size does not matter (eval-mode BatchNorm).
    torch.testing.assert_close(extract(extractor, to_float(ds.test_x), batch_size=7), feats)
    info = extractor.describe()
    assert info["name"] == "classifier" and info["dim"] == 128 and info["dataset"] == "digits"
    assert info["test_accuracy"] == extractor.test_accuracy
    assert info["weights"] == str(cache / "classifier-digits.pt")


def test_classifier_cache_is_reused(digits_classifier, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, cache, extractor, _ = digits_classifier
    assert (cache / "classifier-digits.pt").is_file()
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]  # atomic write: no litter

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifier, "_train", no_training)
    again = classifier_features(ds, cache)
    assert again.test_accuracy == extractor.test_accuracy
    torch.testing.assert_close(again(ds.test_x[:50]), extractor(ds.test_x[:50]), rtol=0, atol=0)


def test_classifier_default_cache_dir(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, fast_training: list[str]
) -> None:
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))
    classifier_features(load_dataset("digits"))
    assert (tmp_path / "classifier-digits.pt").is_file() and fast_training == ["digits"]


def test_classifier_retrains_on_other_data(
    digits_classifier, tmp_path: pathlib.Path, fast_training: list[str]
) -> None:
    ds, cache, _, _ = digits_classifier
    (tmp_path / "classifier-digits.pt").write_bytes((cache / "classifier-digits.pt").read_bytes())
    other_x = ds.train_x.clone()
    other_x[0, 0, 0, 0] ^= 1  # one pixel differs: another fingerprint
    other = dataclasses.replace(ds, train_x=other_x)
    with pytest.warns(UserWarning, match="other data"):
        retrained = classifier_features(other, tmp_path)
    assert fast_training == ["digits"]
    classifier_features(other, tmp_path)  # the new cache now matches
    assert fast_training == ["digits"]
    assert retrained.describe()["train_fingerprint"] != classifier._fingerprint(ds)


@pytest.mark.parametrize("payload", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_classifier_corrupt_cache_retrains(
    tmp_path: pathlib.Path, fast_training: list[str], payload: bytes
) -> None:
    (tmp_path / "classifier-digits.pt").write_bytes(payload)
    with pytest.warns(UserWarning, match="unreadable"):
        extractor = classifier_features(load_dataset("digits"), tmp_path)
    assert fast_training == ["digits"]
    assert extractor(torch.zeros(3, 1, 8, 8)).shape == (3, 128)
    torch.load(tmp_path / "classifier-digits.pt", weights_only=True)  # replaced by a good one


def test_classifier_unwritable_cache_warns(tmp_path: pathlib.Path, fast_training) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write"):
        extractor = classifier_features(load_dataset("digits"), blocker)
    assert extractor.describe()["weights"] is None


def test_classifier_training_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier, "_MIN_STEPS", 5)
    monkeypatch.setattr(classifier, "_EPOCHS", 0)
    ds = load_dataset("digits")
    (a, acc_a), (b, acc_b) = (
        classifier._train(ds, device="cpu", progress=False, seed=3) for _ in "ab"
    )
    assert acc_a == acc_b
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=key)
    state = torch.get_rng_state()
    classifier._train(ds, device="cpu", progress=False, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_classifier_refuses_other_image_shape(digits_classifier) -> None:
    _, _, extractor, _ = digits_classifier
    with pytest.raises(LatentEBMError, match="shape"):
        extractor(torch.zeros(2, 1, 28, 28))


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 28)])
def test_classifier_adapts_to_image_size(shape: tuple[int, int, int]) -> None:
    net = classifier._Classifier(shape[0], shape[1], num_classes=10)
    x = torch.zeros(2, *shape)
    assert net(x).shape == (2, 10) and net.features(x).shape == (2, 128)


@pytest.mark.skipif(
    not (FASHION.is_dir() and os.environ.get("LATENT_EBM_SLOW") == "1"),
    reason="slow (minutes): set LATENT_EBM_SLOW=1 with Fashion-MNIST installed",
)
def test_classifier_fashion_mnist_accuracy(tmp_path: pathlib.Path) -> None:
    start = time.perf_counter()
    extractor = classifier_features(load_dataset("fashion-mnist"), tmp_path, progress=True)
    seconds = time.perf_counter() - start
    print(f"fashion-mnist classifier: test accuracy {extractor.test_accuracy:.4f}, {seconds:.0f} s")
    assert extractor.test_accuracy >= 0.90


# The FID Inception-v3 network.


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A state dict of the FID layout (random weights) saved the way the weights file is."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "inception.pth"
    torch.save(FIDInceptionV3().state_dict(), path)
    return path


def test_inception_layout() -> None:
    net = FIDInceptionV3()
    count = sum(p.numel() for p in net.parameters())
    print(f"FID Inception-v3 parameters: {count:,}")
    assert count == FID_INCEPTION_PARAMETERS == 23_850_960
    state = net.state_dict()
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_1a_3x3.bn.running_mean": (32,),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
        "Mixed_7c.branch3x3dbl_3a.conv.weight": (384, 384, 1, 3),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("AuxLogits") for k in state)
    assert all(m.eps == 0.001 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not any(m.bias is not None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_inception_features_load_and_run(inception_file: pathlib.Path) -> None:
    extractor = inception_features(inception_file)
    assert extractor.name == "inception" and extractor.dim == 2048
    assert extractor.describe() == {
        "name": "inception",
        "dim": 2048,
        "weights": str(inception_file),
    }
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    gray = extractor(x)
    assert gray.shape == (2, 2048) and torch.isfinite(gray).all()
    torch.testing.assert_close(gray, extractor(x.repeat(1, 3, 1, 1)))  # gray = 3 equal channels
    colour = extractor(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert colour.shape == (2, 2048) and torch.isfinite(colour).all()


def test_inception_old_file_without_batch_counters(tmp_path: pathlib.Path, inception_file) -> None:
    state = torch.load(inception_file, weights_only=True)
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    assert inception_features(tmp_path / "old.pth").dim == 2048


def test_inception_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nowhere.pth"
    with pytest.raises(LatentEBMError, match=r"nowhere\.pth") as info:
        inception_features(path)
    assert "pt_inception-2015-12-05-6726825d.pth" in str(info.value)
    assert "--weights" in str(info.value)


def test_inception_wrong_layout(tmp_path: pathlib.Path, inception_file: pathlib.Path) -> None:
    state = torch.load(inception_file, weights_only=True)
    del state["Mixed_6a.branch3x3.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    state["fc.weight"] = torch.zeros(1000, 2048)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(LatentEBMError) as info:
        inception_features(tmp_path / "wrong.pth")
    message = str(info.value)
    assert "Mixed_6a.branch3x3.conv.weight" in message and "AuxLogits.fc.weight" in message
    assert "fc.weight" in message


def test_inception_corrupt_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(LatentEBMError, match="could not read"):
        inception_features(tmp_path / "bad.pth")
