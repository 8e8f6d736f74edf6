"""Time to quality on the Fashion-MNIST CPU benchmark (issues 6 and 17): warm-started and
amortised posterior chains against the paper's noise-started ones, at equal wall time, and
bf16 against float32.

The benchmark is the ``adaptive K=4`` model of ``latent-ebm reproduce compare --scale cpu``
(the ``fashion-mnist-cpu`` preset, 2,400 iterations, seed 0). Variants:

- ``noise``: the paper's posterior chain, ``train.post_steps`` (30) steps from ``N(0, I)``;
- ``warm``: each chain starts from the example's memory-bank row (its previous posterior
  sample) and runs ``--warm-steps`` steps (``train.post_init=bank``). It trains for more
  iterations, as many as the ``noise`` run's operations allow
  (:func:`latent_ebm.experiments.cost.equal_time_iters`; rounded to a multiple of
  ``--points``), so that both runs take about the same wall time;
- ``bf16``: ``noise`` with ``train.precision=bf16``, the same iterations (the quality check
  of bf16: recon MSE and FID within 5% of ``noise``);
- ``amortised``: each chain starts at a draw of a learned encoder ``q(z | x)`` and runs
  ``--warm-steps`` steps (``train.post_init=amortised``, issue 17); like ``warm`` it trains
  for the iterations that the ``noise`` run's operations pay for.

Each run keeps ``--points`` snapshots; each snapshot is evaluated
(:func:`latent_ebm.experiments.curves.evaluate_snapshots`) as ``reproduce`` evaluates a
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

from latent_ebm.arguments import seed_list
from latent_ebm.config import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    current_keys,
    resolve_config,
)
from latent_ebm.data import dataset_info
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.experiments import SCALES
from latent_ebm.experiments.cost import cumulative_gflop, equal_time_iters
from latent_ebm.experiments.curves import (
    X_LABELS,
    evaluate_snapshots,
    over_seeds,
    plot_posterior_quality,
    plot_time_to_quality,
    time_to_reach,
)
from latent_ebm.experiments.reproduction import config_difference
from latent_ebm.experiments.stats import CRITERION, beats, summarize
from latent_ebm.rundir import CHECKPOINT, load_data, load_run
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
    gflop = {v: cumulative_gflop(cfg, shape) for v, cfg in cfgs.items()}  # the same for every seed
    runs: dict[str, list[list[dict[str, Any]]]] = {}
    for v in cfgs:
        for seed in seeds:
            if (v, seed) in recorded:
                points = recorded[(v, seed)]
            else:
                points = evaluate_snapshots(
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
