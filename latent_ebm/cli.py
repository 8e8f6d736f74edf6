"""The ``latent-ebm`` command line: validates, prints and saves the config, then calls one
library function. Every user error is one line ``error: ...`` on stderr and a non-zero exit.

    latent-ebm train --preset digits --out runs/digits
    latent-ebm train --resume --out runs/digits
    torchrun --nproc-per-node 2 -m latent_ebm.cli train --preset digits --out runs/digits
    latent-ebm sample runs/digits --n 64 --method sir
    latent-ebm eval runs/digits --metric fid
    latent-ebm plot runs/digits
    latent-ebm refit runs/digits --prior tre-K4 --out runs/digits-tre
    latent-ebm compare runs/a runs/b --out runs/compare
    latent-ebm bench --preset svhn --precision bf16 --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path

from latent_ebm.arguments import build_parser, seed_list
from latent_ebm.errors import LatentEBMError, TrainingInterrupted

if typing.TYPE_CHECKING:
    from latent_ebm.config import Config

# The imports of torch and the library happen inside main() (in build_parser and each
# command), so that Ctrl-C during them is the one-line exit 130, not a traceback.

__all__ = ["build_parser", "main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _check_config_file(path: Path) -> None:
    """``--config`` names a readable text file (read up to the size limit of a config file,
    :data:`latent_ebm.config.MAX_CONFIG_BYTES`; a larger one is resolve_config's message).
    A named pipe, a device or a socket is not opened here: resolve_config reads a pipe once
    (``--config <(...)``) and refuses the others."""
    from latent_ebm.config import MAX_CONFIG_BYTES
    from latent_ebm.files import special_kind

    try:
        if special_kind(path.stat().st_mode):
            return  # a pipe is read once, a device or socket refused: resolve_config
        with path.open("rb") as f:  # never whole: /dev/zero or a huge file ends at the limit
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) <= MAX_CONFIG_BYTES:
            raw.decode("utf-8")
    except FileNotFoundError:
        return  # resolve_config's message
    except (OSError, UnicodeDecodeError) as e:
        text = isinstance(e, UnicodeDecodeError)
        why = "is not a text (YAML) file" if text else f"is unreadable ({e.strerror or e})"
        raise LatentEBMError(f"--config {path} {why}") from None


def _train_config(args: argparse.Namespace) -> Config | None:
    """The config of a new run, from the flags; ``None`` with ``--resume``, which continues the
    run with its own ``config.yaml``.

    ``--resume`` accepts the command that started the run, repeated: its config flags
    (``--preset``, ``--config``, ``--set``, ``--seed``, ``--recipe``, ``--data-dir``, ``--holdout``,
    ``--tensorboard``) are resolved as a new run resolves them (without ``--preset`` and
    ``--config``, on the run's ``config.yaml`` rather than the default preset: leaving out a
    flag changes nothing) and must give the run's ``config.yaml`` field for field. Every field
    counts, ``data.data_dir`` (compared as folders) and ``train.tensorboard`` included: resuming
    reads ``config.yaml`` alone, so a flag that disagreed would be silently ignored; edit
    ``config.yaml`` to move the data or switch TensorBoard. ``--force`` deletes the run, so it
    never goes with ``--resume``.

    Raises:
        LatentEBMError: ``--resume`` with ``--force``, or with a flag that would change a field
            of the run (naming the flag, the field and both values); a bad ``--config``.
    """
    from latent_ebm.config import resolve_config

    flags = [(s, f"--set {s}") for s in args.overrides]  # (override, the flag that gave it)
    for name, field in _FIELD_FLAGS.items():
        value = getattr(args, name)
        if isinstance(value, bool):  # --tensorboard / --no-tensorboard
            flags.append((f"{field}={str(value).lower()}", f"--{'' if value else 'no-'}{name}"))
        elif value is not None:
            flags.append((f"{field}={value}", f"--{name.replace('_', '-')} {value}"))
    overrides = [s for s, _ in flags]
    if args.config is not None:
        _check_config_file(args.config)
    if args.resume:
        if args.force:
            raise LatentEBMError(
                "--resume continues the run in --out and --force deletes it: drop one of them"
            )
        if args.preset or args.config or overrides:
            _check_resume_flags(args, flags)
        return None
    return resolve_config(args.preset or "digits", args.config, overrides)


# The flags that set one config field each (a new run's shorthands for --set).
_FIELD_FLAGS = {
    "seed": "train.seed",
    "recipe": "train.recipe",
    "data_dir": "data.data_dir",
    "holdout": "data.holdout",
    "tensorboard": "train.tensorboard",
}


def _check_resume_flags(args: argparse.Namespace, flags: list[tuple[str, str]]) -> None:
    """Refuse the first field of the run in ``args.out`` that ``--resume``'s config flags would
    change (see :func:`_train_config`); ``flags`` pairs each override with the flag giving it."""
    from latent_ebm.config import clip
    from latent_ebm.rundir import resume_change

    overrides = [s for s, _ in flags]
    change = resume_change(args.out, args.preset, args.config, overrides)
    if change is None:
        return
    field, was, now = change
    set_by = [flag for s, flag in flags if s.split("=", 1)[0].strip() == field]
    files = [f"--preset {args.preset}"] * bool(args.preset)
    files += [f"--config {args.config}"] * (args.config is not None)
    flag = set_by[-1] if set_by else " ".join(files) or "the flags"
    raise LatentEBMError(
        f"--resume: {clip(flag, 100)} would change {field} from {clip(was, 100)} "
        f"(the run's config.yaml) to {clip(now, 100)}; drop it or start a new run"
    )


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
    validate(cfg, num_train, shape)  # the batch against the data, and training's memory
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
    extra += f" +- {r['se']:.4f} (SE) {r['unit']}" if "se" in r else ""
    if "bits_per_dim" in r:
        extra += f", {r['bits_per_dim']:.4f} bits/dim"
    if "stages" in r:
        extra += ", by stage " + ", ".join(f"{s['nll']:.3f}" for s in r["stages"])
    feats = f", {r['features']['name']} features" if "features" in r else ""
    print(
        f"{r['metric']} = {r['value']:.4f}{extra} ({r['split']}{feats}, {r['wall_time_s']} s)"
        f" -> {r.get('path') or report_path(r['run'], r['metric'])}"
    )


def _cmd_sample(args: argparse.Namespace) -> None:
    from latent_ebm.evaluation import sample_run

    # Every option of the sample parser is a keyword argument of sample_run.
    options = {k: v for k, v in vars(args).items() if k not in ("command", "run", "n")}
    grid, npz = sample_run(args.run, args.n, **options)
    print(f"wrote {grid} and {npz} ({args.n} images, {args.method})")
    if args.method == "smc":
        import numpy as np

        with np.load(npz) as f:
            print(
                f"SMC: effective sample size {f['ess'].sum():.0f} of {args.n} before the final "
                f"resampling, {int(f['gradient_evaluations'])} gradient evaluations per sample"
            )


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


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from latent_ebm.experiments import reproduce

    # Every option of the reproduce parser is a keyword argument of reproduce.
    options = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "experiment", "out", "seed", "seeds")
    }
    options["seeds"] = seed_list(args.seed, args.seeds)
    result = reproduce(args.experiment, args.out, **options)
    print(result.markdown)
    figure = f" and {result.png_path}" if result.png_path else ""
    print(f"wrote {result.md_path}, {result.json_path}{figure}")


def _cmd_refit(args: argparse.Namespace) -> None:
    from latent_ebm.experiments.posthoc import refit_run

    r = refit_run(
        args.run, args.prior, args.out, args.overrides, args.force, args.progress, args.device
    )
    losses = ", ".join(f"{v:.4f}" for v in r.losses)
    print(f"refitted a {r.cfg.prior.kind} prior on {args.run}'s generator (NCE losses {losses})")
    print(f"wrote {r.run_dir}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from latent_ebm.experiments import compare_runs

    result = compare_runs(args.runs, args.out)
    print(result.markdown)
    print(f"wrote {result.md_path} and {result.png_path}")


def _cmd_bench(args: argparse.Namespace) -> None:
    import json

    from latent_ebm.config import resolve_config
    from latent_ebm.experiments import bench, compare_precisions, format_comparison, format_report
    from latent_ebm.rundir.layout import check_writable_file, write_text_file

    if args.json is not None:  # before the measurement, not after it
        check_writable_file(args.json, "--json")
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
        write_text_file(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def _warning_line(message: Warning | str, category: type[Warning], *args: object) -> str:
    return f"warning: {message}\n"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def _interrupting_signals(handler: typing.Callable[[int, typing.Any], None]) -> Iterator[None]:
    """Within: SIGINT and SIGTERM go to ``handler``; :func:`_interrupt` raises
    ``KeyboardInterrupt`` (naming the signal), as Ctrl-C does by default (without it SIGTERM
    would kill the process with status 143). A signal the
    caller ignores (``SIG_IGN``) stays ignored; outside the main thread nothing changes. The
    training loop defers them to the end of an iteration (:func:`distributed.catch_signals`).
    """
    old = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) is not signal.SIG_IGN:
                old[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _import_torch() -> str | None:
    """Import torch with SIGINT and SIGTERM held back; return the name of one that came
    meanwhile (raised inside torch's native import, it would abort the process, a C++
    terminate, instead of unwinding)."""
    came: list[str] = []
    with _interrupting_signals(lambda n, _: came.append(signal.Signals(n).name)):
        import torch  # noqa: F401
    return came[0] if came else None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latent-ebm`` console script; returns the exit status.

    A user error is one line ``error: ...`` and status 1; SIGINT (Ctrl-C) or SIGTERM at any
    point, imports included, is one line ``interrupted: ...`` and status 130 (during training,
    after a checkpoint that ``--resume`` continues from). While it runs, both signals raise
    ``KeyboardInterrupt`` (:func:`_interrupting_signals`); the previous handlers return after.
    """
    commands = {
        "train": _cmd_train,
        "sample": _cmd_sample,
        "eval": _cmd_eval,
        "plot": _cmd_plot,
        "reproduce": _cmd_reproduce,
        "refit": _cmd_refit,
        "compare": _cmd_compare,
        "bench": _cmd_bench,
    }
    try:
        with _interrupting_signals(_interrupt):
            if came := _import_torch():
                raise KeyboardInterrupt(came)
            warnings.formatwarning = _warning_line  # type: ignore[assignment]
            args = build_parser().parse_args(argv)
            commands[args.command](args)
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except LatentEBMError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        by = f"by {e.args[0]}" if e.args else "by a signal"
        print(f"interrupted: stopped {by} before the command finished", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
