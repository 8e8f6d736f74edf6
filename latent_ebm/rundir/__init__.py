"""The run directory: its layout and everything that reads or writes it.

A run directory ``DIR`` holds

- ``config.yaml`` (:data:`CONFIG`): the run's resolved configuration, written when it starts;
- ``metrics.jsonl`` (:data:`METRICS`): one JSON line per ``train.log_every`` iterations, the
  window means of the losses (:func:`write_metrics_line`, :func:`read_metrics`), and one per
  in-training evaluation (``train.eval_every``; :func:`write_eval_line`, :func:`split_metrics`);
- ``checkpoint.pt`` (:data:`CHECKPOINT`): the full training state, written atomically, from
  which a resumed run continues exactly (:func:`save_checkpoint`, :func:`load_checkpoint`);
- ``best.pt`` (:data:`BEST`): with ``train.keep_best=fid``, the training state (as
  ``checkpoint.pt``) of the lowest in-training FID (``load_run(DIR, checkpoint="best")``);
- ``tensorboard/`` (:data:`TENSORBOARD`): with ``train.tensorboard``, TensorBoard event files;
- ``snapshots/model-<iteration>.pt`` (:data:`SNAPSHOTS`): the models kept every
  ``train.keep_every`` iterations (:func:`save_snapshot`, :func:`snapshots`);
- ``eval/<metric>.json`` (:data:`EVAL`): one report per evaluation metric
  (:func:`write_report`); while an evaluation of several parts (the snapshots of ``anomaly``)
  runs, ``eval/.<metric>.partial.json`` keeps the parts it has finished (:func:`kept_parts`);
- ``.lock`` (:data:`LOCK`): the lock of the run's one writer (:class:`RunLock`), holding its
  process id;
- after training, the figures (:mod:`latent_ebm.evaluation.plots`).

The training loop writes a run through this module and evaluation reads it through this
module (:func:`load_run`, :func:`load_data`), so reading a finished run never enters the loop.

Guarantees (docs/guide.md "Run directory, checkpoints and resume"): every file is written to a
temporary file and renamed (a metrics line is one ``os.write`` appended to the log), so a crash
or a full disk leaves the previous version, never a half-written file; checkpoints and
snapshots are loaded with ``weights_only=True`` and never run code; a checkpoint with a NaN or
Inf parameter is neither written nor loaded; one process at a time writes a run directory
(:class:`RunLock`); readers take no lock.

A new run decides under the lock that its folder is new (:func:`open_run_dir`): a run that
another process wrote meanwhile is refused and left whole (``--force`` deletes only the run it
checked before loading its data), and a failed run removes only what it made. The lock's own
failures (a full disk, a read-only folder, ``.lock`` a folder) are one line and leave no lock
file. What a run's files hold is checked when read: the metrics log and reports
(:func:`read_metrics`, :func:`read_report`) and a checkpoint's structure and data set
(:func:`load_checkpoint`). The temporary files of killed writers are removed by training and
by ``plot``, ``eval`` and ``sample`` (:func:`clean_temporaries`), never one being written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latent_ebm.config import Config, load_config, validate
from latent_ebm.data import Dataset, load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.model import LatentEBM, build_model
from latent_ebm.rundir.checkpoints import (
    kept_checkpoint,
    load_checkpoint,
    load_model_state,
    non_finite,
    restore_training,
    save_checkpoint,
    save_snapshot,
    snapshots,
)
from latent_ebm.rundir.layout import (
    BEST,
    CHECKPOINT,
    CONFIG,
    EVAL,
    LOCK,
    METRICS,
    RUN_ENTRIES,
    SNAPSHOTS,
    TENSORBOARD,
    RunLock,
    abandon_new_run,
    check_creatable,
    check_new_run_dir,
    check_not_foreign,
    check_run_dir,
    check_writable_file,
    clean_temporaries,
    open_run_dir,
    read_run_config,
)
from latent_ebm.rundir.logs import (
    kept_parts,
    open_metrics_log,
    read_metrics,
    read_report,
    report_path,
    split_metrics,
    truncate_metrics,
    write_eval_line,
    write_metrics_line,
    write_report,
)
from latent_ebm.rundir.resume import check_trained_here, resume_change

__all__ = [
    "BEST",
    "CHECKPOINT",
    "CONFIG",
    "EVAL",
    "LOCK",
    "METRICS",
    "RUN_ENTRIES",
    "SNAPSHOTS",
    "TENSORBOARD",
    "RunLock",
    "abandon_new_run",
    "check_creatable",
    "check_new_run_dir",
    "check_not_foreign",
    "check_run_dir",
    "check_trained_here",
    "check_writable_file",
    "checkpoint_file",
    "clean_temporaries",
    "kept_checkpoint",
    "kept_parts",
    "load_checkpoint",
    "load_data",
    "load_model_state",
    "load_run",
    "non_finite",
    "open_metrics_log",
    "open_run_dir",
    "read_metrics",
    "read_report",
    "read_run_config",
    "report_path",
    "restore_training",
    "resume_change",
    "save_checkpoint",
    "save_snapshot",
    "snapshots",
    "split_metrics",
    "truncate_metrics",
    "write_eval_line",
    "write_metrics_line",
    "write_report",
]


def load_data(cfg: Config) -> Dataset:
    """The data set of a config (with its hold-out split, if any)."""
    d = cfg.data
    return load_dataset(d.name, d.data_dir, holdout=d.holdout, size=d.size)


def checkpoint_file(run_dir: str | Path, checkpoint: str | Path | None = None) -> Path:
    """The file of a run's checkpoint: ``None`` or ``"last"``: ``checkpoint.pt``; ``"best"``:
    ``best.pt`` (:data:`BEST`); anything else: that path.

    Raises:
        LatentEBMError: ``"best"`` on a run without ``best.pt``.
    """
    run_dir = Path(run_dir)
    if checkpoint is None or checkpoint == "last":
        return run_dir / CHECKPOINT
    if checkpoint == "best":
        if not (run_dir / BEST).exists():
            raise LatentEBMError(
                f"{run_dir} has no {BEST}: only a run trained with train.keep_best=fid (and "
                "train.eval_every) keeps one; use --checkpoint last"
            )
        return run_dir / BEST
    return Path(checkpoint)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str | Path | None = None
) -> tuple[Config, LatentEBM, dict[str, Any]]:
    """Config, model (in eval mode, prior at its saved stage) and raw checkpoint of a run.

    ``checkpoint`` picks another file than ``checkpoint.pt`` (:func:`checkpoint_file`):
    ``"best"`` (``best.pt``) or a path, e.g. one of :func:`snapshots`.
    The run's ``config.yaml`` is validated as ``--resume`` does; the checkpoint is loaded by
    :func:`load_checkpoint` (never running code) and must match the config.

    Raises:
        LatentEBMError: no such run (or a file) or checkpoint (``"best"`` without
            ``best.pt``), a bad config, a refused, unreadable, damaged or mismatched checkpoint
            (other model settings, another data set), or one with a NaN or Inf parameter.
    """
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    cfg = validate(load_config(run_dir / CONFIG))
    path = checkpoint_file(run_dir, checkpoint)
    state = load_checkpoint(path, cfg)
    shape = tuple(state["shape"])
    validate(cfg, shape=shape)
    model = build_model(cfg, shape)
    load_model_state(model, state, path)
    return cfg, model.to(device).eval(), state
