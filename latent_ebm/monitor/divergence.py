"""Divergence checks of a training state (docs/errors.md): a NaN or an Inf in a loss, a
parameter, the memory bank or an optimiser's state stops the run before anything is saved,
naming the setting that drives it; a checkpoint holding one is not resumed.

Which setting drives what: the generator's parameters, its loss and its Adam state follow
``train.lr``; the prior's follow ``prior.lr``; the amortiser's ``train.amortiser_lr``. (A
diverged chain is named by :func:`latent_ebm.langevin.remedy`: a network's learning rate when
the network is not finite where the chain starts, else the chain's step size.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from latent_ebm import rundir
from latent_ebm.config import Config
from latent_ebm.errors import LatentEBMError
from latent_ebm.model import LatentEBM
from latent_ebm.posterior import setting

__all__ = ["check_finite", "refuse_non_finite"]

# The optimisers of a checkpoint: the network each updates, and the learning rate it applies.
_OPTIMISERS = {
    "opt_g": ("the generator", "train.lr"),
    "opt_prior": ("the prior", "prior.lr"),
    "opt_amortiser": ("the amortiser", "train.amortiser_lr"),
}


def _lr_field(name: str) -> str:
    """The learning-rate field that drives the parameter or logged loss ``name``."""
    if name.startswith(("amortiser.", "loss_amortiser")):
        return "train.amortiser_lr"
    return "train.lr" if name == "loss_g" or name.startswith("generator.") else "prior.lr"


def check_finite(
    model: LatentEBM, scalars: dict[str, float], cfg: Config, iteration: int, kept: str
) -> None:
    """Stop a run whose losses (``scalars``) or parameters went NaN or Inf, naming the first
    culprit (the prior's before the generator's: a diverged prior spoils the posterior, and so
    the generator) and its learning rate; ``kept`` says what the run keeps.

    Raises:
        LatentEBMError: a non-finite loss or parameter.
    """
    culprit = None
    losses = sorted((k for k, v in scalars.items() if not math.isfinite(v)), key=_lr_field)
    if losses:
        culprit = f"the {losses[0]} loss is {scalars[losses[0]]}"
        field = _lr_field(losses[0])
    else:
        bad = sorted(rundir.non_finite(model.state_dict()), key=_lr_field)
        if bad:
            culprit = f"parameter {bad[0]} is not finite (NaN/Inf)"
            field = _lr_field(bad[0])
    if culprit is None:
        return
    raise LatentEBMError(
        f"iteration {iteration}: {culprit}: training diverged; lower {setting(cfg, field)}; "
        f"stopped, {kept}"
    )


def _non_finite_parts(state: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """The parts of a training state beside its parameters that hold a NaN or an Inf: the
    memory bank, its snapshot and every optimiser's state, as ``(key, what, setting)``."""

    def bad(tensors: Any) -> list[str]:
        items = tensors.items() if isinstance(tensors, dict) else []
        return rundir.non_finite({str(k): v for k, v in items if torch.is_tensor(v)})

    found = [(f"bank.{k}", "memory bank", None) for k in bad(state.get("bank"))]
    for key, (net, lr) in _OPTIMISERS.items():
        opts = state.get(key) or []
        for i, opt in enumerate(opts if isinstance(opts, list) else [opts]):
            params = opt.get("state", {}) if isinstance(opt, dict) else {}
            for p, values in params.items():
                what = f"optimiser state of {net} ({key})"
                found += [(f"{key}[{i}].state.{p}.{k}", what, lr) for k in bad(values)]
    return found


def refuse_non_finite(
    state: dict[str, Any], cfg: Config, path: Path | None, iteration: int = 0, kept: str = ""
) -> None:
    """Refuse a training state whose memory bank (or its snapshot) or optimiser states hold a
    NaN or an Inf: read from the checkpoint ``path``, or (``path`` None) about to be saved at
    ``iteration``, ``kept`` saying what the run keeps. Its parameters are checked by
    :func:`latent_ebm.rundir.load_model_state` and :func:`~latent_ebm.rundir.save_checkpoint`.

    Raises:
        LatentEBMError: naming the part (and, on saving, the setting that drives it).
    """
    found = _non_finite_parts(state)
    if not found:
        return
    key, what, lr = found[0]
    if path is not None:
        raise LatentEBMError(
            f"checkpoint {path} holds a non-finite {what} ({key}: NaN/Inf); it cannot be "
            "resumed: start a new run (--force) with lower learning rates"
        )
    fix = f"lower {setting(cfg, lr)}; " if lr else ""
    raise LatentEBMError(
        f"iteration {iteration}: the {what} holds NaN/Inf ({key}), so nothing was saved: "
        f"training diverged; {fix}stopped, {kept}"
    )
