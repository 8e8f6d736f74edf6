"""Bad input and hostile files (docs/errors.md, "Run directory"): a checkpoint never runs
code, a non-finite model is never saved, a half-written metrics line does not block a run, a
full disk leaves no half-written file, a run directory has one writer, and every bad value is
one line before any work."""

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latent_ebm import rundir
from latent_ebm.rundir import CHECKPOINT, METRICS, read_metrics
from tests.conftest import SETS, assert_one_line, checkpoint_state, run_cli, train_cli

# 1. A checkpoint never runs code.


class _Payload:
    """Unpickling this calls ``os.system``: the attack a shared checkpoint could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _poison(path: Path, marker: Path) -> None:
    state = torch.load(path, weights_only=True)
    state["extra"] = _Payload(marker)
    torch.save(state, path)  # pickles the payload: loading it unsafely calls os.system


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{run}", "--metric", "recon"],
        ["sample", "{run}", "--n", "4"],
        ["plot", "{run}"],
        ["train", "--resume", "--out", "{run}", "--no-progress", "--no-eval"],
        ["eval", "{run}", "--metric", "anomaly"],
    ],
    ids=["eval", "sample", "plot", "resume", "anomaly-snapshot"],
)
def test_a_checkpoint_with_code_is_refused_and_the_code_does_not_run(tmp_path, capsys, command):
    run = tmp_path / "run"
    holdout = ["--holdout", "9"] if command[-1] == "anomaly" else []
    code, err = train_cli(run, capsys, "--set", "train.keep_every=6", *holdout)
    assert code == 0, err
    marker = tmp_path / "pwned"
    targets = [run / CHECKPOINT, *rundir.snapshots(run)]
    for path in targets:
        _poison(path, marker)
    code, _, err = run_cli([c.replace("{run}", str(run)) for c in command], capsys)
    assert_one_line(code, err, "refused")
    assert not marker.exists(), "the checkpoint's payload ran"


def test_checkpoints_of_earlier_versions_still_load(tiny_run, capsys):
    """Earlier versions stored numpy's global random state (an ndarray inside a tuple)."""
    import numpy as np

    state = checkpoint_state(tiny_run)
    state["rng"]["numpy"] = np.random.get_state()
    torch.save(state, tiny_run / CHECKPOINT)
    code, _, err = run_cli(["eval", tiny_run, "--metric", "recon", "--no-progress"], capsys)
    assert code == 0, err


def test_a_new_checkpoint_loads_with_weights_only(tiny_run):
    state = torch.load(tiny_run / CHECKPOINT, weights_only=True)
    assert state["iteration"] == 12


# 2. A non-finite model is never saved.


def test_a_diverging_prior_names_its_cause_and_saves_nothing_non_finite(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = train_cli(run, capsys, "--set", "prior.lr=1e30", "--set", "train.ckpt_every=1")
    assert_one_line(code, err, "prior.lr", "1e+30")
    assert "post_step_size" not in err
    if (run / CHECKPOINT).exists():
        state = torch.load(run / CHECKPOINT, weights_only=True)
        assert all(
            torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
        )
        assert f"iteration {state['iteration']}" in err
    else:
        assert "no checkpoint" in err


def test_a_one_stage_nce_run_does_not_report_success_over_nan(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = train_cli(
        run,
        capsys,
        "--set",
        "prior.kind=nce",
        "--set",
        "prior.lr=1e30",
        "--set",
        "train.ckpt_every=100",
    )
    assert_one_line(code, err, "prior.lr")
    assert not (run / CHECKPOINT).exists() or "iteration" in err
    assert "last good checkpoint (iteration 0)" not in err


# 3. A half-written metrics line.


def test_a_partial_metrics_line_is_skipped_and_truncated_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    code, err = train_cli(run, capsys, "--max-iters", "8")
    assert code == 0, err
    lines = (run / METRICS).read_text()
    (run / METRICS).write_text(lines + '{"iteration": 9, "stage"')
    with pytest.warns(UserWarning, match="partial"):
        assert [m["iteration"] for m in read_metrics(run)] == [2, 4, 6, 8]
    code, _, err = run_cli(
        ["train", "--resume", "--out", run, "--no-progress", "--no-eval"], capsys
    )
    assert code == 0, err
    text = (run / METRICS).read_text()
    assert text.endswith("\n")
    assert [json.loads(x)["iteration"] for x in text.splitlines()] == [2, 4, 6, 8, 10, 12]


# 4. Full disk.


def test_a_full_disk_while_checkpointing_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    code, err = train_cli(run, capsys, "--max-iters", "4")
    assert code == 0
    before = (run / CHECKPOINT).read_bytes()

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", full)
    code, _, err = run_cli(
        ["train", "--resume", "--out", run, "--no-progress", "--no-eval"], capsys
    )
    assert_one_line(code, err, "could not write checkpoint", "iteration 4")
    assert (run / CHECKPOINT).read_bytes() == before
    assert not list(run.glob(".*.tmp"))


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("command", "written"),
    [
        (["eval", "{run}", "--metric", "recon", "--no-progress"], "eval/recon.json"),
        (["sample", "{run}", "--n", "4", "--no-progress"], "samples/langevin.png"),
    ],
)
def test_eval_and_sample_on_a_full_disk_leave_no_empty_file(
    tiny_run, capsys, monkeypatch, command, written
):
    import latent_ebm.files as files

    target = tiny_run / written
    target.unlink(missing_ok=True)
    monkeypatch.setattr(files.os, "replace", _enospc)
    code, _, err = run_cli([c.replace("{run}", str(tiny_run)) for c in command], capsys)
    assert_one_line(code, err, "No space left")
    assert not target.exists()
    assert not [p for p in tiny_run.rglob("*") if p.is_file() and p.stat().st_size == 0]


def test_stale_temporary_checkpoints_are_removed_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_cli(run, capsys, "--max-iters", "4")[0] == 0
    stale = run / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    (run / "snapshots").mkdir(exist_ok=True)
    stale_snapshot = run / "snapshots" / ".model-0000004.pt.x.tmp"
    stale_snapshot.write_bytes(b"x")
    code, _, err = run_cli(
        ["train", "--resume", "--out", run, "--no-progress", "--no-eval"], capsys
    )
    assert code == 0, err
    assert not stale.exists() and not stale_snapshot.exists()


# 5. One writer per run directory.


def _hold_lock(run: Path):
    f = (run / rundir.LOCK).open("a+")
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    f.seek(0)
    f.truncate()
    f.write("4242\n")
    f.flush()
    return f


@pytest.mark.parametrize("extra", [["--resume"], ["--force", *SETS]], ids=["resume", "force"])
def test_a_second_writer_is_refused_and_changes_nothing(tmp_path, capsys, extra):
    run = tmp_path / "run"
    assert train_cli(run, capsys, "--max-iters", "4")[0] == 0
    held = _hold_lock(run)  # what a live `train` holds: the lock, with its pid
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    try:
        code, _, err = run_cli(
            ["train", "--out", run, "--no-progress", "--no-eval", *extra], capsys
        )
        after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    finally:
        held.close()
    assert_one_line(code, err, "4242")
    assert after == before
    # Readers do not need the lock; once it is released, the resume works.
    code, _, err = run_cli(
        ["train", "--resume", "--out", run, "--no-progress", "--no-eval"], capsys
    )
    assert code == 0, err


# 6-8. Bad values: one line, before any work, nothing left behind.


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--out", "{tmp}/a", "--seed", "-1"], "seed"),
        (["train", "--out", "{tmp}/a", "--seed", str(2**64)], "seed"),
        (["train", "--out", "{tmp}/a", "--set", "train.device=foo"], "train.device"),
        (["train", "--out", "{tmp}/a", "--set", "model.arch=cifar10"], "model.arch"),
        (["train", "--out", "{tmp}/a", "--config", "{tmp}"], "--config"),
        (["train", "--out", "{tmp}/a", "--config", "{tmp}/binary"], "--config"),
        (["train", "--out", "{tmp}/afile"], "--out"),
        (["train", "--out", "/proc/latent-ebm-test"], "--out"),
        (["train", "--out", "{tmp}/a", "--set", "train.keep_every=-5"], "train.keep_every"),
        (["train", "--out", "{tmp}/h", "--holdout", "11"], "holdout class 11"),
        (["eval", "{run}", "--metric", "recon", "--device", "foo"], "--device"),
        (["eval", "{run}", "--metric", "recon", "--seed", "-1"], "seed"),
        (["eval", "{run}", "--metric", "recon", "--batch-size", "0"], "--batch-size"),
        (["eval", "{run}", "--metric", "recon", "--batch-size", "-5"], "--batch-size"),
        (["eval", "{run}", "--metric", "recon", "--steps", "-1"], "--steps"),
        (["eval", "{run}", "--metric", "fid", "--n", "0"], "--n"),
        (["eval", "{run}", "--metric", "fid", "--n", "-3"], "--n"),
        (["eval", "{run}", "--metric", "fid", "--n", "1"], "--n"),
        (["eval", "{run}", "--metric", "fid", "--proposals", "0"], "--proposals"),
        (["eval", "{run}", "--metric", "fid", "--method", "foo"], "--method"),
        (["eval", "{run}", "--metric", "anomaly", "--last", "0"], "--last"),
        (["eval", "{run}", "--metric", "anomaly", "--last", "-1"], "--last"),
        (["sample", "{run}", "--seed", "-1"], "seed"),
        (["sample", "{run}", "--steps", "-1"], "--steps"),
        (["sample", "{run}", "--step-size", "-1"], "--step-size"),
        (["sample", "{run}", "--out", "/proc/latent-ebm-test/s"], "--out"),
    ],
)
def test_bad_values_are_refused_before_any_work(
    tiny_run, tmp_path, capsys, monkeypatch, args, expected
):
    import latent_ebm.evaluation.classifier as classifier

    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "binary").write_bytes(bytes(range(256)) * 4)
    eval_before = {p: p.read_bytes() for p in (tiny_run / "eval").glob("*")}

    def no_work(*a, **k):
        raise AssertionError("work started before the input was validated")

    monkeypatch.setattr(classifier, "classifier_features", no_work)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(tiny_run)) for a in args]
    if args[0] == "train":
        args = [*args, "--no-progress", "--no-eval", *SETS]
    code, _, err = run_cli(args, capsys)
    assert_one_line(code, err, expected)
    assert not (tmp_path / "a").exists() and not (tmp_path / "h").exists()
    assert {p: p.read_bytes() for p in (tiny_run / "eval").glob("*")} == eval_before


def test_a_checkpoint_of_another_preset_is_one_line(tiny_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert train_cli(other, capsys, "--set", "model.nz=6")[0] == 0
    (tiny_run / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())
    code, _, err = run_cli(["eval", tiny_run, "--metric", "recon"], capsys)
    assert_one_line(code, err, "does not match")


def test_eval_and_sample_validate_the_runs_config(tiny_run, capsys):
    cfg = (tiny_run / "config.yaml").read_text()
    (tiny_run / "config.yaml").write_text(cfg.replace("post_steps: 4", "post_steps: -4"))
    for cmd in (["eval", tiny_run, "--metric", "recon"], ["sample", tiny_run, "--n", "4"]):
        code, _, err = run_cli(cmd, capsys)
        assert_one_line(code, err, "train.post_steps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_eval_on_a_missing_gpu_names_the_option(tiny_run, capsys):
    code, _, err = run_cli(["eval", tiny_run, "--metric", "recon", "--device", "cuda"], capsys)
    assert_one_line(code, err, "--device", "no GPU")
    assert "train.device" not in err


def test_ctrl_c_in_the_first_seconds_is_one_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "latent_ebm.cli", "train", "--out", str(tmp_path / "r"), *SETS],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # still importing torch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err


def test_an_atomic_write_gets_a_plain_files_mode(tmp_path):
    # mkstemp creates its file 0600; the file a user asked for is readable as any other
    # (0644 under the usual umask 022), and a second write keeps that mode.
    import os

    from latent_ebm.files import write_atomic

    old = os.umask(0o022)
    try:
        path = tmp_path / "table.md"
        for text in (b"one", b"two"):
            write_atomic(path, lambda f, t=text: f.write(t))
            assert (path.stat().st_mode & 0o777, path.read_bytes()) == (0o644, text)
    finally:
        os.umask(old)
