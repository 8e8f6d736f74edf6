"""Training loop: exact resume, checkpoints, diverged chains, signals, bad input, the CLI."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latent_ebm import rng
from latent_ebm.errors import ChainDivergedError, LatentEBMError
from latent_ebm.rundir import CHECKPOINT, read_metrics
from latent_ebm.train import train
from tests.conftest import (
    TINY,
    assert_resume_matches,
    assert_same_state,
    checkpoint_state,
    run_cli,
    tiny_config,
)


@pytest.mark.parametrize("mode", ["persistent", "langevin"])
def test_resume_equals_uninterrupted(tmp_path, digits, mode):
    """Stop at n = 6 (the transition to stage 1 of 2), resume to 12: the same result."""
    cfg = tiny_config(f"prior.prior_samples={mode}", "prior.prior_steps=3")
    full, metrics = assert_resume_matches(cfg, tmp_path, 6, digits)
    assert int(full["model"]["prior.stage"]) == 2  # every ratio joined the final prior
    assert [m["iteration"] for m in metrics] == [2, 4, 6, 8, 10, 12]


def test_resume_after_checkpoint_mid_window_truncates_log(tmp_path, digits):
    # The stop at 5 saves a checkpoint in the middle of a log window (4, 6]: the window's
    # values travel in the checkpoint, so the line at 6 matches the uninterrupted run's.
    cfg = tiny_config("train.ckpt_every=3", "train.log_every=2")
    assert_resume_matches(cfg, tmp_path, 5, digits)


def test_nan_in_chain_stops_and_keeps_last_good_checkpoint(tmp_path, digits, monkeypatch):
    original = rng.Streams.chain_noise

    def poisoned(self, stream, dim):
        noise = original(self, stream, dim)
        if self.iteration < 9:
            return noise
        return lambda step: noise(step) * float("nan")

    monkeypatch.setattr(rng.Streams, "chain_noise", poisoned)
    with pytest.raises(ChainDivergedError) as err:
        train(tiny_config(), tmp_path / "run", progress=False, data=digits)
    msg = str(err.value)
    assert "iteration 10" in msg and "post_step_size" in msg and "iteration 8" in msg
    assert "\n" not in msg
    assert checkpoint_state(tmp_path / "run")["iteration"] == 8


def test_nan_in_prior_chain_names_the_prior_chain(tmp_path, digits, monkeypatch):
    original = rng.Streams.chain_noise

    def poisoned(self, stream, dim):  # the lebm prior chain's noise, from iteration 3 on
        noise = original(self, stream, dim)
        if stream != rng.PRIOR_NOISE or self.iteration < 2:
            return noise
        return lambda step: noise(step) * float("nan")

    monkeypatch.setattr(rng.Streams, "chain_noise", poisoned)
    cfg = tiny_config("prior.kind=lebm", "train.ckpt_every=2")
    with pytest.raises(ChainDivergedError) as err:
        train(cfg, tmp_path / "run", progress=False, data=digits)
    msg = str(err.value)
    assert msg.startswith("iteration 3: the prior's chain diverged")
    assert "prior.prior_step_size" in msg and "data-set examples" not in msg
    assert checkpoint_state(tmp_path / "run")["iteration"] == 2


def test_full_disk_keeps_previous_checkpoint(tmp_path, digits, monkeypatch):
    cfg = tiny_config()
    train(cfg, tmp_path / "run", progress=False, data=digits, max_iters=4)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(LatentEBMError, match=r"No space left.*iteration 4 is intact"):
        train(None, tmp_path / "run", resume=True, progress=False, data=digits)
    monkeypatch.undo()
    assert checkpoint_state(tmp_path / "run")["iteration"] == 4
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_sigterm_saves_checkpoint_then_resume_finishes(tmp_path):
    run = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    cmd = [sys.executable, "-m", "latent_ebm.cli", "train", "--out", str(run), "--no-eval"]
    cmd += [*sets, "--set", "train.iters=100000", "--set", "train.ckpt_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not read_metrics(run) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    done = checkpoint_state(run)["iteration"]
    assert done >= 2
    last_logged = read_metrics(run)[-1]["iteration"]
    assert last_logged <= done


def test_cli_end_to_end_on_digits(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    code, out, err = run_cli(["train", "--out", str(run), "--no-progress", *sets], capsys)
    assert code == 0, err
    for name in [
        "config.yaml",
        "metrics.jsonl",
        CHECKPOINT,
        "samples.png",
        "reconstructions.png",
        "nce_loss.png",
        "eval/recon.json",
    ]:
        assert (run / name).exists(), name
    recon = json.loads((run / "eval/recon.json").read_text())
    assert recon["n"] == 360 and 0 < recon["value"] < 4
    assert f"{recon['value']:.4f}" in out
    lines = read_metrics(run)
    assert {"iteration", "stage", "time", "loss_g", "nce"} <= set(lines[0])
    # The run is complete: resuming it changes nothing and exits cleanly.
    before = checkpoint_state(run)
    code, _, err = run_cli(
        ["train", "--resume", "--out", str(run), "--no-progress", "--no-eval"], capsys
    )
    assert code == 0, err
    assert_same_state(before, checkpoint_state(run))


def _write_truncated_idx(folder: Path) -> None:
    folder.mkdir()
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]:
        data = gzip.compress(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x00" * 10)
        (folder / name).write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--preset", "nope"], "unknown preset 'nope'"),
        (["--set", "train.foo=1"], "unknown config field 'train.foo'"),
        (["--set", "train.iters=-5"], "'train.iters' must be positive"),
        (["--set", "train.iters=abc"], "'train.iters' must be int"),
        (["--set", "prior.kind=xyz"], "'prior.kind' must be one of"),
        (["--set", "train.post_step_size=nan"], "'train.post_step_size' must be positive"),
        (["--set", "iters=5"], "section.field=value"),
        (["--set", "data.size=0"], "'data.size' must be positive"),
        (["--set", "data.size=16"], "digits images are 8x8: the size is fixed"),
        (["--dry-run", "--throughput", "fast"], "--throughput: expected a positive rate"),
        (["--throughput", "5T"], "--throughput applies to --dry-run"),
        (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
        (
            ["--set", "data.name=fashion-mnist", "--data-dir", "{tmp}/empty"],
            "train-images-idx3-ubyte.gz not found",
        ),
        (
            ["--set", "data.name=fashion-mnist", "--data-dir", "{tmp}/bad"],
            "is not a valid gzip file",
        ),
        (
            ["--set", "train.post_step_size=1e30", "--set", "train.ckpt_every=1"],
            "diverged (NaN/Inf)",
        ),
        (["--max-iters", "0"], "--max-iters must be at least 1"),
        pytest.param(
            ["--set", "train.device=cuda:0"],
            "no GPU is available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, expected):
    (tmp_path / "empty").mkdir()
    _write_truncated_idx(tmp_path / "bad")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    sets = [a for s in TINY for a in ("--set", s)]
    code, _, err = run_cli(
        ["train", "--out", str(tmp_path / "run"), "--no-progress", "--no-eval", *sets, *args],
        capsys,
    )
    assert code == 1
    assert err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1, err


def test_existing_run_dir_needs_resume_or_force(tmp_path, capsys, digits):
    run = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    base = ["train", "--out", str(run), "--no-progress", "--no-eval", *sets]
    assert run_cli([*base, "--max-iters", "2"], capsys)[0] == 0
    code, _, err = run_cli(base, capsys)
    assert code == 1 and "already exists" in err and "--resume" in err and "--force" in err
    code, _, err = run_cli([*base, "--force", "--max-iters", "2"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*base, "--resume", "--set", "train.iters=20"], capsys)
    assert code == 1 and "would change train.iters from 12" in err  # tests/test_resume_flags.py
    # --force refuses to delete a folder that is not a run directory.
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    code, _, err = run_cli(["train", "--out", str(other), "--force", *sets], capsys)
    assert code == 1 and "not look like a run directory" in err
    assert (other / "thesis.tex").exists()
    assert os.path.exists(run / CHECKPOINT)
