"""The metrics log (one JSON line per ``train.log_every`` iterations and one per in-training
evaluation, each appended whole) and the evaluation reports (the room
:mod:`latent_ebm.rundir`)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latent_ebm.errors import LatentEBMError
from latent_ebm.rundir.layout import EVAL, METRICS, clean_temporaries, write_text_file


def _metrics_lines(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The complete lines of a metrics log as dicts, and whether a partial last line (a write
    that a full disk or a kill cut short) followed them.

    Raises:
        LatentEBMError: the log cannot be read (e.g. a folder), or a complete line is not
            UTF-8, not JSON or not a line of the log (:func:`_line_problem`).
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LatentEBMError(f"cannot read {path} ({e.strerror or e}); {_FIX}") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    rows = []
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            row = parse_json(raw)
        except UnicodeDecodeError:
            raise LatentEBMError(f"{path} line {i} is not UTF-8 text: {_CORRUPT}") from None
        except ValueError as e:
            raise LatentEBMError(f"{path} line {i} is not JSON ({e}): {_CORRUPT}") from None
        wrong = _line_problem(row)
        if wrong is not None:
            raise LatentEBMError(f"{path} line {i} {wrong}: {_CORRUPT}")
        rows.append(row)
    return rows, bool(tail.strip())


def parse_json(raw: bytes) -> Any:
    """The JSON value of UTF-8 bytes read from a run's file, or a ``ValueError`` that says
    why there is none, whatever the bytes: not UTF-8 (``UnicodeDecodeError``), not JSON,
    nested too deeply for the parser, or a number too long for Python's integers."""
    text = raw.decode("utf-8")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except json.JSONDecodeError as e:
        raise ValueError(e.msg) from None
    except ValueError:  # e.g. an integer of more than 4300 digits
        raise ValueError("a number too long") from None


_FIX = "move it away to start the log afresh (the checkpoint does not need it)"
_CORRUPT = f"the log is corrupt; remove that line, or {_FIX}"


def _line_problem(row: Any) -> str | None:
    """What makes ``row`` (a parsed JSON line) not a line of the metrics log, or ``None``: a
    line is an object with a whole ``iteration`` and ``stage``, a number ``time`` and
    numbers for every other key, but ``eval``, an object of numbers (:func:`write_eval_line`)."""
    if not isinstance(row, dict):
        return f"is a JSON {type(row).__name__}, not an object"
    for key in ("iteration", "stage", "time"):
        if key not in row:
            return f"has no {key!r}"
    for key, value in row.items():
        whole = key in ("iteration", "stage")
        if key == "eval":
            if not isinstance(value, dict) or not all(_is_number(v) for v in value.values()):
                return "has an 'eval' that is not an object of numbers"
        elif not _is_number(value) or (whole and not (isinstance(value, int) and value >= 0)):
            kind = "a whole number >= 0" if whole else "a number"
            return f"has {key!r} = {json.dumps(value)[:40]}, not {kind}"
    return None


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` as dicts; a partial last line is skipped with a warning.

    The lines of in-training evaluations (:func:`write_eval_line`) hold an ``"eval"`` key;
    :func:`split_metrics` separates them from the loss lines.

    Raises:
        LatentEBMError: the log is not a readable file, or a complete line is not UTF-8, not
            JSON, or not a line of the log (an object with whole ``iteration`` and ``stage``,
            a number ``time``, numbers for the rest and an ``eval`` object of numbers).
    """
    path = Path(run_dir) / METRICS
    if not os.path.lexists(path):
        return []
    rows, partial = _metrics_lines(path)
    if partial:
        warnings.warn(
            f"{path} ends with a partial line (a write cut short); skipped it "
            "(--resume removes it)",
            stacklevel=2,
        )
    return rows


def split_metrics(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lines of :func:`read_metrics` split into the loss lines and the evaluation lines."""
    return [m for m in rows if "eval" not in m], [m for m in rows if "eval" in m]


def truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop the log lines written after ``iteration`` (the checkpoint a run resumes from) and
    a partial last line; the log is rewritten atomically."""
    path = run_dir / METRICS
    if os.path.lexists(path):
        rows, _ = _metrics_lines(path)
        text = "".join(json.dumps(m) + "\n" for m in rows if m["iteration"] <= iteration)
        write_text_file(path, text, "free disk space and resume again")


def open_metrics_log(run_dir: Path | None) -> int:
    """A file descriptor appending to ``run_dir/metrics.jsonl`` (``None``: to ``os.devnull``,
    for the processes that write no files); close it with ``os.close``.

    Raises:
        LatentEBMError: the log cannot be opened (e.g. it is a folder, or a full disk).
    """
    path = os.devnull if run_dir is None else run_dir / METRICS
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise LatentEBMError(f"cannot open {path} to append ({e.strerror or e}); {_FIX}") from None


def write_metrics_line(
    log: int, window: dict[str, list[float]], iteration: int, seconds: float
) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the window's last stage and mean values; then reset it.
    Returns the line.

    ``log`` is a descriptor of :func:`open_metrics_log`: the whole line goes out in one
    ``os.write`` (an append), so a line is partial only when the disk fills mid-write, and
    readers skip that (:func:`read_metrics`). ``window`` maps ``"stage"`` and each logged value
    to its list over the iterations since the last line; the line also holds ``iteration``
    and the training ``time`` in seconds.

    Raises:
        LatentEBMError: the write failed (e.g. a full disk).
    """
    line = {
        "iteration": iteration,
        "stage": int(window.pop("stage")[-1]),
        "time": round(seconds, 3),
    }
    line.update({k: float(np.mean(v)) for k, v in window.items() if v})
    _append(log, line)
    window.clear()
    return line


def write_eval_line(
    log: int, iteration: int, stage: int, seconds: float, values: dict[str, float], spent: float
) -> dict[str, Any]:
    """One line of ``metrics.jsonl`` for an in-training evaluation at ``iteration``:
    ``{"iteration", "stage", "time", "eval": values, "eval_time"}``, ``time`` the training
    seconds so far (evaluations excluded), ``eval_time`` the seconds this evaluation took.
    Written and refused as :func:`write_metrics_line`; returns the line.
    """
    line = {"iteration": iteration, "stage": stage, "time": round(seconds, 3), "eval": values}
    line["eval_time"] = round(spent, 3)
    _append(log, line)
    return line


def _append(log: int, line: dict[str, Any]) -> None:
    """Append ``line`` as JSON in one ``os.write`` (more only when the disk fills part-way)."""
    data = (json.dumps(line) + "\n").encode()
    try:
        while data:
            data = data[os.write(log, data) :]
    except OSError as e:
        raise LatentEBMError(
            f"could not write {METRICS} ({e.strerror or e}); free disk space and continue "
            "with --resume (a partial line is removed)"
        ) from None


def kept_parts(
    run_dir: str | Path,
    metric: str,
    settings: dict[str, Any],
    files: list[Path],
    compute: Callable[[Path], Any],
) -> list[Any]:
    """``compute(f)`` for each of ``files`` (the parts of an evaluation of ``metric``, e.g.
    the snapshots of ``anomaly``), in order; each result (a JSON value) is kept in
    ``eval/.<metric>.partial.json`` as it finishes, so an interrupted evaluation resumes at
    the next file. A kept result is reused when the evaluation runs with the same ``settings``
    on the same file (its name, size and modification time); :func:`write_report` of
    ``metric`` removes the file. An unreadable kept file is ignored with a warning.

    Raises:
        LatentEBMError: a result could not be kept (e.g. a full disk); those kept before are.
    """
    path = _partial_path(run_dir, metric)
    settings = json.loads(json.dumps(settings))
    done: dict[str, Any] = {}
    if path.exists():
        try:
            kept = parse_json(path.read_bytes())
            done = dict(kept["done"]) if kept["settings"] == settings else {}
        except (OSError, ValueError, KeyError, TypeError):
            warnings.warn(f"{path} is unreadable; computing its parts again", stacklevel=2)
    keys = [f"{f.name}:{st.st_size}:{st.st_mtime_ns}" for f in files for st in [f.stat()]]
    for f, key in zip(files, keys, strict=True):
        if key not in done:
            done[key] = compute(f)
            _write_json(
                path,
                {"settings": settings, "done": done},
                "free disk space and evaluate again (the parts already kept are not computed "
                "again)",
            )
    return [done[k] for k in keys]


def _partial_path(run_dir: str | Path, metric: str) -> Path:
    """Where :func:`kept_parts` keeps the finished parts of an evaluation of ``metric``."""
    return Path(run_dir) / EVAL / f".{metric}.partial.json"


def _write_json(path: Path, obj: Any, hint: str, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path``, atomically.

    Raises:
        LatentEBMError: the write failed (e.g. a full disk), ending with ``hint``.
    """
    write_text_file(path, json.dumps(obj, indent=indent) + "\n", hint)


def report_path(run_dir: str | Path, metric: str) -> Path:
    """Where the report of ``metric`` lives: ``DIR/eval/<metric>.json``."""
    return Path(run_dir) / EVAL / f"{metric}.json"


def read_report(path: Path) -> dict[str, Any]:
    """A report of ``eval/`` (:func:`write_report`), checked: a JSON object whose ``value``,
    if any, is a number, and whose ``settings`` and ``features``, if any, are objects.

    Raises:
        LatentEBMError: the file cannot be read, is not UTF-8 JSON, or is not a report.
    """
    try:
        report = parse_json(path.read_bytes())
    except OSError as e:
        raise LatentEBMError(
            f"cannot read the report {path} ({e.strerror or e}); {_REPORT_FIX}"
        ) from None
    except ValueError:  # not UTF-8, not JSON, too deep, too long a number: parse_json
        raise LatentEBMError(f"{path} is not a readable JSON report; {_REPORT_FIX}") from None
    if not isinstance(report, dict):
        wrong = f"is a JSON {type(report).__name__}, not an object"
    elif "value" in report and not _is_number(report["value"]):
        wrong = f"has the value {json.dumps(report['value'])[:40]}, not a number"
    else:
        bad = [k for k in ("settings", "features") if not isinstance(report.get(k, {}), dict)]
        wrong = f"has {bad[0]!r} that is not an object" if bad else None
    if wrong is not None:
        raise LatentEBMError(f"the report {path} {wrong}; {_REPORT_FIX}")
    return report


_REPORT_FIX = "remove it, or evaluate the run again (latent-ebm eval) to rewrite it"


def write_report(run_dir: str | Path, metric: str, report: dict[str, Any]) -> Path:
    """Write ``report`` (JSON, indented) to :func:`report_path`, atomically; returns that path.
    The temporary files that killed writers left in the run go first
    (:func:`~latent_ebm.rundir.layout.clean_temporaries`).

    Raises:
        LatentEBMError: the write failed (e.g. a full disk); no partial file is left.
    """
    clean_temporaries(run_dir)
    path = report_path(run_dir, metric)
    _write_json(path, report, "the earlier report, if any, is kept", indent=2)
    _partial_path(run_dir, metric).unlink(missing_ok=True)
    return path
