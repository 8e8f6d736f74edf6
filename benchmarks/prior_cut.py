"""FID of a trained adaptive (or TRE-shaped) prior cut to its first k ratios, k = 0..K (issue 4).

Same generator, same test-time sampler (``sample.steps`` Langevin steps of ``sample.step_size``
on the cut prior), classifier features: how much each stage's ratio adds to sample quality.

    python benchmarks/prior_cut.py runs/repro-cpu/runs/adaptive-K4 [--n 10000]

prints one line per k and writes ``RUN/eval/prior_cut.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latent_ebm.evaluation import fid
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.memory import MemoryBank
from latent_ebm.rundir import load_data, load_run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="run directory of an adaptive prior")
    ap.add_argument("--n", type=int, default=10_000, help="generated images of each FID")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg, model, _ = load_run(a.run)
    if not hasattr(model.prior, "num_frozen"):
        raise SystemExit(f"error: {a.run} has a '{cfg.prior.kind}' prior, not a staged one")
    data = load_data(cfg)
    extractor = classifier_features(data, progress=True)
    chain = {"steps": cfg.sample.steps, "step_size": cfg.sample.step_size}
    values = []
    for k in range(len(model.prior.ratios) + 1):
        model.prior.set_stage(k, MemoryBank(1, model.nz, 0))  # the bank is not used here
        values.append(fid(model, data.train_x, extractor, n=a.n, seed=a.seed, **chain))
        print(f"{a.run}: prior with the first {k} ratios: FID {values[-1]:.2f}", flush=True)
    out = a.run / "eval" / "prior_cut.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"n": a.n, "seed": a.seed, **chain, "fid": values}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
