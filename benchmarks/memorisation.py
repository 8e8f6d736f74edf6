"""Do refitted priors memorise the rows they were fitted on? (issue 15)

The post-hoc refit (ARCHITECTURE §4) fits each prior on a finite set of aggregate-posterior
rows, and FID against the training images would reward a prior that only reproduced those rows.
For every prior that ``benchmarks/priors_on_generator.py`` kept in ``OUT``, this script draws
``--n`` samples of the run's test-time chain and measures the median distance from each sample
to its nearest *fitted* row (the run's ``refit_rows``, the rows the priors learned from) and
to its nearest *unseen* row (as many posterior samples of the test images, by the same chain).
Their ratio is about 1 for a prior that generalises and falls towards 0 for one that copies its
rows (an exact copy gives 0):

    python benchmarks/memorisation.py runs/pog-fm --priors gaussian nce adaptive-K4 \\
        --runs runs/fm-cpu/runs/nce{,-seed1,-seed2}

Writes ``OUT/memorisation.md``: each prior's FID (from ``OUT/results.jsonl``), the two
distances and the ratio, mean ± SE over the runs; ``OUT/memorisation.json`` has every run's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from latent_ebm.experiments.stats import summarize
from latent_ebm.refit import aggregate_posterior, own_chain, refit_rows
from latent_ebm.rundir import load_data, load_run
from latent_ebm.sampling import sample_latents

sys.path.insert(0, str(Path(__file__).parent))
from priors_on_generator import load_kept, read_results, script_command

_UNSEEN_SEED = 1  # the seed of the test images' posterior chains (the refit rows use 0)


def nearest(samples: torch.Tensor, rows: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """The median over ``samples`` of the distance to the nearest of ``rows``."""
    d = [
        torch.cdist(samples[i : i + chunk], rows).min(1).values
        for i in range(0, len(samples), chunk)
    ]
    return torch.cat(d).median()


def memorisation(samples: torch.Tensor, fitted: torch.Tensor, unseen: torch.Tensor) -> dict:
    """The nearest-row distances of ``samples`` to the ``fitted`` and to the ``unseen`` rows,
    and their ratio."""
    a, b = nearest(samples, fitted).item(), nearest(samples, unseen).item()
    return {"to_fitted": a, "to_unseen": b, "ratio": a / b}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="an OUT of benchmarks/priors_on_generator.py")
    ap.add_argument("--priors", nargs="+", required=True, metavar="LABEL")
    ap.add_argument("--runs", nargs="+", required=True, help="the generators' run directories")
    ap.add_argument("--n", type=int, default=5000, help="chain samples per prior")
    a = ap.parse_args(argv)
    results = read_results(a.out)
    rows: dict[str, list[dict]] = {label: [] for label in a.priors}
    for run in a.runs:
        cfg, model, _ = load_run(run)
        data = load_data(cfg)
        fitted = refit_rows(model, data.train_x, cfg, progress=True)
        start, steps, step_size = own_chain(cfg)
        unseen = aggregate_posterior(
            model,
            data.test_x,
            len(fitted),
            steps,
            step_size,
            seed=_UNSEEN_SEED,
            amortised=start == "amortised",
        )
        for label in a.priors:
            model.prior = load_kept(a.out, run, label, cfg).to(model.device)
            z = sample_latents(
                model,
                a.n,
                steps=cfg.sample.steps,
                step_size=cfg.sample.step_size,
                seed=cfg.train.seed,
            )
            m = memorisation(z, fitted, unseen) | {
                "run": run,
                "fid": results.get((run, label), {}).get("fid"),
            }
            rows[label].append(m)
            print(f"{run} {label}: ratio {m['ratio']:.3f}", file=sys.stderr)
    lines = [
        f"Command: `{script_command(__file__, argv)}`",
        "",
        "| prior | n | FID | to a fitted row | to an unseen row | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for label, ms in rows.items():
        fid = [m["fid"] for m in ms if m["fid"] is not None]
        cells = [summarize(fid).format(2) if fid else "-"]
        cells += [
            summarize([m[k] for m in ms]).format(3) for k in ("to_fitted", "to_unseen", "ratio")
        ]
        lines.append(f"| {label} | {len(ms)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Median distance in latent space from each chain sample to its nearest row: the rows "
        "the prior was fitted on, or as many posterior samples of test images. A ratio near 1: "
        "no sign of memorisation; an exact copy of the fitted rows gives 0.",
    ]
    (a.out / "memorisation.md").write_text("\n".join(lines) + "\n")
    (a.out / "memorisation.json").write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
