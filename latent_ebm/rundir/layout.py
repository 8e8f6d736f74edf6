"""The run directory's layout, its one writer's lock, and creating or reopening it
(ARCHITECTURE §8: the room :mod:`latent_ebm.rundir`)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from latent_ebm.config import Config, load_config, save_config, validate
from latent_ebm.errors import LatentEBMError

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
TENSORBOARD = "tensorboard"
METRICS = "metrics.jsonl"
SNAPSHOTS = "snapshots"
EVAL = "eval"
LOCK = ".lock"


def _occupied(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it (its :data:`LOCK` aside)."""
    return path.is_dir() and any(p.name != LOCK for p in path.iterdir())


def check_not_foreign(path: str | Path, consequence: str) -> None:
    """Refuse a folder that holds files but no ``config.yaml``: it is not a run directory.

    A missing or empty folder, or a run directory, passes. ``consequence`` completes the
    message: what the caller will therefore not do and what the user should do instead, e.g.
    ``"--force will not delete it; choose another --out"``.

    Raises:
        LatentEBMError: ``path`` is not empty and holds no ``config.yaml``.
    """
    path = Path(path)
    if _occupied(path) and not (path / CONFIG).exists():
        raise LatentEBMError(
            f"{path} is not empty and holds no {CONFIG}: it does not look like a run "
            f"directory, so {consequence}"
        )


def check_creatable(path: str | Path, what: str) -> None:
    """Check, leaving nothing behind, that ``path`` is a folder or can be made one.

    ``what`` names ``path`` in the message (e.g. ``"--out"``).

    Raises:
        LatentEBMError: ``path`` or a parent is a file, or nothing can be written in its
            nearest existing parent (permissions, a read-only or special file system).
    """
    path = Path(path)
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        where = "" if parent == path else f": {parent} is a file"
        raise LatentEBMError(f"{what} {path} is not a folder{where}; choose another path")
    try:  # a real probe: os.access does not know read-only or special file systems, or root
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".latent-ebm-probe."))
    except OSError as e:
        raise LatentEBMError(
            f"{what} {path}: cannot write in {parent} ({e.strerror or e}); choose another path"
        ) from None


def check_new_run_dir(out: Path, force: bool) -> None:
    """The checks of a new run in ``out`` that need no lock and change nothing: ``out`` can be
    a folder, and is empty, or holds a run and ``force`` is set.

    Raises:
        LatentEBMError: ``out`` is a file or cannot be made, holds a run without ``force``,
            or holds something that is not a run.
    """
    check_creatable(out, "--out")
    if _occupied(out):
        if not force:
            raise LatentEBMError(
                f"run directory {out} already exists; pass --resume to continue it "
                "or --force to start over"
            )
        check_not_foreign(out, "--force will not delete it; choose another --out")


def read_run_config(run_dir: Path) -> Config:
    """The validated ``config.yaml`` of an existing run (what ``--resume`` continues).

    Raises:
        LatentEBMError: no ``config.yaml``, or a bad one (naming the field).
    """
    if not (run_dir / CONFIG).exists():
        raise LatentEBMError(f"cannot resume: {run_dir / CONFIG} does not exist")
    return validate(load_config(run_dir / CONFIG))


class RunLock:
    """The exclusive lock of a run directory's one writer: ``fcntl.flock`` on ``DIR/.lock``,
    which holds the writer's process id while it runs. The OS releases the lock when the
    process ends, however it ends; :meth:`release` also removes the file (a file left by a
    killed writer holds a stale id and is simply locked again).

    Raises:
        LatentEBMError: another process holds it (naming that process).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.made_dir = False  # set by open_run_dir: the folder was made by this run
        while True:
            self._file = self.path.open("a+")
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._file.seek(0)
                pid = self._file.read().strip() or "(unknown)"
                self._file.close()
                raise LatentEBMError(
                    f"run directory {run_dir} is in use by process {pid}, which holds its "
                    f"lock {self.path}; wait for that training to end (or stop it), then retry"
                ) from None
            if self._is_current():
                break
            self._file.close()  # a releasing holder removed the file we locked: again
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def _is_current(self) -> bool:
        """Whether the locked file is still the one at :attr:`path`."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and release the lock; a second call does nothing."""
        if not self._file.closed:
            if self._is_current():
                self.path.unlink()
            self._file.close()


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Remove the temporary files of writes that a kill interrupted (``.checkpoint.pt.*.tmp``
    and the like). Only the lock holder calls this: every such file is its own."""
    stale = [run_dir.glob(f".{name}.*.tmp") for name in (CHECKPOINT, BEST, CONFIG, METRICS)]
    stale.append((run_dir / SNAPSHOTS).glob(".*.tmp"))
    for paths in stale:
        for path in paths:
            path.unlink(missing_ok=True)


def open_run_dir(out: Path, cfg: Config | None, resume: bool, force: bool) -> RunLock:
    """Take the lock of the run directory ``out`` (made if missing), then prepare it.

    A new run (``cfg``) checks ``out`` again under the lock, deletes an earlier run there with
    ``force`` and writes ``config.yaml``; ``resume`` (``cfg`` ``None``) keeps everything. Both
    remove stale temporary files. Returns the held lock: release it when training ends.

    Raises:
        LatentEBMError: another process holds the lock (nothing was changed), or a check of
            :func:`check_new_run_dir` fails.
    """
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        raise
    lock.made_dir = made
    try:
        if resume:
            if not (out / CONFIG).exists():
                raise LatentEBMError(f"cannot resume: {out / CONFIG} does not exist")
        else:
            check_new_run_dir(out, force)
            for path in out.iterdir():  # an earlier run, with --force
                if path.name != LOCK:
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
            assert cfg is not None
            save_config(cfg, out / CONFIG)
        _remove_stale_temporaries(out)
    except BaseException:
        if not resume:
            abandon_new_run(out, lock)
        lock.release()
        raise
    return lock


def abandon_new_run(out: Path, lock: RunLock) -> None:
    """Remove what a new run made in ``out`` (it failed before training) and release its lock,
    so that the corrected command needs no ``--force``."""
    for path in out.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    lock.release()
    if lock.made_dir:
        shutil.rmtree(out, ignore_errors=True)
