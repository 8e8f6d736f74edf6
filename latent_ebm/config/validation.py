"""Validation of a configuration: choices and ranges, named by the offending field."""

from __future__ import annotations

import math
import os
import re
import warnings
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from latent_ebm.config.io import config_to_dict
from latent_ebm.config.schema import COMPILE_MODES, Config
from latent_ebm.data import DATASETS
from latent_ebm.errors import LatentEBMError
from latent_ebm.nets import GENERATOR_FAMILIES
from latent_ebm.precision import PRECISIONS
from latent_ebm.priors import PRIORS

__all__ = [
    "SEED_LIMIT",
    "activation_elements",
    "check_device",
    "check_memory",
    "check_seed",
    "check_training_memory",
    "check_work",
    "format_bytes",
    "num_stages",
    "training_memory",
    "validate",
]

_CHOICES = {
    "data.name": DATASETS,
    "model.arch": ("auto", "cifar10"),
    "prior.kind": PRIORS,
    "prior.prior_samples": ("persistent", "langevin"),
    "prior.inference": ("current", "gaussian"),
    "prior.refit_sampler": ("mala", "chain"),
    "prior.refit_split": ("total", "stage"),
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
    "prior.refit_batch",
    "prior.refit_lr",
    "prior.refit_samples",
    "prior.refit_noise",
    "prior.refit_check",
    "prior.refit_patience",
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
    "prior.refit_steps",
    "prior.refit_chain_steps",
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
        raise LatentEBMError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def check_device(device: Any, name: str) -> str:
    """``device`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``name`` names it in the
    message (``"--device"``, ``"config field 'train.device'"``). Whether a GPU is present is
    :func:`latent_ebm.distributed.resolve_device`'s check.

    Raises:
        LatentEBMError: anything else.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise LatentEBMError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
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
                f"config field '{name}' must be one of {', '.join(choices)}, got {flat[name]!r}"
            )
    for name in _POSITIVE:
        if not (flat[name] > 0 and math.isfinite(flat[name])):
            raise LatentEBMError(f"config field '{name}' must be positive, got {flat[name]!r}")
    for name in _NON_NEGATIVE:
        if flat[name] < 0:
            raise LatentEBMError(f"config field '{name}' must be >= 0, got {flat[name]!r}")
    check_seed(cfg.train.seed, "config field 'train.seed'")
    check_device(cfg.train.device, "config field 'train.device'")
    if cfg.data.size is not None and cfg.data.size < 1:
        raise LatentEBMError(f"config field 'data.size' must be positive, got {cfg.data.size}")
    if not (0 <= cfg.train.beta1 < 1 and 0 <= cfg.train.beta2 < 1):
        raise LatentEBMError("config fields 'train.beta1' and 'train.beta2' must lie in [0, 1)")
    if not 0 <= cfg.prior.refit_holdout < 1:
        raise LatentEBMError(
            "config field 'prior.refit_holdout' is the fraction of the refit rows held out and "
            f"must lie in [0, 1) (0: no stopping rule), got {cfg.prior.refit_holdout!r}"
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
    _check_training_work(cfg, stages)
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


def _check_training_work(cfg: Config, stages: int) -> None:
    """The chains of training and of the refit stay under :func:`check_work`'s 10**12 chain
    steps of one row, whatever the memory (e.g. ``train.iters=10**12``).

    Raises:
        LatentEBMError: naming the settings whose product is too large.
    """
    t, p = cfg.train, cfg.prior
    check_work(
        t.iters * t.batch_size,
        max(t.post_steps, t.chain_steps(t.post_init) or 0, p.prior_steps, 1),
        "train.iters x train.batch_size x the chain steps (train.post_steps, prior.prior_steps)",
    )
    if p.refit_steps:
        check_work(p.refit_steps, p.refit_batch, "prior.refit_steps x prior.refit_batch")
        check_work(
            p.refit_samples,
            max(t.post_steps, 1),
            "prior.refit_samples x train.post_steps",
        )
        check_work(
            p.refit_noise * max(stages, 1),
            max(p.refit_chain_steps, 1),
            "prior.refit_noise x prior.stages x prior.refit_chain_steps",
        )
    if t.eval_every:
        check_work(
            t.eval_n * (t.iters // t.eval_every),
            max(cfg.sample.steps, 1),
            "train.eval_n x the evaluations (train.iters / train.eval_every) x sample.steps",
        )


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


# Sizes (issue 30): a configuration or an option whose tensors cannot fit is refused before
# anything is allocated, with the estimate; work beyond any reason is refused too.

FLOAT_BYTES = 4  # float32: parameters, latents, images and activations
MEMORY_CAP = 2**40  # 1 TiB: more than any one process here is refused whatever the machine
WORK_CAP = 10**12  # chain steps of one row: beyond it a command would run for months


def _memory_available(device: str) -> tuple[int, str]:
    """Bytes that a process can allocate on ``device`` now, and where (for the message):
    the GPU's free memory for ``cuda`` (and ``auto`` with a GPU), else the machine's available
    RAM (``MemAvailable`` of ``/proc/meminfo``, or the physical pages); never more than
    :data:`MEMORY_CAP`."""
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        try:
            index = int(device.split(":")[1]) if ":" in device else None
            return min(torch.cuda.mem_get_info(index)[0], MEMORY_CAP), "free on the GPU"
        except (RuntimeError, AssertionError, ValueError):  # no GPU: resolve_device's message
            pass
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(available, MEMORY_CAP), "available on this machine"


def format_bytes(n: float) -> str:
    """``3.2e9`` -> ``'3.2 GB'`` (decimal prefixes, as ``free -h`` does not: it is an estimate)."""
    for unit, scale in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def check_memory(parts: dict[str, int], device: str, doing: str) -> None:
    """Refuse, before anything is allocated, work whose estimated memory exceeds what
    ``device`` has (:func:`_memory_available`) or 1 TiB.

    Arguments:
        parts: estimated bytes by what holds them, each key naming the settings that size it,
            e.g. ``{"a batch (train.batch_size)": 6.4e10}``; the message names the biggest.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        doing: what needs the memory, e.g. ``"training"``.

    Raises:
        LatentEBMError: the sum of ``parts`` exceeds the limit.
    """
    total = sum(parts.values())
    limit, where = _memory_available(device)
    if total > limit:
        name, biggest = max(parts.items(), key=lambda kv: kv[1])
        raise LatentEBMError(
            f"{doing} needs about {format_bytes(total)} of memory, more than the "
            f"{format_bytes(limit)} {where} ({format_bytes(biggest)} for {name}); lower those "
            "settings"
        )


def check_work(rows: int, steps: int, what: str) -> None:
    """Refuse ``rows`` chains of ``steps`` steps when ``rows * steps`` exceeds
    :data:`WORK_CAP` (10**12 chain steps of one row: months at any speed); ``what`` names
    the options, e.g. ``"--n 100 x --steps 10**12"``.

    Raises:
        LatentEBMError: too much work.
    """
    if rows * steps > WORK_CAP:
        raise LatentEBMError(
            f"{what} is {rows * steps:.3g} chain steps (or proposals) of one row, more than 10**12 "
            "(months of computing at any speed): lower them"
        )


class _ScalarsOfNothing(TorchFunctionMode):
    """Inside: reading a number out of a ``meta`` tensor (a prior's stage counter) gives 0,
    the value of every scalar buffer of a fresh model, so that a model can be built on the
    ``meta`` device, with shapes and no storage."""

    _READS = (torch.Tensor.item, torch.Tensor.__int__, torch.Tensor.__index__)
    _READS += (torch.Tensor.__bool__, torch.Tensor.__float__)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in self._READS and args and getattr(args[0], "is_meta", False):
            return 0
        return func(*args, **(kwargs or {}))


def activation_elements(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Elements of every output of ``net``'s leaf modules in ``net(x)``: what a forward pass
    of the rows ``x`` keeps for its backward pass (on the ``meta`` device it costs nothing)."""
    total = 0

    def count(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        total += output.numel() if isinstance(output, torch.Tensor) else 0

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    return total


def training_memory(
    cfg: Config, shape: tuple[int, int, int], num_train: int | None = None
) -> dict[str, int]:
    """Estimated bytes of what training ``cfg`` on images ``shape`` ``(C, H, W)`` holds, by
    what holds it (each key names the settings that size it; :func:`check_memory` reads it,
    and ``train --dry-run`` prints it). Nothing is allocated: the networks are built on the
    ``meta`` device, where tensors have shapes and no storage.

    - the networks: generator, prior and amortiser parameters, four times (weights, gradients
      and Adam's two moments);
    - a batch: the generator's activations for ``train.batch_size`` rows, twice (the forward
      values that the chain's gradient keeps, and their gradients), and the images;
    - the memory bank and its snapshot (``num_train`` rows of ``model.nz``), when known;
    - the refit's posterior samples and noise (``prior.refit_samples``, ``prior.refit_noise``)
      and a batch of its ratio networks (``prior.refit_batch``), when it runs;
    - the in-training FID's samples (``train.eval_n``) when it runs.
    """
    from latent_ebm.amortiser import Amortiser
    from latent_ebm.nets import Generator
    from latent_ebm.priors import build_prior

    m, t, p = cfg.model, cfg.train, cfg.prior
    c, h, _ = shape
    with torch.device("meta"), _ScalarsOfNothing():
        generator = Generator(m.nz, m.ngf, c, h, m.arch)
        networks = [generator, build_prior(cfg), Amortiser.from_config(cfg, shape)]
        per_row = activation_elements(generator, torch.zeros(1, m.nz))
    params = sum(q.numel() for net in networks if net is not None for q in net.parameters())
    image = c * h * shape[2]
    sizes = "model.nz, model.ngf, model.ratio_hidden"
    parts = {
        f"the networks and their optimiser ({sizes})": 4 * params * FLOAT_BYTES,
        "a batch (train.batch_size, model.ngf)": t.batch_size * (2 * per_row + image) * FLOAT_BYTES,
    }
    if num_train is not None:
        parts["the memory bank (model.nz, training images)"] = 2 * num_train * m.nz * FLOAT_BYTES
    if p.refit_steps:  # (a prior with nothing to refit ignores these settings)
        # The samples and their order in the training set (int64); the noise chains, all rows
        # at once through a ratio network and back (MALA); a batch of the ratios' updates.
        parts["the refit's samples (prior.refit_samples, model.nz)"] = p.refit_samples * (
            m.nz * FLOAT_BYTES + 8
        )
        hidden = m.nz + 2 * m.ratio_hidden
        parts["the refit's noise chains (prior.refit_noise, model.nz, model.ratio_hidden)"] = (
            2 * p.refit_noise * hidden * FLOAT_BYTES
        )
        parts["a refit batch (prior.refit_batch, model.nz, model.ratio_hidden)"] = (
            2 * p.refit_batch * hidden * FLOAT_BYTES
        )
    if t.eval_every:
        parts["the in-training FID's samples (train.eval_n, model.nz)"] = (
            t.eval_n * (m.nz + image) * FLOAT_BYTES
        )
    return parts


def check_training_memory(
    cfg: Config, shape: tuple[int, int, int], num_train: int | None = None
) -> None:
    """:func:`check_memory` of :func:`training_memory` on ``train.device``.

    Raises:
        LatentEBMError: training ``cfg`` would need more memory than there is.
    """
    check_memory(training_memory(cfg, shape, num_train), cfg.train.device, "training")
