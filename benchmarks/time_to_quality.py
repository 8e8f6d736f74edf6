"""Time to quality on the Fashion-MNIST CPU benchmark (issues 6 and 17): warm-started and
amortised posterior chains against the paper's noise-started ones, at equal wall time, and
bf16 against float32.

The benchmark is the ``adaptive K=4`` model of ``latent-ebm reproduce compare --scale cpu``
(the ``fashion-mnist-cpu`` preset, 2,400 iterations, seed 0). Variants:

- ``noise``: the paper's posterior chain, ``train.post_steps`` (30) steps from ``N(0, I)``;
- ``warm``: each chain starts from the example's memory-bank row (its previous posterior
  sample) and runs ``--warm-steps`` steps (``train.post_init=bank``). It trains for more
  iterations, as many as the ``noise`` run's operations allow
  (:func:`latent_ebm.experiments.iteration_flops`; rounded to a multiple of ``--points``), so
  that both runs take about the same wall time;
- ``bf16``: ``noise`` with ``train.precision=bf16``, the same iterations (the quality check
  of bf16: recon MSE and FID within 5% of ``noise``);
- ``amortised``: each chain starts at a draw of a learned encoder ``q(z | x)`` and runs
  ``--warm-steps`` steps (``train.post_init=amortised``, issue 17); like ``warm`` it trains
  for the iterations that the ``noise`` run's operations pay for.

Each run keeps ``--points`` snapshots; each snapshot is evaluated as ``reproduce`` evaluates a
model (test recon MSE with the run's posterior chain from noise, classifier FID of
``--fid-n`` prior samples), and its x coordinate is the training wall time when it was kept.
A run with an amortiser also gets the recon MSE of chains started at its amortiser
(``--warm-steps`` steps, ``recon_amortised``). ``fid_q`` is the FID of the generator at
``--fid-n`` samples of the aggregate posterior of the training images (the run's own chain):
what a prior that matched the aggregate posterior exactly would give, which separates the
generator and its posterior from the prior's fit. Every snapshot gets the posterior quality of
:func:`latent_ebm.evaluation.posterior_quality` (mean ``log p(x, z)`` of the final samples and
the spread of 4 chains per image, on the first ``--posterior-n`` test images) for the chains
``noise-L`` (the paper's, ``train.post_steps``), ``noise-K`` (``--warm-steps`` from noise) and,
with an amortiser, ``amortised-K``: the last two spend the same generator evaluations.
Runs and evaluations are resumable: rerunning the command skips what is done, and
``--recorded JSON...`` takes the seeds that earlier calls recorded (their
``time_to_quality.json``, same settings) as they are, so seeds measured in several calls, or on
machines whose runs are gone, make one table (``--seed S`` runs seed S alone, for one process
per seed). The runs are
trained first, then evaluated: run the training phase alone on the machine (the x axis is
training wall time); once it prints "training done", other work may share the machine.

    python benchmarks/time_to_quality.py --out runs/ttq

writes ``OUT/time_to_quality.{json,md,png}`` and ``OUT/posterior_quality.png``. The table
also says when (if ever) each variant first reached the ``noise`` run's final recon MSE and
FID, as a fraction of the ``noise`` run's training time.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from latent_ebm.arguments import seed_list
from latent_ebm.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    current_keys,
    num_stages,
    resolve_config,
)
from latent_ebm.data import dataset_info
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation import fid, fid_at, posterior_quality, recon_mse
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.experiments import SCALES, iteration_flops
from latent_ebm.experiments.reproduction import config_difference
from latent_ebm.experiments.stats import CRITERION, beats, summarize
from latent_ebm.priors.base import stage_of
from latent_ebm.refit import aggregate_posterior, own_chain
from latent_ebm.rundir import CHECKPOINT, load_data, load_run, snapshots
from latent_ebm.train import train

VARIANTS = ("noise", "warm", "bf16", "amortised")
EQUAL_TIME = ("warm", "amortised")  # variants that train as many iterations as noise's operations


def variant_overrides(variant: str, warm_steps: int) -> list[str]:
    """The ``--set`` overrides of a variant on the benchmark's configuration."""
    return {
        "noise": [],
        "warm": ["train.post_init=bank", f"train.warm_steps={warm_steps}"],
        "bf16": ["train.precision=bf16"],
        "amortised": ["train.post_init=amortised", f"train.warm_steps={warm_steps}"],
    }[variant]


def equal_time_iters(base: Any, warm: Any, shape: tuple[int, int, int]) -> int:
    """Iterations of ``warm`` with the operations of ``base``'s ``train.iters`` iterations."""
    stages = range(max(num_stages(base), 1))
    per_base = sum(iteration_flops(base, shape, s) for s in stages)
    per_warm = sum(iteration_flops(warm, shape, s) for s in stages)
    return round(base.train.iters * per_base / per_warm)


def configs(
    dataset: str,
    overrides: list[str],
    warm_steps: int,
    variants: list[str],
    points: int,
    scale: str = "cpu",
) -> dict[str, Any]:
    """Each variant's configuration: a scale of ``reproduce`` (``cpu``: the fashion-mnist-cpu
    preset; ``digits``: the digits preset) plus ``overrides``."""
    s = SCALES[scale]
    sets = [*s["set"], f"data.name={dataset}", "prior.kind=adaptive", "prior.stages=4"]
    preset = s["preset"].format(dataset=dataset) if s["preset"] else None
    base = resolve_config(preset, None, sets + overrides)
    shape, _ = dataset_info(base.data.name, base.data.size, base.data.holdout)
    out = {}
    for v in variants:
        cfg = apply_overrides(copy.deepcopy(base), variant_overrides(v, warm_steps))
        if v in EQUAL_TIME:  # a multiple of `points`, for evenly spaced snapshots
            cfg.train.iters = points * max(1, round(equal_time_iters(base, cfg, shape) / points))
        cfg.train.keep_every = max(1, cfg.train.iters // points)
        out[v] = cfg
    return out


def seed_dir(out: Path, variant: str, seed: int) -> Path:
    """``OUT/<variant>`` for seed 0 (the one-seed layout), ``OUT/<variant>-seed<s>`` else."""
    return out / (variant if seed == 0 else f"{variant}-seed{seed}")


def gflop_at(cfg: Any, shape: tuple[int, int, int]) -> dict[int, float]:
    """Cumulative training operations (GFLOP, :func:`iteration_flops`) after each kept
    snapshot's iteration of ``cfg``: the x axis of ``--x operations``."""
    stages = max(num_stages(cfg), 1)
    per = [iteration_flops(cfg, shape, s) / 1e9 for s in range(stages)]
    iters, keep = cfg.train.iters, cfg.train.keep_every
    total, out = 0.0, {}
    for i in range(iters):
        total += per[min(stage_of(i, iters, num_stages(cfg)), stages - 1)]
        if (i + 1) % keep == 0 or i + 1 == iters:
            out[i + 1] = total
    return out


def _recorded_runs(path: Path) -> list[tuple[str, int, Any, list[dict[str, Any]]]]:
    """``(variant, seed, config, points)`` of every run in an earlier call's
    ``time_to_quality.json`` (the config of its first seed, as recorded).

    Raises:
        SystemExit: the file is missing, unreadable or not of that shape.
    """
    try:
        results = json.loads(path.read_text())
        return [
            (v, int(seed), config_from_dict(current_keys(r["config"])), list(points))
            for v, r in results.items()
            for seed, points in r["runs"].items()
        ]
    except (OSError, ValueError, TypeError, KeyError, AttributeError, LatentEBMError) as e:
        raise SystemExit(
            f"error: --recorded {path}: cannot read it as a time_to_quality.json "
            f"({type(e).__name__}: {e})"
        ) from None


def recorded_points(
    files: list[Path], per_seed: dict[int, dict[str, Any]]
) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The evaluated points of (variant, seed) runs that earlier calls recorded in their
    ``time_to_quality.json`` ``files`` (their ``runs``), for the seeds and variants of
    ``per_seed``: a seed recorded this way is neither trained nor evaluated again, so seeds
    measured on a machine whose runs are gone still count.

    Raises:
        SystemExit: a file is missing, unreadable or holds none of this call's runs, or a
            recorded variant's configuration differs from this call's (the seed aside; as
            ``reproduce`` compares a run's config, :func:`config_difference`).
    """
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for path in files:
        before = len(out)
        for v, seed, cfg, points in _recorded_runs(path):
            if seed not in per_seed or v not in per_seed[seed]:
                continue
            cfg.train.seed = seed
            if diff := config_difference(cfg, per_seed[seed][v]):
                raise SystemExit(
                    f"error: --recorded {path}: {v} was measured with other settings ({diff}); "
                    "give this call the recorded call's --set and flags"
                )
            out[(v, seed)] = points
        if len(out) == before:
            raise SystemExit(
                f"error: --recorded {path}: it holds none of this call's seeds and variants"
            )
    return out


def _trained(cfg: Any, run_dir: Path) -> None:
    """Train the run, resume it, or leave it if it is complete."""
    if (run_dir / CHECKPOINT).exists():
        if load_run(run_dir)[2]["iteration"] < cfg.train.iters:
            train(None, run_dir, resume=True)
    else:
        train(cfg, run_dir)


def _evaluated(
    run_dir: Path,
    fid_n: int,
    extractor: Any,
    data: Any,
    warm_steps: int,
    posterior_n: int,
) -> list[dict[str, Any]]:
    """Recon MSE, FID, FID at the aggregate posterior and posterior quality of every snapshot
    of a run (cached in ``RUN/time_to_quality.json``; a cached point gets what it lacks)."""
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
                _measure(
                    model, cfg, keys - point.keys(), fid_n, extractor, data, warm_steps, posterior_n
                )
            )
            path.write_text(json.dumps(sorted(done.values(), key=lambda p: p["iteration"])))
        points.append(point)
    return points


def _measure(
    model: Any,
    cfg: Any,
    keys: set[str],
    fid_n: int,
    extractor: Any,
    data: Any,
    warm_steps: int,
    posterior_n: int,
) -> dict[str, Any]:
    """The measurements ``keys`` of one snapshot (see :func:`_evaluated` and the module
    docstring); ``fid_q`` is the FID of ``g(z)`` at ``fid_n`` samples of the aggregate
    posterior over the training images, drawn by the run's own chain (from noise, or from its
    amortiser): the FID a prior that matched the aggregate posterior exactly would give."""
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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


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
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _cell(point: dict[str, Any], key: str, digits: int) -> str:
    """``mean ± se`` of a point over seeds (the value alone for one seed); ``-`` if absent."""
    if key not in point:
        return "-"
    se = point.get(f"{key}_se", float("nan"))
    return f"{point[key]:.{digits}f}" + (f" ± {se:.{digits}f}" if se == se else "")


def _reached(
    runs: list[list[dict[str, Any]]], ref: list[list[dict[str, Any]]], metric: str, key: str, x: str
) -> list[float | None]:
    """Per seed: the fraction of the noise run's ``x`` at which a run first reached that noise
    run's final ``metric`` (``key``: the run's own measurement of it); ``None``: never."""
    out = []
    for run, noise in zip(runs, ref, strict=True):
        t = time_to_reach(run, key, noise[-1][metric], x)
        out.append(None if t is None else t / noise[-1][x])
    return out


def report_lines(
    runs: dict[str, list[list[dict[str, Any]]]],
    labels: dict[str, str],
    x: str = "minutes",
    seeds: list[int] | None = None,
) -> list[str]:
    """The Markdown of the results; ``runs[variant]``: the points of each seed's run, in the
    order of ``seeds`` (default 0, 1, ...).

    The final point of each variant (mean ± standard error over seeds); each variant against
    ``noise``: at the end (equal operations by construction: the "better at equal time"
    verdicts, by :data:`~latent_ebm.experiments.stats.CRITERION`), and when each seed's run
    first reached its noise run's final recon MSE and FID, as a fraction of that run's ``x``
    (``minutes`` or ``gflop``); the posterior quality of each variant's chains at the last
    snapshot (means over seeds)."""
    curves = {v: over_seeds(r) for v, r in runs.items()}
    n = len(next(iter(runs.values())))
    seeds = list(range(n)) if seeds is None else seeds
    lines = [
        "| variant | iterations | train time (min) | GFLOP | recon MSE | recon MSE, amortised "
        "start | FID | FID at q |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, c in curves.items():
        last = c[-1]
        lines.append(
            f"| {labels[v]} | {last['iteration']} | {_cell(last, 'minutes', 1)} | "
            f"{_cell(last, 'gflop', 0)} | {_cell(last, 'recon', 4)} | "
            f"{_cell(last, 'recon_amortised', 4)} | {_cell(last, 'fid', 2)} | "
            f"{_cell(last, 'fid_q', 2)} |"
        )
    what = {"minutes": "training time", "gflop": "training operations"}[x]
    if "noise" in curves:
        ref = curves["noise"][-1]
        for v in [v for v in curves if v != "noise"]:
            last = curves[v][-1]
            # A run with an amortiser is judged by its own chain's recon (noise's also shown).
            own = "recon_amortised" if "recon_amortised" in last else "recon"
            lines.append(
                f"\n{v} / noise at the end: recon {last[own] / ref['recon']:.3f}"
                + (f" (noise start: {last['recon'] / ref['recon']:.3f})" if own != "recon" else "")
                + f", FID {last['fid'] / ref['fid']:.3f}, time "
                f"{last['minutes'] / ref['minutes']:.3f}, operations "
                f"{last['gflop'] / ref['gflop']:.3f}"
            )
            for metric, key in (("recon", own), ("fid", "fid")):
                if n > 1:
                    mine = summarize([r[-1][key] for r in runs[v]])
                    theirs = summarize([r[-1][metric] for r in runs["noise"]])
                    lines.append(
                        f"- {v} beats noise on {metric} at the end: **{beats(mine, theirs)}**"
                    )
                fractions = _reached(runs[v], runs["noise"], metric, key, x)
                shown = " / ".join("never" if f is None else f"{f:.2f}" for f in fractions)
                lines.append(
                    f"- {v} first reaches noise's final {metric} at {shown} of noise's {what}"
                    + (f" (seeds {', '.join(map(str, seeds))})" if n > 1 else "")
                    + (" (amortised start at test)" if key == "recon_amortised" else "")
                )
    lines += ["", "| variant | chain | mean log p(x, z) | spread |", "|---|---|---|---|"]
    for v, c in curves.items():
        for chain, q in c[-1]["posterior"].items():
            lines.append(f"| {labels[v]} | {chain} | {q['log_joint']:.1f} | {q['spread']:.4f} |")
    if n > 1:
        lines += ["", f"Cells: mean ± standard error over {n} seeds. {CRITERION}"]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--scale", default="cpu", choices=list(SCALES), help="a scale of reproduce")
    ap.add_argument("--data-dir")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--warm-steps", type=int, default=10)
    ap.add_argument("--points", type=int, default=8, help="snapshots evaluated per run")
    ap.add_argument("--fid-n", type=int, default=5000)
    ap.add_argument("--posterior-n", type=int, default=200, help="test images of the posterior")
    ap.add_argument("--seed", type=int, help="one seed S (default 0)")
    ap.add_argument(
        "--seeds", type=int, nargs="+", metavar="N", help="N: seeds 0..N-1; several: those"
    )
    ap.add_argument(
        "--x",
        choices=list(X_LABELS),
        default="minutes",
        help="x axis and time-to-reach fractions: training wall time (needs the machine alone "
        "while training) or training operations (any machine load)",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--recorded",
        nargs="+",
        type=Path,
        default=[],
        metavar="JSON",
        help="time_to_quality.json files of earlier calls: their seeds' points are used as "
        "recorded, not trained or evaluated again (same settings required)",
    )
    a = ap.parse_args(argv)
    try:
        seeds = seed_list(a.seed, a.seeds)
    except LatentEBMError as e:
        raise SystemExit(f"error: {e}") from None
    overrides = a.set + ([f"data.data_dir={a.data_dir}"] if a.data_dir else [])
    per_seed = {
        seed: configs(
            a.dataset,
            [*overrides, f"train.seed={seed}"],
            a.warm_steps,
            a.variants,
            a.points,
            a.scale,
        )
        for seed in seeds
    }
    cfgs = per_seed[seeds[0]]
    recorded = recorded_points(a.recorded, per_seed)
    a.out.mkdir(parents=True, exist_ok=True)
    data = load_data(next(iter(cfgs.values())))
    extractor = classifier_features(data, progress=True)
    for seed, sc in per_seed.items():  # every run first: only training needs the machine alone
        for v, cfg in sc.items():
            if (v, seed) not in recorded:
                _trained(cfg, seed_dir(a.out, v, seed))
    print("time_to_quality: training done; evaluating the snapshots", file=sys.stderr)
    first = cfgs[a.variants[0]]
    shape, _ = dataset_info(first.data.name, first.data.size, first.data.holdout)
    gflop = {v: gflop_at(cfg, shape) for v, cfg in cfgs.items()}  # the same for every seed
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for v in cfgs:
        for seed in seeds:
            if (v, seed) in recorded:
                points = recorded[(v, seed)]
            else:
                points = _evaluated(
                    seed_dir(a.out, v, seed), a.fid_n, extractor, data, a.warm_steps, a.posterior_n
                )
            for p in points:
                p["gflop"] = gflop[v][p["iteration"]]
            runs.setdefault(v, []).append(points)

    post_steps = cfgs[a.variants[0]].train.post_steps
    labels = {
        "noise": f"noise start, {post_steps} steps (paper)",
        "warm": f"warm start (bank row), {a.warm_steps} steps",
        "bf16": "noise start, bf16",
        "amortised": f"amortised start, {a.warm_steps} steps",
    }
    labelled = {labels[v]: over_seeds(r) for v, r in runs.items()}
    plot_time_to_quality(labelled, a.out / "time_to_quality.png", a.x)
    plot_posterior_quality(labelled, a.out / "posterior_quality.png", a.x)
    command = "python benchmarks/time_to_quality.py " + " ".join(argv or sys.argv[1:])
    lines = [f"Command: `{command}`", "", *report_lines(runs, labels, a.x, seeds)]
    (a.out / "time_to_quality.md").write_text("\n".join(lines) + "\n")
    results = {
        v: {
            "config": config_to_dict(cfgs[v]),
            "seeds": seeds,
            "points": over_seeds(r),
            "runs": {str(seed): points for seed, points in zip(seeds, r, strict=True)},
        }
        for v, r in runs.items()
    }
    (a.out / "time_to_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
