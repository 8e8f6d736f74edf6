"""Is a longer refit only a sharper prior? (issue 15)

More refit updates make a ratio prior's samples better long after its NCE loss on held-out rows
has stopped improving (RESULTS, "A held-out stopping rule for the refit stages"). One reading:
the longer fit only makes the log-ratio steeper, which pulls the short chain harder toward
``q``'s modes, as a lower temperature would. This script tests that reading on the priors that
``benchmarks/priors_on_generator.py`` kept in ``OUT``. It multiplies a prior's whole learned
log-ratio ``sum_i f_i`` by ``beta`` (the last layer of every ratio network, scaled), so the
density becomes ``N(0, I) * r(z)^beta`` (:meth:`latent_ebm.priors.Prior.sharpened`, as
``latent-ebm sample --sharpen`` and ``eval --sharpen`` sample it). Then it scores the FID of
the same chain as ``priors_on_generator``:

    python benchmarks/sharpening.py runs/pog-fm --priors nce/4k nce/h --scales 1 1.5 2 \\
        --runs runs/fm-cpu/runs/nce{,-seed1,-seed2}

``beta = 1`` gives back the FID that ``priors_on_generator`` recorded. It also reports the
spread of each prior's log-ratio over the fitted rows (its standard deviation): how sharp the
prior is. If sharpening explains the gain, a short fit scaled by some ``beta`` reaches the
FID of the long fit. Resumable (``OUT/sharpening.jsonl``); writes ``OUT/sharpening.md``
(``--table``: only that, from what is done).

The table also compares the priors fairly: each run (generator) scored at the ``beta`` chosen
on the *other* runs (:func:`latent_ebm.experiments.columns.choose_sharpening`, as ``reproduce
--sharpen`` does; ``beta = 1`` is the FID ``priors_on_generator`` recorded), paired by run
against each ``--against`` prior (default: the first of ``--priors``). With ``--choose-on
RUN...`` each prior's ``beta`` is chosen on those generators instead (they must be scored at
every ``beta`` too), so a choice made on some generators is tested on fresh ones. With
``--beta LABEL=BETA`` that prior is scored at this ``beta`` only, one chosen elsewhere and
recorded (for example on generators whose runs are gone), and the table takes it as chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from latent_ebm.experiments.columns import (
    SHARPENED,
    best_sharpening,
    choose_sharpening,
    sharpen_key,
)
from latent_ebm.experiments.stats import summarize
from latent_ebm.priors.base import gaussian_log_prob
from latent_ebm.refit import refit_rows
from latent_ebm.rundir import load_run

sys.path.insert(0, str(Path(__file__).parent))
from priors_on_generator import (
    load_kept,
    read_results,
    scores,
    scoring_context,
    script_command,
    table,
)


def spread(prior: torch.nn.Module, z: torch.Tensor) -> float:
    """The standard deviation over the rows ``z`` of the prior's log-ratio to ``N(0, I)``."""
    with torch.no_grad():
        return (prior.log_prob(z) - gaussian_log_prob(z)).std().item()


def betas_of(label: str, scales: list[float], given: dict[str, float]) -> list[float]:
    """The ``beta`` at which ``label`` is scored: the one ``given`` for it, else ``scales``."""
    return [given[label]] if label in given else scales


def chosen(
    done: dict,
    recorded: dict,
    labels: list[str],
    scales: list[float],
    runs: list[str],
    choose_on: list[str] | None = None,
    given: dict[str, float] | None = None,
) -> list[dict]:
    """Each run's FID at the ``beta`` chosen on the other runs of its prior, as rows
    ``{run, label, fid, beta}`` (a run without every ``beta`` scored is left out).

    ``choose_on``: choose each prior's ``beta`` on these runs instead, all of them (a held-out
    test: none of ``runs`` takes part in the choice); a prior without every ``beta`` scored on
    every one of them is left out. ``given``: these priors at these ``beta`` (chosen elsewhere),
    whatever ``scales`` and ``choose_on`` say.
    """
    given = given or {}

    def rows_of(label: str, among: list[str]) -> list[dict]:
        rows, betas = [], betas_of(label, scales, given)
        for i, run in enumerate(among):
            fids = {b: done.get((run, label, b), {}).get("fid") for b in betas}
            fids.setdefault(1.0, recorded.get((run, label), {}).get("fid"))
            if None not in fids.values():
                reports = {sharpen_key(b): {"value": v} for b, v in fids.items()}
                rows.append(
                    {"label": label, "holdout": None, "seed": i, "run": run, "reports": reports}
                )
        return rows

    rows = [r for label in labels for r in rows_of(label, runs)]
    if choose_on is None:
        choose_sharpening([r for r in rows if r["label"] not in given], scales)
    for label in labels:
        if label in given:
            best = given[label]
        elif choose_on is None or len(on := rows_of(label, choose_on)) < len(choose_on):
            continue
        else:
            best = best_sharpening(on, scales)
        for r in rows:
            if r["label"] == label:
                value = r["reports"][sharpen_key(best)]["value"]
                r["reports"][SHARPENED] = {"value": value, "sharpen": best}
    picked = []
    for r in rows:
        if SHARPENED in r["reports"]:
            report = r["reports"][SHARPENED]
            picked.append(
                {
                    "run": r["run"],
                    "label": r["label"],
                    "fid": report["value"],
                    "beta": report["sharpen"],
                }
            )
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="an OUT of benchmarks/priors_on_generator.py")
    ap.add_argument("--priors", nargs="+", required=True, metavar="LABEL")
    ap.add_argument("--scales", nargs="+", type=float, default=[], metavar="BETA")
    ap.add_argument("--runs", nargs="+", required=True, help="the generators' run directories")
    ap.add_argument("--fid-n", type=int, default=5000)
    ap.add_argument("--against", nargs="+", metavar="LABEL", help="paired baselines (first prior)")
    ap.add_argument(
        "--choose-on",
        nargs="+",
        metavar="RUN",
        help="choose each prior's beta on these generators (default: on the other --runs)",
    )
    ap.add_argument(
        "--beta",
        nargs="+",
        default=[],
        metavar="LABEL=BETA",
        help="score this prior at this beta only, chosen elsewhere (e.g. on recorded generators)",
    )
    ap.add_argument("--table", action="store_true", help="only write the table of what is done")
    a = ap.parse_args(argv)
    given = {}
    for item in a.beta:
        label, _, value = item.partition("=")
        try:
            given[label] = float(value)
        except ValueError:
            ap.error(f"--beta {item}: expected LABEL=BETA with a number, e.g. adaptive-K4=3")
        if label not in a.priors or given[label] <= 0:
            ap.error(f"--beta {item}: LABEL must be one of --priors and BETA positive")
    if not a.scales and set(given) != set(a.priors):
        ap.error("give --scales, or a --beta for every prior")
    path = a.out / "sharpening.jsonl"
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            done[(r["run"], r["label"], r["beta"])] = r
    ctx: dict = {}
    for run in [*a.runs, *(r for r in a.choose_on or [] if r not in a.runs)]:
        todo = [
            (label, beta)
            for label in a.priors
            for beta in betas_of(label, a.scales, given)
            if (run, label, beta) not in done and not a.table
        ]
        if not todo:
            continue
        cfg, model, _ = load_run(run)
        if not ctx:
            ctx.update(scoring_context(cfg))
        z_q = refit_rows(model, ctx["train_x"], cfg, progress=True)
        for label, beta in todo:
            prior = load_kept(a.out, run, label, cfg).to(model.device)
            model.prior = prior.sharpened(beta)
            score = scores(cfg, model, [cfg.sample.steps], a.fid_n, ctx)["fid"]
            r = {
                "run": run,
                "label": label,
                "beta": beta,
                "fid": score,
                "spread": spread(model.prior, z_q),
            }
            done[(run, label, beta)] = r
            with path.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{run} {label} x{beta}: FID {score:.2f}", file=sys.stderr)
    lines = [
        f"Command: `{script_command(__file__, argv)}`",
        "",
        "| prior | beta | n | FID | spread of the log-ratio over q |",
        "|---|---|---|---|---|",
    ]
    for label in a.priors:
        for beta in betas_of(label, a.scales, given):
            rs = [done[(run, label, beta)] for run in a.runs if (run, label, beta) in done]
            if rs:
                fids = summarize([r["fid"] for r in rs]).format(2)
                spreads = summarize([r["spread"] for r in rs]).format(2)
                lines.append(f"| {label} | {beta:g} | {len(rs)} | {fids} | {spreads} |")
    lines += ["", "Mean ± SE over the runs (generators); FID of the run's test-time chain."]
    recorded = read_results(a.out)
    picked = chosen(done, recorded, a.priors, a.scales, a.runs, a.choose_on, given)
    ceilings = {run: recorded[(run, None)]["ceiling"] for run in a.runs if (run, None) in recorded}
    if picked and len(ceilings) == len(a.runs):
        betas = {
            label: " / ".join(f"{r['beta']:g}" for r in picked if r["label"] == label)
            for label in a.priors
        }
        where = "the other runs" if a.choose_on is None else "the --choose-on runs"
        how = f"chosen on {where} (the best mean FID there, beta 1 included)"
        if given:
            fixed = ", ".join(f"{k} {v:g}" for k, v in given.items())
            how = f"given by --beta ({fixed})" + (
                "" if set(given) == set(a.priors) else f", else {how}"
            )
        lines += [
            "",
            f"Each run at the beta {how}, by run: "
            + "; ".join(f"{label} {b}" for label, b in betas.items() if b)
            + ".",
        ]
        for first in a.against or a.priors[:1]:
            labels = [first, *(x for x in a.priors if x != first)]
            lines += ["", *table(picked, labels, a.runs, ceilings)]
    (a.out / "sharpening.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
