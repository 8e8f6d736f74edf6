"""Issue 32's gates: does a candidate recipe beat ``recipe: paper``, seed by seed?

Two folders of run folders, ``PAPER/<model>-seed<s>`` and ``CANDIDATE/<model>-seed<s>``
(trained with ``latent-ebm train --recipe ...``, or refitted by ``latent-ebm refit`` from the
paper runs: then each pair shares its generator), are scored by the library's own reports,
computed where missing and kept in each run's ``eval/``:

- ``fid``: FID of ``--fid-n`` samples of the run's 100-step test-time chain (classifier
  features); ``fid-500steps``: the same with 500 steps; ``fid-smc``: the SMC sampler along
  the prior's stages at the chain's budget (the exact sampler of issue 31);
- ``recon``: the test reconstruction MSE; ``prior-nll``: the test aggregate posterior's
  cross-entropy under the normalised prior (its last stage).

    python benchmarks/recipe_gates.py --paper /work/runs/lik/digits \\
        --candidate /work/runs/lik/digits-refit --model adaptive-K4 --seeds 0 1 2 3 4 \\
        --out benchmarks/seeds/recipe-gates-digits-refit

The gates, each paired by seed with the project's criterion (``stats.paired``, ``within``):
the candidate's FID lower by more than 2 SE; its recon MSE and prior NLL no worse; its
500-step and SMC FIDs within 10% of its 100-step FID. The training time gate is measured
apart (``--time NOTE --time-verdict V`` put the measurement and its verdict in the table).
Writes ``OUT.md`` and ``OUT.json``; ``--table``: only the table, from the reports there are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from latent_ebm.experiments.stats import CRITERION, Summary, no_worse, summarize, within
from latent_ebm.rundir.layout import write_text_file

sys.path.insert(0, str(Path(__file__).parent))
from likelihood import paired_present, reports_of
from priors_on_generator import script_command

REPORTS = {  # report name -> evaluate_run settings (fid's n from --fid-n)
    "fid": {"metric": "fid"},
    "fid-500steps": {"metric": "fid", "steps": 500},
    "fid-smc": {"metric": "fid", "method": "smc"},
    "recon": {"metric": "recon"},
    "prior-nll": {"metric": "prior-nll"},
}


def values_of(run: Path, fid_n: int, compute: bool) -> dict[str, float]:
    """The values of :data:`REPORTS` for ``run`` (prior-nll: its last stage), each computed
    where missing when ``compute`` (:func:`likelihood.reports_of`)."""
    wanted = {k: {**kw, "n": fid_n} if kw["metric"] == "fid" else kw for k, kw in REPORTS.items()}
    reports = reports_of(run, wanted, progress=False, compute=compute)
    return {
        name: r["stages"][-1]["nll"] if name == "prior-nll" else r["value"]
        for name, r in reports.items()
    }


def gates(paper: list[dict], cand: list[dict]) -> list[tuple[str, Summary | None, str]]:
    """Each gate: its name, the paired summary (differences candidate - paper, or the
    candidate's ratios) and its verdict, over the seeds where both arms have the values."""

    def both(key: str) -> tuple[list[float | None], list[float | None]]:
        return [c.get(key) for c in cand], [p.get(key) for p in paper]

    out: list[tuple[str, Summary | None, str]] = []
    out.append(("FID lower than paper's (100-step chain)", *paired_present(*both("fid"))))
    for key, name in (("recon", "recon MSE"), ("prior-nll", "prior NLL")):
        d, _ = paired_present(*both(key))
        verdict = "not resolved" if d is None else no_worse(d, Summary(0.0, 0.0, d.n))
        out.append((f"{name} no worse than paper's", d, verdict))
    for key, name in (("fid-500steps", "500-step"), ("fid-smc", "SMC")):
        ratios = [x[key] / x["fid"] for x in cand if key in x and "fid" in x]
        s, verdict = within(ratios) if len(ratios) > 1 else (None, "not resolved")
        out.append((f"{name} FID within 10% of its 100-step FID (ratio)", s, verdict))
    return out


def table(paper: list[dict], cand: list[dict], seeds: list[int], a: Any, command: str) -> str:
    keys = list(REPORTS)
    lines = [f"## {a.title}", "", f"Command: `{command}`", ""]
    lines += ["| arm | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for arm, rows in (("paper", paper), ("candidate", cand)):
        cells = []
        for k in keys:
            v = [r[k] for r in rows if k in r]
            cells.append(summarize(v).format(4 if k == "recon" else 2) if v else "")
        lines.append(f"| {arm} | {len(rows)} | " + " | ".join(cells) + " |")
    lines += ["", "| gate | paired over seeds (mean ± SE) | verdict |", "|---|---|---|"]
    for name, s, verdict in gates(paper, cand):
        cell = "" if s is None else s.format(4 if name.startswith("recon") else 3)
        lines.append(f"| {name} | {cell} | {verdict} |")
    if a.time:
        lines.append(f"| training wall time no longer than paper's | {a.time} | {a.time_verdict} |")
    lines += [
        "",
        f"Seeds: {', '.join(map(str, seeds))}. Paired differences are candidate minus paper "
        f"(negative: the candidate lower). {CRITERION}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper", type=Path, required=True, help="folder of the paper-recipe runs")
    p.add_argument("--candidate", type=Path, required=True, help="folder of the candidate's")
    p.add_argument("--model", default="adaptive-K4", help="the runs' <model> name")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--fid-n", type=int, default=5000)
    p.add_argument("--out", type=Path, required=True, help="OUT.md and OUT.json")
    p.add_argument("--title", default="The recipe gates")
    p.add_argument("--time", help="the training-time measurement, as a note for the table")
    p.add_argument(
        "--time-verdict", default="", help="the time gate's verdict, by the measurement's own rule"
    )
    p.add_argument("--table", action="store_true", help="only the table, from what is done")
    a = p.parse_args(argv)
    paper, cand = [], []
    for s in a.seeds:
        for folder, rows in ((a.paper, paper), (a.candidate, cand)):
            rows.append(values_of(folder / f"{a.model}-seed{s}", a.fid_n, not a.table))
    command = script_command(__file__, argv)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_file(a.out.with_suffix(".md"), table(paper, cand, a.seeds, a, command))
    record = {"command": command, "seeds": a.seeds, "paper": paper, "candidate": cand}
    write_text_file(a.out.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    print(a.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
