"""Reproduce the paper's tables: experiments of several runs that differ only in the prior.

    latent-ebm reproduce stages --dataset fashion-mnist --scale cpu --out runs/repro

The experiments, their scales and the table writing are in
:mod:`latent_ebm.experiments.tables`; an experiment's runs and their configs in
:mod:`latent_ebm.experiments.plan`. This module trains and evaluates every run and writes one
table (:func:`reproduce`).

Layout: ``OUT/runs/<model>/`` (``<model>-seed<s>/`` for a seed ``s > 0``: ``--seeds``) is an
ordinary run directory (``latent-ebm eval`` and ``plot`` work on it) with its reports in
``eval/<column>.json``; ``OUT/<experiment>.md`` is the table and
``OUT/<experiment>.json`` the raw numbers. Experiments share their runs: a model that two tables
hold (``adaptive K=4`` is in three) is trained and evaluated once for both, which cuts the ``cpu``
scale on Fashion-MNIST from 24 trained models to 16. Rerunning the command continues where it
stopped: a finished run is not retrained, an interrupted one is resumed exactly
(``train(resume=True)``), and an evaluation whose report already holds the same request (the
``request`` key this module adds to ``eval/<metric>.json``) at the final iteration is reused.
"""

from __future__ import annotations

import json
import shlex
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_ebm.config import Config, config_to_dict, load_config
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation import evaluate_run
from latent_ebm.experiments.columns import (
    choose_sharpening,
    column,
    format_cell,
    sharpen_key,
    shown,
)
from latent_ebm.experiments.figures import plot_stages
from latent_ebm.experiments.plan import PlannedRun, check_choice, experiment_runs
from latent_ebm.experiments.tables import EXPERIMENTS, SCALES, markdown_table
from latent_ebm.rundir import (
    CHECKPOINT,
    CONFIG,
    check_creatable,
    check_not_foreign,
    load_run,
    read_report,
    report_path,
    write_report,
)
from latent_ebm.rundir.layout import check_writable_file, write_text_file
from latent_ebm.sampling import check_sharpen
from latent_ebm.train import train

__all__ = ["Reproduction", "reproduce"]

IGNORED_FIELDS = ("data.data_dir", "train.device")  # may change between reruns of one experiment


@dataclass
class Reproduction:
    """What :func:`reproduce` made: the Markdown table, the raw numbers and their files."""

    markdown: str
    results: dict[str, Any]
    md_path: Path
    json_path: Path
    png_path: Path | None = None  # stages/adaptive: the figure of Table 3 (experiments.figures)


def config_difference(old: Config, new: Config) -> str | None:
    """The first field (not in ``IGNORED_FIELDS``) where two configs differ, in words; else None."""
    a, b = config_to_dict(old), config_to_dict(new)
    for section, fields in b.items():
        for key, value in fields.items():
            name = f"{section}.{key}"
            if name not in IGNORED_FIELDS and a[section][key] != value:
                return f"{name} is {a[section][key]!r} there, {value!r} here"
    return None


def _check_same_config(run: PlannedRun, run_dir: Path) -> None:
    """Refuse a run directory ``run_dir`` whose run was made with another config than
    ``run``'s (nothing there to reuse or resume)."""
    diff = config_difference(load_config(run_dir / CONFIG), run.cfg)
    if diff is not None:
        raise LatentEBMError(
            f"{run_dir} holds a run with another config ({diff}); choose another --out "
            "or delete that run directory"
        )


def _train(
    run: PlannedRun, run_dir: Path, tag: str, progress: bool, echo: Callable[[str], None]
) -> dict:
    """Train, resume or skip the run in ``run_dir``; return its final checkpoint."""
    iters = run.cfg.train.iters
    if (run_dir / CONFIG).exists():
        _check_same_config(run, run_dir)
        state = load_run(run_dir)[2] if (run_dir / CHECKPOINT).exists() else {}
        done = state.get("iteration", 0)
        refit_pending = bool(run.cfg.refit.steps) and state.get("refit") is None
        if done >= iters and not refit_pending:
            echo(f"{tag}: trained earlier ({iters} iterations), not retrained")
        else:
            echo(f"{tag}: resuming at iteration {done} of {iters} ...")
            train(None, run_dir, resume=True, progress=progress)
    else:
        check_not_foreign(
            run_dir, "reproduce will not train into it; choose another --out or empty it"
        )
        echo(f"{tag}: training ({iters} iterations) ...")
        train(run.cfg, run_dir, progress=progress)
    return load_run(run_dir)[2]


def _evaluate(
    run_dir: Path,
    key: str,
    request: dict[str, Any],
    iteration: int,
    tag: str,
    echo: Callable[[str], None],
    progress: bool,
) -> dict[str, Any]:
    """``evaluate_run`` of a column (:func:`~latent_ebm.experiments.columns.column`) unless
    ``eval/<key>.json`` already answers the same request (a damaged one is evaluated again,
    with a warning)."""
    metric = column(key).metric
    path = report_path(run_dir, key)
    if path.exists():
        try:
            old = read_report(path)
        except LatentEBMError as e:
            warnings.warn(f"{e}: evaluating {key} again", stacklevel=2)
            old = {}
        if old.get("request") == request and old.get("iteration") == iteration:
            echo(f"{tag}: {key} = {format_cell(key, old)} (evaluated earlier)")
            return old
    echo(f"{tag}: evaluating {key} ...")
    report = evaluate_run(run_dir, metric, **request, progress=progress, name=key)
    report["request"] = request  # what reproduce asked for, to reuse the report on a rerun
    write_report(run_dir, key, report)
    echo(f"{tag}: {key} = {format_cell(key, report)}")
    return report


def reproduce(
    experiment: str,
    out: str | Path,
    *,
    dataset: str = "fashion-mnist",
    scale: str = "cpu",
    holdout: Sequence[int] | None = None,
    fid_n: int | None = None,
    seeds: Sequence[int] = (0,),
    features: str = "classifier",
    weights: str | Path | None = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    models: Sequence[str] | None = None,
    sharpen: Sequence[float] = (),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Reproduction:
    """Train and evaluate every model of ``experiment`` under ``out``; write its table.

    Arguments:
        experiment: ``stages``, ``adaptive``, ``compare`` or ``anomaly`` (:data:`EXPERIMENTS`).
        out: output folder: runs in ``out/runs/<model>/``, the table in
            ``out/<experiment>.md``, the raw numbers in ``out/<experiment>.json``.
        dataset: data set name (:data:`latent_ebm.data.DATASETS`).
        scale: ``paper``, ``cpu`` or ``tiny`` (:data:`SCALES`).
        holdout: ``anomaly``: the held-out classes (default: the scale's).
        fid_n: generated images of the FID (default: the scale's).
        seeds: every model is trained once per seed (``train.seed``, also the evaluation
            seed); the table gives the mean and standard error over them.
        features: FID features, ``classifier`` (offline) or ``inception`` (needs ``weights``).
        weights: the FID Inception weights file.
        data_dir: folder of the data files.
        overrides: ``section.field=value`` settings for every model (:func:`experiment_runs`).
        models: only these models, by run name (default all); the table's claims that need a
            model left out are not tested.
        sharpen: FID also at these sharpening factors of every prior's learned log-density
            (beyond the paper; ``eval/fid-sharpen<beta>.json``), and, with several seeds, the
            column ``fid-sharpened``: each seed's FID at the ``beta`` chosen on the model's
            other seeds (:mod:`latent_ebm.experiments.columns`), with the claims on it.
        progress: tqdm bars while training and evaluating.
        echo: where the one-line progress messages go.

    Returns:
        The table (Markdown), the raw numbers and the paths of both files.

    Raises:
        LatentEBMError: a bad argument or ``out`` (checked before any training or output), a
            run of another config in ``out``, a failed write (the files are written
            atomically: a full disk leaves no partial table).
    """
    seeds = list(dict.fromkeys(seeds))
    if not seeds:
        raise LatentEBMError("--seeds needs at least one seed")
    where = {"holdout": holdout, "data_dir": data_dir, "overrides": overrides, "models": models}
    runs = [r for s in seeds for r in experiment_runs(experiment, dataset, scale, seed=s, **where)]
    exp, sc = EXPERIMENTS[experiment], SCALES[scale]
    base: dict[str, dict[str, Any]] = {"recon": {}, "anomaly": {"last": sc["last"]}}
    if "fid" in exp.metrics:
        fid_n = sc["fid_n"] if fid_n is None else fid_n
        if fid_n < 2:
            raise LatentEBMError(f"--fid-n must be at least 2, got {fid_n}")
        check_choice("--features", features, ("classifier", "inception"))
        if features == "inception" and (weights is None or not Path(weights).is_file()):
            raise LatentEBMError("--features inception needs --weights PATH, an existing file")
        w = None if weights is None else str(weights)
        base["fid"] = {"n": fid_n, "features": features, "weights": w}
    elif fid_n is not None or weights is not None:
        raise LatentEBMError(f"--fid-n and --weights do not apply to '{experiment}' (no FID)")
    betas = _sharpen_factors(sharpen, "fid" in exp.metrics)
    out = Path(out)
    _check_out(out, experiment)
    command = _command(
        experiment, out, dataset, scale, seeds, runs, base.get("fid"), data_dir, overrides, models
    )
    if betas:
        command += " --sharpen " + " ".join(f"{b:g}" for b in betas)

    for run in runs:  # a conflicting earlier run stops the call before any output
        if (out / "runs" / run.name / CONFIG).exists():
            _check_same_config(run, out / "runs" / run.name)
    cfg = runs[0].cfg
    echo(
        f"{experiment}: {len(runs)} models of {cfg.train.iters} iterations on {dataset} "
        f"({scale} scale, seeds {', '.join(map(str, seeds))}) -> {out / 'runs'}"
    )
    rows = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.spec.label}"
        if len(seeds) > 1:
            tag += f", seed {run.cfg.train.seed}"
        if run.holdout is not None:
            tag += f", held-out class {run.holdout}"
        run_dir = out / "runs" / run.name
        state = _train(run, run_dir, tag, progress, echo)
        reports = {}
        for key in [*exp.columns, *map(sharpen_key, betas)]:
            col = column(key)
            request = {**base[col.metric], **dict(col.request), "seed": run.cfg.train.seed}
            reports[key] = _evaluate(run_dir, key, request, state["iteration"], tag, echo, progress)
        rows.append(
            {
                "name": run.name,
                "label": run.spec.label,
                "kind": run.spec.kind,
                "stages": run.spec.stages,
                "holdout": run.holdout,
                "seed": run.cfg.train.seed,
                "run": str(run_dir),
                "iterations": state["iteration"],
                "train_time_s": round(state["elapsed"], 1),
                "overrides": run.spec.overrides,
                "note": run.spec.note,
                "reports": reports,
            }
        )

    results = {
        "experiment": experiment,
        "title": exp.title,
        "dataset": dataset,
        "scale": scale,
        "seeds": seeds,
        "command": command,
        "overrides": list(overrides),
        "fid": base.get("fid"),
        "sharpen": betas,
        "base_config": config_to_dict(cfg),
        "models": rows,
    }
    choose_sharpening(rows, betas)
    markdown = markdown_table(results, exp)
    out.mkdir(parents=True, exist_ok=True)
    md_path = write_text_file(out / f"{experiment}.md", markdown)
    json_path = write_text_file(out / f"{experiment}.json", json.dumps(results, indent=2) + "\n")
    png = None
    if experiment in ("stages", "adaptive"):  # FID and recon against the number of stages
        png = plot_stages(results, shown(exp.columns, rows), out / f"{experiment}.png")
    return Reproduction(markdown, results, md_path, json_path, png)


def _check_out(out: Path, experiment: str) -> None:
    """``--out`` can hold the runs and the tables: checked before any training or output, so
    that a bad ``--out`` fails in one line at once rather than after hours of training.

    Raises:
        LatentEBMError: ``out`` or a parent is a file, it cannot be written, or one of the
            table's files (``<experiment>.md``, ``.json``, ``.png``) or ``runs`` is a folder
            where a file belongs, or a file where a folder belongs.
    """
    check_creatable(out, "--out")
    check_creatable(out / "runs", "--out")
    for suffix in (".md", ".json", ".png"):
        check_writable_file(out / f"{experiment}{suffix}", "--out")


def _sharpen_factors(sharpen: Sequence[float], has_fid: bool) -> list[float]:
    """The ``--sharpen`` factors, checked, sorted, without repeats or 1 (the ``fid`` column).

    Raises:
        LatentEBMError: a factor that is not a positive number, or an experiment without FID.
    """
    if not sharpen:
        return []
    if not has_fid:
        raise LatentEBMError("--sharpen applies to the experiments with FID, not to 'anomaly'")
    for beta in sharpen:
        check_sharpen(beta)
    return sorted({float(b) for b in sharpen} - {1.0})


def _command(
    experiment: str,
    out: str | Path,
    dataset: str,
    scale: str,
    seeds: list[int],
    runs: list[PlannedRun],
    fid: dict[str, Any] | None,
    data_dir: str | Path | None,
    overrides: Sequence[str] = (),
    models: Sequence[str] | None = None,
) -> str:
    """The full command line (every default spelled out) that reproduces the table."""
    args = ["latent-ebm", "reproduce", experiment, "--dataset", dataset, "--scale", scale]
    args += ["--out", str(out)]
    if len(seeds) == 1:
        args += ["--seed", str(seeds[0])]
    elif seeds == list(range(len(seeds))):
        args += ["--seeds", str(len(seeds))]
    else:  # several values are the seeds themselves (one value N means 0..N-1)
        args += ["--seeds", *map(str, seeds)]
    classes = list(dict.fromkeys(r.holdout for r in runs if r.holdout is not None))
    if classes:
        args += ["--holdout", *map(str, classes)]
    if fid is not None:
        args += ["--fid-n", str(fid["n"]), "--features", fid["features"]]
        args += ["--weights", fid["weights"]] if fid["weights"] else []
    args += ["--data-dir", str(data_dir)] if data_dir is not None else []
    for o in overrides:
        args += ["--set", o]
    if models is not None:
        args += ["--models", *dict.fromkeys(r.spec.name for r in runs)]
    return shlex.join(args)
