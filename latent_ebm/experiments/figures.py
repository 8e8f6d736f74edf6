"""The figure of the paper's Table 3: FID (and recon MSE) against the number of stages.

``reproduce stages`` and ``reproduce adaptive`` write ``OUT/<experiment>.png`` beside their
tables: one panel per metric column, the adaptive prior's curve (``nce`` is its one-stage
model, ``gaussian`` its zero-stage one) and, in ``adaptive``, the non-adaptive TRE curve
(``tre K=1`` is the ``nce`` run, ARCHITECTURE §4). Points are the mean over seeds, error bars
± one standard error (none with one seed). The stage axis is logarithmic in base 2, with 0
stages drawn left of 1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from latent_ebm.evaluation.plots import save_figure
from latent_ebm.experiments.columns import column
from latent_ebm.experiments.stats import summarize

__all__ = ["Points", "draw_stage_curves", "plot_stages", "points_of", "stage_curves"]


def stage_curves(results: dict[str, Any], column: str) -> dict[str, Points]:
    """The points of each curve of one column: ``{"adaptive" | "tre": [(stages, mean, se,
    seeds), ...]}`` in stage order, from the ``models`` rows of a ``reproduce`` result.

    A row belongs to the TRE curve when its label starts with ``tre``; every other row (the
    Gaussian prior at 0 stages, ``nce`` at 1, ``adaptive K=k``) to the adaptive one.
    """
    values: dict[str, dict[int, list[float]]] = {}
    for row in results["models"]:
        if column not in row["reports"]:
            continue
        curve = "tre" if row["label"].startswith("tre") else "adaptive"
        stages = 0 if row["kind"] == "gaussian" else int(row["stages"] or 1)
        values.setdefault(curve, {}).setdefault(stages, []).append(row["reports"][column]["value"])
    return {curve: points_of(by_stage) for curve, by_stage in values.items()}


Points = list[tuple[int, float, float, int]]  # (stages, mean, se, n) in stage order


def points_of(by_stage: dict[int, list[float]]) -> Points:
    """A curve's points from its values at each number of stages: mean, standard error
    (0 with one value) and count, in stage order; a stage without values has no point."""
    points = []
    for k in sorted(by_stage):
        if not by_stage[k]:
            continue
        s = summarize(by_stage[k])
        points.append((k, s.mean, 0.0 if math.isnan(s.se) else s.se, s.n))
    return points


def plot_stages(results: dict[str, Any], columns: list[str], path: str | Path) -> Path:
    """Draw ``columns`` of a ``stages``/``adaptive`` result against the number of stages.

    Raises:
        LatentEBMError: the PNG could not be written (the message says why).
    """
    names = {"adaptive": "adaptive", "tre": "TRE (non-adaptive)"}
    panels = []
    for key in columns:
        curves = stage_curves(results, key)
        panels.append((column(key).heading, {names[c]: p for c, p in curves.items()}))
    seeds = results["seeds"]
    title = f"{results['title']} ({results['dataset']}, {_spread(len(seeds))})"
    return draw_stage_curves(panels, title, path)


def draw_stage_curves(
    panels: list[tuple[str, dict[str, Points]]], title: str, path: str | Path
) -> Path:
    """One panel per ``(heading, {curve name: points})``, each curve's means against the
    number of stages with ± one standard error bars (the first curve solid with circles, the
    next dashed with squares, ...); saved to ``path``.

    Raises:
        LatentEBMError: the PNG could not be written (the message says why).
    """
    styles = ("o-", "s--", "^:", "d-.")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (heading, curves) in zip(axes[0], panels, strict=True):
        ticks: set[int] = set()
        for i, (name, points) in enumerate(curves.items()):
            if not points:
                continue
            ticks.update(k for k, *_ in points)
            ax.errorbar(
                [_position(k) for k, *_ in points],
                [m for _, m, _, _ in points],
                yerr=[se for *_, se, _ in points],
                fmt=styles[i % len(styles)],
                capsize=3,
                label=name,
            )
        ax.set_xticks([_position(k) for k in sorted(ticks)], [str(k) for k in sorted(ticks)])
        ax.set_xlabel("stages K")
        ax.set_title(heading, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _spread(n: int) -> str:
    """The figure title's note on the error bars for ``n`` seeds or runs."""
    return f"{n} seeds; bars ± 1 SE" if n > 1 else "1 seed: no error bars"


def _position(stages: int) -> float:
    """Where ``stages`` sits on the axis: log2, with 0 stages one step left of 1."""
    return math.log2(stages) if stages > 0 else -1.0
