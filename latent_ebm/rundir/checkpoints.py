"""Checkpoints and snapshots: written atomically and only when finite, read without running
code (the room :mod:`latent_ebm.rundir`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latent_ebm.errors import LatentEBMError, one_line
from latent_ebm.files import WeightsFileError, load_weights, save_atomic
from latent_ebm.model import LatentEBM
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save_checkpoint` or :func:`save_snapshot`, on the CPU.

    Loaded with ``weights_only=True`` (:func:`latent_ebm.files.load_weights`): a file that
    names any class or function is refused and nothing of it runs. Earlier versions stored
    numpy's random state, which is read and dropped.

    Raises:
        LatentEBMError: no file at ``path``, a refused file, a truncated or foreign one.
    """
    try:
        state = load_weights(path)
    except FileNotFoundError:
        raise LatentEBMError(
            f"no checkpoint at {path}: train the run first (latent-ebm train --out {path.parent})"
        ) from None
    except WeightsFileError as e:  # refused (UnsafeFileError) or unreadable: one line
        raise LatentEBMError(f"checkpoint {e}") from None
    except Exception as e:  # a truncated or foreign file fails in many ways inside torch
        detail = one_line(e)[:300]
        raise LatentEBMError(
            f"checkpoint {path} is unreadable ({type(e).__name__}: {detail})"
        ) from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise LatentEBMError(f"checkpoint {path} is not a latent-ebm checkpoint")
    if isinstance(state.get("rng"), dict):
        state["rng"].pop("numpy", None)  # earlier versions; training never used it
    return state


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


def save_snapshot(run_dir: Path, state: dict[str, Any], last_good: int) -> Path:
    """Keep the model state ``state`` of iteration ``state["iteration"]`` in ``snapshots/``.

    ``last_good`` is the iteration of the last checkpoint, named if the write fails
    (:func:`save_checkpoint`). Returns the snapshot's path.
    """
    (run_dir / SNAPSHOTS).mkdir(exist_ok=True)
    path = run_dir / SNAPSHOTS / f"model-{state['iteration']:07d}.pt"
    save_checkpoint(path, state, last_good)
    return path


def snapshots(run_dir: str | Path) -> list[Path]:
    """The model snapshots kept by ``train.keep_every``, oldest first."""
    return sorted((Path(run_dir) / SNAPSHOTS).glob("model-*.pt"))
