"""Which term of the anomaly score ranks the held-out class (issue 4, Table 2)?

The score ``-log p(x, z) = ||x - g(z)||^2 / (2 sigma^2) - log p(z)`` at a posterior sample has
a generator term and a prior term; the prior term splits further into the Gaussian base
``||z||^2 / 2`` and the learned part (the ratios of an adaptive prior, the EBM of ``lebm``).
For each run (trained with ``--holdout C``) and its last ``--last`` snapshots this takes one
set of posterior samples per snapshot, exactly as ``latent-ebm eval --metric anomaly`` does,
and reports the AUPRC of every term alone next to the full score, and each term's standard
deviation over the test set (how much of the score's spread it makes).

    python benchmarks/anomaly_parts.py runs/repro-cpu/runs/adaptive-K4-holdout0 \\
        runs/repro-cpu/runs/lebm-holdout0 [--last 1]

prints one line per run and snapshot and writes ``RUN/eval/anomaly_parts.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from latent_ebm.config import load_config
from latent_ebm.data import to_float
from latent_ebm.evaluation import auprc, posterior_samples
from latent_ebm.model import LatentEBM
from latent_ebm.rundir import CONFIG, load_data, load_run, snapshots

PARTS = ("score", "generator", "prior", "gaussian", "learned")


def score_parts(
    model: LatentEBM, images: torch.Tensor, z: torch.Tensor, batch_size: int = 500
) -> dict[str, torch.Tensor]:
    """The terms of ``-log p(x, z)`` ``(N,)`` each, keyed by :data:`PARTS`."""
    out: dict[str, list[torch.Tensor]] = {p: [] for p in PARTS}
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = to_float(images[i : i + batch_size]).to(z.device)
            zb = z[i : i + batch_size]
            gen = -model.log_likelihood(x, zb)
            prior = -model.prior.log_prob(zb)
            gauss = zb.pow(2).sum(1) / 2
            for p, v in zip(PARTS, (gen + prior, gen, prior, gauss, prior - gauss), strict=True):
                out[p].append(v.cpu())
    return {p: torch.cat(v) for p, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="run directories trained with --holdout")
    ap.add_argument("--last", type=int, default=1, help="snapshots per run, the latest")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    for run in a.runs:
        cfg = load_config(run / CONFIG)
        if cfg.data.holdout is None:
            raise SystemExit(f"error: {run} was trained on every class; pass a --holdout run")
        data = load_data(cfg)
        anomalous = (data.test_y == cfg.data.holdout).numpy()
        post = {"steps": cfg.train.post_steps, "step_size": cfg.train.post_step_size}
        rows = []
        for path in (snapshots(run) or [run / "checkpoint.pt"])[-a.last :]:
            _, model, state = load_run(run, checkpoint=path)
            # batch 500 as in evaluate_run: the chain noise depends on the batch index
            z = posterior_samples(model, data.test_x, **post, seed=a.seed, batch_size=500)
            parts = score_parts(model, data.test_x, z)
            row = {"iteration": state["iteration"]}
            row.update({p: auprc(anomalous, v.numpy()) for p, v in parts.items()})
            row["std"] = {p: float(v.std()) for p, v in parts.items()}
            rows.append(row)
            cells = ", ".join(f"{p} {row[p]:.3f}" for p in PARTS)
            spread = ", ".join(f"{p} {row['std'][p]:.1f}" for p in PARTS)
            print(f"{run} @ {row['iteration']}: AUPRC {cells}; std over the test set {spread}")
        summary = {p: float(np.mean([r[p] for r in rows])) for p in PARTS}
        out = run / "eval" / "anomaly_parts.json"
        out.parent.mkdir(exist_ok=True)
        report = {"holdout": cfg.data.holdout, **post, "seed": a.seed, "mean": summary}
        out.write_text(json.dumps({**report, "snapshots": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
