"""The ``latent-ebm`` command line: validates, prints and saves the config, then calls one
library function. Every user error is one line ``error: ...`` on stderr and a non-zero exit.

    latent-ebm train --preset digits --out runs/digits
    latent-ebm train --resume --out runs/digits
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from latent_ebm.config import PRESETS, Config, config_to_dict, resolve_config
from latent_ebm.errors import LatentEBMError

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="latent-ebm",
        description="Generator models with a latent EBM prior learned by adaptive multi-stage "
        "density ratio estimation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model (Algorithm 1) into a run directory")
    t.add_argument("--preset", help=f"named preset: {', '.join(PRESETS)} (default: digits)")
    t.add_argument("--config", type=Path, help="YAML file of overrides (sections as config.yaml)")
    t.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one field, e.g. --set train.iters=3000 (repeatable)",
    )
    t.add_argument("--out", type=Path, required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    t.add_argument("--force", action="store_true", help="delete an existing run in --out first")
    t.add_argument("--max-iters", type=int, help="stop after this many iterations in all")
    t.add_argument("--seed", type=int, help="shorthand for --set train.seed=N")
    t.add_argument("--data-dir", type=Path, help="folder of the data files")
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and stop")
    t.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after training, make the figures and the test reconstruction MSE",
    )
    t.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar"
    )
    return parser


def _train_config(args: argparse.Namespace) -> Config | None:
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.resume:
        if args.preset or args.config or overrides or args.force:
            raise LatentEBMError(
                "--resume continues the run with its own config.yaml: drop --preset, "
                "--config, --set, --seed, --data-dir and --force"
            )
        return None
    return resolve_config(args.preset or "digits", args.config, overrides)


def _cmd_train(args: argparse.Namespace) -> None:
    from latent_ebm.config import validate
    from latent_ebm.train import train

    if args.max_iters is not None and args.max_iters < 1:
        raise LatentEBMError("--max-iters must be at least 1")
    cfg = _train_config(args)
    if cfg is not None:
        validate(cfg)
        if args.dry_run:
            print(json.dumps(config_to_dict(cfg), indent=2))
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
    print(f"trained in {time.perf_counter() - t0:.1f} s -> {args.out}")
    if args.eval:
        _report(args.out, progress=args.progress)


def _report(run_dir: Path, progress: bool) -> None:
    """Figures and the test reconstruction MSE of a finished run, written into ``run_dir``."""
    from latent_ebm.data import load_dataset
    from latent_ebm.evaluate import recon_mse
    from latent_ebm.plots import run_figures
    from latent_ebm.train import load_run

    for path in run_figures(run_dir):
        print(f"wrote {path}")
    cfg, model, state = load_run(run_dir)
    test_x = load_dataset(cfg.data.name, cfg.data.data_dir).test_x
    t0 = time.perf_counter()
    mse = recon_mse(
        model, test_x, cfg.train.post_steps, cfg.train.post_step_size, progress=progress
    )
    out = run_dir / "eval"
    out.mkdir(exist_ok=True)
    result = {
        "metric": "recon",
        "value": mse,
        "split": "test",
        "n": len(test_x),
        "steps": cfg.train.post_steps,
        "step_size": cfg.train.post_step_size,
        "iteration": state["iteration"],
        "wall_time_s": round(time.perf_counter() - t0, 2),
    }
    (out / "recon.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"test reconstruction MSE {mse:.4f} ({len(test_x)} images) -> {out / 'recon.json'}")


def _warning_line(message: Warning | str, category: type[Warning], *args: object) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latent-ebm`` console script; returns the exit status."""
    from latent_ebm.train import TrainingInterrupted

    warnings.formatwarning = _warning_line  # type: ignore[assignment]
    args = build_parser().parse_args(argv)
    commands = {"train": _cmd_train}
    try:
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
