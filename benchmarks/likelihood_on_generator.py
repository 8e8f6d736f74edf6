"""Priors on the same generator, judged by likelihood (issue 31): the priors that
``benchmarks/priors_on_generator.py`` refitted and kept in ``OUT``, each normalised by SMC
along its stages and scored by its cross-entropy on the same samples.

On one generator every prior sees the same posterior samples of the test images (the run's
own chain, drawn once per run), so the difference of two priors' NLL is the difference of their
``KL(q || p)``: the comparison is paired by run. ``gaussian`` is ``N(0, I)`` (exact); ``own``
is the run's own trained prior (paper mode when the run was trained with
``refit.steps=0``).

    python benchmarks/likelihood_on_generator.py runs/pog /work/runs/lik/digits/nce-seed{0,1,2} \\
        --priors own gaussian nce adaptive-K4 tre-K4 adaptive-K4/chain

For each (run, prior): ``log Z_k`` of every stage with its standard error and smallest ESS,
the NLL of every stage, and the FID of ``--fid-n`` SMC samples at the budget of the run's
test-time chain (``sample.steps`` gradient evaluations), beside the chain's FID that
``priors_on_generator`` recorded. Resumable (``OUT/likelihood.jsonl``); writes
``OUT/likelihood.md``, ``OUT/likelihood.json`` and ``OUT/likelihood.png`` (every stage's NLL of
each multi-stage prior) (``--table``: only those).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from latent_ebm.evaluation import fid
from latent_ebm.evaluation.likelihood import prior_nll, prior_normalisers
from latent_ebm.evaluation.metrics import posterior_samples
from latent_ebm.evaluation.request import SMCSettings
from latent_ebm.experiments.figures import draw_stage_curves, points_of
from latent_ebm.experiments.stats import CRITERION, paired, summarize
from latent_ebm.priors.gaussian import GaussianPrior
from latent_ebm.rundir import load_run
from latent_ebm.rundir.layout import write_text_file

sys.path.insert(0, str(Path(__file__).parent))
from priors_on_generator import load_kept, read_results, scoring_context, script_command


def prior_of(out: Path, run: str, label: str, cfg: Any, model: Any) -> Any:
    """The prior ``label`` on ``run``: ``own``, ``gaussian`` or a kept refitted one."""
    if label == "own":
        return model.prior
    if label == "gaussian":
        return GaussianPrior(cfg.model.nz)
    return load_kept(out, run, label, cfg).to(model.device)


def measure(out: Path, run: str, labels: list[str], fid_n: int, done: dict, save: Any) -> None:
    """Every missing (run, label) result, with one set of test posterior samples."""
    todo = [label for label in labels if (run, label) not in done]
    if not todo:
        return
    cfg, model, _ = load_run(run)
    ctx = scoring_context(cfg)
    z = posterior_samples(
        model, ctx["test_x"], cfg.train.post_steps, cfg.train.post_step_size, seed=cfg.train.seed
    )
    for label in todo:
        model.prior = prior_of(out, run, label, cfg, model)
        norm = prior_normalisers(model.prior, SMCSettings(), cfg.train.seed)
        row: dict[str, Any] = {
            "run": run,
            "label": label,
            "stages": prior_nll(model.prior, z, norm),
            "converged": norm.converged,
        }
        if fid_n:
            row["fid_smc"] = fid(
                model, ctx["train_x"], ctx["ext"], n=fid_n, seed=cfg.train.seed,
                reference=ctx["ref"], method="smc", steps=cfg.sample.steps,
                step_size=cfg.sample.step_size,
            )  # fmt: skip
        done[(run, label)] = row
        save()
        print(f"{run} {label}: prior NLL {row['stages'][-1]['nll']:.3f}", file=sys.stderr)


def converged(row: dict) -> bool:
    """The row's ``converged`` (:class:`~latent_ebm.evaluation.likelihood.Normalisers`), or,
    for a row written before it was kept, the same rule on its stages' drift and standard
    error (the drift's standard error taken as ``sqrt(2)`` times the estimate's)."""
    if "converged" in row:
        return bool(row["converged"])
    return all(
        abs(s["drift"]) <= 0.1 + 3 * 2**0.5 * s["log_z_se"] and s["log_z_se"] <= 0.25
        for s in row["stages"]
    )


def table(done: dict, chain: dict, labels: list[str], runs: list[str]) -> list[str]:
    """Each prior's NLL and ``log Z_K`` over the runs, against the first label, paired."""
    first = labels[0]
    lines = [
        f"| prior | runs | prior NLL (↓) | vs {first}, paired | verdict (lower) | log Z_K | "
        "smallest ESS / N | log Z converged (runs) | FID, chain | FID, SMC at equal cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        have = [r for r in runs if (r, label) in done]
        if not have:
            continue
        nll = [done[(r, label)]["stages"][-1]["nll"] for r in have]
        cells = [label, str(len(have)), summarize(nll).format(2)]
        both = [r for r in have if (r, first) in done]
        if label != first and len(both) >= 2:
            a = [done[(r, label)]["stages"][-1]["nll"] for r in both]
            d, verdict = paired(a, [done[(r, first)]["stages"][-1]["nll"] for r in both])
            cells += [d.format(2), verdict]
        else:
            cells += ["-", "-"]
        last = [done[(r, label)]["stages"][-1] for r in have]
        cells += [summarize([s["log_z"] for s in last]).format(2)]
        ess = [min(s["ess"] for s in done[(r, label)]["stages"]) for r in have]
        cells += [summarize(ess).format(3), f"{sum(converged(done[(r, label)]) for r in have)}"]
        fids = [chain[(r, label)]["fid"] for r in have if (r, label) in chain]
        cells += [summarize(fids).format(2) if fids else "-"]
        smc = [done[(r, label)]["fid_smc"] for r in have if "fid_smc" in done[(r, label)]]
        cells += [summarize(smc).format(2) if smc else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Every stage (mean ± SE over the runs):", ""]
    lines += ["| prior | stage | prior NLL | log Z_k |", "|---|---|---|---|"]
    for label in labels:
        have = [done[(r, label)]["stages"] for r in runs if (r, label) in done]
        for k in range(len(have[0]) if have else 0):
            nll = summarize([s[k]["nll"] for s in have]).format(2)
            lines.append(f"| {label} | {k} | {nll} | "
                         f"{summarize([s[k]['log_z'] for s in have]).format(2)} |")  # fmt: skip
    return [*lines, "", f"Paired: as `paired` in the package. Unpaired: {CRITERION}"]


def figure(done: dict, labels: list[str], runs: list[str], path: Path) -> Path:
    """Each multi-stage prior's NLL at every stage ``k``, mean ± SE over the runs: on one
    generator, stage 0 is ``N(0, I)`` for all, so the curves share their first point."""
    curves = {}
    for label in labels:
        have = [done[(r, label)]["stages"] for r in runs if (r, label) in done]
        if have and len(have[0]) > 2:
            by_stage = {k: [s[k]["nll"] for s in have] for k in range(len(have[0]))}
            curves[label] = points_of(by_stage)
    title = f"Same generators, {len(runs)} runs (± 1 SE)"
    return draw_stage_curves([("prior NLL of stage k, nats", curves)], title, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="the OUT folder of priors_on_generator.py")
    ap.add_argument("runs", nargs="+", help="the trained runs (generators)")
    ap.add_argument("--priors", nargs="+", required=True, metavar="LABEL")
    ap.add_argument("--fid-n", type=int, default=5000, help="SMC FID images (0: none)")
    ap.add_argument("--table", action="store_true", help="only write the table")
    a = ap.parse_args(argv)
    path = a.out / "likelihood.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    done = {(r["run"], r["label"]): r for r in map(json.loads, lines)}

    def save() -> None:
        write_text_file(path, "".join(json.dumps(r) + "\n" for r in done.values()))

    for run in [] if a.table else a.runs:
        measure(a.out, run, a.priors, a.fid_n, done, save)
    command = script_command(__file__, argv)
    md = [f"Command: `{command}`", "", *table(done, read_results(a.out), a.priors, a.runs)]
    write_text_file(a.out / "likelihood.md", "\n".join(md) + "\n")
    write_text_file(a.out / "likelihood.json", json.dumps(list(done.values()), indent=1))
    figure(done, a.priors, a.runs, a.out / "likelihood.png")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
