"""The run directory's layout, and creating or reopening it under its one writer's lock
(:mod:`~latent_ebm.rundir.lock`; ARCHITECTURE §8: the room :mod:`latent_ebm.rundir`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from latent_ebm.config import Config, load_config, save_config, validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import remove_abandoned_temporaries, write_atomic
from latent_ebm.rundir.lock import LOCK, RunLock, folder_error

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
TENSORBOARD = "tensorboard"
METRICS = "metrics.jsonl"
SNAPSHOTS = "snapshots"
EVAL = "eval"
SAMPLES = "samples"
# The figures a run directory receives: evaluation/plots.py's plot_run and the monitor's
# quality curve (monitor.QUALITY).
FIGURES = ("samples.png", "reconstructions.png", "transition.png", "nce_loss.png", "quality.png")
# Every name a run writes at its top level (temporaries ``.*.tmp`` and write probes aside):
# ``--force`` deletes a folder only when it holds nothing else.
RUN_ENTRIES = frozenset(
    {CONFIG, CHECKPOINT, BEST, METRICS, SNAPSHOTS, EVAL, SAMPLES, TENSORBOARD, LOCK, *FIGURES}
)

_PROBE = ".latent-ebm-probe."  # the prefix of the folders that test a folder is writable


def _occupied(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it (its :data:`LOCK` and write probes
    aside)."""
    return path.is_dir() and any(
        p.name != LOCK and not p.name.startswith(_PROBE) for p in path.iterdir()
    )


def _foreign_entry(path: Path) -> str | None:
    """The first name in the folder ``path`` (alphabetically) that no run writes
    (:data:`RUN_ENTRIES`, temporaries ``.*.tmp``, write probes), or ``None``."""
    for p in sorted(path.iterdir()):
        name = p.name
        ours = name in RUN_ENTRIES or name.startswith(_PROBE)
        if not ours and not (name.startswith(".") and name.endswith(".tmp")):
            return name
    return None


def check_not_foreign(path: str | Path, consequence: str) -> None:
    """Refuse a folder with something in it that is not a run directory: a run directory
    holds a ``config.yaml`` that loads as a latent-ebm config and nothing but the names a run
    writes (:data:`RUN_ENTRIES`, temporaries ``.*.tmp``).

    A missing or empty folder, or a run directory, passes. ``consequence`` completes the
    message: what the caller will therefore not do and what the user should do instead, e.g.
    ``"--force will not delete it; choose another --out"``.

    Raises:
        LatentEBMError: ``path`` is not empty and holds no ``config.yaml``, one that is not a
            latent-ebm config, or an entry no run writes (named).
    """
    path = Path(path)
    if not _occupied(path):
        return
    if not (path / CONFIG).exists():
        raise LatentEBMError(
            f"{path} is not empty and holds no {CONFIG}: it does not look like a run "
            f"directory, so {consequence}"
        )
    try:
        load_config(path / CONFIG)
    except LatentEBMError:
        raise LatentEBMError(
            f"{path / CONFIG} is not a latent-ebm config: {path} does not look like a run "
            f"directory, so {consequence}"
        ) from None
    foreign = _foreign_entry(path)
    if foreign is not None:
        raise LatentEBMError(f"{path} holds {foreign}, which is not a run's file, so {consequence}")


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
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=_PROBE))
    except OSError as e:
        raise LatentEBMError(
            f"{what} {path}: cannot write in {parent} ({e.strerror or e}); choose another path"
        ) from None


def check_writable_file(path: str | Path, what: str) -> None:
    """Check, leaving nothing behind, that a file can be written at ``path`` (as
    :func:`write_text_file` writes it: a temporary file beside it, renamed over it), so that
    a command fails before its work rather than after.

    ``what`` names ``path`` in the message (e.g. ``"--json"``).

    Raises:
        LatentEBMError: ``path`` is a folder or another non-regular file, a parent is a
            file, or nothing can be written in its folder.
    """
    path = Path(path)
    if path.is_dir():
        raise LatentEBMError(f"{what} {path} is a folder, not a file; give a file path")
    if path.exists() and not path.is_file():
        raise LatentEBMError(f"{what} {path} is not a regular file; choose another path")
    check_creatable(path.parent, f"{what} {path}: its folder")


def write_text_file(path: str | Path, text: str, hint: str = "") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`latent_ebm.files.write_atomic`): a failed
    write (a full disk, a path made a folder meanwhile) leaves no empty or partial file and
    the earlier file, if any, as it was. Returns ``path``.

    Raises:
        LatentEBMError: the write failed (one line naming the path and the reason, then
            ``hint``, what to do, if given).
    """
    try:
        write_atomic(path, lambda f: f.write(text.encode()))
    except OSError as e:
        end = f"; {hint}" if hint else ""
        raise LatentEBMError(f"could not write {path} ({e.strerror or e}){end}") from None
    return Path(path)


def check_run_dir(run_dir: Path, doing: str = "") -> None:
    """Check that ``run_dir`` is a run directory: a folder holding ``config.yaml``.

    ``doing`` starts the message (e.g. ``"cannot resume: "``).

    Raises:
        LatentEBMError: ``run_dir`` does not exist, is a file, or holds no ``config.yaml``
            (or one that is not a file).
    """
    if not run_dir.exists():
        raise LatentEBMError(
            f"{doing}{run_dir} is not a run directory (no such folder): it does not exist; "
            "pass the folder a run was trained into (its --out)"
        )
    if not run_dir.is_dir():
        raise LatentEBMError(
            f"{doing}{run_dir} is a file, not a run directory; pass the folder a run was "
            "trained into (its --out)"
        )
    if not os.path.lexists(run_dir / CONFIG):
        raise LatentEBMError(f"{doing}{run_dir} is not a run directory (no {CONFIG})")
    if not (run_dir / CONFIG).is_file():
        raise LatentEBMError(
            f"{doing}{run_dir / CONFIG} is not a file: the run's config is damaged; put back "
            f"the {CONFIG} the run was trained with"
        )


Contents = tuple[tuple[str, int, int], ...]


def _contents(out: Path) -> Contents:
    """What ``out`` holds (its lock and write probes aside): each entry's name, inode and
    modification time; ``()`` for a missing or empty folder."""
    if not out.is_dir():
        return ()
    found = []
    for p in out.iterdir():
        if p.name != LOCK and not p.name.startswith(_PROBE):
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                st = p.lstat()
                found.append((p.name, st.st_ino, st.st_mtime_ns))
    return tuple(sorted(found))


def check_new_run_dir(out: Path, force: bool) -> Contents:
    """The checks of a new run in ``out`` that need no lock and change nothing: ``out`` can be
    a folder, and is empty, or holds a run and ``force`` is set.

    Returns what ``out`` holds now: given to :func:`open_run_dir`, it lets ``force`` delete
    only that run, not one that another process wrote into ``out`` meanwhile.

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
        check_not_foreign(out, "--force will not delete it; choose another --out or move it")
    return _contents(out)


def read_run_config(run_dir: Path) -> Config:
    """The validated ``config.yaml`` of an existing run (what ``--resume`` continues).

    Raises:
        LatentEBMError: no such folder, a file, no ``config.yaml``, or a bad one (naming the
            field).
    """
    check_run_dir(run_dir, "cannot resume: ")
    return validate(load_config(run_dir / CONFIG))


def clean_temporaries(run_dir: str | Path) -> None:
    """Remove the temporary files that killed writers left in the run directory ``run_dir``
    and its subfolders (``eval/``, ``snapshots/``, ``samples/``, ...): those of
    :func:`latent_ebm.files.write_atomic` that no live process is writing
    (:func:`latent_ebm.files.remove_abandoned_temporaries`). Safe without the run's lock:
    readers that write into a run (``plot``, ``eval``, ``sample``) call it too."""
    run_dir = Path(run_dir)
    remove_abandoned_temporaries(run_dir)
    try:
        folders = [p for p in run_dir.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return
    for folder in folders:
        remove_abandoned_temporaries(folder)


def _make_folders(out: Path) -> list[Path]:
    """Make ``out`` and its missing parents; return the folders this call made, outermost
    first (not one that another process made meanwhile).

    Raises:
        LatentEBMError: a folder cannot be made; those made before are removed.
    """
    missing = []
    path = out
    while not os.path.lexists(path) and path != path.parent:
        missing.append(path)
        path = path.parent
    made: list[Path] = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue  # another process made it: not ours to remove
        except OSError as e:
            _remove_empty(made)
            raise folder_error(out, e, f"make {folder}") from None
        made.append(folder)
    return made


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders ``made`` (outermost first) that are empty, innermost first; stop at
    one that is not: someone else's files are in it."""
    for folder in reversed(made):
        try:
            os.rmdir(folder)
        except OSError:
            return


def _check_writable(out: Path) -> None:
    """A probe that leaves nothing: something can be made in the existing folder ``out``.

    Raises:
        LatentEBMError: it cannot (permissions, a read-only file system, a full disk).
    """
    try:
        os.rmdir(tempfile.mkdtemp(dir=out, prefix=_PROBE))
    except OSError as e:
        raise folder_error(out, e, "write") from None


def open_run_dir(
    out: Path, cfg: Config | None, resume: bool, force: bool, seen: Contents | None = None
) -> RunLock:
    """Take the lock of the run directory ``out`` (made if missing), then prepare it.

    A new run (``cfg``) checks ``out`` again under the lock: the check that decides, since
    another run may have written ``out`` since :func:`check_new_run_dir` (whose result is
    ``seen``). It refuses a run it finds there, deleting nothing, unless ``force`` is set and
    the run is the one ``seen`` held; then it deletes that run and writes ``config.yaml``.
    ``resume`` (``cfg`` ``None``) keeps everything. Both remove the temporary files of killed
    writers (:func:`clean_temporaries`). Returns the held lock: release it when training ends
    (or :func:`abandon_new_run`).

    A failure removes only what this call made: the folders it made (when empty) and, once
    the folder was found new under the lock, what it wrote there.

    Raises:
        LatentEBMError: another process holds the lock, the folder cannot be made or written
            (a full disk, a read-only folder, ``.lock`` a folder), or a check of
            :func:`check_new_run_dir` fails under the lock (nothing was changed).
    """
    if resume:
        check_run_dir(out, "cannot resume: ")
    made = [] if resume else _make_folders(out)
    try:
        _check_writable(out)
        lock = RunLock(out)
    except BaseException:
        _remove_empty(made)
        raise
    lock.made = made
    new = False  # set once the folder is this run's: found empty, or emptied with --force
    try:
        if not resume:
            if _occupied(out):
                check_new_run_dir(out, force)
                if seen is not None and _contents(out) != seen:
                    raise LatentEBMError(
                        f"run directory {out} changed since this run checked it (another run "
                        "wrote it meanwhile), so --force deleted nothing; look at it, then "
                        "rerun with --force to start over"
                    )
                for path in out.iterdir():  # the earlier run that --force deletes
                    if path.name != LOCK:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
            new = True
            assert cfg is not None
            try:
                save_config(cfg, out / CONFIG)
            except OSError as e:
                raise folder_error(out, e, f"write {CONFIG}") from None
        clean_temporaries(out)
    except BaseException:
        if new:
            abandon_new_run(out, lock)
        else:
            lock.release()
            _remove_empty(made)
        raise
    return lock


def abandon_new_run(out: Path, lock: RunLock) -> None:
    """Remove what a new run made in ``out`` (it failed before training) and release its lock,
    so that the corrected command needs no ``--force``.

    Only for the lock :func:`open_run_dir` returned for a new run: it found ``out`` empty
    (or emptied it with ``--force``) under that lock, so everything in ``out`` but the lock
    is this run's. The folders the run made are removed when empty.
    """
    for path in out.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink()
    lock.release()
    _remove_empty(lock.made)
