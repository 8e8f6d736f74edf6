"""The columns of the reproduce tables: what each evaluates, its heading and its precision.

A column is one :func:`latent_ebm.evaluation.evaluate_run` request, saved in every run as
``eval/<key>.json`` (:data:`COLUMNS`: recon MSE, FID under each test-time sampler, the FID
ceiling, AUPRC). ``reproduce --sharpen`` (beyond the paper, ARCHITECTURE §7) adds two kinds:

- ``fid-sharpen<beta>`` (:func:`sharpen_key`): the FID of samples of the prior sharpened by
  ``beta`` (:meth:`latent_ebm.priors.Prior.sharpened`), evaluated like ``fid``;
- ``fid-sharpened`` (:data:`SHARPENED`): computed, not evaluated. For each seed, the FID at
  the ``beta`` (1 included) with the best mean FID over the model's *other* seeds
  (:func:`choose_sharpening`). No run's own score picks its ``beta``, so comparing priors on
  this column is fair to every prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from latent_ebm.sampling import sharpen_suffix

__all__ = [
    "COLUMNS",
    "SHARPENED",
    "Column",
    "choose_sharpening",
    "column",
    "format_cell",
    "sharpen_key",
]


@dataclass(frozen=True)
class Column:
    """A column of a table: ``metric`` of :func:`latent_ebm.evaluation.evaluate_run` with the
    keyword arguments ``request`` (e.g. 500 test-time steps), saved as ``eval/<key>.json``."""

    key: str
    metric: str
    heading: str
    digits: int
    request: tuple[tuple[str, object], ...] = ()
    lower_is_better: bool = True


SHARPENED = "fid-sharpened"
_SHARPEN = "fid-sharpen"

COLUMNS: dict[str, Column] = {
    c.key: c
    for c in (
        Column("recon", "recon", "recon MSE (↓)", 4),
        Column("fid", "fid", "FID (↓)", 2),
        Column("fid500", "fid", "FID, 500 steps (↓)", 2, (("steps", 500),)),
        Column("fid-sir", "fid", "FID, SIR (↓)", 2, (("method", "sir"),)),
        Column("fid-mala", "fid", "FID, MALA (↓)", 2, (("method", "mala"), ("steps", 1000))),
        # the generator at samples of the aggregate posterior: what a prior matching it exactly
        # would give: the ceiling of the model's prior samples (ARCHITECTURE §7)
        Column("fid-q", "fid", "FID at q, ceiling (↓)", 2, (("method", "aggregate"),)),
        Column("anomaly", "anomaly", "AUPRC (↑)", 3, lower_is_better=False),
        Column(SHARPENED, "fid", "FID, β chosen on other seeds (↓)", 2),
    )
}


def sharpen_key(beta: float) -> str:
    """The column of FID at sharpening ``beta``: ``fid`` at 1, else ``fid-sharpen<beta>``
    (the report name ``latent-ebm eval --sharpen`` gives too)."""
    return "fid" + sharpen_suffix(beta)


def column(key: str) -> Column:
    """The column of ``key``: one of :data:`COLUMNS` or a ``fid-sharpen<beta>`` column.

    Raises:
        KeyError: no such column.
    """
    if key in COLUMNS:
        return COLUMNS[key]
    if key.startswith(_SHARPEN):
        try:
            beta = float(key[len(_SHARPEN) :])
        except ValueError:
            raise KeyError(key) from None
        return Column(key, "fid", f"FID, β {beta:g} (↓)", 2, (("sharpen", beta),))
    raise KeyError(key)


def format_cell(key: str, report: dict[str, Any]) -> str:
    """A report's value (``value ± std`` when it has a spread) at its column's precision."""
    d = column(key).digits
    spread = f" ± {report['std']:.{d}f}" if "std" in report else ""
    return f"{report['value']:.{d}f}{spread}"


def shown(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[str]:
    """A table's ``columns``, and :data:`SHARPENED` after them when its rows have it."""
    return [*columns, *([SHARPENED] if rows and SHARPENED in rows[0]["reports"] else [])]


def by_model(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, Any], list[dict[str, Any]]]:
    """The rows of a ``reproduce`` result by model (its ``label`` and ``holdout``): each
    model's runs over seeds, in table order."""
    models: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        models.setdefault((r["label"], r["holdout"]), []).append(r)
    return models


def _mean_fid(runs: Sequence[dict[str, Any]], beta: float) -> float:
    """The mean FID of ``runs`` at ``beta``; a non-finite mean counts as the worst."""
    v = math.fsum(r["reports"][sharpen_key(beta)]["value"] for r in runs) / len(runs)
    return v if math.isfinite(v) else math.inf


def best_sharpening(runs: Sequence[dict[str, Any]], betas: Sequence[float]) -> float:
    """The factor, 1 or one of ``betas``, with the lowest mean FID over ``runs`` (rows with
    ``reports`` at every ``fid-sharpen<beta>``; a tie: the smaller; a non-finite mean counts
    as the worst)."""
    return min(sorted({1.0, *betas}), key=partial(_mean_fid, runs))  # a tie: the first


def choose_sharpening(rows: Sequence[dict[str, Any]], betas: Sequence[float]) -> None:
    """Add the :data:`SHARPENED` report to every row whose model has another seed.

    ``rows``: the ``models`` rows of a ``reproduce`` result, each with its ``reports`` at
    ``fid`` and at every ``fid-sharpen<beta>``; a model's runs are :func:`by_model`'s. For
    each run, ``beta`` (1 or one of ``betas``) is the one with the lowest mean FID over the
    model's other runs (a tie: the smaller ``beta``; a non-finite FID counts as worst); the
    report is the run's own FID at that ``beta``, with ``sharpen`` and the ``chosen_on``
    seeds recorded. Without ``betas`` (no ``--sharpen``) nothing is added: the rows may have
    no FID at all (``anomaly``).
    """
    if not betas:
        return
    for runs in by_model(rows).values():
        if len(runs) < 2:
            continue
        for r in runs:
            others = [o for o in runs if o is not r]
            best = best_sharpening(others, betas)
            r["reports"][SHARPENED] = {
                "value": r["reports"][sharpen_key(best)]["value"],
                "sharpen": best,
                "chosen_on": [o["seed"] for o in others],
            }
