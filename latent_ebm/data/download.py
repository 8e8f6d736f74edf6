"""Downloading data files over HTTP(S): atomic, MD5-checked, with errors that say what to do.

:func:`download` fetches one file from a list of mirrors. The files a publisher serves with a
known size and checksum are listed in :data:`OFFICIAL`; :func:`official_file` downloads one of
them when it is missing, and :func:`check_official` tells a file damaged in place (official
size, other MD5) from a truncated one, which the format's reader rejects.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from latent_ebm.data.formats import REDOWNLOAD
from latent_ebm.errors import LatentEBMError, one_line

__all__ = ["OFFICIAL", "Official", "check_official", "download", "official_file", "size_note"]

_TIMEOUT_S = 10.0  # per-URL network timeout of a download


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    md5: str | None = None,
    size: int | None = None,
) -> pathlib.Path:
    """Download a file, trying each URL in turn, and move it atomically to ``dest``.

    The bytes go to a temporary file in ``dest``'s folder, are checked against ``md5`` (skipped
    when ``None``), then ``os.replace``-d into place. Nothing is left behind on failure (an
    error, Ctrl-C): no partial file, and no folder that this call created (``dest``'s folder
    and its missing parents, when still empty); what was there before stays. ``size`` (bytes,
    optional) is only quoted in the error message.

    Returns:
        ``dest`` as a path.

    Raises:
        LatentEBMError: every URL failed (offline, HTTP error, checksum mismatch); the message
            names the file and the URL to fetch it from by hand.
    """
    dest = pathlib.Path(dest)
    created = _missing_folders(dest.parent)  # deepest first
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise LatentEBMError(
            f"cannot create {dest.parent} to download {dest.name}{size_note(size)} into "
            f"({one_line(exc)}); "
            f"pass --data-dir with a writable folder"
        ) from None
    try:
        return _fetch(urls, dest, md5, size)
    except BaseException:
        _remove_empty(created)
        raise


def _missing_folders(folder: pathlib.Path) -> list[pathlib.Path]:
    """``folder`` and its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[pathlib.Path]) -> None:
    """Remove each of ``folders`` (deepest first) that is empty; keep any that holds a file."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's file), or gone
            return


def _fetch(
    urls: Sequence[str], dest: pathlib.Path, md5: str | None, size: int | None
) -> pathlib.Path:
    """The loop of :func:`download` over ``urls``, once ``dest``'s folder exists."""
    failures = []
    for url in urls:
        tmp_name = None
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.", suffix=".part"
            )
            digest = hashlib.md5()
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_TIMEOUT_S) as r,
            ):
                while chunk := r.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if md5 is not None and digest.hexdigest() != md5:
                failures.append(f"{url}: MD5 checksum {digest.hexdigest()} != expected {md5}")
                continue
            os.replace(tmp_name, dest)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            failures.append(f"{url}: {one_line(exc)}")
        finally:
            if tmp_name is not None and os.path.exists(tmp_name):
                os.remove(tmp_name)
    raise LatentEBMError(
        f"could not download {dest.name}{size_note(size)} into {dest.parent} "
        f"({'; '.join(failures)}); download it by hand from {urls[0]} and put it in "
        f"{dest.parent} (or pass --data-dir)"
    )


def size_note(size: int | None) -> str:
    """`` (182,040,794 bytes, 182 MB)``, or nothing when the size is unknown."""
    return "" if size is None else f" ({size:,} bytes, {size / 1e6:,.0f} MB)"


@dataclass(frozen=True)
class Official:
    """A file downloadable from its publisher."""

    url: str
    md5: str
    size: int  # bytes


# File name -> where its publisher serves it; read at call time (tests swap entries).
OFFICIAL = {
    "train_32x32.mat": Official(
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
        182_040_794,
    ),
    "test_32x32.mat": Official(
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
        64_275_384,
    ),
    "cifar-10-python.tar.gz": Official(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        170_498_071,
    ),
}


def official_file(root: pathlib.Path, filename: str, allow_download: bool) -> pathlib.Path:
    """``root/filename`` (a name in :data:`OFFICIAL`), downloaded from its publisher first when
    missing and allowed.

    Raises:
        LatentEBMError: the file is missing and may not be downloaded, or the download failed.
    """
    path, spec = root / filename, OFFICIAL[filename]
    if not path.is_file():
        if not allow_download:
            raise LatentEBMError(
                f"{filename}{size_note(spec.size)} not found in {root}; download it from "
                f"{spec.url} into that folder (or allow downloading, or pass --data-dir)"
            )
        download([spec.url], path, spec.md5, spec.size)
    return path


def check_official(path: pathlib.Path) -> None:
    """A file of exactly the official size must have the official MD5 (bytes damaged in place);
    a file of another size is left to the decoder, which rejects a truncated one.

    Raises:
        LatentEBMError: official size but another MD5.
    """
    spec = OFFICIAL[path.name]
    if path.stat().st_size != spec.size:
        return
    digest = hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != spec.md5:
        raise LatentEBMError(
            f"{path} has the official size but MD5 checksum {digest.hexdigest()} != expected "
            f"{spec.md5}: it is corrupt; {REDOWNLOAD} from {spec.url}"
        )
