"""The ``latent-ebm`` command line: validates, prints and saves the config, then calls one
library function. Every user error is one line ``error: ...`` on stderr and a non-zero exit.

    latent-ebm train --preset digits --out runs/digits
    latent-ebm train --resume --out runs/digits
    torchrun --nproc-per-node 2 -m latent_ebm.cli train --preset digits --out runs/digits
    latent-ebm sample runs/digits --n 64 --method sir
    latent-ebm eval runs/digits --metric fid
    latent-ebm plot runs/digits
    latent-ebm bench --preset svhn --precision bf16 --json bench.json
"""

from __future__ import annotations

import argparse
import sys
import time
import typing
import warnings
from pathlib import Path

from latent_ebm.errors import LatentEBMError, TrainingInterrupted

if typing.TYPE_CHECKING:
    from latent_ebm.config import Config

# The imports of torch and the library happen inside main() (in build_parser and each
# command), so that Ctrl-C during them is the one-line exit 130, not a traceback.

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from latent_ebm.config import PRESETS
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
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )

    s = sub.add_parser("sample", help="sample images from a trained run (PNG grid and .npz)")
    s.add_argument("run", type=Path, help="run directory")
    s.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    s.add_argument("--method", default="langevin", help="langevin (prior chain) or sir")
    s.add_argument("--steps", type=int, help="prior-chain steps (default: the run's sample.steps)")
    s.add_argument("--step-size", type=float, help="prior-chain step size (sample.step_size)")
    s.add_argument("--proposals", type=int, default=10, help="SIR proposals per sample (M)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--out", type=Path, help="output prefix (default RUN/samples/<method>)")
    s.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )

    e = sub.add_parser("eval", help="evaluate a trained run: recon, fid or anomaly")
    e.add_argument("run", type=Path, help="run directory")
    e.add_argument("--metric", required=True, help="recon | fid | anomaly")
    e.add_argument("--n", type=int, default=50_000, help="fid: generated images (50,000)")
    e.add_argument("--features", default="classifier", help="fid: classifier | inception")
    e.add_argument("--weights", type=Path, help="fid: FID Inception weights file (.pth)")
    e.add_argument("--method", default="langevin", help="fid: langevin or sir sampling")
    e.add_argument("--proposals", type=int, default=10, help="fid with sir: proposals (M)")
    e.add_argument("--steps", type=int, help="chain steps (default: from the run's config)")
    e.add_argument("--step-size", type=float, help="chain step size (default: from the config)")
    e.add_argument("--last", type=int, default=10, help="anomaly: evaluations to average")
    e.add_argument("--holdout", type=int, metavar="C", help="anomaly: check the held-out class")
    e.add_argument("--seed", type=int, default=0, help="random seed")
    e.add_argument("--batch-size", type=int, default=500, help="images per batch")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda")
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
    r.add_argument("--scale", default="cpu", help="cpu (default) | paper | tiny")
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
    r.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="N",
        help="train every model under several seeds: one value N means seeds 0..N-1, several "
        "values are the seeds; tables give mean ± standard error",
    )
    r.add_argument("--data-dir", type=Path, help="folder of the data files")
    _add_set(r, "a setting for every model, e.g. prior.prior_samples=langevin (repeatable)")
    r.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars"
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


def _check_config_file(path: Path) -> None:
    """``--config`` names a readable text file."""
    try:
        path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return  # resolve_config's message
    except (OSError, UnicodeDecodeError) as e:
        text = isinstance(e, UnicodeDecodeError)
        why = "is not a text (YAML) file" if text else f"is unreadable ({e.strerror or e})"
        raise LatentEBMError(f"--config {path} {why}") from None


def _train_config(args: argparse.Namespace) -> Config | None:
    from latent_ebm.config import resolve_config

    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.holdout is not None:
        overrides.append(f"data.holdout={args.holdout}")
    if args.resume:
        if args.preset or args.config or overrides or args.force:
            raise LatentEBMError(
                "--resume continues the run with its own config.yaml: drop --preset, "
                "--config, --set, --seed, --data-dir and --force"
            )
        return None
    if args.config is not None:
        _check_config_file(args.config)
    return resolve_config(args.preset or "digits", args.config, overrides)


def _cmd_train(args: argparse.Namespace) -> None:
    from latent_ebm import distributed
    from latent_ebm.config import validate
    from latent_ebm.train import train

    if args.max_iters is not None and args.max_iters < 1:
        raise LatentEBMError("--max-iters must be at least 1")
    if args.throughput is not None and not args.dry_run:
        raise LatentEBMError("--throughput applies to --dry-run")
    cfg = _train_config(args)
    if cfg is not None:
        validate(cfg)
        if args.dry_run:
            _dry_run(cfg, args.throughput)
            return
    elif args.dry_run:
        raise LatentEBMError("--dry-run needs a new run, not --resume")
    t0 = time.perf_counter()
    train(
        cfg,
        args.out,
        resume=args.resume,
        force=args.force,
        max_iters=args.max_iters,
        progress=args.progress,
    )
    if not distributed.is_main():  # under torchrun, rank 0 reports and evaluates
        return
    print(f"trained in {time.perf_counter() - t0:.1f} s -> {args.out}")
    if args.eval:
        _report(args.out, progress=args.progress)


def _dry_run(cfg: Config, throughput: str | None) -> None:
    """Print the resolved config and what training it costs, without the data files."""
    import yaml

    from latent_ebm.config import config_to_dict, validate
    from latent_ebm.data import dataset_info
    from latent_ebm.experiments import describe, parse_rate

    try:
        rate = None if throughput is None else parse_rate(throughput)
    except ValueError as e:
        raise LatentEBMError(f"--throughput: {e}") from None
    shape, num_train = dataset_info(cfg.data.name, cfg.data.size, cfg.data.holdout)
    validate(cfg, shape=shape)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip())
    print(describe(cfg, shape, num_train, rate))


def _report(run_dir: Path, progress: bool) -> None:
    """Figures and the test reconstruction MSE of a finished run, written into ``run_dir``."""
    from latent_ebm.evaluation import evaluate_run, run_figures

    for path in run_figures(run_dir):
        print(f"wrote {path}")
    _print_report(evaluate_run(run_dir, "recon", progress=progress))


def _print_report(r: dict) -> None:
    from latent_ebm.rundir import report_path

    extra = f" +- {r['std']:.4f} over {len(r['values'])} evaluations" if "std" in r else ""
    feats = f", {r['features']['name']} features" if "features" in r else ""
    print(
        f"{r['metric']} = {r['value']:.4f}{extra} ({r['split']}{feats}, {r['wall_time_s']} s)"
        f" -> {report_path(r['run'], r['metric'])}"
    )


def _cmd_sample(args: argparse.Namespace) -> None:
    from latent_ebm.evaluation import sample_run

    # Every option of the sample parser is a keyword argument of sample_run.
    options = {k: v for k, v in vars(args).items() if k not in ("command", "run", "n")}
    grid, npz = sample_run(args.run, args.n, **options)
    print(f"wrote {grid} and {npz} ({args.n} images, {args.method})")


def _cmd_eval(args: argparse.Namespace) -> None:
    from latent_ebm.evaluation import evaluate_run

    # Every option of the eval parser is a keyword argument of evaluate_run.
    options = {k: v for k, v in vars(args).items() if k not in ("command", "run", "metric")}
    report = evaluate_run(args.run, args.metric, **options)
    _print_report(report)


def _cmd_plot(args: argparse.Namespace) -> None:
    from latent_ebm.evaluation import run_figures

    for path in run_figures(args.run, seed=args.seed):
        print(f"wrote {path}")


def _seeds(seed: int | None, seeds: list[int] | None) -> list[int]:
    """``--seed S`` (one seed), ``--seeds N`` (seeds 0..N-1) or ``--seeds A B ...``."""
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


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from latent_ebm.experiments import reproduce

    # Every option of the reproduce parser is a keyword argument of reproduce.
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "experiment", "out", "seed", "seeds")
    }
    options["seeds"] = _seeds(args.seed, args.seeds)
    result = reproduce(args.experiment, args.out, **options)
    print(result.markdown)
    print(f"wrote {result.md_path} and {result.json_path}")


def _cmd_bench(args: argparse.Namespace) -> None:
    import json

    from latent_ebm.config import resolve_config
    from latent_ebm.experiments import bench, compare_precisions, format_comparison, format_report

    preset = args.preset or "digits"
    cfg = resolve_config(preset, None, args.overrides)
    options = {
        "repeats": args.repeats,
        "warmup": args.warmup,
        "threads": args.threads,
        "stage": args.stage,
        "peak_seconds": args.peak_seconds,
    }
    if args.compare is not None:
        if args.precision is not None:
            raise LatentEBMError("--compare measures fp32 and bf16: leave out --precision")
        result = compare_precisions(cfg, args.compare, **options)
        for i, round_ in enumerate(result["rounds"], 1):
            for precision, r in round_.items():
                print(f"latent-ebm bench: preset {preset}, precision {precision}, round {i}")
                print(format_report(r))
        print(format_comparison(result))
    else:
        result = bench(cfg, args.precision, **options)
        print(f"latent-ebm bench: preset {preset}, precision {result['precision']}")
        print(format_report(result))
    result = {"preset": preset, "overrides": list(args.overrides), **result}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def _warning_line(message: Warning | str, category: type[Warning], *args: object) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latent-ebm`` console script; returns the exit status.

    A user error is one line ``error: ...`` and status 1; Ctrl-C (SIGINT) at any point,
    imports included, is one line and status 130 (during training, after a checkpoint).
    """
    commands = {
        "train": _cmd_train,
        "sample": _cmd_sample,
        "eval": _cmd_eval,
        "plot": _cmd_plot,
        "reproduce": _cmd_reproduce,
        "bench": _cmd_bench,
    }
    try:
        warnings.formatwarning = _warning_line  # type: ignore[assignment]
        args = build_parser().parse_args(argv)
        commands[args.command](args)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LatentEBMError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
