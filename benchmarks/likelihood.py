"""The paper's claims re-judged by likelihood (issue 31), end to end over seeds.

Every run folder ``RUNS/<model>-seed<s>`` (trained by ``latent-ebm train``; ``<model>`` is
``gaussian``, ``nce``, ``lebm``, ``adaptive-K<k>`` or ``tre-K<k>``) is evaluated by the
library's own commands, each report kept in the run's ``eval/``:

- ``nll``: ``-log p(x)`` of the test split (nats per image, bits per dimension), the prior
  normalised by SMC (``latent-ebm eval --metric nll``);
- ``prior-nll``: the test aggregate posterior's cross-entropy under every stage
  ``p_0 .. p_K`` of the normalised prior, and every stage's ``log Z_k``;
- with ``--fid-n N``: the FID of the run's 100-step prior chain and of the SMC sampler at the
  same budget of gradient evaluations, each in both classifier feature spaces
  (``classifier``, ``classifier2``), and of MALA at that budget (``classifier``).

    python benchmarks/likelihood.py /work/runs/lik/digits --seeds 0 1 2 3 4 \\
        --fid-n 5000 --out benchmarks/seeds/likelihood-digits

Resumable: a report that exists is read, not recomputed (``--table``: only the table, from
the reports there are). Writes ``OUT.md`` (tables with mean ± standard error over seeds, the
claims with verdicts by the project's criterion), ``OUT.json`` (every value) and ``OUT.png``
(the figure: prior NLL by stage within the K=4 priors, and ``-log p(x)`` against the number
of stages, adaptive against TRE).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from latent_ebm.evaluation import evaluate_run
from latent_ebm.experiments.figures import draw_stage_curves, points_of
from latent_ebm.experiments.stats import CRITERION, Summary, paired, summarize
from latent_ebm.rundir import load_run
from latent_ebm.rundir.layout import write_text_file

MODELS = ("gaussian", "nce", "adaptive-K2", "adaptive-K4", "tre-K2", "tre-K4", "lebm")
FLAGSHIP = "adaptive-K4"
BASELINES = ("nce", "tre-K4", "lebm", "gaussian")
FIDS = {  # report name -> evaluate_run settings
    "fid": {"metric": "fid", "method": "langevin", "features": "classifier"},
    "fid-smc": {"metric": "fid", "method": "smc", "features": "classifier"},
    "fid-mala": {"metric": "fid", "method": "mala", "features": "classifier"},
    "fid-c2": {"metric": "fid", "method": "langevin", "features": "classifier2"},
    "fid-smc-c2": {"metric": "fid", "method": "smc", "features": "classifier2"},
}
COLUMNS = {  # column -> (report, field, heading)
    "nll": ("nll", "value", "-log p(x), nats (↓)"),
    "bpd": ("nll", "bits_per_dim", "bits/dim (↓)"),
    "prior": ("prior-nll", "value", "prior NLL, own posterior (↓)"),
    "log_z": ("prior-nll", "log_z", "log Z_K"),
    "fid": ("fid", "value", "FID, 100-step chain (↓)"),
    "fid-smc": ("fid-smc", "value", "FID, SMC at equal cost (↓)"),
    "fid-mala": ("fid-mala", "value", "FID, MALA at equal cost (↓)"),
    "fid-c2": ("fid-c2", "value", "FID classifier2, chain (↓)"),
    "fid-smc-c2": ("fid-smc-c2", "value", "FID classifier2, SMC (↓)"),
}


def stages_of(model: str) -> int:
    """The number of stages of a model name (``gaussian`` 0, ``nce`` 1, ``lebm`` 1)."""
    return 0 if model == "gaussian" else int(model.split("-K")[1]) if "-K" in model else 1


def finished(run: Path) -> bool:
    """Whether ``run`` holds a run trained to its last iteration."""
    if not (run / "config.yaml").exists():
        return False
    cfg, _, state = load_run(run, torch.device("cpu"))
    return state["iteration"] >= cfg.train.iters


def evaluate(
    run: Path, fid_n: int, progress: bool, nll_images: int | None = None
) -> dict[str, dict[str, Any]]:
    """Every report of one run, computed where missing (``nll`` of the first ``nll_images``
    test images; ``None``: all)."""
    wanted: dict[str, dict[str, Any]] = {"prior-nll": {"metric": "prior-nll"}}
    wanted["nll"] = {"metric": "nll", **({"n": nll_images} if nll_images else {})}
    if fid_n:
        wanted.update({k: {**v, "n": fid_n} for k, v in FIDS.items()})
    return reports_of(run, wanted, progress)


def reports_of(
    run: Path, wanted: dict[str, dict[str, Any]], progress: bool, compute: bool = True
) -> dict[str, dict[str, Any]]:
    """The reports ``eval/<name>.json`` of ``run`` for each ``name`` of ``wanted``, each
    computed by :func:`evaluate_run` with its settings where missing (when ``compute``; else
    a missing one is left out)."""
    reports = {}
    for name, kw in wanted.items():
        path = run / "eval" / f"{name}.json"
        if not path.exists() and compute:
            print(f"{run.name}: {name}", flush=True)
            evaluate_run(run, name=name, progress=progress, **kw)
        if path.exists():
            reports[name] = json.loads(path.read_text())
    return reports


def value(reports: dict[str, Any], column: str) -> float | None:
    report, field, _ = COLUMNS[column]
    if report not in reports:
        return None
    r = reports[report]
    return r["stages"][-1]["log_z"] if field == "log_z" else r[field]


def converged(reports: dict[str, Any]) -> bool:
    """Whether the run's normalising constants converged (its ``prior-nll`` report)."""
    return bool(reports.get("prior-nll", {}).get("converged", False))


def _cell(s: Summary | None, digits: int = 2) -> str:
    return "" if s is None else s.format(digits)


def _summ(values: list[float | None]) -> Summary | None:
    v = [x for x in values if x is not None]
    return summarize(v) if v else None


def paired_present(a: list[float | None], b: list[float | None]) -> tuple[Summary | None, str]:
    """:func:`paired` over the seeds where both have a value (``a`` lower: negative)."""
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(both) < 2:
        return None, "not resolved"
    return paired([x for x, _ in both], [y for _, y in both])


def table(results: dict[str, dict[int, dict[str, Any]]], title: str, command: str) -> str:
    models = [m for m in MODELS if m in results]
    lines = [f"## {title}", "", f"Command: `{command}`", ""]
    cols = [c for c in COLUMNS if any(value(r, c) is not None for m in models
                                      for r in results[m].values())]  # fmt: skip
    lines += ["| model | seeds | log Z converged | "
              + " | ".join(COLUMNS[c][2] for c in cols) + " |"]  # fmt: skip
    lines += ["|---|---|---|" + "---|" * len(cols)]
    for m in models:
        runs = results[m]
        cells = [_cell(_summ([value(r, c) for r in runs.values()]), 3 if c == "bpd" else 2)
                 for c in cols]  # fmt: skip
        ok = sum(converged(r) for r in runs.values())
        lines.append(f"| {m} | {len(runs)} | {ok} of {len(runs)} | " + " | ".join(cells) + " |")
    images = sorted({r["nll"]["n"] for m in models for r in results[m].values()
                     if "n" in r.get("nll", {})})  # fmt: skip
    lines += [
        "",
        f"`-log p(x)`: the first {' / '.join(map(str, images))} test images of each run."
        if images
        else "",
        'Cells: mean ± standard error over seeds. "log Z converged": runs whose SMC estimate '
        "of every stage's log Z moved by at most 0.1 nats + 3 SE when the tempering steps were "
        "doubled, with a standard error of at most 0.25 nats (`eval --metric prior-nll`); "
        "elsewhere log Z is a lower bound that has not converged, so the NLLs are too low and "
        "claims on them are not resolved.",
        "",
    ]
    lines += ["### Claims, paired by seed", "", CRITERION, ""]
    lines += ["| claim | difference, paired (mean ± SE; negative: the claim's way) | verdict |"]
    lines += ["|---|---|---|"]
    flagship = results.get(FLAGSHIP, {})
    for column, what in (("nll", "-log p(x)"), ("fid", "FID (chain)"), ("fid-c2", "FID c2")):
        for base in BASELINES:
            if base not in results:
                continue
            seeds = sorted(set(flagship) & set(results[base]))
            a = [value(flagship[s], column) for s in seeds]
            b = [value(results[base][s], column) for s in seeds]
            d, verdict = paired_present(a, b)
            both = [flagship[s] for s in seeds] + [results[base][s] for s in seeds]
            if column == "nll" and not all(converged(r) for r in both):
                verdict = "not resolved (log Z did not converge)"
            lines.append(f"| {FLAGSHIP} lower {what} than {base} | {_cell(d)} | {verdict} |")
    for m in models:
        seeds = sorted(results[m])
        for other, what in (
            ("fid", "100-step chain"),
            ("fid-c2", "chain (c2)"),
            ("fid-mala", "MALA"),
        ):
            smc = "fid-smc-c2" if other == "fid-c2" else "fid-smc"
            a = [value(results[m][s], smc) for s in seeds]
            b = [value(results[m][s], other) for s in seeds]
            d, verdict = paired_present(a, b)
            if d is not None:
                claim = f"{m}: SMC's FID below its {what}'s at equal cost"
                lines.append(f"| {claim} | {_cell(d)} | {verdict} |")
    lines += ["", "### Every stage, within each prior (own posterior samples)", ""]
    lines += [
        "| model | stage | prior NLL (↓) | log Z_k | smallest ESS / N |",
        "|---|---|---|---|---|",
    ]
    for m in models:
        by_stage = _stage_values(results[m])
        for k, (nll, log_z, ess) in sorted(by_stage.items()):
            lines.append(
                f"| {m} | {k} | {_cell(_summ(nll))} | {_cell(_summ(log_z))} | {_cell(_summ(ess))} |"
            )
    return "\n".join(lines) + "\n"


def _stage_values(runs: dict[int, dict[str, Any]]) -> dict[int, tuple[list, list, list]]:
    out: dict[int, tuple[list, list, list]] = {}
    for r in runs.values():
        for s in r.get("prior-nll", {}).get("stages", []):
            nll, log_z, ess = out.setdefault(s["stage"], ([], [], []))
            nll.append(s["nll"])
            log_z.append(s["log_z"])
            ess.append(s["ess"])
    return out


def figure(results: dict[str, dict[int, dict[str, Any]]], title: str, path: Path) -> Path:
    within = {}
    for curve in ("adaptive", "tre"):
        if f"{curve}-K4" in results:
            by = _stage_values(results[f"{curve}-K4"])
            within[curve] = points_of({k: v[0] for k, v in by.items()})
    across: dict[str, dict[int, list[float]]] = {}
    for m, runs in results.items():
        if m == "lebm":
            continue
        curves = ("adaptive", "tre") if m in ("gaussian", "nce") else (m.split("-")[0],)
        for c in curves:
            vals = [v for r in runs.values() if (v := value(r, "nll")) is not None]
            across.setdefault(c, {})[stages_of(m)] = vals
    panels = [
        ("prior NLL of stage k, K=4 priors", within),
        ("-log p(x), nats, K-stage priors", {c: points_of(v) for c, v in across.items()}),
    ]
    return draw_stage_curves([p for p in panels if p[1]] or panels[1:], title, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", type=Path, help="folder of <model>-seed<s> run folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--fid-n", type=int, default=0, help="FID images (0: no FID)")
    p.add_argument("--out", type=Path, required=True, help="OUT.md, OUT.json and OUT.png")
    p.add_argument("--table", action="store_true", help="only the table, from what is done")
    p.add_argument("--title", default="Likelihoods, end to end")
    p.add_argument(
        "--nll-images", type=int, help="nll: the first N test images (default: all of them)"
    )
    args = p.parse_args(argv)
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for m in args.models:
        for s in args.seeds:
            run = args.runs / f"{m}-seed{s}"
            if not finished(run):
                continue
            if args.table:
                reports = {f.stem: json.loads(f.read_text()) for f in (run / "eval").glob("*.json")}
            else:
                reports = evaluate(run, args.fid_n, progress=False, nll_images=args.nll_images)
            results.setdefault(m, {})[s] = reports
    command = "python benchmarks/likelihood.py " + " ".join(argv or sys.argv[1:])
    write_text_file(args.out.with_suffix(".md"), table(results, args.title, command))
    write_text_file(args.out.with_suffix(".json"), json.dumps(results, indent=1))
    figure(results, args.title, args.out.with_suffix(".png"))
    print(f"wrote {args.out}.md, .json, .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
