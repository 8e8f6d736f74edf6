"""Watching a run: in-training evaluations (exact, resumable, left out of training time),
best.pt, TensorBoard events equal to metrics.jsonl, quality.png, --checkpoint best and the
bad inputs."""

import json
import sys
import time

import numpy as np
import pytest
import torch

from latent_ebm.evaluation import evaluate_run, fid_at, recon_mse
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.monitor import EVAL_SEED, Monitor, eval_subset
from latent_ebm.refit import aggregate_posterior
from latent_ebm.rundir import BEST, TENSORBOARD, load_run, read_metrics, split_metrics
from latent_ebm.train import train
from tests.conftest import (
    TINY,
    assert_resume_matches,
    assert_same_state,
    run_cli,
    tiny_config,
)

pytestmark = pytest.mark.filterwarnings("ignore:each stage lasts")

WATCHED = ["train.eval_every=4", "train.eval_n=60", "train.keep_best=fid"]


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


def _scalars(folder):
    """Every scalar of a run's TensorBoard events, read by tensorboard's own reader:
    tag -> [(step, value)]."""
    pytest.importorskip("tensorboard")  # the extra: make test installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return scalars, {t: [e.step for e in acc.Images(t)] for t in acc.Tags()["images"]}


def _expected_scalars(run):
    """What the events must hold: every value of metrics.jsonl at its iteration (float32)."""
    losses, evals = split_metrics(read_metrics(run))
    expected = {}
    for m in losses:
        for k, v in m.items():
            if k != "iteration":
                expected.setdefault(f"train/{k}", []).append((m["iteration"], np.float32(v)))
    rates = [
        (b["iteration"], np.float32((b["iteration"] - a["iteration"]) / (b["time"] - a["time"])))
        for a, b in zip([{"iteration": 0, "time": 0.0}, *losses], losses, strict=False)
    ]
    expected["train/it_per_s"] = rates
    for m in evals:
        for k, v in m["eval"].items():
            expected.setdefault(f"eval/{k}", []).append((m["iteration"], np.float32(v)))
        expected.setdefault("eval/seconds", []).append((m["iteration"], np.float32(m["eval_time"])))
    return expected


def test_evaluations_resume_exactly_and_equal_eval(tmp_path, digits):
    """Stop at 6 (between evaluations at 4 and 8), resume: the same checkpoint, log (with the
    evaluations) and best.pt; the last evaluation is `latent-ebm eval` of the final model. The
    in-training evaluations measure the prior as trained, before the post-hoc refit, so this run
    has none (`refit.steps=0`): its final checkpoint is the model last evaluated."""
    tb = "train.tensorboard=true"
    cfg = tiny_config(*WATCHED, tb, "refit.steps=0")
    full, metrics = assert_resume_matches(cfg, tmp_path, 6, digits)
    _, evals = split_metrics(metrics)
    assert [(m["iteration"], m["stage"]) for m in evals] == [(4, 0), (8, 1), (12, 1)]
    assert full["best"]["fid"] == min(m["eval"]["fid"] for m in evals)

    # best.pt: the full training state of the lowest FID, identical after the resume.
    run, part = tmp_path / "full", tmp_path / "part"
    best = [torch.load(r / BEST, weights_only=False) for r in (run, part)]
    assert_same_state(*best)
    assert best[0]["iteration"] == full["best"]["iteration"]
    assert load_run(run, checkpoint="best")[2]["iteration"] == full["best"]["iteration"]

    # The final evaluation is eval's FID and recon MSE of the final checkpoint.
    last = evals[-1]["eval"]
    report = evaluate_run(run, "fid", n=60, seed=EVAL_SEED, progress=False)
    assert report["value"] == last["fid"]
    cfg_, model, _ = load_run(run)
    subset = digits.test_x[eval_subset(len(digits.test_x), 60)]
    post = (cfg_.train.post_steps, cfg_.train.post_step_size)
    assert recon_mse(model, subset, *post, seed=EVAL_SEED, batch_size=500) == last["recon"]

    # FID at the aggregate posterior (the ceiling column): g at 60 of the run's own posterior
    # samples of training images, the same as fid_at of aggregate_posterior's samples.
    ceiling = evaluate_run(run, "fid", n=60, method="aggregate", name="fid-q", progress=False)
    assert ceiling["settings"] == {
        "n": 60,
        "method": "aggregate",
        "seed": 0,
        "start": "noise",
        "steps": post[0],
        "step_size": post[1],
    }
    z_q = aggregate_posterior(model, digits.train_x, 60, *post, seed=0)
    assert ceiling["value"] == fid_at(model, z_q, digits.train_x, classifier_features(digits))

    # TensorBoard: the scalars equal metrics.jsonl, in the uninterrupted run and in the resumed
    # one (whose events after its checkpoint were purged); one image grid per evaluation.
    for r in (run, part):
        scalars, images = _scalars(r / TENSORBOARD)
        expected = _expected_scalars(r)
        assert set(scalars) == set(expected)
        for tag, points in expected.items():
            assert scalars[tag] == [(s, float(v)) for s, v in points], tag
        assert images == {"eval/samples": [4, 8, 12], "eval/reconstructions": [4, 8, 12]}
    assert (run / "quality.png").stat().st_size > 0


def test_evaluation_time_is_not_training_time(tmp_path, digits, monkeypatch):
    def slow(self, model):
        time.sleep(0.5)
        return {"recon": 1.0, "fid": 2.0}, ()

    monkeypatch.setattr(Monitor, "_measure", slow)
    t0 = time.perf_counter()
    train(tiny_config(*WATCHED), tmp_path / "run", progress=False, data=digits)
    wall = time.perf_counter() - t0
    losses, evals = split_metrics(read_metrics(tmp_path / "run"))
    assert [m["eval_time"] >= 0.5 for m in evals] == [True] * 3
    assert losses[-1]["time"] == evals[-1]["time"] <= wall - 1.5
    assert torch.load(tmp_path / "run" / BEST, weights_only=False)["elapsed"] <= wall - 1.5


def test_without_evaluations_the_run_is_unchanged(tmp_path, digits):
    """Evaluations change no number of training: the same checkpoint as without them."""
    train(tiny_config(), tmp_path / "plain", progress=False, data=digits)
    train(tiny_config(*WATCHED), tmp_path / "watched", progress=False, data=digits)
    a, b = (
        torch.load(tmp_path / r / "checkpoint.pt", weights_only=False) for r in ("plain", "watched")
    )
    assert_same_state(a, b)
    assert a["best"] is None and b["best"]["iteration"] in (4, 8, 12)
    assert (
        not (tmp_path / "plain" / BEST).exists()
        and not (tmp_path / "plain" / "quality.png").exists()
    )


def test_checkpoint_best_in_eval_and_sample(tmp_path, digits, capsys):
    run = tmp_path / "run"
    train(tiny_config(*WATCHED), run, progress=False, data=digits)
    best_iteration = torch.load(run / BEST, weights_only=False)["iteration"]
    code, _, err = run_cli(
        ["eval", run, "--metric", "recon", "--checkpoint", "best", "--no-progress"], capsys
    )
    assert code == 0, err
    report = json.loads((run / "eval" / "recon-best.json").read_text())
    assert report["checkpoint"] == "best" and report["iteration"] == best_iteration
    assert not (run / "eval" / "recon.json").exists()
    code, _, err = run_cli(
        ["sample", run, "--n", 4, "--checkpoint", "best", "--no-progress"], capsys
    )
    assert code == 0, err
    assert np.load(run / "samples" / "langevin-best.npz")["images"].shape == (4, 1, 8, 8)


def _listing(path):
    return sorted(p.relative_to(path) for p in path.rglob("*")) if path.exists() else None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval", "{plain}", "--metric", "fid", "--checkpoint", "best"], "has no best.pt"),
        (["sample", "{plain}", "--checkpoint", "best"], "has no best.pt"),
        (
            ["train", "--out", "{tmp}/new", "--set", "train.eval_every=13"],
            "exceeds 'train.iters'",
        ),
        (["train", "--out", "{tmp}/new", "--set", "train.keep_best=fid"], "set train.eval_every"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, digits, capsys, args, expected):
    plain = tmp_path / "plain"
    train(tiny_config(), plain, progress=False, data=digits)
    before = _listing(tmp_path)
    if args[0] == "train":
        args = [*args, "--no-progress", *[a for s in TINY for a in ("--set", s)]]
    args = [str(a).replace("{tmp}", str(tmp_path)).replace("{plain}", str(plain)) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 1 and err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert _listing(tmp_path) == before


def test_tensorboard_without_the_extra_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    args = ["train", "--out", tmp_path / "run", "--tensorboard", "--no-progress"]
    code, _, err = run_cli([*args, *[a for s in TINY for a in ("--set", s)]], capsys)
    assert code == 1 and "pip install latent-ebm[tensorboard]" in err, err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_tensorboard_after_a_kill_drops_the_lost_iterations(tmp_path, digits):
    """A kill after iteration 10 loses what followed the checkpoint at 8: the resumed run
    purges those events as it truncates the log, and the events equal metrics.jsonl again."""
    cfg = tiny_config(*WATCHED, "train.tensorboard=true")
    run = tmp_path / "run"
    train(cfg, run, progress=False, data=digits, max_iters=8)
    at_8 = (run / "checkpoint.pt").read_bytes()
    train(None, run, resume=True, progress=False, data=digits, max_iters=10)
    (run / "checkpoint.pt").write_bytes(at_8)  # as if killed before the checkpoint at 10
    train(None, run, resume=True, progress=False, data=digits)
    scalars, _ = _scalars(run / TENSORBOARD)
    for tag, points in _expected_scalars(run).items():
        assert scalars[tag] == [(s, float(v)) for s, v in points], tag
    assert [s for s, _ in scalars["train/loss_g"]] == [2, 4, 6, 8, 10, 12]
