"""Checkpoints and snapshots: written atomically and only when finite, read without running
code (the room :mod:`latent_ebm.rundir`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latent_ebm.config import Config, num_stages
from latent_ebm.data import DATASETS
from latent_ebm.errors import LatentEBMError, one_line
from latent_ebm.files import WeightsFileError, load_weights, save_atomic
from latent_ebm.memory import MemoryBank
from latent_ebm.model import LatentEBM
from latent_ebm.priors import stage_of
from latent_ebm.rundir.layout import CHECKPOINT, CONFIG, SNAPSHOTS


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors of ``tensors`` (e.g. a state dict) that hold a
    NaN or an Inf."""
    return [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]


def kept_checkpoint(run_dir: Path, iteration: int) -> str:
    """What a failed run keeps: ``"the last good checkpoint (iteration N) is kept in DIR"`` for
    the last one written (``iteration``), or ``"no checkpoint was written"`` (``iteration``
    0)."""
    if iteration == 0 or not (run_dir / CHECKPOINT).exists():
        return f"no checkpoint was written in {run_dir}"
    return f"the last good checkpoint (iteration {iteration}) is kept in {run_dir}"


def save_checkpoint(path: Path, state: dict[str, Any], last_good: int) -> None:
    """:func:`latent_ebm.files.save_atomic` of a state with finite parameters.

    ``last_good`` is the iteration of the last checkpoint written (0: none), named in a
    failure's message.

    Raises:
        LatentEBMError: ``state["model"]`` holds a NaN or Inf (nothing is written), or the
            write failed (e.g. a full disk; the file at ``path`` is untouched).
    """
    kept = (
        f"the checkpoint at iteration {last_good} is intact"
        if last_good
        else "no checkpoint was written"
    )
    bad = non_finite(state["model"])
    if bad:
        raise LatentEBMError(
            f"iteration {state['iteration']}: parameter {bad[0]} is not finite (NaN/Inf), so "
            f"{path.name} was not written; {kept}"
        )
    try:
        save_atomic(state, path)
    except OSError as e:
        raise LatentEBMError(
            f"could not write checkpoint {path} ({e.strerror or e}); free disk space and "
            f"rerun with --resume ({kept})"
        ) from None


def load_checkpoint(
    path: Path, cfg: Config | None = None, *, resume: bool = False
) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` or :func:`save_snapshot`, on the CPU.

    Loaded with ``weights_only=True`` (:func:`latent_ebm.files.load_weights`): a file that
    names any class or function is refused and nothing of it runs. Earlier versions stored
    numpy's random state, which is read and dropped.

    Its structure is checked: what every reader needs (the iteration, the image shape, the
    parameters as tensors) and, with ``resume``, every entry that resuming reads, with its type
    (optimiser states, memory bank, random state, log window, ...), and an iteration within
    the run's ``train.iters``. With the run's config ``cfg``, the data set the checkpoint was
    trained on (its name, image size and held-out class, recorded in the checkpoint) must be
    the run's; a checkpoint of a version that recorded none is taken at its run's word.

    Raises:
        LatentEBMError: no file at ``path``, a refused file, a truncated or foreign one, an
            entry missing or of the wrong type, or another data set than ``cfg``'s.
    """
    try:
        state = load_weights(path)
    except FileNotFoundError:
        raise LatentEBMError(
            f"no checkpoint at {path}: train the run first (latent-ebm train --out {path.parent})"
        ) from None
    except WeightsFileError as e:  # refused (UnsafeFileError) or unreadable: one line
        raise LatentEBMError(f"checkpoint {e}") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise LatentEBMError(f"checkpoint {path} is not a latent-ebm checkpoint")
    if isinstance(state.get("rng"), dict):
        state["rng"].pop("numpy", None)  # earlier versions; training never used it
    wrong = _structure_problem(state, cfg, resume)
    if wrong is not None:
        raise LatentEBMError(
            f"checkpoint {path} is damaged or not a latent-ebm checkpoint: {wrong}; use "
            "another checkpoint or train again"
        )
    if cfg is not None:
        _check_data_set(state, cfg, path)
        _check_progress(state, cfg, path, resume)
    return state


def _check_progress(state: dict[str, Any], cfg: Config, path: Path, resume: bool) -> None:
    """A checkpoint ``state`` of ``path`` is within the schedule of the run's ``cfg``: its
    iteration within ``train.iters``, its prior's stage (``model["prior.stage"]``, if the
    prior has one) within ``0..K`` and, with ``resume``, the stage that training reaches at
    that iteration (:func:`~latent_ebm.priors.stage_of` of the last iteration done; ``K``
    once every iteration is done).

    Raises:
        LatentEBMError: an iteration or stage out of the run's schedule.
    """
    it, iters = state["iteration"], cfg.train.iters
    if it > iters:
        raise LatentEBMError(
            f"checkpoint {path} is at iteration {it}, beyond the run's "
            f"train.iters={iters} ({CONFIG}): it is not this run's checkpoint"
        )
    stage = state["model"].get("prior.stage")
    if stage is None:
        return
    k = num_stages(cfg)
    whole = stage.numel() == 1 and not stage.is_floating_point() and stage.dtype != torch.bool
    if not whole or not 0 <= int(stage) <= k:
        found = int(stage) if whole else f"a {stage.dtype} tensor of shape {tuple(stage.shape)}"
        raise LatentEBMError(
            f"checkpoint {path} is damaged: its prior's stage (prior.stage) is {found}, not a "
            f"stage 0..{k} of the run's schedule ({CONFIG}); use another checkpoint or train "
            "again"
        )
    expected = k if it >= iters else stage_of(max(it - 1, 0), iters, k)
    if resume and int(stage) != expected:
        raise LatentEBMError(
            f"checkpoint {path} is damaged: its prior is at stage {int(stage)}, but at "
            f"iteration {it} of {iters} the run is at stage {expected}; use another "
            "checkpoint or train again"
        )


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _optimizer(x: Any) -> bool:
    """Whether ``x`` has the structure of an optimiser's ``state_dict()``."""
    return (
        isinstance(x, dict)
        and isinstance(x.get("state"), dict)
        and all(isinstance(v, dict) for v in x["state"].values())
        and isinstance(x.get("param_groups"), list)
        and all(
            isinstance(g, dict)
            and isinstance(g.get("params"), list)
            and all(_whole(p) for p in g["params"])
            for g in x["param_groups"]
        )
    )


def _optimizers(x: Any) -> bool:
    return isinstance(x, list) and all(_optimizer(o) for o in x)


def _structure_problem(state: dict[str, Any], cfg: Config | None, resume: bool) -> str | None:
    """What is wrong with the structure of a checkpoint ``state`` (:func:`load_checkpoint`),
    or ``None``."""
    shape, refit = state.get("shape"), state.get("refit")
    nz = cfg.model.nz if cfg is not None else None
    # (entry, whether it is as it must be, what it must be), in the order checked
    checks: list[tuple[str, bool, str]] = [
        ("iteration", _whole(state.get("iteration")), "a whole number >= 0"),
        (
            "shape",
            isinstance(shape, list | tuple)
            and len(shape) == 3
            and all(_whole(n) and n > 0 for n in shape),
            "the image shape (channels, height, width)",
        ),
        (
            "model",
            all(isinstance(k, str) and torch.is_tensor(v) for k, v in state["model"].items()),
            "parameter names and tensors",
        ),
        ("config", isinstance(state.get("config", {}), dict), "the run's config"),
        ("data", isinstance(state.get("data", {}), dict), "the data set's record"),
        (
            "refit",
            refit is None or (isinstance(refit, list) and all(map(_number, refit))),
            "none or a list of losses",
        ),
        ("eval_pending", isinstance(state.get("eval_pending", False), bool), "true or false"),
    ]
    if resume:
        bank, rng, window = state.get("bank"), state.get("rng"), state.get("window")
        best = state.get("best")
        tensors = [bank.get(k) for k in ("bank", "snapshot")] if isinstance(bank, dict) else []
        amortised = cfg is not None and cfg.train.post_init == "amortised"
        checks += [
            ("elapsed", _number(state.get("elapsed")) and state["elapsed"] >= 0, "seconds"),
            ("opt_g", _optimizer(state.get("opt_g")), "an optimiser state"),
            ("opt_prior", _optimizers(state.get("opt_prior")), "a list of optimiser states"),
            (
                "opt_amortiser",
                _optimizers(state.get("opt_amortiser", None if amortised else [])),
                "a list of optimiser states",
            ),
            (
                "bank",
                len(tensors) == 2
                and all(torch.is_tensor(t) and t.is_floating_point() for t in tensors)
                and tensors[0].ndim == 2
                and tensors[0].shape == tensors[1].shape
                and nz in (None, tensors[0].shape[1]),
                f"a memory bank: tensors bank and snapshot of shape (examples, {nz or 'nz'})",
            ),
            (
                "rng",
                isinstance(rng, dict)
                and torch.is_tensor(rng.get("torch"))
                and rng["torch"].dtype == torch.uint8
                and rng["torch"].shape == torch.get_rng_state().shape,
                "the random state {'torch': a byte tensor}",
            ),
            (
                "window",
                isinstance(window, dict)
                and all(
                    isinstance(k, str) and isinstance(v, list) and all(map(_number, v))
                    for k, v in window.items()
                ),
                "the log window: names and lists of numbers",
            ),
            (
                "best",
                best is None
                or (
                    isinstance(best, dict)
                    and _number(best.get("fid"))
                    and _whole(best.get("iteration"))
                ),
                "none or {'fid', 'iteration'}",
            ),
        ]
    for key, ok, expected in checks:
        if not ok:
            found = "missing" if key not in state else _show(state[key])
            return f"{key} is {found}, not {expected}"
    return None


def _show(value: Any) -> str:
    """A short description of a value of the wrong type."""
    text = repr(value) if isinstance(value, int | float | str | bool) else ""
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{text} ({type(value).__name__})" if text else f"a {type(value).__name__}"


def _data_set(data: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The data set of a config's ``data`` section: name, image size (``None``: the set's
    default, so an explicit default is the same set) and held-out class."""
    name, size = data.get("name"), data.get("size")
    if size is None and isinstance(name, str) and name in DATASETS:
        size = DATASETS[name].size
    return name, size, data.get("holdout")


def _describe(data: tuple[Any, Any, Any]) -> str:
    name, size, holdout = data
    text = f"{name} at size {size}"
    return text if holdout is None else f"{text} (holdout class {holdout})"


def data_record(cfg: Config) -> dict[str, Any]:
    """What a snapshot records of its run's data set (a checkpoint holds the whole config)."""
    return {"name": cfg.data.name, "size": cfg.data.size, "holdout": cfg.data.holdout}


def _check_data_set(state: dict[str, Any], cfg: Config, path: Path) -> None:
    """A checkpoint ``state`` of ``path`` was trained on the data set of the run's ``cfg``.

    Raises:
        LatentEBMError: it records another data set.
    """
    recorded = state.get("config", {}).get("data", state.get("data"))
    if not isinstance(recorded, dict):
        return  # an earlier version recorded none
    theirs, ours = _data_set(recorded), _data_set(data_record(cfg))
    if theirs != ours:
        raise LatentEBMError(
            f"checkpoint {path} was trained on {_describe(theirs)}, but the run's {CONFIG} is "
            f"on {_describe(ours)}: it is another run's checkpoint; use the run's own "
            "checkpoint, or evaluate this one in the run directory it came from"
        )


def load_model_state(model: LatentEBM, state: dict[str, Any], path: Path) -> None:
    """Load the parameters of a checkpoint ``state`` (read from ``path``) into ``model``.

    Raises:
        LatentEBMError: the checkpoint was made with another config (other sizes or
            networks), or holds a NaN or Inf parameter.
    """
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError) as e:
        detail = one_line(e)
        raise LatentEBMError(
            f"checkpoint {path} does not match the run's config ({CONFIG}): it was made with "
            f"other model settings ({detail[:200]})"
        ) from None
    bad = non_finite(state["model"])
    if bad:
        raise LatentEBMError(
            f"checkpoint {path} holds a non-finite parameter ({bad[0]}: NaN/Inf); it cannot "
            "be used: retrain with lower learning rates"
        )


def restore_training(
    state: dict[str, Any],
    path: Path,
    optimizers: dict[str, list[torch.optim.Optimizer]],
    bank: MemoryBank,
) -> None:
    """Load into the run's objects what a checkpoint ``state`` of ``path`` (read by
    :func:`load_checkpoint` with ``resume``) holds beyond the model: the optimiser states
    (``optimizers``: each checkpoint entry, e.g. ``"opt_g"``, and the optimisers it restores, in
    order), the memory bank and the random state; each must fit the run (the number of
    optimisers, their parameters and their states' shapes; the bank's shape).

    Raises:
        LatentEBMError: something does not fit: the checkpoint is damaged or another run's.
    """

    def misfit(what: str) -> LatentEBMError:
        return LatentEBMError(
            f"checkpoint {path} does not fit the run: {what}; it is damaged or another "
            "run's: use the run's own checkpoint or train again"
        )

    for key, optims in optimizers.items():
        saved = state[key] if isinstance(state[key], list) else [state[key]]
        if len(saved) != len(optims):
            raise misfit(f"{key} holds {len(saved)} optimiser states, the run has {len(optims)}")
        for opt, opt_state in zip(optims, saved, strict=True):
            try:
                opt.load_state_dict(opt_state)
            except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
                raise misfit(f"{key}: {one_line(e)[:200]}") from None
            for p in (p for group in opt.param_groups for p in group["params"]):
                for name, value in opt.state.get(p, {}).items():
                    if torch.is_tensor(value) and value.ndim and value.shape != p.shape:
                        shapes = f"{tuple(value.shape)} for a parameter {tuple(p.shape)}"
                        raise misfit(f"{key} holds {name} of shape {shapes}")
    saved_bank = state["bank"]["bank"]
    if saved_bank.shape != bank.bank.shape:
        raise misfit(
            f"its memory bank has shape {tuple(saved_bank.shape)}, the run's data set and "
            f"model.nz need {tuple(bank.bank.shape)}"
        )
    bank.load_state_dict(state["bank"])
    torch.set_rng_state(state["rng"]["torch"])


def save_snapshot(run_dir: Path, state: dict[str, Any], last_good: int, cfg: Config) -> Path:
    """Keep the model state ``state`` of iteration ``state["iteration"]`` in ``snapshots/``,
    with the data set of the run's ``cfg`` (:func:`data_record`).

    ``last_good`` is the iteration of the last checkpoint, named if the write fails
    (:func:`save_checkpoint`). Returns the snapshot's path.
    """
    (run_dir / SNAPSHOTS).mkdir(exist_ok=True)
    path = run_dir / SNAPSHOTS / f"model-{state['iteration']:07d}.pt"
    save_checkpoint(path, {**state, "data": data_record(cfg)}, last_good)
    return path


def snapshots(run_dir: str | Path) -> list[Path]:
    """The model snapshots kept by ``train.keep_every``, oldest first."""
    return sorted((Path(run_dir) / SNAPSHOTS).glob("model-*.pt"))
