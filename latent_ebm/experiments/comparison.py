"""``latent-ebm compare RUN [RUN ...]``: several runs of one data set side by side.

- A Markdown table (``compare.md``): one row per group of runs whose configs differ only in
  ``train.seed``; the config fields that differ between the groups; the final metrics of each
  group (every report in the runs' ``eval/*.json``, e.g. ``recon``, ``fid``, ``anomaly``, and
  the last in-training evaluation of ``train.eval_every``), each cell the mean ± standard
  error over the group's seeds (:mod:`latent_ebm.experiments.stats`); then the settings of
  each metric.
- Overlaid curves (``compare.png``): the generator loss, the in-training FID and recon MSE
  against iterations and against training time, a group's mean with a band of ± one standard
  error.

Runs are read through :mod:`latent_ebm.rundir` only: config, ``metrics.jsonl`` and reports;
the runs of ``latent-ebm reproduce`` (``OUT/runs/<model>``) work as they are.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from latent_ebm.config import config_to_dict, load_config
from latent_ebm.errors import LatentEBMError
from latent_ebm.evaluation.plots import save_figure
from latent_ebm.experiments.columns import COLUMNS
from latent_ebm.experiments.reproduction import IGNORED_FIELDS
from latent_ebm.experiments.stats import summarize
from latent_ebm.files import remove_abandoned_temporaries, write_atomic
from latent_ebm.rundir import (
    CONFIG,
    EVAL,
    check_creatable,
    check_run_dir,
    read_metrics,
    read_report,
    split_metrics,
)

__all__ = ["Comparison", "RunRecord", "compare_runs", "read_run_record"]

_SEED = "train.seed"
_IN_TRAINING = {"fid": "FID in training, last", "recon": "recon MSE in training, last"}


@dataclass
class RunRecord:
    """What :func:`compare_runs` reads of one run: its flat config, its loss and evaluation
    lines of ``metrics.jsonl``, and its reports (``eval/<name>.json``: name -> report)."""

    path: Path
    config: dict[str, Any]
    losses: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    reports: dict[str, dict[str, Any]]

    @property
    def data_set(self) -> str:
        size = self.config["data.size"]
        return self.config["data.name"] + ("" if size is None else f" at size {size}")


@dataclass
class Comparison:
    """What :func:`compare_runs` made: the Markdown table and the paths of its two files."""

    markdown: str
    md_path: Path
    png_path: Path


def read_run_record(run: str | Path) -> RunRecord:
    """The :class:`RunRecord` of the run directory ``run``.

    Raises:
        LatentEBMError: ``run`` does not exist, is a file or holds no ``config.yaml``; a bad
            config, log (:func:`latent_ebm.rundir.read_metrics`) or report
            (:func:`latent_ebm.rundir.read_report`).
    """
    path = Path(run)
    check_run_dir(path)
    nested = config_to_dict(load_config(path / CONFIG))
    config = {f"{s}.{k}": v for s, sub in nested.items() for k, v in sub.items()}
    losses, evals = split_metrics(read_metrics(path))
    reports = {file.stem: read_report(file) for file in sorted((path / EVAL).glob("*.json"))}
    return RunRecord(path, config, losses, evals, reports)


def _groups(records: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs whose configs are equal except for the seed (and the ignored fields), in order."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        key = json.dumps({k: v for k, v in r.config.items() if k not in (_SEED, *IGNORED_FIELDS)})
        groups.setdefault(key, []).append(r)
    return list(groups.values())


def _metric_columns(records: list[RunRecord]) -> list[tuple[str, str, int]]:
    """``(key, heading, digits)`` of every metric some run holds: its reports (in the order of
    the paper's tables, then by name), then the last in-training evaluation."""
    names = {n for r in records for n, rep in r.reports.items() if "value" in rep}
    known = [k for k in COLUMNS if k in names] + sorted(names - set(COLUMNS))
    cols = [
        (k, COLUMNS[k].heading if k in COLUMNS else k, COLUMNS[k].digits if k in COLUMNS else 4)
        for k in known
    ]
    if any(r.evals for r in records):
        cols += [(f"eval:{k}", h, 2 if k == "fid" else 4) for k, h in _IN_TRAINING.items()]
    return cols


def _value(r: RunRecord, key: str) -> float | None:
    if key.startswith("eval:"):
        return r.evals[-1]["eval"].get(key[5:]) if r.evals else None
    return r.reports.get(key, {}).get("value")


def _cell(group: list[RunRecord], key: str, digits: int) -> str:
    values = [v for r in group if (v := _value(r, key)) is not None]
    if not values:
        return "-"
    cell = summarize(values).format(digits)
    return cell if len(values) == len(group) else f"{cell} ({len(values)} of {len(group)})"


def _settings(records: list[RunRecord], key: str) -> str:
    """The settings of a metric column in words (each distinct one when they differ)."""
    if key.startswith("eval:"):
        found = {f"`train.eval_n` = {r.config['train.eval_n']}" for r in records if r.evals}
    else:
        found = set()
        for r in records:
            if key in r.reports:
                rep = r.reports[key]
                words = [f"{k}={v}" for k, v in rep.get("settings", {}).items()]
                if "features" in rep:
                    words.append(f"features={rep['features'].get('name')}")
                if "split" in rep:
                    words.append(f"split: {rep['split']}")
                found.add(", ".join(words))
    return " | ".join(sorted(found)) + (" (differ between runs)" if len(found) > 1 else "")


def _label(group: list[RunRecord], names: dict[Path, str]) -> str:
    return ", ".join(names[r.path] for r in group)


def markdown(records: list[RunRecord]) -> str:
    """The comparison table of ``records`` (all of one data set)."""
    groups = _groups(records)
    names = {r.path: r.path.name for r in records}
    if len(set(names.values())) < len(names):  # the same folder name under several parents
        names = {r.path: str(r.path) for r in records}
    fields = [
        k
        for k in records[0].config
        if k not in (_SEED, *IGNORED_FIELDS)
        and len({json.dumps(g[0].config[k]) for g in groups}) > 1
    ]
    cols = _metric_columns(records)
    heads = ["runs", "seeds", *(f"`{f}`" for f in fields), *(h for _, h, _ in cols)]
    heads += ["iterations", "train time (s)"]
    lines = [
        f"## Comparison of {len(records)} runs on {records[0].data_set}",
        "",
        "Rows: runs whose configs differ only in `train.seed`; cells: mean ± standard error "
        "over those seeds. "
        + (
            "Config fields that differ between the rows: "
            + ", ".join(f"`{f}`" for f in fields)
            + "."
            if fields
            else "The rows share every config field but the seed."
        ),
        "",
        "| " + " | ".join(heads) + " |",
        "|---" * len(heads) + "|",
    ]
    for g in groups:
        cells = [_label(g, names), ", ".join(str(r.config[_SEED]) for r in g)]
        cells += [str(g[0].config[f]) for f in fields]
        cells += [_cell(g, k, d) for k, _, d in cols]
        last = [r.losses[-1] for r in g if r.losses]
        cells.append(", ".join(sorted({str(m["iteration"]) for m in last})) or "-")
        cells.append(summarize([m["time"] for m in last]).format(1) if last else "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Settings of the metrics:", ""]
    lines += [f"- {h}: {_settings(records, k) or '-'}" for k, h, _ in cols]
    return "\n".join(lines) + "\n"


def _curves(group: list[RunRecord], source: str, key: str) -> tuple[np.ndarray, ...] | None:
    """Iterations, mean training time, mean and standard error of ``key`` over a group, at
    the iterations every run of the group logged; ``None`` when none did."""
    series = []
    for r in group:
        rows = r.losses if source == "losses" else [{**m, **m["eval"]} for m in r.evals]
        series.append({m["iteration"]: (m["time"], m[key]) for m in rows if key in m})
    common = sorted(set.intersection(*(set(s) for s in series)))
    if not common:
        return None
    times = np.array([[s[i][0] for i in common] for s in series])
    values = np.array([[s[i][1] for i in common] for s in series])
    se = values.std(0, ddof=1) / np.sqrt(len(group)) if len(group) > 1 else np.zeros(len(common))
    return np.array(common), times.mean(0), values.mean(0), se


def plot_comparison(records: list[RunRecord], path: Path) -> Path:
    """``compare.png``: rows generator loss, in-training FID, in-training recon MSE; columns
    against iterations and against training time (minutes when a run is over 2 min)."""
    groups = _groups(records)
    names = {r.path: r.path.name for r in records}
    longest = max((m["time"] for r in records for m in r.losses), default=0.0)
    scale, unit = (60, "min") if longest >= 120 else (1, "s")
    rows = [
        ("losses", "loss_g", "generator loss"),
        ("evals", "fid", "FID (in training)"),
        ("evals", "recon", "recon MSE (in training)"),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(10, 8.5), sharex="col", squeeze=False)
    for i, (source, key, label) in enumerate(rows):
        for g, color in zip(
            groups, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10, strict=False
        ):
            found = _curves(g, source, key)
            if found is None:
                continue
            its, times, mean, se = found
            name = names[g[0].path] + ("" if len(g) == 1 else f" ({len(g)} seeds)")
            for j, x in enumerate((its, times / scale)):
                ax = axes[i, j]
                ax.plot(
                    x,
                    mean,
                    color=color,
                    lw=1.2,
                    marker="o" if source == "evals" else None,
                    ms=3,
                    label=name if (i, j) == (0, 0) else None,
                )
                ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.2, lw=0)
        axes[i, 0].set_ylabel(label)
        if not axes[i, 0].lines:
            for ax in axes[i]:
                ax.text(
                    0.5,
                    0.5,
                    "no in-training evaluations\n(train.eval_every)",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="gray",
                )
    axes[0, 0].legend(fontsize=7)
    axes[2, 0].set_xlabel("iteration")
    axes[2, 1].set_xlabel(f"training time ({unit})")
    fig.suptitle(f"{records[0].data_set}: mean over seeds, band ± 1 SE", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def compare_runs(runs: Sequence[str | Path], out: str | Path = ".") -> Comparison:
    """Compare the run directories ``runs`` (of one data set): write ``OUT/compare.md`` (the
    table of :func:`markdown`) and ``OUT/compare.png`` (:func:`plot_comparison`).

    Every run and ``out`` are checked before anything is written.

    Raises:
        LatentEBMError: no runs, a folder that is not a run directory, runs on different data
            sets (``data.name`` and ``data.size``), an ``out`` that cannot be written.
    """
    if not runs:
        raise LatentEBMError("compare needs at least one run directory")
    records = [read_run_record(r) for r in runs]
    sets = {r.data_set for r in records}
    if len(sets) > 1:
        which = ", ".join(f"{r.path} ({r.data_set})" for r in records)
        raise LatentEBMError(f"runs on different data sets cannot be compared: {which}")
    out = Path(out)
    check_creatable(out, "--out")
    text = markdown(records)
    out.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temporaries(out)  # of a compare that was killed while writing
    md_path = out / "compare.md"
    try:
        write_atomic(md_path, lambda f: f.write(text.encode()))
    except OSError as e:
        raise LatentEBMError(f"could not write {md_path} ({e.strerror or e})") from None
    return Comparison(text, md_path, plot_comparison(records, out / "compare.png"))
