"""Evaluation of a trained run (paper Section 5, ARCHITECTURE §7): metrics, reports and figures.

- :mod:`~latent_ebm.evaluation.metrics`: the metrics as functions of a model and images
  (:func:`recon_mse`, :func:`fid`, :func:`anomaly_auprc`, ...);
- this module: :func:`evaluate_run`, one metric on a run directory, written as a report to
  ``eval/<metric>.json``. :data:`METRICS` holds one report function per metric;
- :mod:`~latent_ebm.evaluation.plots`: the figures of a run and its sample files
  (``latent-ebm plot``, ``latent-ebm sample``).

The run is read through :mod:`latent_ebm.rundir`, never through the training loop. The
reports:

- ``recon``: the test split's reconstruction MSE at posterior samples;
- ``fid``: the FID of ``n`` generated images against the training split, in the features
  ``classifier`` or ``inception``; the images are ``g(z)`` at prior samples (method
  ``langevin``, ``mala`` or ``sir``) or, with method ``aggregate``, at samples of the
  aggregate posterior of the training images drawn by the run's own posterior chain: the FID
  that the run's prior would give if it matched that aggregate posterior exactly: the
  ceiling of its prior samples (ARCHITECTURE §7);
- ``anomaly``: on a hold-one-class-out run, the AUPRC of the test split with the held-out
  class as positive, mean and std over the ``last`` kept snapshots of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from latent_ebm.config import check_device
from latent_ebm.distributed import resolve_device
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.classifier import FEATURES
from latent_ebm.evaluation.likelihood import nll_report, prior_nll_report
from latent_ebm.evaluation.metrics import (
    anomaly_auprc,
    anomaly_scores,
    auprc,
    fid,
    fid_at,
    posterior_quality,
    posterior_samples,
    recon_mse,
    reconstruct,
)
from latent_ebm.evaluation.plots import check_checkpoint, run_figures, sample_run, save_grid
from latent_ebm.evaluation.request import FID_METHODS, Request, SMCSettings, check_options
from latent_ebm.evaluation.sizes import check_request, check_sampling
from latent_ebm.refit import aggregate_posterior, own_chain
from latent_ebm.rundir import CHECKPOINT, kept_parts, load_data, load_run, snapshots, write_report
from latent_ebm.sampling import check_sharpen, sharpen_suffix

LIKELIHOODS = ("prior-nll", "nll")  # the metrics of evaluation.likelihood

__all__ = [
    "FID_METHODS",
    "METRICS",
    "anomaly_auprc",
    "anomaly_scores",
    "auprc",
    "check_sampling",
    "evaluate_run",
    "fid",
    "fid_at",
    "posterior_quality",
    "posterior_samples",
    "recon_mse",
    "reconstruct",
    "run_figures",
    "sample_run",
    "save_grid",
]


def _recon_report(r: Request) -> dict[str, Any]:
    """Test reconstruction MSE (:func:`recon_mse`) at posterior samples."""
    post = r.posterior_chain()
    value = recon_mse(
        r.model, r.data.test_x, **post, seed=r.seed, batch_size=r.batch_size, progress=r.progress
    )
    return {
        "value": value,
        "split": "test",
        "n": len(r.data.test_x),
        "settings": {**post, "seed": r.seed},
    }


def _fid_report(r: Request) -> dict[str, Any]:
    """FID (:func:`fid`) of ``n`` prior samples against the training split.

    The prior chain defaults to the run's test-time one (``sample.steps``, ``step_size``).
    """
    from latent_ebm.evaluation.classifier import NETWORKS, classifier_features
    from latent_ebm.evaluation.features import inception_features

    if r.features in NETWORKS:
        extractor = classifier_features(
            r.data, device=r.device, progress=r.progress, network=r.features
        )
    elif r.features == "inception":
        if r.weights is None:
            raise LatentEBMError(
                "--features inception needs --weights PATH (the FID Inception weights file)"
            )
        extractor = inception_features(r.weights, device=r.device)
    else:
        raise LatentEBMError(f"unknown features '{r.features}' (choose {', '.join(FEATURES)})")
    if r.method == "aggregate":
        return _fid_aggregate_report(r, extractor)
    prior_chain = r.chain(r.cfg.sample.steps, r.cfg.sample.step_size)
    diagnostics: list[dict[str, float]] = []
    value = fid(
        r.model,
        r.data.train_x,
        extractor,
        n=r.n,
        seed=r.seed,
        batch_size=r.batch_size,
        progress=r.progress,
        method=r.method,
        proposals=r.proposals,
        diagnostics=diagnostics,
        **prior_chain,
    )
    settings = {"n": r.n, "method": r.method, "seed": r.seed, **prior_chain}
    if r.method == "sir":
        settings["proposals"] = r.proposals
    if r.method == "smc":  # the batches' particle systems: budget and final weights
        settings["gradient_evaluations"] = diagnostics[0]["gradient_evaluations"]
        settings["ess_fraction"] = sum(d["ess"] for d in diagnostics) / r.n
    return {
        "value": value,
        "split": "train (reference statistics)",
        "settings": settings,
        "features": extractor.describe(),
    }


def _fid_aggregate_report(r: Request, extractor: Any) -> dict[str, Any]:
    """FID of ``g(z)`` at ``n`` samples of the aggregate posterior of the training images,
    each from the run's own posterior chain (from ``N(0, I)``, or from the amortiser for a run
    trained with ``train.post_init=amortised``): the FID of a prior that matched the aggregate
    posterior exactly: the ceiling of the run's prior samples. The chains run under the
    run's learned prior, as every evaluation's posterior chains do, so the ceiling belongs to
    the model (generator and prior), not to the generator alone."""
    start, steps, step_size = own_chain(r.cfg)
    chain = r.chain(steps, step_size)
    z = aggregate_posterior(
        r.model,
        r.data.train_x,
        r.n,
        **chain,
        seed=r.seed,
        progress=r.progress,
        amortised=start == "amortised",
    )
    value = fid_at(r.model, z, r.data.train_x, extractor, r.batch_size, r.progress)
    return {
        "value": value,
        "split": "train (reference statistics)",
        "settings": {"n": r.n, "method": "aggregate", "seed": r.seed, "start": start, **chain},
        "features": extractor.describe(),
    }


def _anomaly_report(r: Request) -> dict[str, Any]:
    """AUPRC (:func:`anomaly_auprc`) of the held-out class, over the last ``last`` snapshots
    (the checkpoint when the run kept none): mean, std and each value."""
    cfg = r.cfg
    if cfg.data.holdout is None:
        raise LatentEBMError(
            f"{r.run_dir} was trained on every class; the anomaly protocol needs a run "
            "trained with --holdout C"
        )
    if r.holdout is not None and r.holdout != cfg.data.holdout:
        raise LatentEBMError(
            f"--holdout {r.holdout} does not match the run's held-out class {cfg.data.holdout}"
        )
    post = r.posterior_chain()
    files = (snapshots(r.run_dir) or [r.run_dir / CHECKPOINT])[-r.last :]
    anomalous = (r.data.test_y == cfg.data.holdout).long()

    def part(path: Path) -> list[Any]:  # [iteration, AUPRC] of one snapshot
        _, m, st = load_run(r.run_dir, r.device, checkpoint=path)
        kw = {"seed": r.seed, "batch_size": r.batch_size, "progress": r.progress}
        return [st["iteration"], anomaly_auprc(m, r.data.test_x, anomalous, **post, **kw)]

    settings = {**post, "seed": r.seed, "batch_size": r.batch_size}
    iterations, values = (
        list(c) for c in zip(*kept_parts(r.run_dir, "anomaly", settings, files, part), strict=True)
    )
    return {
        "value": float(np.mean(values)),
        "std": float(np.std(values)),
        "values": values,
        "iterations": iterations,
        "holdout": cfg.data.holdout,
        "split": f"hold-out test: {int(anomalous.sum())} anomalous of {len(anomalous)}",
        "settings": {**post, "seed": r.seed, "evaluations": len(values)},
    }


# One report function per metric: its value, split and settings for eval/<metric>.json.
METRICS: dict[str, Callable[[Request], dict[str, Any]]] = {
    "recon": _recon_report,
    "fid": _fid_report,
    "anomaly": _anomaly_report,
    "prior-nll": prior_nll_report,
    "nll": nll_report,
}


def evaluate_run(
    run_dir: str | Path,
    metric: str,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    start: str = "noise",
    seed: int = 0,
    n: int = 50_000,
    features: str = "classifier",
    weights: str | Path | None = None,
    method: str = "langevin",
    proposals: int = 10,
    last: int = 10,
    holdout: int | None = None,
    batch_size: int = 500,
    device: str = "auto",
    progress: bool = True,
    name: str | None = None,
    checkpoint: str = "last",
    sharpen: float = 1.0,
    particles: int = 2000,
    repeats: int = 4,
    temperatures: int = 10,
    moves: int = 5,
    chains: int = 8,
    samples: int = 1000,
) -> dict[str, Any]:
    """Run ``metric`` (a key of :data:`METRICS`) on a run; write ``eval/<name>.json``
    (``name`` defaults to the metric, for ``fid`` followed by ``-<method>`` other than
    ``langevin``, ``-<features>`` other than ``classifier`` and ``-<steps>steps`` other than the
    run's ``sample.steps``, e.g. ``fid-smc-classifier2``, ``fid-500steps``).

    ``checkpoint``: ``last`` (``checkpoint.pt``) or ``best`` (``best.pt``, kept by
    ``train.keep_best=fid``; the report's name then defaults to ``<metric>-best``).

    ``steps``/``step_size`` default to the run's posterior chain (``recon``, ``anomaly``) or
    test-time prior chain (``fid``). ``start`` is where the posterior chains start: ``noise``
    (the paper's ``N(0, I)``) or ``amortised`` (a draw of the amortiser of a run trained with
    ``train.post_init=amortised``; its steps default to the run's ``train.warm_steps``, its
    report's name to ``<metric>-amortised``); ``n``, ``features``, ``weights``, ``method`` and
    ``proposals`` apply to ``fid``, ``last`` and ``holdout`` (a check of the run's held-out
    class) to ``anomaly``. ``sharpen`` (``fid`` of prior samples only; beyond the paper)
    scores the prior :meth:`~latent_ebm.priors.Prior.sharpened` by that factor; the report
    records it, and its name defaults to ``fid-sharpen<beta>``. ``prior-nll`` and ``nll``
    (:mod:`~latent_ebm.evaluation.likelihood`) normalise the prior by SMC: ``particles``,
    ``repeats``, ``temperatures`` per stage and ``moves`` (:class:`~latent_ebm.smc.
    SMCSettings`); ``nll`` scores the first ``n`` test images (all of them at the default),
    fits its proposals to ``chains`` posterior chains per image and draws ``samples`` of them.
    Returns the report: metric, run, iteration, value, split, settings (and features for
    ``fid``), wall time.

    Every argument is checked before any work (each message names the command-line option);
    the run is read by :func:`latent_ebm.rundir.load_run` (its ``config.yaml`` validated, the
    checkpoint loaded without running code); the report is written atomically, and the
    returned report also holds its ``path``.

    Raises:
        LatentEBMError: unknown metric, features or method, a value out of range, a device
            that is not there, no such run or checkpoint (or a bad or refused one),
            ``inception`` features without ``weights``, ``anomaly`` on a run without a
            held-out class, ``start=amortised`` on a run without an amortiser, a full disk.
    """
    if metric not in METRICS:
        raise LatentEBMError(f"unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    smc = SMCSettings(particles, repeats, temperatures, moves)
    check_options(
        metric, steps, step_size, start, seed, n, features, method, proposals, last, smc, chains,
        samples,
    )  # fmt: skip
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LatentEBMError(f"--batch-size must be at least 1, got {batch_size!r}")
    check_device(device, "--device")
    check_checkpoint(checkpoint)
    if metric == "anomaly" and checkpoint != "last":
        raise LatentEBMError("--checkpoint applies to recon and fid; anomaly reads the snapshots")
    check_sharpen(sharpen)
    if sharpen != 1 and (metric not in ("fid", *LIKELIHOODS) or method == "aggregate"):
        raise LatentEBMError(
            "--sharpen applies to --metric fid of prior samples, prior-nll and nll"
        )
    run_dir = Path(run_dir)
    dev = resolve_device(device, "--device")
    t0 = time.perf_counter()
    cfg, model, state = load_run(run_dir, dev, checkpoint=checkpoint)
    model.prior = model.prior.sharpened(sharpen)
    if start == "amortised" and model.amortiser is None:
        raise LatentEBMError(
            f"{run_dir} was trained without an amortiser (train.post_init="
            f"{cfg.train.post_init}): --start amortised needs a run trained with "
            "train.post_init=amortised"
        )
    data = load_data(cfg)
    # Request's fields follow this function's arguments, in order.
    request = Request(
        run_dir,
        cfg,
        model,
        data,
        dev,
        steps,
        step_size,
        start,
        seed,
        n,
        features,
        weights,
        method,
        proposals,
        last,
        holdout,
        batch_size,
        progress,
        smc,
        chains,
        samples,
    )
    check_request(request, metric)  # sizes, before the work
    report: dict[str, Any] = {
        "metric": metric,
        "run": str(run_dir),
        "iteration": state["iteration"],
    }
    if checkpoint != "last":
        report["checkpoint"] = checkpoint
    if sharpen != 1:
        report["sharpen"] = sharpen
    report.update(METRICS[metric](request))
    report["wall_time_s"] = round(time.perf_counter() - t0, 2)
    default = metric + ("" if start == "noise" else f"-{start}")
    if metric == "fid":  # one report per sampler and feature network: none overwrites another
        default += "" if method == "langevin" else f"-{method}"
        default += "" if features == "classifier" else f"-{features}"
        default += "" if steps in (None, cfg.sample.steps) else f"-{steps}steps"
    default += "" if checkpoint == "last" else f"-{checkpoint}"
    default += sharpen_suffix(sharpen)
    path = write_report(run_dir, name or default, report)
    return {**report, "path": str(path)}
