"""Reproduce the paper's tables: experiments of several runs that differ only in the prior.

    latent-ebm reproduce stages --dataset fashion-mnist --scale cpu --out runs/repro

An experiment (:data:`EXPERIMENTS`) trains a list of models on one base configuration, the
*scale* (:data:`SCALES`), that fixes the generator, data, iterations, batch and seed; each
model overrides only ``prior.*`` (and ``lebm`` its posterior chain, ``train.post_steps=20``,
as in LEBM, DESIGN §4). Then every model is evaluated and one table is written.

- ``stages`` (Table 3, first part): the adaptive prior with 0 (``gaussian``), 1 (``nce``, the
  adaptive prior with one stage, DESIGN §4), 2, 4, 8 stages; test reconstruction MSE and FID.
- ``adaptive`` (Table 3, second part): ``adaptive`` (``nce`` at one stage) vs non-adaptive
  ``tre`` at 1, 2, 4, 8 stages.
- ``compare`` (Table 1): ``gaussian``, ``nce``, ``adaptive`` K=4, ``tre`` K=4, ``lebm``.
- ``anomaly`` (Table 2): ``adaptive`` K=4 and ``lebm`` trained once per held-out class
  (``data.holdout``); AUPRC mean and std over the last snapshots (DESIGN §7).

Layout: ``OUT/runs/<model>/`` is an ordinary run directory (``latent-ebm eval`` and ``plot``
work on it) with its reports in ``eval/<metric>.json``; ``OUT/<experiment>.md`` is the table and
``OUT/<experiment>.json`` the raw numbers. Experiments share their runs: a model that two tables
hold (``adaptive K=4`` is in three) is trained and evaluated once for both, which cuts the ``cpu``
scale on Fashion-MNIST from 24 trained models to 16. Rerunning the command continues where it
stopped: a finished run is not retrained, an interrupted one is resumed exactly
(``train(resume=True)``), and an evaluation whose report already holds the same request (the
``request`` key this module adds to ``eval/<metric>.json``) at the final iteration is reused.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_ebm.config import (
    Config,
    apply_overrides,
    config_to_dict,
    load_config,
    resolve_config,
    validate,
)
from latent_ebm.data import DATASETS, load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluate import evaluate_run
from latent_ebm.train import CHECKPOINT, CONFIG, load_run, train

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Experiment",
    "ModelSpec",
    "PlannedRun",
    "Reproduction",
    "experiment_runs",
    "reproduce",
]

# Each scale is a base configuration: a preset ("{dataset}": the data set's own), then
# overrides; `data.name` and `train.seed` come from the command. `fid_n`: generated images of
# the FID; `holdout`: default held-out classes of `anomaly` (None: every class); `last`: the
# snapshots whose AUPRC is averaged.
SCALES: dict[str, dict[str, Any]] = {
    # The paper's settings (A.3): 100 epochs of batch 100, a new stage every 25 epochs at K=4.
    "paper": {"preset": "{dataset}", "set": (), "fid_n": 50_000, "holdout": None, "last": 10},
    # 2 CPU cores: the fashion-mnist-cpu preset's networks and learning rates (0.39 s an
    # iteration) cut to 4 epochs, ~16 min of training a model. K=8 stages last 300 iterations,
    # half an epoch: training warns (DESIGN §3).
    "cpu": {
        "preset": "fashion-mnist-cpu",
        "set": ("train.iters=2400",),
        "fid_n": 10_000,
        "holdout": (0, 1, 2),
        "last": 10,
    },
    # A smoke test: tiny networks, a few iterations, short chains (seconds a model on digits).
    "tiny": {
        "preset": None,
        "set": (
            "model.nz=4",
            "model.ngf=4",
            "model.ratio_hidden=16",
            "prior.prior_steps=5",
            "train.iters=16",
            "train.batch_size=50",
            "train.post_steps=4",
            "train.log_every=4",
            "train.ckpt_every=8",
            "sample.steps=5",
            "sample.grid=16",
        ),
        "fid_n": 500,
        "holdout": (0, 1, 2),
        "last": 3,
    },
}


@dataclass(frozen=True)
class ModelSpec:
    """One row of a table: a prior variant on the shared configuration.

    Attributes:
        label: the row label, e.g. ``adaptive K=4``; the run directory is ``adaptive-K4``
            (with ``-holdout<C>`` appended in ``anomaly``).
        kind: ``prior.kind``.
        stages: ``prior.stages`` (``None``: the variant has no stages, the shared value stays).
        extra: the variant's own overrides outside ``prior.*``.
        note: why ``extra`` (or ``run``) is there, for the table's notes.
        run: the run directory when the row is another row's model (default: from the label).
    """

    label: str
    kind: str
    stages: int | None = None
    extra: tuple[str, ...] = ()
    note: str | None = None
    run: str | None = None

    @property
    def name(self) -> str:
        return self.run or self.label.replace(" K=", "-K")

    @property
    def overrides(self) -> list[str]:
        stages = [] if self.stages is None else [f"prior.stages={self.stages}"]
        return [f"prior.kind={self.kind}", *stages, *self.extra]


GAUSSIAN = ModelSpec("gaussian", "gaussian", 0)
NCE = ModelSpec("nce", "nce", 1)


def _adaptive(k: int) -> ModelSpec:
    """The adaptive prior with ``k`` stages; at ``k = 1`` that is the ``nce`` run."""
    return NCE if k == 1 else ModelSpec(f"adaptive K={k}", "adaptive", k)


def _tre(k: int) -> ModelSpec:
    """Non-adaptive TRE with ``k`` ratios; at ``k = 1`` that too is the ``nce`` run."""
    return TRE_1 if k == 1 else ModelSpec(f"tre K={k}", "tre", k)


# With one ratio, TRE's waymarks are the prior draws and the posterior samples themselves and
# its posterior chains run under N(0, I), as stage 0 of the adaptive prior does: the two train
# to the same parameters, bit for bit (tests/test_reproduce.py), so the row reuses `nce`.
TRE_1 = ModelSpec(
    "tre K=1",
    "nce",
    1,
    run="nce",
    note="`tre K=1` is the `nce` run: with one ratio TRE and the adaptive prior are the same "
    "model and train to the same parameters",
)

LEBM = ModelSpec(
    "lebm",
    "lebm",
    extra=("train.post_steps=20",),
    note="`lebm` trains with `train.post_steps=20`, the posterior chain of LEBM (DESIGN §4)",
)


@dataclass(frozen=True)
class Experiment:
    """A table of the paper: its models and metrics; ``per_class``: one run per held-out class."""

    title: str
    models: tuple[ModelSpec, ...]
    metrics: tuple[str, ...]
    per_class: bool = False


EXPERIMENTS: dict[str, Experiment] = {
    "stages": Experiment(
        "Table 3, first part: number of stages of the adaptive prior (0: Gaussian prior)",
        (GAUSSIAN, *(_adaptive(k) for k in (1, 2, 4, 8))),
        ("recon", "fid"),
    ),
    "adaptive": Experiment(
        "Table 3, second part: adaptive vs non-adaptive (TRE) multi-stage estimation",
        tuple(f(k) for f in (_adaptive, _tre) for k in (1, 2, 4, 8)),
        ("recon", "fid"),
    ),
    "compare": Experiment(
        "Table 1: every prior on the same generator",
        (GAUSSIAN, NCE, _adaptive(4), _tre(4), LEBM),
        ("recon", "fid"),
    ),
    "anomaly": Experiment(
        "Table 2: anomaly detection, AUPRC with the held-out class as anomalous",
        (_adaptive(4), LEBM),
        ("anomaly",),
        per_class=True,
    ),
}

_HEADINGS = {"recon": "recon MSE (↓)", "fid": "FID (↓)"}
_DIGITS = {"recon": 4, "fid": 2, "anomaly": 3}  # decimals of a table cell
_IGNORED = ("data.data_dir", "train.device")  # may change between reruns of one experiment


@dataclass(frozen=True)
class PlannedRun:
    """One model of an experiment: its spec, held-out class and full configuration."""

    spec: ModelSpec
    holdout: int | None
    cfg: Config

    @property
    def name(self) -> str:
        return self.spec.name if self.holdout is None else f"{self.spec.name}-holdout{self.holdout}"


@dataclass
class Reproduction:
    """What :func:`reproduce` made: the Markdown table, the raw numbers and their files."""

    markdown: str
    results: dict[str, Any]
    md_path: Path
    json_path: Path


def _choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise LatentEBMError(f"unknown {what} '{value}' (choose from {', '.join(choices)})")


def _base_config(dataset: str, scale: str, seed: int, data_dir: str | Path | None) -> Config:
    s = SCALES[scale]
    preset = s["preset"].format(dataset=dataset) if s["preset"] else None
    cfg = resolve_config(preset, None, [*s["set"], f"data.name={dataset}", f"train.seed={seed}"])
    cfg.data.data_dir = None if data_dir is None else str(data_dir)
    return cfg


def _holdouts(
    dataset: str, scale: str, holdout: Sequence[int] | None, data_dir: str | Path | None
) -> list[int]:
    """The held-out classes, checked against the data set's labels (loads the data set)."""
    data = load_dataset(dataset, data_dir)
    labels = sorted(set(data.train_y.tolist()) | set(data.test_y.tolist()))
    wanted = holdout if holdout is not None else SCALES[scale]["holdout"]
    wanted = list(dict.fromkeys(labels if wanted is None else wanted))  # unique, in order
    if not wanted:
        raise LatentEBMError("--holdout needs at least one class")
    bad = [c for c in wanted if c not in labels]
    if bad:
        raise LatentEBMError(
            f"--holdout {bad[0]} is not a label of {dataset} (labels {labels[0]}..{labels[-1]})"
        )
    return wanted


def experiment_runs(
    experiment: str,
    dataset: str = "fashion-mnist",
    scale: str = "cpu",
    *,
    seed: int = 0,
    holdout: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> list[PlannedRun]:
    """The models of ``experiment`` at ``scale``: their validated configs, in table order.

    Every config is the scale's base config, then ``overrides`` (``section.field=value``, the
    same for every model, e.g. ``prior.prior_samples=langevin``), then only the model's own
    overrides (``prior.kind``/``prior.stages``, and ``lebm``'s ``train.post_steps``);
    ``anomaly`` adds ``data.holdout`` and keeps 20 snapshots per run, as ``latent-ebm train
    --holdout`` does.

    Raises:
        LatentEBMError: unknown experiment, scale or data set; ``holdout`` outside the labels
            or given to an experiment without classes; an override of a field that the
            experiment sets per model; a config that does not validate.
    """
    _choice("experiment", experiment, tuple(EXPERIMENTS))
    _choice("scale", scale, tuple(SCALES))
    _choice("data set", dataset, DATASETS)
    if seed < 0:
        raise LatentEBMError(f"--seed must be >= 0, got {seed}")
    exp = EXPERIMENTS[experiment]
    if holdout is not None and not exp.per_class:
        raise LatentEBMError(f"--holdout applies to the anomaly experiment, not '{experiment}'")
    per_model = {"data.holdout", "train.seed"} | {
        o.split("=")[0] for spec in exp.models for o in spec.overrides
    }
    for o in overrides:
        if o.split("=")[0].strip() in per_model:
            raise LatentEBMError(
                f"--set {o}: '{experiment}' sets {o.split('=')[0].strip()} itself (per model, "
                "or by --holdout / --seed); override other fields"
            )
    base = apply_overrides(_base_config(dataset, scale, seed, data_dir), list(overrides))
    classes: list[int | None] = [None]
    if exp.per_class:
        classes = list(_holdouts(dataset, scale, holdout, data_dir))
        base.train.keep_every = max(1, base.train.iters // 20)
    runs = []
    for spec in exp.models:
        for c in classes:
            held = [] if c is None else [f"data.holdout={c}"]
            cfg = apply_overrides(copy.deepcopy(base), spec.overrides + held)
            runs.append(PlannedRun(spec, c, validate(cfg)))
    return runs


def _config_difference(old: Config, new: Config) -> str | None:
    """The first field (not in ``_IGNORED``) where two configs differ, in words; else None."""
    a, b = config_to_dict(old), config_to_dict(new)
    for section, fields in b.items():
        for key, value in fields.items():
            name = f"{section}.{key}"
            if name not in _IGNORED and a[section][key] != value:
                return f"{name} is {a[section][key]!r} there, {value!r} here"
    return None


def _train(
    run: PlannedRun, run_dir: Path, tag: str, progress: bool, echo: Callable[[str], None]
) -> dict:
    """Train, resume or skip the run in ``run_dir``; return its final checkpoint."""
    iters = run.cfg.train.iters
    if (run_dir / CONFIG).exists():
        diff = _config_difference(load_config(run_dir / CONFIG), run.cfg)
        if diff is not None:
            raise LatentEBMError(
                f"{run_dir} holds a run with another config ({diff}); choose another --out "
                "or delete that run directory"
            )
        done = load_run(run_dir)[2]["iteration"] if (run_dir / CHECKPOINT).exists() else 0
        if done >= iters:
            echo(f"{tag}: trained earlier ({iters} iterations), not retrained")
        else:
            echo(f"{tag}: resuming at iteration {done} of {iters} ...")
            train(None, run_dir, resume=True, progress=progress)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise LatentEBMError(
            f"{run_dir} is not empty and holds no {CONFIG}; choose another --out or empty it"
        )
    else:
        echo(f"{tag}: training ({iters} iterations) ...")
        train(run.cfg, run_dir, progress=progress)
    return load_run(run_dir)[2]


def _evaluate(
    run_dir: Path,
    metric: str,
    request: dict[str, Any],
    iteration: int,
    tag: str,
    echo: Callable[[str], None],
    progress: bool,
) -> dict[str, Any]:
    """``evaluate_run`` unless ``eval/<metric>.json`` already answers the same request."""
    path = run_dir / "eval" / f"{metric}.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("request") == request and old.get("iteration") == iteration:
            echo(f"{tag}: {metric} = {_cell(metric, old)} (evaluated earlier)")
            return old
    echo(f"{tag}: evaluating {metric} ...")
    report = evaluate_run(run_dir, metric, **request, progress=progress)
    report["request"] = request  # what reproduce asked for, to reuse the report on a rerun
    path.write_text(json.dumps(report, indent=2) + "\n")
    echo(f"{tag}: {metric} = {_cell(metric, report)}")
    return report


def reproduce(
    experiment: str,
    out: str | Path,
    *,
    dataset: str = "fashion-mnist",
    scale: str = "cpu",
    holdout: Sequence[int] | None = None,
    fid_n: int | None = None,
    seed: int = 0,
    features: str = "classifier",
    weights: str | Path | None = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> Reproduction:
    """Train and evaluate every model of ``experiment`` under ``out``; write its table.

    Arguments:
        experiment: ``stages``, ``adaptive``, ``compare`` or ``anomaly`` (:data:`EXPERIMENTS`).
        out: output folder: runs in ``out/<experiment>/<model>/``, the table in
            ``out/<experiment>.md``, the raw numbers in ``out/<experiment>.json``.
        dataset: data set name (:data:`latent_ebm.data.DATASETS`).
        scale: ``paper``, ``cpu`` or ``tiny`` (:data:`SCALES`).
        holdout: ``anomaly``: the held-out classes (default: the scale's).
        fid_n: generated images of the FID (default: the scale's).
        seed: training seed of every model (``train.seed``) and evaluation seed.
        features: FID features, ``classifier`` (offline) or ``inception`` (needs ``weights``).
        weights: the FID Inception weights file.
        data_dir: folder of the data files.
        overrides: ``section.field=value`` settings for every model (:func:`experiment_runs`).
        progress: tqdm bars while training and evaluating.
        echo: where the one-line progress messages go.

    Returns:
        The table (Markdown), the raw numbers and the paths of both files.
    """
    runs = experiment_runs(
        experiment,
        dataset,
        scale,
        seed=seed,
        holdout=holdout,
        data_dir=data_dir,
        overrides=overrides,
    )
    exp, sc = EXPERIMENTS[experiment], SCALES[scale]
    requests: dict[str, dict[str, Any]] = {
        "recon": {"seed": seed},
        "anomaly": {"seed": seed, "last": sc["last"]},
    }
    if "fid" in exp.metrics:
        fid_n = sc["fid_n"] if fid_n is None else fid_n
        if fid_n < 2:
            raise LatentEBMError(f"--fid-n must be at least 2, got {fid_n}")
        _choice("--features", features, ("classifier", "inception"))
        if features == "inception" and (weights is None or not Path(weights).is_file()):
            raise LatentEBMError("--features inception needs --weights PATH, an existing file")
        w = None if weights is None else str(weights)
        requests["fid"] = {"seed": seed, "n": fid_n, "features": features, "weights": w}
    elif fid_n is not None or weights is not None:
        raise LatentEBMError(f"--fid-n and --weights do not apply to '{experiment}' (no FID)")
    command = _command(
        experiment, out, dataset, scale, seed, runs, requests.get("fid"), data_dir, overrides
    )

    out = Path(out)
    cfg = runs[0].cfg
    echo(
        f"{experiment}: {len(runs)} models of {cfg.train.iters} iterations on {dataset} "
        f"({scale} scale, seed {seed}) -> {out / 'runs'}"
    )
    rows = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.spec.label}"
        if run.holdout is not None:
            tag += f", held-out class {run.holdout}"
        run_dir = out / "runs" / run.name
        state = _train(run, run_dir, tag, progress, echo)
        reports = {
            m: _evaluate(run_dir, m, requests[m], state["iteration"], tag, echo, progress)
            for m in exp.metrics
        }
        rows.append(
            {
                "name": run.name,
                "label": run.spec.label,
                "kind": run.spec.kind,
                "stages": run.spec.stages,
                "holdout": run.holdout,
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
        "seed": seed,
        "command": command,
        "overrides": list(overrides),
        "fid": requests.get("fid"),
        "base_config": config_to_dict(cfg),
        "models": rows,
    }
    markdown = _markdown(results, exp)
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / f"{experiment}.md", out / f"{experiment}.json"
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    return Reproduction(markdown, results, md_path, json_path)


def _command(
    experiment: str,
    out: str | Path,
    dataset: str,
    scale: str,
    seed: int,
    runs: list[PlannedRun],
    fid: dict[str, Any] | None,
    data_dir: str | Path | None,
    overrides: Sequence[str] = (),
) -> str:
    """The full command line (every default spelled out) that reproduces the table."""
    args = ["latent-ebm", "reproduce", experiment, "--dataset", dataset, "--scale", scale]
    args += ["--out", str(out), "--seed", str(seed)]
    classes = list(dict.fromkeys(r.holdout for r in runs if r.holdout is not None))
    if classes:
        args += ["--holdout", *map(str, classes)]
    if fid is not None:
        args += ["--fid-n", str(fid["n"]), "--features", fid["features"]]
        args += ["--weights", fid["weights"]] if fid["weights"] else []
    args += ["--data-dir", str(data_dir)] if data_dir is not None else []
    for o in overrides:
        args += ["--set", o]
    return shlex.join(args)


def _cell(metric: str, report: dict[str, Any]) -> str:
    """A report's value (``value ± std`` when it has a spread) at the metric's precision."""
    d = _DIGITS[metric]
    spread = f" ± {report['std']:.{d}f}" if "std" in report else ""
    return f"{report['value']:.{d}f}{spread}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _markdown(results: dict[str, Any], exp: Experiment) -> str:
    """The table shaped like the paper's: rows = models, columns = metrics (or classes)."""
    cfg, rows = results["base_config"], results["models"]
    t, m = cfg["train"], cfg["model"]
    lines = [
        f"## {results['title']}",
        "",
        f"Data set `{results['dataset']}`, scale `{results['scale']}`: {t['iters']:,} "
        f"iterations of batch {t['batch_size']}, seed {results['seed']}; generator nz "
        f"{m['nz']} / ngf {m['ngf']}; posterior chain {t['post_steps']} steps of "
        f"{t['post_step_size']}." + "".join(f" Every model: `{o}`." for o in results["overrides"]),
    ]
    fid = results["fid"]
    if fid is not None:
        feats = rows[0]["reports"]["fid"]["features"]
        extra = (
            f", its test accuracy {feats['test_accuracy']:.1%}" if "test_accuracy" in feats else ""
        )
        lines.append(
            f"FID: {fid['features']} features{extra}, {fid['n']:,} generated images (prior "
            "Langevin chain) against the training split. Recon MSE: per pixel in [-1, 1] on "
            f"the test split ({rows[0]['reports']['recon']['n']:,} images)."
        )
    else:
        r = rows[0]["reports"]["anomaly"]
        lines.append(
            f"AUPRC: score -log p(x, z) at a posterior sample, mean ± std over the last "
            f"{r['settings']['evaluations']} model snapshots of each run."
        )
    lines += ["", f"Command: `{results['command']}`", ""]

    if exp.per_class:
        classes = list(dict.fromkeys(r["holdout"] for r in rows))
        lines.append(
            "| model | " + " | ".join(f"held-out {c}" for c in classes) + " | train time |"
        )
        lines.append("|---" * (len(classes) + 2) + "|")
        for label in dict.fromkeys(r["label"] for r in rows):
            mine = {r["holdout"]: r for r in rows if r["label"] == label}
            cells = [_cell("anomaly", mine[c]["reports"]["anomaly"]) for c in classes]
            total = sum(r["train_time_s"] for r in mine.values())
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_duration(total)} |")
    else:
        heads = [_HEADINGS[k] for k in exp.metrics]
        lines.append("| model | prior | stages | " + " | ".join(heads) + " | train time |")
        lines.append("|---" * (len(heads) + 4) + "|")
        for r in rows:
            cells = [_cell(k, r["reports"][k]) for k in exp.metrics]
            stages = "-" if r["stages"] is None else str(r["stages"])
            lines.append(
                f"| {r['label']} | {r['kind']} | {stages} | "
                + " | ".join(cells)
                + f" | {_duration(r['train_time_s'])} |"
            )

    notes = [
        "every model shares the generator, data, iterations, batch and seed; only `prior.*` differs"
    ]
    notes += [n for n in dict.fromkeys(r["note"] for r in rows) if n]
    notes.append(
        f"runs in `{Path(rows[0]['run']).parent}/<model>/`, reports in their `eval/*.json`; "
        "train time is each run's training wall time"
        + (" summed over classes" if exp.per_class else "")
    )
    lines += ["", "Notes: " + "; ".join(notes) + ".", ""]
    return "\n".join(lines)
