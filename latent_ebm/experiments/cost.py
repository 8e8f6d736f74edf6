"""What a configuration costs: parameter counts, floating-point operations and run time.

Operations are counted with the formulas of PyTorch's flop counter
(``torch.utils.flop_counter``: matrix multiplies and convolutions, forward and backward, two
operations per multiply-add; element-wise work is not counted). :func:`iteration_flops` runs
one real training iteration (:func:`latent_ebm.train.train_iteration`) of the configuration
under the counter on a one-row synthetic batch and scales it to the configured batch: every
counted operation is linear in the batch (the posterior chain, the generator update and every
prior's update work on ``B`` rows), so ``B`` rows cost exactly ``B`` times one row. The
prior's part depends on the stage (stage ``k`` of the adaptive prior evaluates ``k`` frozen
ratios in each chain step), so :func:`estimate` counts one iteration per stage.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from latent_ebm import rng
from latent_ebm.config import Config, num_stages
from latent_ebm.config.sizes import format_bytes, training_memory
from latent_ebm.memory import MemoryBank
from latent_ebm.model import LatentEBM, build_model
from latent_ebm.nets import RatioNet
from latent_ebm.priors import stage_of
from latent_ebm.train import train_iteration

__all__ = [
    "Estimate",
    "count_flops",
    "cumulative_gflop",
    "describe",
    "equal_time_iters",
    "estimate",
    "format_count",
    "iteration_flops",
    "parse_rate",
    "synthetic_batch",
]


class _FlopCounter(TorchDispatchMode):
    """Sums PyTorch's per-operator formulas (``flop_registry``) over the operators run.

    ``FlopCounterMode`` itself cannot be used: its per-module tracker fails inside
    ``torch.autograd.grad`` with respect to a leaf, which is what every Langevin step does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of the matrix multiplies and convolutions run by ``fn()``."""
    with _FlopCounter() as counter:
        fn()
    return counter.total


def synthetic_batch(
    cfg: Config,
    shape: tuple[int, int, int],
    stage: int = 0,
    batch: int | None = None,
    device: str | torch.device = "cpu",
    model: LatentEBM | None = None,
) -> tuple[LatentEBM, torch.optim.Optimizer, MemoryBank, torch.Tensor, torch.Tensor]:
    """Everything :func:`latent_ebm.train.train_iteration` needs, without a data set.

    Returns ``model`` (default: a fresh one of ``cfg``) in training mode at ``stage``, its
    generator's Adam optimiser, a memory bank of ``batch`` rows (default ``train.batch_size``),
    a seeded uniform batch ``x`` ``(batch, *shape)`` in ``[-1, 1]`` and its rows ``idx``.
    """
    t = cfg.train
    batch = t.batch_size if batch is None else batch
    device = torch.device(device)
    model = (build_model(cfg, shape) if model is None else model).to(device).train()
    opt_g = torch.optim.Adam(model.generator.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    bank = MemoryBank(batch, cfg.model.nz, t.seed, device)
    model.prior.set_stage(stage, bank)
    g = torch.Generator().manual_seed(t.seed)
    x = (torch.rand(batch, *shape, generator=g) * 2 - 1).to(device)
    return model, opt_g, bank, x, torch.arange(batch)


def iteration_flops(
    cfg: Config, shape: tuple[int, int, int], stage: int = 0, model: LatentEBM | None = None
) -> int:
    """Operations of one training iteration of ``cfg`` at ``stage``, for ``train.batch_size`` rows.

    One iteration of a single row is run under :func:`count_flops` on a synthetic image of
    ``shape`` ``(C, H, W)`` and the count is multiplied by the batch size (see the module
    docstring). ``model``: the model to run (default: a fresh one of ``cfg``); it is trained by
    one step, so pass a copy of a model you keep.
    """
    model, opt_g, bank, x, idx = synthetic_batch(cfg, shape, stage, batch=1, model=model)
    streams = rng.Streams(cfg.train.seed, 0, 1, slice(0, 1), torch.device("cpu"))
    one = count_flops(lambda: train_iteration(model, opt_g, bank, x, idx, streams, cfg))
    return one * cfg.train.batch_size


@dataclass
class Estimate:
    """The cost of training a configuration.

    Attributes:
        generator_params: parameters of the generator.
        prior_params: parameters of the prior (every ratio network, or the EBM).
        ratio_params: parameters of each ratio network (none for the Gaussian prior or LEBM).
        stage_iters: iterations spent in each stage of the schedule, ``{stage: iterations}``.
        stage_flops: operations of one iteration in each stage, ``{stage: flops}``.
        amortiser_params: parameters of the amortiser (``train.post_init=amortised``; else 0).
    """

    generator_params: int
    prior_params: int
    ratio_params: list[int]
    stage_iters: dict[int, int]
    stage_flops: dict[int, int]
    amortiser_params: int = 0

    @property
    def total_flops(self) -> int:
        """Operations of the whole run."""
        return sum(n * self.stage_flops[s] for s, n in self.stage_iters.items())

    @property
    def iters(self) -> int:
        return sum(self.stage_iters.values())

    def seconds(self, flops_per_s: float) -> float:
        """Training time at a sustained rate of ``flops_per_s`` counted operations a second."""
        return self.total_flops / flops_per_s


def estimate(cfg: Config, shape: tuple[int, int, int]) -> Estimate:
    """Parameters and operations of training ``cfg`` on images of ``shape`` ``(C, H, W)``."""
    model = build_model(cfg, shape)
    generator = sum(p.numel() for p in model.generator.parameters())
    prior = sum(p.numel() for p in model.prior.parameters())
    ratios = [m for m in model.prior.modules() if isinstance(m, RatioNet)]
    ratio_params = [sum(p.numel() for p in r.parameters()) for r in ratios]
    stages = num_stages(cfg)
    iters = _stage_lengths(cfg.train.iters, stages)
    flops = {s: iteration_flops(cfg, shape, s, build_model(cfg, shape)) for s in sorted(iters)}
    amortiser = sum(p.numel() for p in model.amortiser.parameters()) if model.amortiser else 0
    return Estimate(generator, prior, ratio_params, dict(sorted(iters.items())), flops, amortiser)


def equal_time_iters(base: Config, other: Config, shape: tuple[int, int, int]) -> int:
    """Iterations of ``other`` with the operations of ``base``'s ``train.iters`` iterations (on
    images of ``shape``): the length at which ``other`` trains about as long as ``base``."""
    stages = range(max(num_stages(base), 1))
    per_base = sum(iteration_flops(base, shape, s) for s in stages)
    per_other = sum(iteration_flops(other, shape, s) for s in stages)
    return round(base.train.iters * per_base / per_other)


def cumulative_gflop(cfg: Config, shape: tuple[int, int, int]) -> dict[int, float]:
    """``{iteration: GFLOP}``: the training operations of ``cfg`` (:func:`iteration_flops`, on
    images of ``shape``) up to each iteration that keeps a snapshot (every
    ``train.keep_every``, and the last): the x axis of a curve against operations
    (:mod:`latent_ebm.experiments.curves`)."""
    stages = max(num_stages(cfg), 1)
    per = [iteration_flops(cfg, shape, s) / 1e9 for s in range(stages)]
    iters, keep = cfg.train.iters, cfg.train.keep_every
    total, out = 0.0, {}
    for i in range(iters):
        total += per[min(stage_of(i, iters, num_stages(cfg)), stages - 1)]
        if (i + 1) % keep == 0 or i + 1 == iters:
            out[i + 1] = total
    return out


def _stage_lengths(iters: int, stages: int) -> dict[int, int]:
    """``{stage: iterations}`` of the schedule (:func:`latent_ebm.priors.stage_of`), found by
    bisection on its stage boundaries rather than by visiting each of ``iters`` iterations."""
    its = range(iters)
    firsts = [
        bisect.bisect_left(its, k, key=lambda it: stage_of(it, iters, stages))
        for k in range(max(stages, 1) + 1)
    ]
    lengths = {k: firsts[k + 1] - firsts[k] for k in range(max(stages, 1))}
    return {k: n for k, n in lengths.items() if n}


_PREFIXES = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}  # E: output only
_RATE = re.compile(r"\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*([kMGTP]?)\s*(?:FLOP/s|flop/s)?\s*")


def format_count(n: float, unit: str = "") -> str:
    """``1.23e12`` -> ``'1.23 T'`` + unit: three significant digits and an SI prefix."""
    for prefix, scale in reversed([*_PREFIXES.items(), ("E", 1e18)]):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:.3g} {unit}"


def parse_rate(text: str) -> float:
    """``'20T'``, ``'1.5e12'``, ``'300 GFLOP/s'`` -> operations a second.

    Raises:
        ValueError: not a positive number with an optional prefix k, M, G, T or P.
    """
    m = _RATE.fullmatch(text)
    value = float(m[1]) * _PREFIXES[m[2]] if m else 0.0
    if not value > 0:
        raise ValueError(f"expected a positive rate such as 20T or 1.5e12, got {text!r}")
    return value


def describe(
    cfg: Config,
    shape: tuple[int, int, int],
    num_train: int | None = None,
    flops_per_s: float | None = None,
) -> str:
    """The ``train --dry-run`` report: data, parameters, operations, the estimated memory
    (:func:`latent_ebm.config.sizes.training_memory`, the estimate that training's
    validation checks) and the estimated time.

    Arguments:
        cfg: a validated configuration.
        shape: image shape ``(C, H, W)``.
        num_train: training images, for the epoch count (``None``: not known).
        flops_per_s: a sustained throughput in counted operations a second, for the time.
    """
    est = estimate(cfg, shape)
    t = cfg.train
    c, h, w = shape
    lines = [f"data: {cfg.data.name}, images {c}x{h}x{w}"]
    if num_train is not None:
        per_epoch = num_train // t.batch_size
        lines[0] += f", {num_train:,} for training ({per_epoch:,} iterations of {t.batch_size})"
        lines.append(f"schedule: {t.iters:,} iterations = {t.iters / per_epoch:.1f} epochs")
    else:
        lines.append(f"schedule: {t.iters:,} iterations of batch {t.batch_size}")
    stages = num_stages(cfg)
    if stages:
        lines[-1] += f", {stages} stage(s) of {t.iters // stages:,} iterations"
    g, p, r = est.generator_params, est.prior_params, est.ratio_params
    share = f"{p / g:.1%} of the generator"
    if len(r) > 1 and len(set(r)) == 1:
        share = f"{len(r)} ratio networks of {r[0]:,}, {r[0] / g:.1%} each: {share}"
    lines.append(f"parameters: generator {g:,}, prior {p:,} ({share})")
    if est.amortiser_params:
        lines[-1] += f", amortiser {est.amortiser_params:,} (the posterior chain's start)"
    per_stage = ", ".join(
        f"stage {s}: {format_count(f, 'FLOP')}" for s, f in est.stage_flops.items()
    )
    lines.append(
        f"operations per iteration ({per_stage}); total {format_count(est.total_flops, 'FLOP')} "
        "(matrix multiplies and convolutions, forward and backward)"
    )
    memory = training_memory(cfg, shape, num_train)
    parts = ", ".join(f"{format_bytes(b)} {name}" for name, b in memory.items())
    lines.append(f"memory: about {format_bytes(sum(memory.values()))} ({parts})")
    if flops_per_s is None:
        lines.append(
            "time: pass --throughput RATE (counted operations a second, e.g. 50T) to estimate it"
        )
    else:
        seconds = est.seconds(flops_per_s)
        lines.append(
            f"time: {_hours(seconds)} at {format_count(flops_per_s, 'FLOP/s')} "
            f"({_hours(est.total_flops / est.iters / flops_per_s)} an iteration)"
        )
    return "\n".join(lines)


def _hours(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
