"""Several priors fitted post hoc on the same trained generators (issue 15): the prior
estimators compared with everything else held fixed.

``gaussian``, ``nce`` and ``tre`` runs (and ``adaptive`` with ``prior.inference=gaussian``)
train bit-identical generators: their training-time posterior chains all run under
``N(0, I)`` (README, "Why the adaptive prior cannot win on digits: the ceiling"). On such a
generator the prior is whatever the refit (``prior.refit_*``, ARCHITECTURE §4) learns from the
aggregate posterior, so the priors can be compared on one generator, paired by seed:

    python benchmarks/priors_on_generator.py runs/fm-cpu/runs/nce{,-seed1,-seed2} \\
        --priors nce adaptive-K4 tre-K4 --set prior.refit_steps=16000 \\
        --set adaptive:prior.refit_sampler=chain --fid-n 5000 --out runs/pog

For every run (a generator), the script draws the aggregate posterior once
(:func:`latent_ebm.refit.aggregate_posterior`, the run's own chain, ``prior.refit_samples``
rows); every prior of ``--priors`` is built from the run's config with its own settings
(``kind`` or ``kind-K<stages>``, optionally ``/tag`` to tell two settings of one kind apart),
re-initialised and refitted on those same rows, and scored by the FID of ``--fid-n`` samples of
the run's test-time chain (``sample.steps`` of ``sample.step_size``) in classifier features,
seeded by the run's ``train.seed``. ``--set KEY=VALUE`` applies to every prior, ``--set
SCOPE:KEY=VALUE`` to the priors whose label or kind is ``SCOPE``. ``gaussian`` is ``N(0, I)``
(nothing to refit). The ceiling, the FID of the generator at the aggregate posterior rows
themselves, is reported per run.

Resumable: each (run, prior) result is a line of ``OUT/results.jsonl``; a rerun skips those
already there. Writes ``OUT/priors_on_generator.{md,json}``: mean ± standard error over the
runs, and each prior against the first, paired by run (the mean of the per-run differences
and its standard error) and unpaired (the project's criterion).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from latent_ebm.config import apply_overrides, validate
from latent_ebm.evaluation import fid, fid_at
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.evaluation.metrics import reference_stats
from latent_ebm.experiments.stats import CRITERION, Summary, beats, summarize
from latent_ebm.priors import PRIORS, build_prior
from latent_ebm.refit import aggregate_posterior, own_chain, refit_settings
from latent_ebm.rundir import load_data, load_run


def prior_settings(label: str, sets: list[str]) -> list[str]:
    """The config settings of the prior ``label`` (``kind``, ``kind-K<k>``, ``.../tag``): its
    kind and stages, then the ``--set`` settings that apply to it, in order."""
    name = label.split("/")[0]
    kind, _, k = name.partition("-K")
    if kind not in PRIORS:
        raise SystemExit(f"error: --priors {label}: unknown kind '{kind}' (one of {list(PRIORS)})")
    out = [f"prior.kind={kind}"] + ([f"prior.stages={int(k)}"] if k else [])
    for s in sets:
        scope, sep, setting = s.partition(":")
        if not sep:
            out.append(s)
        elif scope in (label, kind):
            out.append(setting)
    return out


def paired(a: list[float], b: list[float]) -> tuple[Summary, str]:
    """The per-run differences ``a - b`` (lower is better) and the verdict of "a beats b":
    holds when their mean is below ``-2 se``, fails above ``2 se``, else not resolved."""
    s = summarize([x - y for x, y in zip(a, b, strict=True)])
    if s.n < 2:
        return s, "not resolved"
    return s, "holds" if s.mean < -2 * s.se else "fails" if s.mean > 2 * s.se else "not resolved"


def _measure(run: str, label: str, sets: list[str], z_q: Any, a: argparse.Namespace, ctx: dict):
    cfg, model, _ = load_run(run)
    cfg = validate(apply_overrides(copy.deepcopy(cfg), prior_settings(label, sets)))
    model.prior = build_prior(cfg).to(model.device)
    t = time.time()
    losses = (
        model.prior.refit(z_q, refit_settings(cfg), progress=True) if model.prior.refits else []
    )
    refit_s = time.time() - t
    chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
    value = fid(
        model,
        ctx["train_x"],
        ctx["ext"],
        n=a.fid_n,
        seed=cfg.train.seed,
        progress=True,
        reference=ctx["ref"],
        **chain,
    )
    return {
        "run": run,
        "label": label,
        "fid": value,
        "refit_losses": losses,
        "refit_s": round(refit_s, 1),
    }


def table(results: list[dict], labels: list[str], runs: list[str], ceilings: dict) -> list[str]:
    """The Markdown: each prior's FID over the runs, and against the first prior."""
    by = {(r["run"], r["label"]): r["fid"] for r in results}
    first = [by[(run, labels[0])] for run in runs]
    lines = [
        f"| prior | FID (mean ± SE, {len(runs)} generators) | per run | vs {labels[0]}, paired "
        "(mean ± SE of differences) | beats, paired | beats, unpaired |",
        "|---|---|---|---|---|---|",
    ]
    for label in labels:
        vals = [by[(run, label)] for run in runs]
        s = summarize(vals)
        cells = [label, s.format(2), " / ".join(f"{v:.2f}" for v in vals)]
        if label == labels[0]:
            cells += ["-", "-", "-"]
        else:
            d, verdict = paired(vals, first)
            cells += [d.format(2), verdict, beats(s, summarize(first))]
        lines.append("| " + " | ".join(cells) + " |")
    c = summarize([ceilings[run] for run in runs])
    lines += [
        "",
        f"Ceiling (FID of the generator at the aggregate posterior rows): {c.format(2)} "
        f"({' / '.join(f'{ceilings[r]:.2f}' for r in runs)}).",
        "",
        "Paired: holds when the mean of the per-run differences is more than twice its standard "
        f"error in the prior's favour. Unpaired: {CRITERION}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="trained run directories (generators)")
    ap.add_argument("--priors", nargs="+", required=True, metavar="LABEL")
    ap.add_argument("--set", action="append", default=[], metavar="[SCOPE:]KEY=VALUE")
    ap.add_argument("--fid-n", type=int, default=5000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    for label in a.priors:
        prior_settings(label, a.set)  # bad labels fail before any work
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.jsonl"
    results = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    done = {(r["run"], r["label"]) for r in results}
    ceilings: dict[str, float] = {r["run"]: r["ceiling"] for r in results if "ceiling" in r}
    ctx: dict[str, Any] = {}
    for run in a.runs:
        todo = [label for label in a.priors if (run, label) not in done]
        if not todo and run in ceilings:
            continue
        cfg, model, _ = load_run(run)
        if not ctx:
            data = load_data(cfg)
            ext = classifier_features(data, progress=True)
            ref = reference_stats(data.train_x, ext, 500, True)
            ctx = {"train_x": data.train_x, "ext": ext, "ref": ref}
        start, steps, step_size = own_chain(cfg)
        z_q = aggregate_posterior(
            model,
            ctx["train_x"],
            cfg.prior.refit_samples,
            steps,
            step_size,
            seed=refit_settings(cfg).seed,
            progress=True,
            amortised=start == "amortised",
        )
        if run not in ceilings:
            ceilings[run] = fid_at(model, z_q, ctx["train_x"], ctx["ext"], reference=ctx["ref"])
            results.append({"run": run, "label": None, "ceiling": ceilings[run]})
            path.write_text("".join(json.dumps(r) + "\n" for r in results))
        for label in todo:
            r = _measure(run, label, a.set, z_q, a, ctx)
            print(f"{run} {label}: FID {r['fid']:.2f} (refit {r['refit_s']} s)", file=sys.stderr)
            results.append(r)
            path.write_text("".join(json.dumps(r) + "\n" for r in results))
    scored = [r for r in results if r["label"] is not None]
    command = "python benchmarks/priors_on_generator.py " + " ".join(argv or sys.argv[1:])
    lines = [f"Command: `{command}`", "", *table(scored, a.priors, a.runs, ceilings)]
    (a.out / "priors_on_generator.md").write_text("\n".join(lines) + "\n")
    (a.out / "priors_on_generator.json").write_text(
        json.dumps({"command": command, "results": results}, indent=2, allow_nan=False) + "\n"
    )
    print("\n".join(lines))
    return 0 if all(math.isfinite(r["fid"]) for r in scored) else 1


if __name__ == "__main__":
    sys.exit(main())
