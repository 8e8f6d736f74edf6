"""Watching a run while it trains (ARCHITECTURE §7): the metrics log, in-training evaluations,
the best model and TensorBoard.

The training loop hands every log line and every finished iteration to a :class:`Monitor`
(rank 0's; the other processes' do nothing), which

- appends the loss lines to ``metrics.jsonl`` (:func:`latent_ebm.rundir.write_metrics_line`);
- every ``train.eval_every`` iterations and at ``train.iters`` evaluates the model as it stands
  (the prior of the frozen ratios; at the end, every ratio): the recon MSE of ``train.eval_n``
  test images (a subset fixed by seed 0, the same for every run of a data set) and the FID of
  ``train.eval_n`` prior samples (the run's ``sample`` chain, seed 0) against the training
  split in the classifier features, exactly what ``latent-ebm eval`` gives for that checkpoint
  and those settings; one ``"eval"`` line of ``metrics.jsonl`` holds them
  (:func:`latent_ebm.rundir.write_eval_line`), and the loop leaves the time spent out of the
  training time;
- with ``train.keep_best=fid`` keeps ``best.pt``, the training state of the lowest FID;
- with ``train.tensorboard`` writes the same numbers and image grids as TensorBoard events
  (:mod:`~latent_ebm.monitor.tensorboard`);
- at the end draws ``quality.png`` (:func:`latent_ebm.evaluation.plots.plot_quality`);
- checks that the training state stays finite (:mod:`~latent_ebm.monitor.divergence`), naming
  the setting that made it diverge.

Evaluations draw their numbers from their own seeded streams and run under
``torch.random.fork_rng``: training continues bit for bit as without them, and a resumed run
repeats them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latent_ebm import rng, rundir
from latent_ebm.config import Config
from latent_ebm.data import Dataset, to_float
from latent_ebm.errors import ChainDivergedError
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.evaluation.metrics import fid, recon_mse, reconstruct, reference_stats
from latent_ebm.evaluation.plots import image_grid, plot_quality, recon_pairs
from latent_ebm.langevin import remedy
from latent_ebm.model import LatentEBM
from latent_ebm.monitor.divergence import check_finite, refuse_non_finite
from latent_ebm.monitor.tensorboard import EXTRA, TensorBoardLog, check_tensorboard
from latent_ebm.posterior import chain_causes, setting
from latent_ebm.sampling import sample_latents

__all__ = [
    "EVAL_SEED",
    "EXTRA",
    "QUALITY",
    "Monitor",
    "check_finite",
    "check_tensorboard",
    "eval_subset",
    "refuse_non_finite",
]

EVAL_SEED = 0  # seed of the test subset and of every evaluation chain (eval's default --seed)
QUALITY = "quality.png"
_BATCH = 500  # images per batch of an evaluation (eval's default --batch-size)
_GRID = 64  # images in a TensorBoard grid of samples; 32 test images beside their recon


def eval_subset(num_test: int, n: int) -> torch.Tensor:
    """Indices ``(min(n, num_test),)`` of the test images of every in-training evaluation: a
    permutation seeded by :data:`EVAL_SEED` only, so every run of a data set uses the same."""
    g = rng.generator_for(EVAL_SEED, 0, rng.EVAL_SUBSET)
    return torch.randperm(num_test, generator=g)[:n]


@contextlib.contextmanager
def _named_chain(
    model: LatentEBM, images: torch.Tensor | None, step: str, cfg: Config
) -> Iterator[None]:
    """An evaluation's chains (posterior chains of the ``uint8`` ``images``, or prior chains
    for ``None``) whose divergence names the setting to change: a network's learning rate, or
    the step size ``step`` (:func:`latent_ebm.langevin.remedy`, from ``N(0, I)`` starts)."""
    try:
        yield
    except ChainDivergedError as e:
        x = None if images is None else to_float(images[:_GRID]).to(model.device)
        g = torch.Generator().manual_seed(EVAL_SEED)
        z0 = torch.randn(_GRID, model.nz, generator=g).to(model.device)
        fix = remedy(
            z0[: len(x)] if x is not None else z0, chain_causes(model, cfg, x), setting(cfg, step)
        )
        raise ChainDivergedError(
            f"a chain of the in-training evaluation: {e}; {fix}", e.rows
        ) from None


class Monitor:
    """The metrics log, evaluations, best model and TensorBoard events of a run.

    Arguments:
        cfg: the run's configuration.
        out: the run directory (``None`` on processes that write nothing: every method then
            only returns).
        data: the run's data set; device: where to evaluate.
        start: the iteration training starts from (a resumed run's checkpoint).
        best: ``{"fid", "iteration"}`` of ``best.pt`` so far (from the checkpoint), or None.
    """

    def __init__(
        self,
        cfg: Config,
        out: Path | None,
        data: Dataset,
        device: torch.device,
        start: int = 0,
        best: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.out, self.data, self.device = cfg, out, data, device
        self.best = best
        self.log = rundir.open_metrics_log(out)
        self._features: Any = None  # the classifier features and the training split's
        self._reference: tuple[np.ndarray, np.ndarray] | None = None  # statistics, made once
        self.tensorboard = None
        if out is not None and cfg.train.tensorboard:
            losses, _ = rundir.split_metrics(rundir.read_metrics(out))
            last = (losses[-1]["iteration"], losses[-1]["time"]) if losses else (0, 0.0)
            self.tensorboard = TensorBoardLog(out / rundir.TENSORBOARD, start, last)

    def line(self, window: dict[str, list[float]], iteration: int, seconds: float) -> None:
        """Append the loss line of ``window`` at ``iteration`` (:func:`write_metrics_line`)."""
        line = rundir.write_metrics_line(self.log, window, iteration, seconds)
        if self.tensorboard is not None:
            self.tensorboard.line(line)

    def due(self, iteration: int) -> bool:
        """Whether an evaluation is due after ``iteration`` iterations: every
        ``train.eval_every`` and at ``train.iters`` (the same answer on every process)."""
        every = self.cfg.train.eval_every
        return every > 0 and (iteration % every == 0 or iteration == self.cfg.train.iters)

    def evaluate(
        self,
        model: LatentEBM,
        iteration: int,
        stage: int,
        seconds: float,
        state: Callable[[], dict[str, Any]],
        interruptible: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext,
    ) -> float:
        """Evaluate ``model`` after ``iteration`` iterations if one is due (:meth:`due`) on
        the process that writes; returns the seconds it took (0: none).

        ``seconds`` is the training time so far; ``state`` gives the training state, saved as
        ``best.pt`` when ``train.keep_best=fid`` and the FID is the lowest so far. The
        measurement runs inside ``interruptible()`` (the loop's
        :meth:`latent_ebm.distributed.Signals.interruptible`: a signal stops it at once);
        then the results are written whole, or, if it was stopped, nothing is.

        Raises:
            LatentEBMError: a write failed (e.g. a full disk), or a chain of the evaluation
                diverged (naming the setting to change).
            KeyboardInterrupt: a signal inside ``interruptible()``.
        """
        t = self.cfg.train
        if self.out is None or not self.due(iteration):
            return 0.0
        t0 = time.perf_counter()
        saved = state() if t.keep_best == "fid" else None  # training time, before evaluating
        was_training = model.training
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with interruptible(), torch.random.fork_rng(devices=devices):
                model.eval()
                values, grids = self._measure(model)
        finally:
            model.train(was_training)
        spent = time.perf_counter() - t0
        line = rundir.write_eval_line(self.log, iteration, stage, seconds, values, spent)
        if saved is not None and (self.best is None or values["fid"] < self.best["fid"]):
            kept = self.best["iteration"] if self.best else 0
            rundir.save_checkpoint(self.out / rundir.BEST, saved, kept)
            self.best = {"fid": values["fid"], "iteration": iteration}
        if self.tensorboard is not None:
            self.tensorboard.evaluation(line, *grids)
        if iteration == t.iters:
            plot_quality(rundir.read_metrics(self.out), self.cfg, self.out / QUALITY)
        return time.perf_counter() - t0

    def _measure(self, model: LatentEBM) -> tuple[dict[str, float], tuple[np.ndarray, ...]]:
        """Recon MSE and FID of ``model``; the TensorBoard grids when they are wanted."""
        cfg, data = self.cfg, self.data
        test_x = data.test_x[eval_subset(len(data.test_x), cfg.train.eval_n)]
        post = (cfg.train.post_steps, cfg.train.post_step_size)
        with _named_chain(model, test_x, "train.post_step_size", cfg):
            recon = recon_mse(model, test_x, *post, seed=EVAL_SEED, batch_size=_BATCH)
        if self._reference is None:
            self._features = classifier_features(data, device=self.device)
            self._reference = reference_stats(data.train_x, self._features, _BATCH)
        chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
        with _named_chain(model, None, "sample.step_size", cfg):
            value = fid(
                model,
                data.train_x,
                self._features,
                n=cfg.train.eval_n,
                seed=EVAL_SEED,
                batch_size=_BATCH,
                reference=self._reference,
                **chain,
            )
        grids: tuple[np.ndarray, ...] = ()
        if self.tensorboard is not None:
            z = sample_latents(model, _GRID, seed=EVAL_SEED, **chain)
            pairs = reconstruct(model, test_x[: _GRID // 2], *post, seed=EVAL_SEED)
            grids = (
                image_grid(model.decode(z).detach()),
                recon_pairs(test_x[: _GRID // 2], pairs, 8),
            )
        return {"recon": recon, "fid": value}, grids

    def close(self) -> None:
        """Close the metrics log and the event files."""
        os.close(self.log)
        if self.tensorboard is not None:
            self.tensorboard.close()
