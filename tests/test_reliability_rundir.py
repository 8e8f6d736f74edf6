"""The run directory under races, broken folders and damaged files (issue 30; README
"Errors", "Run directory"): a run that loses a race deletes nothing of the run that won, the
lock's failures are one line and leave nothing behind, every file of a run is checked when it
is read, a checkpoint of another data set is refused, and the temporary files of killed writers
are removed."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latent_ebm import rundir
from latent_ebm.errors import LatentEBMError
from latent_ebm.rundir import CHECKPOINT, CONFIG, LOCK, METRICS
from tests.conftest import SETS, assert_one_line, checkpoint_state, run_cli, train_cli


@pytest.fixture
def run(tiny_run: Path) -> Path:
    """A finished tiny run: 12 iterations, a snapshot every 6."""
    return tiny_run


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: a file's bytes, ``None`` for a folder."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in sorted(folder.rglob("*"))
    }


# 1. A new run that loses a race deletes nothing of the run that won it.

# `latent-ebm train ARGS` whose data set takes long to load: it says when its checks of the
# folder are done (it is loading), then waits for the test's signal.
_SLOW_TRAIN = """
import sys, time
from pathlib import Path
from latent_ebm import rundir
from latent_ebm.errors import LatentEBMError
from latent_ebm.cli import main

loading, go = Path(sys.argv[1]), Path(sys.argv[2])
load_data = rundir.load_data

def slow_load_data(cfg):
    loading.touch()
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return load_data(cfg)

rundir.load_data = slow_load_data
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("force", [False, True], ids=["new", "force"])
def test_a_run_that_loses_the_race_keeps_the_finished_run(tmp_path, capsys, force):
    race = tmp_path / "race"
    loading, go = tmp_path / "loading", tmp_path / "go"
    args = ["train", "--out", race, "--no-progress", "--no-eval", *SETS]
    args += ["--force"] if force else []
    slow = subprocess.Popen(
        [sys.executable, "-c", _SLOW_TRAIN, loading, go, *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not loading.exists() and slow.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert loading.exists(), slow.communicate()[1]
        # Meanwhile a short run (with its figures and eval/) starts and finishes in race/.
        code, _, err = run_cli(["train", "--out", race, "--no-progress", *SETS], capsys)
        assert code == 0, err
        finished = _tree(race)
        assert {CHECKPOINT, CONFIG, METRICS, "eval", "samples.png"} <= set(finished)
        go.touch()
        _, err = slow.communicate(timeout=120)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: "))
    assert_one_line(slow.returncode, err, str(race))
    assert slow.returncode == 1
    assert _tree(race) == finished


def _beaten_to_the_lock(other_wrote: bool):
    """A :class:`RunLock` that another run holds; it wrote ``config.yaml`` if ``other_wrote``."""

    def lock(run_dir: Path) -> None:
        if other_wrote:
            (run_dir / CONFIG).write_text("the other run's\n")
        raise LatentEBMError(f"run directory {run_dir} is in use by process 1")

    return lock


@pytest.mark.parametrize("other_wrote", [True, False], ids=["other-wrote", "empty"])
def test_a_run_refused_the_lock_removes_only_the_empty_folder_it_made(
    tmp_path, capsys, monkeypatch, other_wrote
):
    # Two runs start into a missing folder at once: this one makes it, the other takes its
    # lock (and writes). Refused the lock, this run must not delete the other's files; the
    # folders it made it removes only when they are empty.
    out = tmp_path / "parent" / "race"
    monkeypatch.setattr(rundir.layout, "RunLock", _beaten_to_the_lock(other_wrote))
    code, err = train_cli(out, capsys)
    assert_one_line(code, err, "in use")
    if other_wrote:
        assert (out / CONFIG).read_text() == "the other run's\n"
    else:
        assert not (tmp_path / "parent").exists()


def test_a_run_that_fails_in_setup_leaves_no_folder(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise LatentEBMError("the model cannot be built")

    monkeypatch.setattr(sys.modules["latent_ebm.train"], "build_model", fail)
    out = tmp_path / "a" / "b"
    code, err = train_cli(out, capsys)
    assert_one_line(code, err, "cannot be built")
    assert not (tmp_path / "a").exists()


# 4. The lock and its folder: one line, nothing left behind.


def _fd_path(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _read_only(monkeypatch, folder: Path) -> None:
    """Make ``folder`` behave as on a read-only file system (chmod does not stop root)."""
    real_open, real_mkdir = os.open, os.mkdir
    inside = str(folder.resolve())

    def refuse(path) -> None:
        if str(Path(path).resolve()).startswith(inside):
            raise OSError(errno.EROFS, "Read-only file system", str(path))

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND):
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


def _lock_disk_full(monkeypatch, at: str) -> None:
    """A full disk at the lock file: when it is made (``"create"``: no free inode) or when
    its process id is written (``"write"``)."""
    real_open, real_write = os.open, os.write

    def open_(path, flags, *args, **kwargs):
        if at == "create" and Path(path).name == LOCK and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, flags, *args, **kwargs)

    def write(fd, data):
        if at == "write" and _fd_path(fd).endswith(f"/{LOCK}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("case", ["lock-folder", "read-only", "full-create", "full-write"])
@pytest.mark.parametrize("how", ["new", "resume"])
def test_a_lock_that_cannot_be_taken_is_one_line_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, case, how
):
    run = tmp_path / "run"
    if how == "resume":
        assert train_cli(run, capsys, "--max-iters", "4")[0] == 0
    else:
        run.mkdir()
    if case == "lock-folder":
        (run / LOCK).mkdir()
        (run / LOCK / "x").write_text("someone's")
    before = _tree(run)
    if case == "read-only":
        _read_only(monkeypatch, run)
    elif case.startswith("full"):
        _lock_disk_full(monkeypatch, case[5:])
    extra = ["--resume"] if how == "resume" else SETS
    code, _, err = run_cli(["train", "--out", run, "--no-progress", "--no-eval", *extra], capsys)
    monkeypatch.undo()
    expected = {
        "lock-folder": "is a folder",
        "read-only": "Read-only",
        "full-create": "No space left",
        "full-write": "No space left",
    }[case]
    assert_one_line(code, err, expected, str(run))
    assert _tree(run) == before


def test_a_full_disk_at_the_lock_of_a_new_folder_removes_the_folder(tmp_path, capsys, monkeypatch):
    _lock_disk_full(monkeypatch, "write")
    code, err = train_cli(tmp_path / "new" / "run", capsys)
    monkeypatch.undo()
    assert_one_line(code, err, "No space left")
    assert not (tmp_path / "new").exists()


# 6. The run's own files are checked when read: one line naming the file.


_BAD_LINES = {
    "non-utf8": b'{"iteration": 14, "stage": 1, "time": 1.0}\xff\xfe\n',
    "not-an-object": b"[14, 1, 1.0]\n",
    "string-iteration": b'{"iteration": "14", "stage": 1, "time": 1.0}\n',
    "no-iteration": b'{"stage": 1, "time": 1.0}\n',
    "string-value": b'{"iteration": 14, "stage": 1, "time": 1.0, "loss_g": "low"}\n',
    "eval-not-an-object": b'{"iteration": 14, "stage": 1, "time": 1.0, "eval": 3}\n',
    "folder": None,
    "too-deep": b"[" * 200_000 + b"]" * 200_000 + b"\n",  # beyond the parser's recursion
    "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n",
    "long-number": b'{"iteration": ' + b"9" * 5000 + b', "stage": 1, "time": 1.0}\n',
}


@pytest.mark.parametrize("bad", list(_BAD_LINES))
@pytest.mark.parametrize("command", ["plot", "compare", "resume"])
def test_a_damaged_metrics_log_is_one_line(run, tmp_path, capsys, bad, command):
    log = run / METRICS
    if _BAD_LINES[bad] is None:
        log.unlink()
        log.mkdir()
    else:
        log.write_bytes(log.read_bytes() + _BAD_LINES[bad])
    args = {
        "plot": ["plot", run],
        "compare": ["compare", run, "--out", tmp_path / "cmp"],
        "resume": ["train", "--resume", "--out", run, "--no-progress", "--no-eval"],
    }[command]
    before = _tree(run)
    code, _, err = run_cli(args, capsys)
    assert_one_line(code, err, METRICS)
    assert _tree(run) == before


@pytest.mark.parametrize(
    "report",
    [
        b'{"metric": "recon", "value": "0.1"}',
        b'{"metric": "recon", "value": true}',
        b"[0.1]",
        b'{"metric": "recon", "value": 0.1, "settings": "none"}',
        b'{"metric": "recon", "value": 0.1, "features": 3}',
        b'{"value": 0.1}\xff',
        None,  # a folder
        b"[" * 200_000 + b"]" * 200_000,
        b'{"metric": "recon", "value": ' + b"9" * 5000 + b"}",
    ],
    ids=["string", "bool", "list", "settings", "features", "non-utf8", "folder", "deep", "long"],
)
def test_a_damaged_report_is_one_line_in_compare(run, tmp_path, capsys, report):
    path = run / "eval" / "recon.json"
    path.parent.mkdir(exist_ok=True)
    path.mkdir() if report is None else path.write_bytes(report)
    code, _, err = run_cli(["compare", run, "--out", tmp_path / "cmp"], capsys)
    assert_one_line(code, err, "recon.json")
    assert not (tmp_path / "cmp").exists()


def _set(key, value):
    def change(state: dict) -> None:
        state[key] = value

    return change


def _drop(key):
    return lambda state: state.pop(key)


# What every reader of a checkpoint needs (eval, sample, plot and resume refuse these) ...
_BAD_ANY = {
    "iteration-string": _set("iteration", "12"),
    "iteration-negative": _set("iteration", -3),
    "iteration-float": _set("iteration", 12.0),
    "no-iteration": _drop("iteration"),
    "shape-strings": _set("shape", ["1", "8", "8"]),
    "model-list": _set("model", []),
    "model-entry-not-a-tensor": lambda s: s["model"].update({next(iter(s["model"])): 1.5}),
    "config-string": _set("config", "digits"),
    "refit-string": _set("refit", "zzz"),
    "refit-strings": _set("refit", ["zzz"]),
    "eval_pending-string": _set("eval_pending", "yes"),
    "iteration-beyond": _set("iteration", 10**18),
    "stage-beyond": lambda s: s["model"].update({"prior.stage": torch.tensor(99)}),
    "stage-negative": lambda s: s["model"].update({"prior.stage": torch.tensor(-3)}),
    "stage-float": lambda s: s["model"].update({"prior.stage": torch.tensor(1.5)}),
}
# ... and what only resume needs.
_BAD_RESUME = {
    "no-rng": _drop("rng"),
    "rng-string": _set("rng", {"torch": "state"}),
    "rng-short": _set("rng", {"torch": torch.zeros(7, dtype=torch.uint8)}),
    "no-opt_g": _drop("opt_g"),
    "opt_g-list": _set("opt_g", []),
    "opt_prior-dict": _set("opt_prior", {}),
    "opt_prior-entry": _set("opt_prior", [{"state": 1}]),
    "no-bank": _drop("bank"),
    "bank-string": _set("bank", "rows"),
    "bank-shape": lambda s: s["bank"].update(bank=torch.zeros(3)),
    "no-window": _drop("window"),
    "window-string": _set("window", "w"),
    "window-values": _set("window", {"loss_g": ["x"]}),
    "elapsed-string": _set("elapsed", "1 s"),
    "no-elapsed": _drop("elapsed"),
    "best-string": _set("best", "fid"),
    "stage-off-schedule": lambda s: s["model"].update({"prior.stage": torch.tensor(1)}),
    # well typed, but not fitting the run: other counts or shapes
    "opt_g-no-groups": lambda s: s["opt_g"].update(param_groups=[]),
    "opt_g-state-shape": lambda s: s["opt_g"]["state"][0].update(exp_avg=torch.zeros(2, 2)),
    "opt_prior-too-few": lambda s: s.update(opt_prior=s["opt_prior"][:1]),
    "bank-rows": lambda s: s.update(bank={k: v[:10] for k, v in s["bank"].items()}),
}


@pytest.mark.parametrize("bad", list(_BAD_ANY) + list(_BAD_RESUME))
def test_a_checkpoint_of_a_bad_structure_is_one_line(run, capsys, bad):
    state = checkpoint_state(run)
    {**_BAD_ANY, **_BAD_RESUME}[bad](state)
    torch.save(state, run / CHECKPOINT)
    commands = [["train", "--resume", "--out", run, "--no-progress", "--no-eval"]]
    if bad in _BAD_ANY:
        commands += [
            ["eval", run, "--metric", "recon", "--no-progress"],
            ["sample", run, "--n", "4", "--no-progress"],
            ["plot", run],
        ]
    before = _tree(run)
    for args in commands:
        code, _, err = run_cli(args, capsys)
        assert_one_line(code, err, str(run / CHECKPOINT))
    assert _tree(run) == before


# 7. A checkpoint of another data set (of the same image shape) is refused.


@pytest.fixture
def other_data_run(tmp_path, capsys) -> Path:
    """A run on an image folder of 8x8 grey images: the shape of digits, other data."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (120, 8, 8), dtype=np.uint8)
    for i, p in enumerate(pixels):
        Image.fromarray(p, mode="L").save(images / f"{i:03d}.png")
    run = tmp_path / "other"
    other = ["data.name=imagefolder", "data.size=8", f"data.data_dir={images}"]
    other.append("train.keep_every=6")
    code, err = train_cli(run, capsys, *(a for s in other for a in ("--set", s)))
    assert code == 0, err
    return run


def test_a_checkpoint_of_another_data_set_is_refused(run, other_data_run, capsys):
    (run / CHECKPOINT).write_bytes((other_data_run / CHECKPOINT).read_bytes())
    before = _tree(run)
    for args in (
        ["eval", run, "--metric", "recon", "--no-progress"],
        ["eval", run, "--metric", "fid", "--n", "10", "--no-progress"],
        ["sample", run, "--n", "4", "--no-progress"],
        ["plot", run],
        ["train", "--resume", "--out", run, "--no-progress", "--no-eval"],
    ):
        code, _, err = run_cli(args, capsys)
        assert_one_line(code, err, "imagefolder", "digits")
    assert _tree(run) == before


def test_a_snapshot_of_another_data_set_is_refused(run, other_data_run):
    theirs = rundir.snapshots(other_data_run)[-1]
    ours = rundir.snapshots(run)[0]
    ours.write_bytes(theirs.read_bytes())
    with pytest.raises(LatentEBMError, match="imagefolder"):
        rundir.load_run(run, checkpoint=ours)


def test_a_checkpoint_of_another_holdout_is_refused(run, tmp_path, capsys):
    other = tmp_path / "holdout"
    assert train_cli(other, capsys, "--holdout", "3")[0] == 0
    (run / CHECKPOINT).write_bytes((other / CHECKPOINT).read_bytes())
    code, _, err = run_cli(["eval", run, "--metric", "recon", "--no-progress"], capsys)
    assert_one_line(code, err, "holdout")


def test_checkpoints_without_a_data_set_record_still_load(run, capsys):
    # Checkpoints written before the data set was recorded are taken at their run's word.
    state = checkpoint_state(run)
    state.pop("config")
    torch.save(state, run / CHECKPOINT)
    snapshot = rundir.snapshots(run)[0]
    old = torch.load(snapshot, weights_only=True)
    old.pop("data", None)
    torch.save(old, snapshot)
    code, _, err = run_cli(["eval", run, "--metric", "recon", "--no-progress"], capsys)
    assert code == 0, err
    rundir.load_run(run, checkpoint=snapshot)


# 11. Temporary files of killed writers are removed; a live writer's are kept.


_STALE = [
    ".samples.png.k1ll3d00.tmp",
    "eval/.recon.json.k1ll3d01.tmp",
    "eval/.anomaly.partial.json.k1ll3d02.tmp",
    "samples/.langevin.npz.k1ll3d03.tmp",
    "snapshots/.model-0000006.pt.k1ll3d04.tmp",
    ".config.yaml.k1ll3d05.tmp",
]


@pytest.mark.parametrize(
    "command",
    [
        ["plot", "{run}"],
        ["eval", "{run}", "--metric", "recon", "--no-progress"],
        ["sample", "{run}", "--n", "4", "--no-progress"],
        ["train", "--resume", "--out", "{run}", "--no-progress", "--no-eval"],
    ],
    ids=["plot", "eval", "sample", "resume"],
)
def test_temporary_files_of_killed_writers_are_removed(run, capsys, command):
    for name in _STALE:
        (run / name).parent.mkdir(exist_ok=True)
        (run / name).write_bytes(b"half a file")
    live = run / "eval" / ".fid.json.w41t1ng0.tmp"  # another process is writing it
    live.write_bytes(b"being written")
    writer = live.open("rb")
    fcntl.flock(writer, fcntl.LOCK_EX)
    try:
        code, _, err = run_cli([str(c).replace("{run}", str(run)) for c in command], capsys)
    finally:
        writer.close()
    assert code == 0, err
    assert [n for n in _STALE if (run / n).exists()] == []
    assert live.read_bytes() == b"being written"


def test_an_atomic_write_holds_its_temporary_file_locked(tmp_path):
    from latent_ebm.files import write_atomic

    seen = []

    def write(f) -> None:
        other = next(tmp_path.glob(".x.json.*.tmp")).open("rb")
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            seen.append("locked")
        finally:
            other.close()
        f.write(b"done")

    write_atomic(tmp_path / "x.json", write)
    assert seen == ["locked"]
    assert (tmp_path / "x.json").read_bytes() == b"done"


# 12. A file given as a run is named a file.


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "{f}", "--metric", "recon"],
        ["sample", "{f}", "--n", "4"],
        ["plot", "{f}"],
        ["compare", "{f}", "--out", "{tmp}/cmp"],
        ["train", "--resume", "--out", "{f}"],
    ],
    ids=["eval", "sample", "plot", "compare", "resume"],
)
def test_a_file_given_as_a_run_is_named_a_file(tmp_path, capsys, args):
    afile = tmp_path / "afile"
    afile.write_text("not a run\n")
    args = [a.replace("{f}", str(afile)).replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = run_cli(args, capsys)
    assert_one_line(code, err, f"{afile} is a file")
    assert "does not exist" not in err
    assert afile.read_text() == "not a run\n"


# 13. --force deletes only a run directory: a latent-ebm config.yaml and a run's files.


def _foreign_folder(folder: Path, config: str) -> dict[str, bytes | None]:
    (folder / "src").mkdir(parents=True)
    (folder / CONFIG).write_text(config)
    (folder / "thesis.tex").write_text("x\n")
    (folder / "src" / "main.py").write_text("x\n")
    return _tree(folder)


def test_force_deletes_nothing_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    web = tmp_path / "web"
    before = _foreign_folder(web, "name: my-web-app\n")
    code, err = train_cli(web, capsys, "--force")
    assert_one_line(code, err, f"{web / CONFIG} is not a latent-ebm config", "--force will not")
    assert _tree(web) == before


def test_force_deletes_nothing_of_a_run_with_a_foreign_file(tiny_run, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    before = _foreign_folder(thesis, (tiny_run / CONFIG).read_text())
    code, err = train_cli(thesis, capsys, "--force")
    assert_one_line(code, err, "holds src, which is not a run's file", "or move it")
    assert _tree(thesis) == before


def test_a_run_holds_only_the_names_force_deletes(tiny_run, tmp_path, capsys):
    """Every file a run, its plots, samples and evaluations write is a run's file: --force
    starts such a run over."""
    for args in (["plot", tiny_run], ["sample", tiny_run, "--n", "4"]):
        code, _, err = run_cli(args, capsys)
        assert code == 0, err
    code, _, err = run_cli(["eval", tiny_run, "--metric", "recon"], capsys)
    assert code == 0, err
    assert {p.name for p in tiny_run.iterdir()} <= rundir.RUN_ENTRIES
    code, err = train_cli(tiny_run, capsys, "--force")
    assert code == 0, err


# 14. A named pipe, device or socket where a file is expected is refused, never waited on.


@pytest.fixture
def no_hang():
    """Fail a test that blocks for 30 s (before the fix: open() of a pipe without writer)."""

    def hung(signum, frame):
        raise AssertionError("blocked for 30 s")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_a_checkpoint_that_is_a_named_pipe_is_refused(run, capsys, no_hang):
    (run / CHECKPOINT).unlink()
    os.mkfifo(run / CHECKPOINT)
    for args in (["eval", run, "--metric", "recon"], ["sample", run, "--n", "4"]):
        code, _, err = run_cli(args, capsys)  # before the fix: blocked in open() for ever
        assert_one_line(code, err, str(run / CHECKPOINT), "named pipe (FIFO)")


def test_a_config_that_is_a_named_pipe_without_writer_is_refused(tmp_path, capsys, no_hang):
    fifo = tmp_path / "cfg"
    os.mkfifo(fifo)
    code, err = train_cli(tmp_path / "new", capsys, "--config", str(fifo))
    assert_one_line(code, err, str(fifo), "named pipe (FIFO) that nothing wrote to")
    assert not (tmp_path / "new").exists()


def test_a_config_from_a_pipe_is_read_once(tmp_path, capsys):
    """``--config <(...)``: the shell's pipe with a writer is the config, read once."""
    read, write = os.pipe()
    os.write(write, b"train:\n  seed: 7\n")
    os.close(write)
    code, err = train_cli(tmp_path / "new", capsys, "--config", f"/dev/fd/{read}")
    os.close(read)
    assert code == 0, err
    assert rundir.read_run_config(tmp_path / "new").train.seed == 7


def test_a_config_that_is_a_device_is_refused(tmp_path, capsys):
    code, err = train_cli(tmp_path / "new", capsys, "--config", "/dev/zero")
    assert_one_line(code, err, "/dev/zero is a device")
