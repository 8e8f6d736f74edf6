"""The lock of a run directory's one writer (the room :mod:`latent_ebm.rundir`)."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from latent_ebm.errors import LatentEBMError

LOCK = ".lock"


def folder_error(path: Path, e: OSError, doing: str) -> LatentEBMError:
    """The one-line error of an ``OSError`` ``e`` while ``doing`` something in the run
    directory ``path``, with what to do about it."""
    if e.errno == errno.ENOSPC:
        hint = "free disk space and retry"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "make it writable (permissions, a read-only file system) or choose another"
    else:
        hint = "check the folder and retry"
    return LatentEBMError(f"cannot {doing} in run directory {path} ({e.strerror or e}); {hint}")


class RunLock:
    """The exclusive lock of a run directory's one writer: ``fcntl.flock`` on ``DIR/.lock``,
    which holds the writer's process id while it runs. The OS releases the lock when the
    process ends, however it ends; :meth:`release` also removes the file (a file left by a
    killed writer holds a stale id and is simply locked again).

    Raises:
        LatentEBMError: another process holds it (naming that process), or the lock cannot
            be taken (``.lock`` is a folder, a read-only folder, a full disk); a lock file
            this call made is then removed.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.made: list[Path] = []  # set by open_run_dir: the folders this run made
        self._fd: int | None = None
        while True:
            fd, created = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "(unknown)"
                os.close(fd)
                raise LatentEBMError(
                    f"run directory {run_dir} is in use by process {pid}, which holds its "
                    f"lock {self.path}; wait for that training to end (or stop it), then retry"
                ) from None
            except OSError as e:  # e.g. a file system without locks
                if created and self._is_current(fd):
                    self.path.unlink()
                os.close(fd)
                raise folder_error(run_dir, e, f"lock {self.path}") from None
            if self._is_current(fd):
                break
            os.close(fd)  # a releasing holder removed the file we locked: again
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            data = f"{os.getpid()}\n".encode()
            while data:
                data = data[os.write(fd, data) :]
        except OSError as e:  # a full disk: the lock file goes, whoever made it
            self.release()
            raise folder_error(run_dir, e, f"write the lock {self.path}") from None

    def _open(self) -> tuple[int, bool]:
        """A descriptor of the lock file, made if missing, and whether this call made it."""
        while True:
            try:
                try:
                    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                    return os.open(self.path, flags, 0o644), True
                except FileExistsError:
                    return os.open(self.path, os.O_RDWR | os.O_NOFOLLOW), False
            except FileNotFoundError:
                continue  # a releasing holder removed it between the two calls: again
            except OSError as e:
                if e.errno == errno.EISDIR:
                    raise LatentEBMError(
                        f"{self.path} is a folder, not the lock file of run directory "
                        f"{self.path.parent}; move it away, then retry"
                    ) from None
                if e.errno == errno.ELOOP:
                    raise LatentEBMError(
                        f"{self.path} is a symbolic link, not the lock file of run directory "
                        f"{self.path.parent}; remove it, then retry"
                    ) from None
                raise folder_error(self.path.parent, e, f"make the lock {self.path}") from None

    def _is_current(self, fd: int) -> bool:
        """Whether the file of ``fd`` is still the one at :attr:`path`."""
        try:
            return os.path.samestat(os.stat(self.path, follow_symlinks=False), os.fstat(fd))
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and release the lock; a second call does nothing."""
        if self._fd is not None:
            if self._is_current(self._fd):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
