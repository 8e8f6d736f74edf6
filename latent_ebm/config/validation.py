"""Validation of a configuration: choices and ranges, named by the offending field."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

from latent_ebm.config.io import clip, config_to_dict
from latent_ebm.config.recipes import RECIPES
from latent_ebm.config.schema import COMPILE_MODES, Config
from latent_ebm.config.sizes import check_training_memory, check_training_work
from latent_ebm.data import DATASETS
from latent_ebm.errors import LatentEBMError
from latent_ebm.nets import GENERATOR_FAMILIES
from latent_ebm.precision import PRECISIONS
from latent_ebm.priors import PRIORS

__all__ = ["SEED_LIMIT", "check_device", "check_seed", "num_stages", "validate"]

_CHOICES = {
    "data.name": DATASETS,
    "model.arch": ("auto", "cifar10"),
    "prior.kind": PRIORS,
    "prior.prior_samples": ("persistent", "langevin"),
    "prior.inference": ("current", "gaussian"),
    "refit.sampler": ("mala", "chain"),
    "refit.split": ("total", "stage"),
    "train.recipe": tuple(RECIPES),
    "train.post_init": ("noise", "bank", "amortised"),
    "train.precision": PRECISIONS,
    "train.compile": COMPILE_MODES,
    "train.keep_best": ("none", "fid"),
}
_POSITIVE = (
    "model.nz",
    "model.ngf",
    "model.sigma",
    "model.ratio_hidden",
    "prior.prior_step_size",
    "prior.lr",
    "refit.batch",
    "refit.lr",
    "refit.samples",
    "refit.noise",
    "refit.check",
    "refit.patience",
    "train.iters",
    "train.batch_size",
    "train.lr",
    "train.post_step_size",
    "train.amortiser_lr",
    "train.log_every",
    "train.ckpt_every",
    "train.eval_n",
    "sample.step_size",
    "sample.grid",
)
_NON_NEGATIVE = (
    "prior.stages",
    "prior.prior_steps",
    "refit.steps",
    "refit.chain_steps",
    "train.post_steps",
    "train.keep_every",
    "train.eval_every",
    "sample.steps",
)

# Seeds lie in [0, 2**63): torch.manual_seed and numpy's SeedSequence take them, and they fit
# an int64 tensor.
SEED_LIMIT = 2**63
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_seed(seed: Any, name: str) -> int:
    """``seed`` when it is an integer in ``[0, 2**63)``; ``name`` names it in the message
    (``"--seed"``, ``"config field 'train.seed'"``).

    Raises:
        LatentEBMError: anything else.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise LatentEBMError(f"{name} must be an integer in [0, 2**63), got {clip(repr(seed))}")
    return seed


def check_device(device: Any, name: str) -> str:
    """``device`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``name`` names it in the
    message (``"--device"``, ``"config field 'train.device'"``). Whether a GPU is present is
    :func:`latent_ebm.distributed.resolve_device`'s check.

    Raises:
        LatentEBMError: anything else.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise LatentEBMError(f"{name} must be auto, cpu, cuda or cuda:N, got {clip(repr(device))}")
    return device


def validate(
    cfg: Config, num_train: int | None = None, shape: tuple[int, int, int] | None = None
) -> Config:
    """Check choices and ranges; raise ``LatentEBMError`` naming the first bad field.

    With ``num_train`` (training-set size) it also checks the batch size against it and warns
    when a stage of the persistent prior-sample mode lasts less than an epoch (ARCHITECTURE
    §3: rows never visited in a stage would still hold samples from an earlier stage). With
    ``shape`` (the data's ``(C, H, W)``) it checks that ``model.arch`` has a generator for it;
    with both, that training fits in memory (:func:`check_training_memory`).

    Raises:
        LatentEBMError: the first bad field, or training would not fit in memory.
    """
    flat = {f"{s}.{k}": v for s, sub in config_to_dict(cfg).items() for k, v in sub.items()}
    for name, choices in _CHOICES.items():
        if flat[name] not in choices:
            raise LatentEBMError(
                f"config field '{name}' must be one of {', '.join(choices)}, "
                f"got {clip(repr(flat[name]))}"
            )
    for name in _POSITIVE:
        if not (flat[name] > 0 and math.isfinite(flat[name])):
            raise LatentEBMError(
                f"config field '{name}' must be positive, got {clip(repr(flat[name]))}"
            )
    for name in _NON_NEGATIVE:
        if flat[name] < 0:
            raise LatentEBMError(
                f"config field '{name}' must be >= 0, got {clip(repr(flat[name]))}"
            )
    check_seed(cfg.train.seed, "config field 'train.seed'")
    check_device(cfg.train.device, "config field 'train.device'")
    if cfg.data.size is not None and cfg.data.size < 1:
        raise LatentEBMError(f"config field 'data.size' must be positive, got {cfg.data.size}")
    if not (0 <= cfg.train.beta1 < 1 and 0 <= cfg.train.beta2 < 1):
        raise LatentEBMError("config fields 'train.beta1' and 'train.beta2' must lie in [0, 1)")
    if not 0 <= cfg.refit.holdout < 1:
        raise LatentEBMError(
            "config field 'refit.holdout' is the fraction of the refit rows held out and "
            f"must lie in [0, 1) (0: no stopping rule), got {clip(repr(cfg.refit.holdout))}"
        )
    for name in ("samples", "noise") if cfg.refit.steps else ():
        rows = getattr(cfg.refit, name)
        if round(cfg.refit.holdout * rows) >= rows:  # priors.ratio.hold_out's count
            raise LatentEBMError(
                f"config field 'refit.holdout' ({cfg.refit.holdout}) holds out all "
                f"{rows} rows of 'refit.{name}', leaving none to fit: raise refit.{name}"
            )
    if shape is not None:
        _check_arch(cfg, shape)
    _check_evaluations(cfg)
    _check_posterior_start(cfg)
    PRIORS[cfg.prior.kind].check_config(cfg)
    stages = num_stages(cfg)
    if stages > cfg.train.iters:
        raise LatentEBMError(
            f"config field 'prior.stages' ({stages}) exceeds 'train.iters' ({cfg.train.iters}): "
            "every stage needs at least one iteration"
        )
    r = cfg.refit
    if 0 < r.steps < stages and r.split == "total":
        raise LatentEBMError(
            f"config field 'refit.steps' ({r.steps}) is split over the {stages} "
            "stages (refit.split=total): every stage needs at least one update; raise it "
            "or set refit.split=stage"
        )
    check_training_work(cfg, stages)
    if num_train is not None:
        if cfg.train.batch_size > num_train:
            raise LatentEBMError(
                f"config field 'train.batch_size' ({cfg.train.batch_size}) exceeds the "
                f"training set ({num_train} examples)"
            )
        if shape is not None:
            check_training_memory(cfg, shape, num_train)
        epoch = num_train // cfg.train.batch_size
        persistent = stages > 1 and cfg.prior.prior_samples == "persistent"
        if persistent and cfg.train.iters // stages < epoch:
            warnings.warn(
                f"each stage lasts {cfg.train.iters // stages} iterations, less than an "
                f"epoch ({epoch}): the persistent prior samples of a stage then include "
                "memory-bank rows from earlier stages (raise train.iters or lower "
                "prior.stages)",
                stacklevel=2,
            )
    return cfg


def _check_posterior_start(cfg: Config) -> None:
    """``train.warm_steps``: ``None`` (``train.post_steps``) or ``>= 0``; only for the warm
    starts (``bank``, ``amortised``); at least 1 with ``bank``, whose chain of no step would
    return the example's bank row unchanged."""
    t = cfg.train
    if t.warm_steps is None:
        return
    if t.warm_steps < 0:
        raise LatentEBMError(
            f"config field 'train.warm_steps' must be >= 0 (or null: train.post_steps), "
            f"got {t.warm_steps}"
        )
    if t.post_init == "noise":
        raise LatentEBMError(
            f"config field 'train.warm_steps' ({t.warm_steps}) applies to train.post_init=bank "
            "or amortised; a noise-started chain runs train.post_steps (set warm_steps: null)"
        )
    if t.post_init == "bank" and t.warm_steps == 0:
        raise LatentEBMError(
            "config field 'train.warm_steps' must be >= 1 with train.post_init=bank (0 steps "
            "would keep every bank row; null means train.post_steps)"
        )


def _check_arch(cfg: Config, shape: tuple[int, int, int]) -> None:
    """``model.arch`` has a generator for images of ``shape`` (ARCHITECTURE §5)."""
    _, h, w = shape
    sizes = ", ".join(f"{k}x{k}" for k in GENERATOR_FAMILIES if k.isdigit())
    if h != w or (cfg.model.arch == "auto" and str(h) not in GENERATOR_FAMILIES):
        raise LatentEBMError(
            f"{cfg.data.name} images are {h}x{w}: no generator for that size (sizes: {sizes}); "
            "set data.size to one of them"
        )
    if cfg.model.arch == "cifar10" and (h, w) != (32, 32):
        raise LatentEBMError(
            f"config field 'model.arch' is cifar10, the generator of 32x32 images, but "
            f"{cfg.data.name} images are {h}x{w}: use model.arch=auto"
        )


def num_stages(cfg: Config) -> int:
    """Number of stages of the training schedule (:func:`latent_ebm.priors.stage_of`): the
    ``num_stages`` of the prior class that ``prior.kind`` names (0: no schedule)."""
    return PRIORS[cfg.prior.kind].num_stages(cfg)


def _check_evaluations(cfg: Config) -> None:
    """The in-training evaluations: ``eval_every`` within the run, FID's covariance, and
    ``keep_best`` only with evaluations."""
    t = cfg.train
    if t.eval_every > t.iters:
        raise LatentEBMError(
            f"config field 'train.eval_every' ({t.eval_every}) exceeds 'train.iters' "
            f"({t.iters}): set it to at most {t.iters}, or 0 for no in-training evaluation"
        )
    if t.eval_every and t.eval_n < 2:
        raise LatentEBMError(
            f"config field 'train.eval_n' must be at least 2 (FID fits a covariance), "
            f"got {t.eval_n}"
        )
    if t.keep_best != "none" and not t.eval_every:
        raise LatentEBMError(
            f"config field 'train.keep_best' is {t.keep_best}, but no in-training evaluation "
            "runs: set train.eval_every as well"
        )
