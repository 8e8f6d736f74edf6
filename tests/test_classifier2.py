"""Tests for the second offline feature network (``classifier2`` of
latent_ebm.evaluation.classifier): an independent design and seed, trained and cached on its
own, whose FID agrees with the first classifier's on what is near and what is far."""

from __future__ import annotations

import pathlib
import time

import pytest
import torch

from latent_ebm.data import load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation import classifier
from latent_ebm.evaluation.classifier import FEATURES, NETWORKS, classifier_features
from latent_ebm.evaluation.features import extract, frechet_distance, gaussian_stats
from latent_ebm.evaluation.metrics import reference_stats


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """Both classifiers trained on digits in one cache folder; classifier2's training time."""
    cache = tmp_path_factory.mktemp("classifiers")
    ds = load_dataset("digits")
    first = classifier_features(ds, cache)
    start = time.perf_counter()
    second = classifier_features(ds, cache, network="classifier2")
    return ds, cache, first, second, time.perf_counter() - start


@pytest.fixture
def fast_training(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Train for 5 steps only and record each training run's network."""
    calls: list[str] = []
    train = classifier._train

    def counted(dataset, **kwargs):
        calls.append(kwargs["network"])
        return train(dataset, **kwargs)

    monkeypatch.setattr(classifier, "_MIN_STEPS", 5)
    monkeypatch.setattr(classifier, "_EPOCHS", 0)
    monkeypatch.setattr(classifier, "_train", counted)
    return calls


def test_names() -> None:
    assert FEATURES == ("classifier", "classifier2", "inception")
    assert set(NETWORKS) == {"classifier", "classifier2"}


def test_classifier2_digits_accuracy_and_description(trained) -> None:
    _, cache, first, second, seconds = trained
    print(
        f"digits: classifier {first.test_accuracy:.4f}, "
        f"classifier2 {second.test_accuracy:.4f} (trained in {seconds:.1f} s)"
    )
    assert second.test_accuracy >= 0.95
    info = second.describe()
    assert info["name"] == second.name == "classifier2" and info["dim"] == second.dim == 256
    assert info["seed"] == 1 and first.describe()["seed"] == 0
    assert "GroupNorm" in info["architecture"] and "BatchNorm" not in info["architecture"]
    assert info["weights"] == str(cache / "classifier2-digits.pt")
    assert first.describe()["weights"] == str(cache / "classifier-digits.pt")  # unchanged name


def test_classifier2_is_another_network(trained) -> None:
    ds, _, first, second, _ = trained
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in second.net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in first.net.modules())
    f1, f2 = extract(first, ds.test_x), extract(second, ds.test_x)
    assert f1.shape == (len(ds.test_x), 128) and f2.shape == (len(ds.test_x), 256)
    assert torch.isfinite(f2).all() and (f2 < 0).any()  # after a SiLU, not a ReLU
    # The batch size does not matter (no batch statistics), and uint8 equals float input.
    torch.testing.assert_close(extract(second, ds.test_x, batch_size=7), f2)


def test_classifier2_cache_round_trip(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, cache, _, second, _ = trained
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier2 should have been loaded")

    monkeypatch.setattr(classifier, "_train", no_training)
    again = classifier_features(ds, cache, network="classifier2")
    assert again.test_accuracy == second.test_accuracy and again.name == "classifier2"
    torch.testing.assert_close(again(ds.test_x), second(ds.test_x), rtol=0, atol=0)


def test_classifier2_training_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier, "_MIN_STEPS", 5)
    monkeypatch.setattr(classifier, "_EPOCHS", 0)
    ds = load_dataset("digits")
    (a, acc_a), (b, acc_b) = (
        classifier._train(ds, device="cpu", progress=False, seed=1, network="classifier2")
        for _ in "ab"
    )
    assert isinstance(a, classifier._Classifier2) and acc_a == acc_b
    for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=key)
    state = torch.get_rng_state()
    classifier._train(ds, device="cpu", progress=False, seed=1, network="classifier2")
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


def test_classifier2_fid_near_and_far(trained) -> None:
    ds, _, first, second, _ = trained
    shifted = ds.train_x.roll(2, dims=3)  # every digit moved 2 pixels right (of 8)
    for extractor in (first, second):
        reference = reference_stats(ds.train_x, extractor)

        def fid(images: torch.Tensor, ex=extractor, ref=reference) -> float:
            return frechet_distance(*gaussian_stats(extract(ex, images)), *ref)

        itself, test, far = fid(ds.train_x), fid(ds.test_x), fid(shifted)
        print(f"{extractor.name}: FID itself {itself:.2g}, test {test:.3g}, shifted {far:.3g}")
        assert abs(itself) < 1e-6
        assert far > 5 * test > 0  # both networks: the shifted set is far, the test split near


@pytest.mark.parametrize("payload", [b"", b"not a torch file", b"PK\x03\x04truncated"])
def test_classifier2_corrupt_cache_retrains(
    tmp_path: pathlib.Path, fast_training: list[str], payload: bytes
) -> None:
    (tmp_path / "classifier2-digits.pt").write_bytes(payload)
    with pytest.warns(UserWarning, match="unreadable") as record:
        extractor = classifier_features(load_dataset("digits"), tmp_path, network="classifier2")
    assert all(len(str(w.message).splitlines()) == 1 for w in record)
    assert fast_training == ["classifier2"]
    assert extractor(torch.zeros(3, 1, 8, 8)).shape == (3, 256)
    blob = torch.load(tmp_path / "classifier2-digits.pt", weights_only=True)  # a good one now
    assert blob["network"] == "classifier2" and blob["seed"] == 1


def test_classifier2_refuses_the_first_classifiers_cache(
    trained, tmp_path: pathlib.Path, fast_training: list[str]
) -> None:
    _, cache, _, _, _ = trained
    data = (cache / "classifier-digits.pt").read_bytes()
    (tmp_path / "classifier2-digits.pt").write_bytes(data)
    with pytest.warns(UserWarning, match="another network") as record:
        extractor = classifier_features(
            load_dataset("digits"), tmp_path, network="classifier2", seed=0
        )
    assert all(len(str(w.message).splitlines()) == 1 for w in record)
    assert fast_training == ["classifier2"] and extractor.dim == 256


def test_unknown_network_is_one_line(digits) -> None:
    with pytest.raises(LatentEBMError, match="choose classifier or classifier2") as info:
        classifier_features(digits, network="resnet")
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("shape", [(3, 32, 32), (3, 64, 64), (1, 28, 28), (1, 8, 8)])
def test_classifier2_adapts_to_image_size(shape: tuple[int, int, int]) -> None:
    net = classifier._Classifier2(shape[0], shape[1], num_classes=10)
    x = torch.zeros(2, *shape)
    assert net(x).shape == (2, 10) and net.features(x).shape == (2, 256)
