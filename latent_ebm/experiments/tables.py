"""The experiments of the paper's tables: their scales, models and metrics, and the tables.

An experiment (:data:`EXPERIMENTS`) trains a list of models on one base configuration, the
*scale* (:data:`SCALES`), that fixes the generator, data, iterations, batch and seed; each
model overrides only ``prior.*`` (and ``lebm`` its posterior chain, ``train.post_steps=20``,
as in LEBM, ARCHITECTURE §4). :mod:`latent_ebm.experiments.reproduction` trains and evaluates the
models; :func:`markdown_table` writes the table from their reports.

- ``stages`` (Table 3, first part): the adaptive prior with 0 (``gaussian``), 1 (``nce``, the
  adaptive prior with one stage, ARCHITECTURE §4), 2, 4, 8 stages; test reconstruction MSE and FID.
- ``adaptive`` (Table 3, second part): ``adaptive`` (``nce`` at one stage) vs non-adaptive
  ``tre`` at 1, 2, 4, 8 stages.
- ``compare`` (Table 1): ``gaussian``, ``nce``, ``adaptive`` K=4, ``tre`` K=4, ``lebm``.
- ``anomaly`` (Table 2): ``adaptive`` K=4 and ``lebm`` trained once per held-out class
  (``data.holdout``); AUPRC mean and std over the last snapshots (ARCHITECTURE §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Experiment",
    "ModelSpec",
    "format_cell",
    "markdown_table",
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
    # half an epoch: training warns (ARCHITECTURE §3).
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
    note="`lebm` trains with `train.post_steps=20`, the posterior chain of LEBM (ARCHITECTURE §4)",
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


def format_cell(metric: str, report: dict[str, Any]) -> str:
    """A report's value (``value ± std`` when it has a spread) at the metric's precision."""
    d = _DIGITS[metric]
    spread = f" ± {report['std']:.{d}f}" if "std" in report else ""
    return f"{report['value']:.{d}f}{spread}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def markdown_table(results: dict[str, Any], exp: Experiment) -> str:
    """The table shaped like the paper's: rows = models, columns = metrics (or classes).

    ``results``: the raw numbers of an experiment, as
    :func:`latent_ebm.experiments.reproduction.reproduce` writes them to ``<experiment>.json``.
    """
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
            cells = [format_cell("anomaly", mine[c]["reports"]["anomaly"]) for c in classes]
            total = sum(r["train_time_s"] for r in mine.values())
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_duration(total)} |")
    else:
        heads = [_HEADINGS[k] for k in exp.metrics]
        lines.append("| model | prior | stages | " + " | ".join(heads) + " | train time |")
        lines.append("|---" * (len(heads) + 4) + "|")
        for r in rows:
            cells = [format_cell(k, r["reports"][k]) for k in exp.metrics]
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
