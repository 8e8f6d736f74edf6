"""How accurate is SMC's ``log Z`` on trained priors? (issue 31's target: doubling the
particles moves ``log Z`` by less than 0.05 nats on a trained digits run.)

For each run, the final prior's ``log Z_K`` by :func:`~latent_ebm.evaluation.likelihood.
prior_normalisers` at ``N`` and ``2N`` particles (the settings of ``eval --metric prior-nll``
otherwise, independent seeds), and the wall time of each:

    python benchmarks/smc_accuracy.py /work/runs/lik/digits/{adaptive-K4,tre-K4,nce,lebm}-seed0 \\
        --particles 2000 --out benchmarks/seeds/smc-accuracy-digits.md

Writes a Markdown table to ``--out`` and prints it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from latent_ebm.evaluation.likelihood import prior_normalisers
from latent_ebm.evaluation.request import SMCSettings
from latent_ebm.rundir import load_run
from latent_ebm.rundir.layout import write_text_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--particles", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    command = "python benchmarks/smc_accuracy.py " + " ".join(argv or sys.argv[1:])
    lines = [
        f"Command: `{command}`",
        "",
        f"| run | log Z_K, N = {a.particles} | log Z_K, 2N | |difference| | its SE | "
        "smallest ESS / N | seconds, N | seconds, 2N |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in a.runs:
        _, model, _ = load_run(run)
        out = []
        for n, seed in ((a.particles, 0), (2 * a.particles, 1)):
            t = time.perf_counter()
            norm = prior_normalisers(model.prior, replace(SMCSettings(), particles=n), seed)
            out.append((norm, time.perf_counter() - t))
        (one, t1), (two, t2) = out
        diff = abs(float(one.log_z[-1] - two.log_z[-1]))
        se = float((one.se[-1] ** 2 + two.se[-1] ** 2).sqrt())
        lines.append(
            f"| {run.name} | {one.log_z[-1]:.4f} ± {one.se[-1]:.4f} | "
            f"{two.log_z[-1]:.4f} ± {two.se[-1]:.4f} | {diff:.4f} | {se:.4f} | "
            f"{float(one.ess.min()):.3f} | {t1:.1f} | {t2:.1f} |"
        )
    write_text_file(a.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
