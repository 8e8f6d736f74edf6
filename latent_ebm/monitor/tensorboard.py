"""TensorBoard event files of a run, through ``torch.utils.tensorboard`` (the optional extra
``pip install latent-ebm[tensorboard]``), under ``DIR/tensorboard/``.

Tags: ``train/<key>`` for every value of a loss line of ``metrics.jsonl`` (at its iteration),
``train/it_per_s`` (iterations a second of training time since the previous line),
``eval/<key>`` for every value of an in-training evaluation, ``eval/seconds`` its duration,
and the image grids
``eval/samples`` and ``eval/reconstructions``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latent_ebm.errors import LatentEBMError

__all__ = ["EXTRA", "TensorBoardLog", "check_tensorboard"]

EXTRA = "pip install latent-ebm[tensorboard]"


def _summary_writer() -> type:
    """``torch.utils.tensorboard.SummaryWriter``.

    Raises:
        LatentEBMError: the ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LatentEBMError(
            f"train.tensorboard needs the tensorboard package: {EXTRA} (or drop --tensorboard)"
        ) from None
    return SummaryWriter


def check_tensorboard(wanted: bool) -> None:
    """Refuse ``train.tensorboard`` (``wanted``) before anything is written when the
    ``tensorboard`` package is missing.

    Raises:
        LatentEBMError: ``wanted`` and no ``tensorboard`` package.
    """
    if wanted:
        _summary_writer()


class TensorBoardLog:
    """The event files of one run in ``folder``; a resumed run (``start`` > 0) first purges
    the events after its checkpoint's iteration, as ``metrics.jsonl`` is truncated.

    ``last`` is ``(iteration, training seconds)`` of the last loss line already logged
    (``(0, 0.0)`` for a new run), from which the first ``it_per_s`` is measured.
    """

    def __init__(self, folder: Path, start: int, last: tuple[int, float]) -> None:
        writer = _summary_writer()
        self.writer = writer(str(folder), purge_step=start + 1 if start else None)
        self.last = last

    def line(self, line: dict[str, Any]) -> None:
        """The scalars of a loss line of ``metrics.jsonl`` (iteration, stage, time, means)."""
        step = line["iteration"]
        for key, value in line.items():
            if key != "iteration":
                self.writer.add_scalar(f"train/{key}", value, step)
        it, seconds = self.last
        if line["time"] > seconds:
            self.writer.add_scalar("train/it_per_s", (step - it) / (line["time"] - seconds), step)
        self.last = (step, line["time"])

    def evaluation(
        self, line: dict[str, Any], samples: np.ndarray, reconstructions: np.ndarray
    ) -> None:
        """An in-training evaluation (a line of :func:`latent_ebm.rundir.write_eval_line`) and
        its image grids, ``uint8`` ``(H, W, C)``."""
        step = line["iteration"]
        for key, value in line["eval"].items():
            self.writer.add_scalar(f"eval/{key}", value, step)
        self.writer.add_scalar("eval/seconds", line["eval_time"], step)
        self.writer.add_image("eval/samples", samples, step, dataformats="HWC")
        self.writer.add_image("eval/reconstructions", reconstructions, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
