"""The options of every ``latent-ebm`` subcommand (:func:`build_parser`); :mod:`latent_ebm.cli`
validates them and calls the library. Choices that need the library (presets, precisions) are
imported inside :func:`build_parser`, so that importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path

from latent_ebm.errors import LatentEBMError

__all__ = ["build_parser", "seed_list"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (``error: ...``) instead of usage plus message."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _add_set(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable ``--set KEY=VALUE`` option, collected in ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text
    )


_SEEDS_HELP = (
    "train every model under several seeds: one value N means seeds 0..N-1, several values are "
    "the seeds; tables give mean ± standard error"
)


def seed_list(seed: int | None, seeds: list[int] | None) -> list[int]:
    """The seeds of ``--seed S`` (one seed), ``--seeds N`` (seeds 0..N-1) or ``--seeds A B ...``
    (those seeds); default seed 0.

    Raises:
        LatentEBMError: both options given, ``N < 1`` or a negative seed.
    """
    if seed is not None and seeds is not None:
        raise LatentEBMError("give --seed S (one seed) or --seeds, not both")
    if seeds is None:
        seeds = [0 if seed is None else seed]
    elif len(seeds) == 1:
        if seeds[0] < 1:
            raise LatentEBMError(f"--seeds N needs N >= 1, got {seeds[0]}")
        seeds = list(range(seeds[0]))
    if min(seeds) < 0:
        raise LatentEBMError(f"--seed must be >= 0, got {min(seeds)}")
    return seeds


def _add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint last|best``: the model of ``checkpoint.pt`` or of ``best.pt``."""
    parser.add_argument(
        "--checkpoint",
        choices=("last", "best"),
        default="last",
        help="last (checkpoint.pt, default) or best (best.pt: the lowest in-training FID of a "
        "run trained with train.keep_best=fid)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from latent_ebm.config import PRESETS
    from latent_ebm.config.recipes import DEFAULT_RECIPE, RECIPES
    from latent_ebm.precision import PRECISIONS

    parser = _Parser(
        prog="latent-ebm",
        description="Generator models with a latent EBM prior learned by adaptive multi-stage "
        "density ratio estimation.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (Algorithm 1) into a run directory")
    t.add_argument("--preset", help=f"named preset: {', '.join(PRESETS)} (default: digits)")
    t.add_argument("--config", type=Path, help="YAML file of overrides (sections as config.yaml)")
    _add_set(t, "override one field, e.g. --set train.iters=3000 (repeatable)")
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--force", action="store_true", help="delete an existing run in --out first")
    t.add_argument("--max-iters", type=int, help="stop after this many iterations in all")
    t.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    t.add_argument(
        "--recipe",
        choices=list(RECIPES),
        help=f"shorthand for --set train.recipe=NAME (default {DEFAULT_RECIPE}; paper: "
        "Algorithm 1 as the paper runs it, no refit); a field set by hand still wins",
    )
    t.add_argument("--data-dir", type=Path, help="folder of the data files")
    t.add_argument(
        "--holdout",
        type=int,
        metavar="C",
        help="anomaly protocol: hold class C out (sets data.holdout; keeps 20 snapshots "
        "unless train.keep_every is set)",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved config, parameter counts, operations and estimated time; stop",
    )
    t.add_argument(
        "--throughput",
        metavar="RATE",
        help="--dry-run: sustained operations a second for the time estimate, e.g. 50T",
    )
    t.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after training, make the figures and the test reconstruction MSE",
    )
    t.add_argument(
        "--tensorboard",
        action=argparse.BooleanOptionalAction,
        help="also write TensorBoard events in --out/tensorboard (sets train.tensorboard; "
        "needs pip install latent-ebm[tensorboard])",
    )
    t.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )

    s = sub.add_parser("sample", help="sample images from a trained run (PNG grid and .npz)")
    s.add_argument("run", type=Path, help="run directory")
    s.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    s.add_argument(
        "--method",
        default="langevin",
        help="langevin (prior chain), mala (Metropolis-adjusted chain: exact), sir, or smc "
        "(sequential Monte Carlo along the prior's stages; --steps: its gradient evaluations "
        "per sample)",
    )
    s.add_argument("--steps", type=int, help="prior-chain steps (default: the run's sample.steps)")
    s.add_argument("--step-size", type=float, help="prior-chain step size (sample.step_size)")
    s.add_argument("--proposals", type=int, default=10, help="SIR proposals per sample (M)")
    s.add_argument(
        "--sharpen",
        type=float,
        default=1.0,
        metavar="BETA",
        help="sample N(0, I) r(z)^BETA: the prior's learned part times BETA (1: as learned; "
        "above 1: sharper, beyond the paper)",
    )
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--out", type=Path, help="output prefix (default RUN/samples/<method>[-best])")
    _add_checkpoint(s)
    s.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )

    e = sub.add_parser("eval", help="evaluate a trained run: recon, fid, anomaly, prior-nll or nll")
    e.add_argument("run", type=Path, help="run directory")
    e.add_argument(
        "--metric",
        required=True,
        help="recon | fid | anomaly | prior-nll (the test aggregate posterior's cross-entropy "
        "under every stage of the normalised prior) | nll (-log p(x) of the test split)",
    )
    e.add_argument(
        "--n",
        type=int,
        default=50_000,
        help="fid: generated images (50,000); nll: the first N test images (all by default)",
    )
    e.add_argument(
        "--features",
        default="classifier",
        help="fid: classifier | classifier2 (a second, independently trained network) | inception",
    )
    e.add_argument("--weights", type=Path, help="fid: FID Inception weights file (.pth)")
    e.add_argument(
        "--method",
        default="langevin",
        help="fid: langevin, mala, sir or smc prior samples, or aggregate: the generator at "
        "samples of the aggregate posterior (the ceiling of the run's prior samples)",
    )
    e.add_argument("--proposals", type=int, default=10, help="fid with sir: proposals (M)")
    e.add_argument(
        "--sharpen",
        type=float,
        default=1.0,
        metavar="BETA",
        help="fid: score the prior with its learned part times BETA (report fid-sharpen<BETA>)",
    )
    e.add_argument("--steps", type=int, help="chain steps (default: from the run's config)")
    e.add_argument("--step-size", type=float, help="chain step size (default: from the config)")
    e.add_argument(
        "--start",
        default="noise",
        help="recon, anomaly: start of the posterior chains: noise (the paper) or amortised "
        "(the amortiser of a run trained with train.post_init=amortised; steps default to "
        "train.warm_steps; report <metric>-amortised.json)",
    )
    e.add_argument("--last", type=int, default=10, help="anomaly: evaluations to average")
    e.add_argument("--particles", type=int, default=2000, help="prior-nll, nll: SMC particles")
    e.add_argument(
        "--repeats", type=int, default=4, help="prior-nll, nll: SMC runs (standard error)"
    )
    e.add_argument(
        "--temperatures", type=int, default=10, help="prior-nll, nll: SMC path steps per stage"
    )
    e.add_argument("--moves", type=int, default=5, help="prior-nll, nll: MALA moves per step")
    e.add_argument(
        "--chains", type=int, default=8, help="nll: posterior chains per image (the proposal)"
    )
    e.add_argument("--samples", type=int, default=1000, help="nll: importance samples per image")
    e.add_argument("--holdout", type=int, metavar="C", help="anomaly: check the held-out class")
    e.add_argument("--seed", type=int, default=0, help="random seed")
    e.add_argument("--batch-size", type=int, default=500, help="images per batch")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
    _add_checkpoint(e)
    e.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )

    p = sub.add_parser("plot", help="make every figure of a trained run")
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--seed", type=int, default=0, help="random seed")

    r = sub.add_parser("reproduce", help="train and evaluate the models of a table of the paper")
    r.add_argument(
        "experiment",
        help="stages (Table 3, stages), adaptive (Table 3, vs TRE), compare (Table 1), "
        "anomaly (Table 2)",
    )
    r.add_argument("--dataset", default="fashion-mnist", help="data set (default fashion-mnist)")
    r.add_argument("--scale", default="cpu", help="cpu (default) | digits | paper | tiny")
    r.add_argument("--out", type=Path, required=True, help="folder of the runs and tables")
    r.add_argument(
        "--holdout",
        type=int,
        nargs="+",
        metavar="C",
        help="anomaly: held-out classes (default: 0 1 2; paper scale: every class)",
    )
    r.add_argument("--fid-n", type=int, help="FID: generated images (cpu 10,000; paper 50,000)")
    r.add_argument("--features", default="classifier", help="FID: classifier | inception")
    r.add_argument("--weights", type=Path, help="FID: FID Inception weights file (.pth)")
    r.add_argument("--seed", type=int, help="one training and evaluation seed (default 0)")
    r.add_argument("--seeds", type=int, nargs="+", metavar="N", help=_SEEDS_HELP)
    r.add_argument("--data-dir", type=Path, help="folder of the data files")
    r.add_argument(
        "--models",
        nargs="+",
        metavar="NAME",
        help="only these models of the table, by run name (e.g. nce adaptive-K4); default all",
    )
    r.add_argument(
        "--sharpen",
        type=float,
        nargs="+",
        default=(),
        metavar="BETA",
        help="FID also with every prior's learned log-density times BETA (beyond the paper); "
        "with several seeds, a column at the BETA chosen for each seed on the other seeds",
    )
    _add_set(
        r,
        "a setting for every model, e.g. prior.prior_samples=langevin, or for the models of "
        "one prior kind, e.g. lebm:prior.lr=2e-4 (repeatable)",
    )
    r.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )

    f = sub.add_parser(
        "refit",
        help="fit a prior post hoc on a trained run's generator into a new run directory",
    )
    f.add_argument("run", type=Path, help="the trained run whose generator is kept")
    f.add_argument(
        "--prior",
        required=True,
        metavar="KIND[-K<k>]",
        help="the prior to fit, e.g. adaptive-K4, tre-K2 or nce (a kind with something to "
        "refit; -K sets prior.stages)",
    )
    f.add_argument("--out", type=Path, required=True, help="the new run directory")
    _add_set(f, "a prior.*, refit.* or sample.* setting, e.g. refit.steps=16000 (repeatable)")
    f.add_argument("--force", action="store_true", help="replace --out if it holds a run")
    f.add_argument("--device", default="auto", help="auto | cpu | cuda")
    f.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
    )

    c = sub.add_parser(
        "compare", help="compare runs of one data set: a Markdown table and overlaid curves"
    )
    c.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories")
    c.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        help="folder of compare.md and compare.png (default: the current folder)",
    )

    b = sub.add_parser(
        "bench", help="measure chain, iteration and sampling speed against the matmul peak"
    )
    b.add_argument("--preset", help="named preset (default: digits); no data files are read")
    _add_set(b, "override one field, e.g. --set train.batch_size=50 (repeatable)")
    b.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="fp32 or bf16 autocast (default: the config's train.precision)",
    )
    b.add_argument("--repeats", type=int, default=5, help="timed calls of each part (5)")
    b.add_argument("--warmup", type=int, default=1, help="untimed calls after the counting one")
    b.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    b.add_argument("--stage", type=int, default=0, help="prior stage of the training parts (0)")
    b.add_argument(
        "--peak-seconds", type=float, default=0.5, help="length of one matmul-peak repeat (0.5)"
    )
    b.add_argument(
        "--compare",
        type=int,
        metavar="ROUNDS",
        help="measure fp32 and bf16 in turn ROUNDS times in this one process and report the "
        "bf16 speed-up of each round (a shared machine's speed drifts between runs)",
    )
    b.add_argument("--json", type=Path, help="also write the raw numbers to this JSON file")
    return parser
