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

from latent_ebm.experiments.columns import (
    SHARPENED,
    by_model,
    column,
    format_cell,
    sharpen_key,
    shown,
)
from latent_ebm.experiments.settings import describe_setting
from latent_ebm.experiments.stats import CRITERION, Summary, beats, no_worse, summarize, within

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Claim",
    "Experiment",
    "ModelSpec",
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
    # The digits preset's schedule: 1,500 iterations of batch 100 are about 100 epochs of the
    # 1,437 training digits, so K=4 stages last about 25 epochs each, the paper's stage length
    # (A.3), and a whole table takes minutes a seed.
    "digits": {"preset": "digits", "set": (), "fid_n": 5_000, "holdout": (0, 1, 2), "last": 10},
    # A smoke test: tiny networks, a few iterations, short chains (seconds a model on digits).
    "tiny": {
        "preset": None,
        "set": (
            "model.nz=4",
            "model.ngf=4",
            "model.ratio_hidden=16",
            "prior.prior_steps=5",
            "refit.steps=20",
            "refit.batch=50",
            "refit.samples=200",
            "refit.chain_steps=10",
            "refit.noise=200",
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
class Claim:
    """An ordering the paper claims: ``a`` beats (or is no worse than) ``b`` on ``column``;
    ``kind`` ``within``: ``a``'s ``column`` is within 10% of its ``b`` column (``b`` a column
    key, e.g. FID at 500 steps against FID at 100)."""

    a: str
    b: str
    column: str
    kind: str = "beats"  # beats | no worse | within

    def text(self) -> str:
        if self.kind == "within":
            return f"{self.a}: {column(self.column).heading} within 10% of {column(self.b).heading}"
        verb = "is no worse than" if self.kind == "no worse" else self.kind
        return f"{self.a} {verb} {self.b} ({column(self.column).heading})"


@dataclass(frozen=True)
class Experiment:
    """A table of the paper: its models, columns and claims; ``per_class``: one run per
    held-out class."""

    title: str
    models: tuple[ModelSpec, ...]
    columns: tuple[str, ...]
    claims: tuple[Claim, ...] = ()
    per_class: bool = False

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics its columns evaluate."""
        return tuple(dict.fromkeys(column(c).metric for c in self.columns))


_K4 = "adaptive K=4"
EXPERIMENTS: dict[str, Experiment] = {
    "stages": Experiment(
        "Table 3, first part: number of stages of the adaptive prior (0: Gaussian prior)",
        (GAUSSIAN, *(_adaptive(k) for k in (1, 2, 4, 8))),
        ("recon", "fid", "fid-mala"),
        tuple(
            Claim(a, b, c, "no worse")
            for c in ("fid", "fid-mala", SHARPENED)
            for a, b in (("adaptive K=2", "nce"), (_K4, "adaptive K=2"))
        ),
    ),
    "adaptive": Experiment(
        "Table 3, second part: adaptive vs non-adaptive (TRE) multi-stage estimation",
        tuple(f(k) for f in (_adaptive, _tre) for k in (1, 2, 4, 8)),
        ("recon", "fid", "fid-mala"),
        tuple(
            Claim(f"adaptive K={k}", f"tre K={k}", c)
            for c in ("fid", "fid-mala", SHARPENED)
            for k in (2, 4, 8)
        ),
    ),
    "compare": Experiment(
        "Table 1: every prior on the same generator",
        (GAUSSIAN, NCE, _adaptive(4), _tre(4), LEBM),
        ("recon", "fid", "fid500", "fid-sir", "fid-mala", "fid-q"),
        (
            *(Claim(_K4, m.label, "fid") for m in (GAUSSIAN, NCE, _tre(4), LEBM)),
            *(Claim(_K4, m.label, "fid-mala") for m in (GAUSSIAN, NCE, _tre(4), LEBM)),
            *(Claim(_K4, m.label, SHARPENED) for m in (GAUSSIAN, NCE, _tre(4), LEBM)),
            *(Claim(_K4, m.label, "recon", "no worse") for m in (GAUSSIAN, NCE, _tre(4), LEBM)),
            *(
                Claim(m.label, "fid", "fid500", "within")
                for m in (GAUSSIAN, NCE, _adaptive(4), _tre(4), LEBM)
            ),
        ),
    ),
    "anomaly": Experiment(
        "Table 2: anomaly detection, AUPRC with the held-out class as anomalous",
        (_adaptive(4), LEBM),
        ("anomaly",),
        (Claim(_K4, "lebm", "anomaly"),),
        per_class=True,
    ),
}


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _cell(runs: list[dict[str, Any]], key: str) -> str:
    """One seed: the report's value (with its spread over snapshots); several: mean ± SE."""
    if len(runs) == 1:
        return format_cell(key, runs[0]["reports"][key])
    values = [r["reports"][key]["value"] for r in runs]
    return summarize(values).format(column(key).digits)


def _claim_rows(exp: Experiment, groups: dict[tuple[str, int | None], list]) -> list[str]:
    """One table row per claim (per held-out class in ``anomaly``): difference and verdict."""
    lines = ["| claim | difference (mean ± SE) | verdict |", "|---|---|---|"]
    for c in exp.claims:
        col = column(c.column)
        for held in dict.fromkeys(h for _, h in groups):
            a = groups.get((c.a, held), [])
            b = groups.get((c.b, held), []) if c.kind != "within" else a
            if not a or not b:  # a model left out (reproduce --models): nothing to test
                continue
            needed = (c.column, c.b) if c.kind == "within" else (c.column,)
            if any(k not in r["reports"] for r in a + b for k in needed):
                continue  # a column not evaluated: fid-sharpened without reproduce --sharpen
            where = "" if held is None else f", held-out {held}"
            if c.kind == "within":
                ratios = [r["reports"][c.column]["value"] / r["reports"][c.b]["value"] for r in a]
                s, verdict = within(ratios)
                lines.append(f"| {c.text()}{where} | ratio {s.format(3)} | {verdict} |")
                continue
            sa, sb = (summarize([r["reports"][c.column]["value"] for r in g]) for g in (a, b))
            verdict = (beats if c.kind == "beats" else no_worse)(sa, sb, col.lower_is_better)
            # The difference a - b and its standard error.
            diff = Summary(sa.mean - sb.mean, (sa.se**2 + sb.se**2) ** 0.5, min(sa.n, sb.n))
            lines.append(f"| {c.text()}{where} | {diff.format(col.digits)} | {verdict} |")
    return lines


def _sharpening_lines(betas: list[float], groups: dict[tuple[str, int | None], list]) -> list[str]:
    """The table of ``reproduce --sharpen``: each model's FID at every ``beta``, and the
    ``beta`` chosen for each seed on the other seeds (the column ``fid-sharpened``)."""
    factors = sorted({1.0, *betas})
    keys, heads = [sharpen_key(b) for b in factors], [f"FID at β {b:g}" for b in factors]
    lines = [
        "FID of the sharpened prior (beyond the paper, ARCHITECTURE §7): its learned "
        "log-density times β, β 1 the learned prior. For each seed, the column "
        f'"{column(SHARPENED).heading}" takes the β with the best mean FID over the model\'s '
        "other seeds, listed here by seed.",
        "",
        "| model | " + " | ".join(heads) + " | β chosen, by seed |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for (label, _), runs in groups.items():
        chosen = (
            ", ".join(
                f"{r['reports'][SHARPENED]['sharpen']:g}" for r in runs if SHARPENED in r["reports"]
            )
            or "-"
        )
        lines.append(f"| {label} | " + " | ".join(_cell(runs, k) for k in keys) + f" | {chosen} |")
    return [*lines, ""]


def markdown_table(results: dict[str, Any], exp: Experiment) -> str:
    """The table shaped like the paper's: rows = models, columns = metrics (or classes), each
    cell the mean ± standard error over the seeds; then the claims and their verdicts.

    ``results``: the raw numbers of an experiment, as
    :func:`latent_ebm.experiments.reproduction.reproduce` writes them to ``<experiment>.json``.
    """
    cfg, rows = results["base_config"], results["models"]
    t, m = cfg["train"], cfg["model"]
    seeds = results["seeds"]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    lines = [
        f"## {results['title']}",
        "",
        f"Data set `{results['dataset']}`, scale `{results['scale']}`: {t['iters']:,} "
        f"iterations of batch {t['batch_size']}, {seed_text}; generator nz "
        f"{m['nz']} / ngf {m['ngf']}; posterior chain {t['post_steps']} steps of "
        f"{t['post_step_size']}." + "".join(map(describe_setting, results["overrides"])),
    ]
    if len(seeds) > 1:
        lines.append(
            f"Cells: mean ± standard error over the {len(seeds)} seeds (training and evaluation "
            "seed of each run)."
        )
    fid = results["fid"]
    if fid is not None:
        acc = rows[0]["reports"]["fid"]["features"].get("test_accuracy")
        extra = f", its test accuracy {acc:.1%}" if acc is not None else ""
        lines.append(
            f"FID: {fid['features']} features{extra}, {fid['n']:,} generated images (prior "
            "Langevin chain of the run's `sample.steps`, unless the column says otherwise) "
            "against the training split. Recon MSE: per pixel in [-1, 1] on the test split "
            f"({rows[0]['reports']['recon']['n']:,} images)."
        )
    else:
        r = rows[0]["reports"]["anomaly"]
        lines.append(
            f"AUPRC: score -log p(x, z) at a posterior sample, the mean over the last "
            f"{r['settings']['evaluations']} model snapshots of each run"
            + (" (± their std, one seed)." if len(seeds) == 1 else ".")
        )
    lines += ["", f"Command: `{results['command']}`", ""]

    groups = by_model(rows)
    if exp.per_class:
        classes = list(dict.fromkeys(h for _, h in groups))
        lines.append(
            "| model | " + " | ".join(f"held-out {c}" for c in classes) + " | train time |"
        )
        lines.append("|---" * (len(classes) + 2) + "|")
        for label in dict.fromkeys(lab for lab, _ in groups):
            cells = [_cell(groups[(label, c)], "anomaly") for c in classes]
            total = sum(r["train_time_s"] for c in classes for r in groups[(label, c)])
            lines.append(
                f"| {label} | " + " | ".join(cells) + f" | {_duration(total / len(seeds))} |"
            )
    else:
        keys = shown(exp.columns, rows)
        heads = [column(k).heading for k in keys]
        lines.append("| model | prior | stages | " + " | ".join(heads) + " | train time |")
        lines.append("|---" * (len(heads) + 4) + "|")
        for runs in groups.values():
            r = runs[0]
            cells = [_cell(runs, k) for k in keys]
            stages = "-" if r["stages"] is None else str(r["stages"])
            mean_time = sum(x["train_time_s"] for x in runs) / len(runs)
            row = [r["label"], r["kind"], stages, *cells, _duration(mean_time)]
            lines.append("| " + " | ".join(row) + " |")

    notes = [
        "every model shares the generator, data, iterations, batch and seed; only `prior.*` differs"
    ]
    notes += [n for n in dict.fromkeys(r["note"] for r in rows) if n]
    notes.append(
        f"runs in `{Path(rows[0]['run']).parent}/<model>/` (`<model>-seed<s>/` for seed s > 0), "
        "reports in their `eval/*.json`; train time is each run's training wall time"
        + (" summed over classes" if exp.per_class else "")
        + (", averaged over seeds" if len(seeds) > 1 else "")
    )
    lines += ["", "Notes: " + "; ".join(notes) + ".", ""]
    if results.get("sharpen"):
        lines += _sharpening_lines(results["sharpen"], groups)
    claims = _claim_rows(exp, groups)
    if len(claims) > 2:  # more than the header: a claim whose models are all in the table
        lines += ["Claims of the paper, tested here:", "", *claims, ""]
        lines += [CRITERION, ""]
    return "\n".join(lines)
