"""Quality against training cost: the curves of ``benchmarks/time_to_quality.py``.

A run keeps model snapshots as it trains (``train.keep_every``); each snapshot is a point of
its curve, at the training wall time (``minutes``) or operations (``gflop``,
:func:`latent_ebm.experiments.cost.cumulative_gflop`) when it was kept:

- :func:`evaluate_snapshots`: every snapshot's test recon MSE, FID, FID at the aggregate
  posterior (``fid_q``) and posterior quality, cached in the run directory;
- :func:`over_seeds`: the points of several seeds' runs, snapshot by snapshot, as mean and
  standard error; :func:`time_to_reach`: where a curve first reaches a target;
- :func:`plot_time_to_quality`, :func:`plot_posterior_quality`: the figures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from latent_ebm.evaluation import fid, fid_at, posterior_quality, recon_mse
from latent_ebm.evaluation.plots import save_figure
from latent_ebm.experiments.stats import summarize
from latent_ebm.refit import aggregate_posterior, own_chain
from latent_ebm.rundir import load_run, snapshots

__all__ = [
    "SUMMED",
    "X_LABELS",
    "evaluate_snapshots",
    "measure_snapshot",
    "over_seeds",
    "plot_posterior_quality",
    "plot_time_to_quality",
    "time_to_reach",
]


def evaluate_snapshots(
    run_dir: Path,
    fid_n: int,
    extractor: Any,
    data: Any,
    warm_steps: int,
    posterior_n: int,
) -> list[dict[str, Any]]:
    """Recon MSE, FID, FID at the aggregate posterior and posterior quality of every snapshot
    of the run in ``run_dir`` (:func:`measure_snapshot`), cached in
    ``run_dir/time_to_quality.json``: a cached point gets only what it lacks.

    Arguments:
        extractor: the FID feature network
            (:func:`latent_ebm.evaluation.classifier.classifier_features`).
        data: the run's data set (:func:`latent_ebm.rundir.load_data`).

    Returns:
        One point a snapshot, in order: ``iteration``, ``minutes`` (training wall time when it
        was kept) and the measurements.
    """
    path = run_dir / "time_to_quality.json"
    done = {p["iteration"]: p for p in json.loads(path.read_text())} if path.exists() else {}
    keys = {"recon", "fid", "fid_q", "posterior"}
    points = []
    for snap in snapshots(run_dir):
        cfg, model, state = load_run(run_dir, checkpoint=snap)
        point = done.setdefault(
            state["iteration"], {"iteration": state["iteration"], "minutes": state["elapsed"] / 60}
        )
        if model.amortiser is not None:
            keys.add("recon_amortised")
        if keys - point.keys():
            print(f"{run_dir.name}: iteration {state['iteration']} ...", file=sys.stderr)
            point.update(
                measure_snapshot(
                    model, cfg, keys - point.keys(), fid_n, extractor, data, warm_steps, posterior_n
                )
            )
            path.write_text(json.dumps(sorted(done.values(), key=lambda p: p["iteration"])))
        points.append(point)
    return points


def measure_snapshot(
    model: Any,
    cfg: Any,
    keys: set[str],
    fid_n: int,
    extractor: Any,
    data: Any,
    warm_steps: int,
    posterior_n: int,
) -> dict[str, Any]:
    """The measurements ``keys`` of one snapshot (see :func:`evaluate_snapshots`).

    ``recon``: test recon MSE with the run's posterior chain from noise; ``fid``: classifier FID
    of ``fid_n`` prior samples; ``fid_q``: the FID of ``g(z)`` at ``fid_n`` samples of the
    aggregate posterior over the training images, drawn by the run's own chain (from noise, or
    from its amortiser): the FID a prior that matched the aggregate posterior exactly would
    give; ``recon_amortised``: recon MSE of ``warm_steps`` steps from the amortiser;
    ``posterior``: :func:`latent_ebm.evaluation.posterior_quality` on the first
    ``posterior_n`` test images of the chains ``noise-L`` (``train.post_steps``), ``noise-K``
    (``warm_steps`` from noise) and, with an amortiser, ``amortised-K``.
    """
    chain = {"steps": cfg.train.post_steps, "step_size": cfg.train.post_step_size}
    short = {"steps": warm_steps, "step_size": cfg.train.post_step_size}
    out: dict[str, Any] = {}
    if "recon" in keys:
        out["recon"] = recon_mse(model, data.test_x, **chain, progress=True)
    if "fid" in keys:
        prior_chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
        out["fid"] = fid(model, data.train_x, extractor, n=fid_n, progress=True, **prior_chain)
    if "fid_q" in keys:
        start, steps, step_size = own_chain(cfg)
        z = aggregate_posterior(
            model, data.train_x, fid_n, steps, step_size, amortised=start == "amortised"
        )
        out["fid_q"] = fid_at(model, z, data.train_x, extractor)
    if "recon_amortised" in keys:
        out["recon_amortised"] = recon_mse(model, data.test_x, **short, start="amortised")
    if "posterior" in keys:
        subset = data.test_x[:posterior_n]
        out["posterior"] = {
            f"noise-{chain['steps']}": posterior_quality(model, subset, **chain),
            f"noise-{warm_steps}": posterior_quality(model, subset, **short),
        }
        if model.amortiser is not None:
            out["posterior"][f"amortised-{warm_steps}"] = posterior_quality(
                model, subset, **short, start="amortised"
            )
    return out


def time_to_reach(
    points: list[dict[str, Any]], metric: str, target: float, x: str = "minutes"
) -> float | None:
    """``x`` (``minutes`` or ``gflop``) of the first point whose ``metric`` is at most
    ``target`` (``None``: never)."""
    return next((p[x] for p in points if p[metric] <= target), None)


SUMMED = ("minutes", "gflop", "recon", "recon_amortised", "fid", "fid_q")


def over_seeds(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The points of several seeds' runs of one variant, snapshot by snapshot: each value the
    mean over the seeds, with its standard error in ``<key>_se`` (NaN for one seed); the
    posterior quality's ``log_joint`` and ``spread`` are means. One seed: its points as they
    are."""
    if len(runs) == 1:
        return runs[0]
    points = []
    for same in zip(*runs, strict=False):  # the i-th snapshot of every seed
        point: dict[str, Any] = {"iteration": same[0]["iteration"], "seeds": len(same)}
        for key in (k for k in SUMMED if k in same[0]):
            s = summarize([p[key] for p in same])
            point[key], point[f"{key}_se"] = s.mean, s.se
        point["posterior"] = {
            chain: {
                k: summarize([p["posterior"][chain][k] for p in same]).mean
                for k in ("log_joint", "spread")
            }
            for chain in same[0]["posterior"]
        }
        points.append(point)
    return points


X_LABELS = {"minutes": "training wall time (min)", "gflop": "training operations (GFLOP)"}


def _line(ax: Any, points: list[dict[str, Any]], x: str, key: str, fmt: str, label: str) -> None:
    """One curve of ``key`` against ``x``; with error bars (± one standard error) over seeds."""
    xs, ys = [p[x] for p in points], [p[key] for p in points]
    se = [p.get(f"{key}_se", float("nan")) for p in points]
    if all(e == e for e in se):  # not NaN: several seeds
        ax.errorbar(xs, ys, yerr=se, fmt=fmt, capsize=3, label=label)
    else:
        ax.plot(xs, ys, fmt, label=label)


def plot_time_to_quality(
    curves: dict[str, list[dict[str, Any]]], path: str | Path, x: str = "minutes"
) -> Path:
    """Recon MSE and FID against training minutes (``x="gflop"``: operations), one line per
    label of ``curves``; means with ± one standard error bars when the points hold ``_se``.

    ``curves[label]``: points ``{"minutes", "gflop", "recon", "fid", "fid_q"}`` in order.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (metric, title), ax in zip(
        (("recon", "test recon MSE"), ("fid", "FID (classifier features)")), axes, strict=True
    ):
        for label, points in curves.items():
            _line(ax, points, x, metric, "o-", label)
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if metric == "fid":  # the generator at samples of the aggregate posterior
            for label, points in curves.items():
                _line(ax, points, x, "fid_q", "x:", f"{label}, at q")
        if metric == "recon":  # the same runs' chains started at their amortisers
            for label, points in curves.items():
                if "recon_amortised" in points[0]:
                    _line(ax, points, x, "recon_amortised", "s--", f"{label}, amortised at test")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_posterior_quality(
    curves: dict[str, list[dict[str, Any]]], path: str | Path, x: str = "minutes"
) -> Path:
    """Mean ``log p(x, z)`` and spread of the chains' final samples against training minutes
    (``x="gflop"``: operations): one line per run and chain (``curves[label]``: points with
    ``x`` and ``posterior``)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (key, title), ax in zip(
        (("log_joint", "mean log p(x, z) (+ const)"), ("spread", "spread of 4 chains")),
        axes,
        strict=True,
    ):
        for label, points in curves.items():
            for chain in points[0]["posterior"]:
                ys = [p["posterior"][chain][key] for p in points]
                ax.plot([p[x] for p in points], ys, "o-", label=f"{label}: {chain}")
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
