"""The run directory: its layout and everything that reads or writes it.

A run directory ``DIR`` holds

- ``config.yaml`` (:data:`CONFIG`): the run's resolved configuration, written when it starts;
- ``metrics.jsonl`` (:data:`METRICS`): one JSON line per ``train.log_every`` iterations, the
  window means of the losses (:func:`write_metrics_line`, :func:`read_metrics`);
- ``checkpoint.pt`` (:data:`CHECKPOINT`): the full training state, written atomically, from
  which a resumed run continues exactly (:func:`save_checkpoint`, :func:`load_checkpoint`);
- ``snapshots/model-<iteration>.pt`` (:data:`SNAPSHOTS`): the models kept every
  ``train.keep_every`` iterations (:func:`save_snapshot`, :func:`snapshots`);
- ``eval/<metric>.json`` (:data:`EVAL`): one report per evaluation metric
  (:func:`write_report`);
- after training, the figures (:mod:`latent_ebm.evaluation.plots`).

The training loop writes a run through this module and evaluation reads it through this
module (:func:`load_run`, :func:`load_data`), so reading a finished run never enters the loop.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from latent_ebm.config import Config, load_config, save_config
from latent_ebm.data import Dataset, load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import save_atomic
from latent_ebm.model import LatentEBM, build_model

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "EVAL",
    "METRICS",
    "SNAPSHOTS",
    "check_not_foreign",
    "load_checkpoint",
    "load_data",
    "load_run",
    "prepare_run_dir",
    "read_metrics",
    "report_path",
    "save_checkpoint",
    "save_snapshot",
    "snapshots",
    "truncate_metrics",
    "write_metrics_line",
    "write_report",
]

CONFIG = "config.yaml"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SNAPSHOTS = "snapshots"
EVAL = "eval"


def _occupied(path: Path) -> bool:
    """Whether ``path`` is a folder with something in it."""
    return path.exists() and any(path.iterdir())


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


def prepare_run_dir(out: Path, cfg: Config | None, resume: bool, force: bool) -> Config:
    """Create or reopen a run directory; returns the run's config.

    A new run writes ``config.yaml``; ``resume`` reads it back (``cfg`` must then be
    ``None``); ``force`` deletes an earlier run in ``out`` first.
    """
    if resume:
        if not (out / CONFIG).exists():
            raise LatentEBMError(f"cannot resume: {out / CONFIG} does not exist")
        return load_config(out / CONFIG)
    if _occupied(out):
        if not force:
            raise LatentEBMError(
                f"run directory {out} already exists; pass --resume to continue it "
                "or --force to start over"
            )
        check_not_foreign(out, "--force will not delete it; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    assert cfg is not None
    save_config(cfg, out / CONFIG)
    return cfg


def save_checkpoint(path: Path, state: dict[str, Any], last_good: int) -> None:
    """:func:`latent_ebm.files.save_atomic`, with a one-line error naming the last good one.

    Raises:
        LatentEBMError: the write failed (e.g. a full disk); the file at ``path`` (from
            iteration ``last_good``) is untouched.
    """
    try:
        save_atomic(state, path)
    except OSError as e:
        raise LatentEBMError(
            f"could not write checkpoint {path} ({e.strerror or e}); free disk space and "
            f"rerun with --resume (the checkpoint at iteration {last_good} is intact)"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` or :func:`save_snapshot`, on the CPU.

    Raises:
        LatentEBMError: no file at ``path``, or a truncated or foreign one.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise LatentEBMError(
            f"no checkpoint at {path}: train the run first (latent-ebm train --out {path.parent})"
        ) from None
    except Exception as e:  # a truncated or foreign file fails in many ways inside torch
        raise LatentEBMError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from None


def save_snapshot(run_dir: Path, state: dict[str, Any], last_good: int) -> Path:
    """Keep the model state ``state`` of iteration ``state["iteration"]`` in ``snapshots/``.

    ``last_good`` is the iteration of the last checkpoint, named if the write fails
    (:func:`save_checkpoint`). Returns the snapshot's path.
    """
    (run_dir / SNAPSHOTS).mkdir(exist_ok=True)
    path = run_dir / SNAPSHOTS / f"model-{state['iteration']:07d}.pt"
    save_checkpoint(path, state, last_good)
    return path


def snapshots(run_dir: str | Path) -> list[Path]:
    """The model snapshots kept by ``train.keep_every``, oldest first."""
    return sorted((Path(run_dir) / SNAPSHOTS).glob("model-*.pt"))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl`` as dicts."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, iteration: int) -> None:
    """Drop the log lines written after ``iteration`` (the checkpoint a run resumes from)."""
    path = run_dir / METRICS
    if path.exists():
        keep = [m for m in read_metrics(run_dir) if m["iteration"] <= iteration]
        path.write_text("".join(json.dumps(m) + "\n" for m in keep))


def write_metrics_line(
    log: IO[str], window: dict[str, list[float]], iteration: int, seconds: float
) -> None:
    """One line of ``metrics.jsonl``: the window's last stage and mean values; then reset it.

    ``window`` maps ``"stage"`` and each logged value to its list over the iterations since
    the last line; the line also holds ``iteration`` and the training ``time`` in seconds.
    """
    line = {
        "iteration": iteration,
        "stage": int(window.pop("stage")[-1]),
        "time": round(seconds, 3),
    }
    line.update({k: float(np.mean(v)) for k, v in window.items() if v})
    log.write(json.dumps(line) + "\n")
    log.flush()  # lines appear as they are made, for anyone watching the run
    window.clear()


def load_data(cfg: Config) -> Dataset:
    """The data set of a config (with its hold-out split, if any)."""
    d = cfg.data
    return load_dataset(d.name, d.data_dir, holdout=d.holdout, size=d.size)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None
) -> tuple[Config, LatentEBM, dict[str, Any]]:
    """Config, model (in eval mode, prior at its saved stage) and raw checkpoint of a run.

    ``checkpoint`` picks another file than ``checkpoint.pt``, e.g. one of :func:`snapshots`.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LatentEBMError(f"run directory {run_dir} does not exist")
    if not (run_dir / CONFIG).exists():
        raise LatentEBMError(f"{run_dir} is not a run directory (no {CONFIG})")
    cfg = load_config(run_dir / CONFIG)
    state = load_checkpoint(Path(checkpoint) if checkpoint else run_dir / CHECKPOINT)
    model = build_model(cfg, tuple(state["shape"]))
    model.load_state_dict(state["model"])
    return cfg, model.to(device).eval(), state


def report_path(run_dir: str | Path, metric: str) -> Path:
    """Where the report of ``metric`` lives: ``DIR/eval/<metric>.json``."""
    return Path(run_dir) / EVAL / f"{metric}.json"


def write_report(run_dir: str | Path, metric: str, report: dict[str, Any]) -> Path:
    """Write ``report`` (JSON, indented) to :func:`report_path`; returns that path."""
    path = report_path(run_dir, metric)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
