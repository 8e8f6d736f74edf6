"""Measured speed against the machine's own peak: ``latent-ebm bench`` (issue 6).

One call of :func:`bench` measures, on synthetic data of a configuration's image shape and
batch:

- the **matrix-multiply peak** of the machine in each precision used (:func:`matmul_peak`:
  square products of a size that runs long enough, ``2 n^3`` operations each, best of the
  repeats);
- a **posterior chain step** (a generator forward pass and the gradient with respect to
  ``z``, with the prior's term), timed as a whole chain of ``train.post_steps`` steps
  (:meth:`latent_ebm.model.LatentEBM.infer`) divided by its steps, so that it is the step
  that training runs and its time is long enough to measure;
- one whole **training iteration** (:func:`latent_ebm.train.train_iteration`: the chain, the
  prior's update and the generator's update), and the share of its time spent outside the
  matrix-multiply and convolution operators, from ``torch.profiler``;
- **sampling**: the test-time prior chain of ``sample.steps`` steps and the decoding
  (:func:`latent_ebm.sampling.sample_latents`, then ``decode``), per image.

Operations are those of :func:`latent_ebm.experiments.cost.count_flops` (PyTorch's flop
formulas) on the very call that is timed, run once under the counter as the first warm-up
(eagerly, with ``train.compile``, so that the counter sees PyTorch's operators; at least one
more warm-up call then compiles, untimed). A part's rate is its operations over its median
time; its fraction of peak divides that by the peak of its own precision: the chain and the
iteration run in ``train.precision``, sampling in float32 as :mod:`latent_ebm.sampling` always
does. The peak and the timing helpers are in :mod:`latent_ebm.experiments.timing`.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import statistics
import time
import warnings
from typing import Any

import torch

from latent_ebm import rng
from latent_ebm.config import Config, config_to_dict, num_stages, validate
from latent_ebm.config.sizes import check_training_memory
from latent_ebm.data import dataset_info
from latent_ebm.distributed import resolve_device
from latent_ebm.errors import LatentEBMError
from latent_ebm.experiments.cost import format_count, synthetic_batch
from latent_ebm.experiments.timing import (
    device_name,
    matmul_peak,
    outside_kernels,
    per_step,
    sync,
    time_part,
)
from latent_ebm.precision import autocast
from latent_ebm.sampling import sample_latents
from latent_ebm.train import train_iteration

__all__ = [
    "bench",
    "compare_precisions",
    "format_comparison",
    "format_report",
]


def bench(
    cfg: Config,
    precision: str | None = None,
    *,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    stage: int = 0,
    peak_seconds: float = 0.5,
    profile: bool = True,
) -> dict[str, Any]:
    """Time a chain step, a training iteration and sampling of ``cfg`` against the peak.

    Arguments:
        cfg: the configuration (its image shape, batch, chains, prior and device); no data
            files are read: the batch is ``(B, C, H, W)`` uniform noise in ``[-1, 1]``.
        precision: ``fp32`` or ``bf16`` (default: ``cfg.train.precision``).
        repeats: timed calls of each part (the median is reported) and of the peak (the best).
        warmup: untimed calls of each part after the counting call.
        threads: ``torch.set_num_threads`` for the measurement (default: leave it).
        stage: the training stage of the prior in the chain and the iteration (stage ``k`` of
            the adaptive prior evaluates ``k`` frozen ratios per chain step); sampling uses the
            final prior.
        peak_seconds: duration of one repeat of the matrix-multiply peak.
        profile: profile one more iteration for the time outside the kernels.

    Returns:
        A JSON-ready dict: the setting (``precision``, ``device``, ``threads``, ``batch_size``,
        ``image_shape``, ``config``...), ``peak`` (:func:`matmul_peak` per precision used) and
        ``parts``: ``chain_step``, ``iteration`` and ``sampling``, each with ``flops``,
        ``seconds``, ``times``, ``images_per_s``, ``flops_per_s`` and ``fraction_of_peak``
        (the chain step's per step of the timed chain: also ``steps``, ``chain_seconds`` and
        ``chain_flops``);
        the iteration also holds ``outside_kernels`` (:func:`outside_kernels`) when profiled.
        With a warm start (``train.post_init`` ``bank`` or ``amortised``) also
        ``noise_iteration``, the iteration with the paper's noise-started chain in the same
        call, and the iteration's ``vs_noise``, its time over that one's.

    Raises:
        LatentEBMError: a bad config or argument, a configuration whose networks and batch
            would not fit in memory, calls or threads beyond their bounds, or a peak
            measurement longer than a week (longer than 10 minutes: a warning); all before
            any measurement.
    """
    cfg = copy.deepcopy(cfg)
    if precision is not None:
        cfg.train.precision = precision
    validate(cfg)
    precision = cfg.train.precision
    stages = num_stages(cfg)
    if not 0 <= stage < max(stages, 1):
        raise LatentEBMError(f"stage must lie in 0..{max(stages, 1) - 1}, got {stage}")
    if repeats < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise LatentEBMError("repeats and threads must be at least 1, warmup at least 0")
    if not peak_seconds > 0:
        raise LatentEBMError(f"peak_seconds must be positive, got {peak_seconds}")
    _check_sizes(cfg, repeats, warmup, threads)
    peaks = len({precision, "fp32"})
    _check_duration(peaks * repeats * peak_seconds, "--repeats x --peak-seconds")
    shape, _ = dataset_info(cfg.data.name, cfg.data.size, cfg.data.holdout)
    validate(cfg, shape=shape)
    check_training_memory(cfg, shape)  # the synthetic batch and the networks, before the peak
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(cfg, precision, stage, repeats, warmup, peak_seconds, profile)
    finally:
        torch.set_num_threads(old_threads)


MAX_CALLS = 10**6  # --repeats, --warmup: more calls of a part than any measurement needs
LONG_SECONDS, ABSURD_SECONDS = 600.0, 7 * 86400.0  # announced; refused (a week)


def _check_sizes(cfg: Config, repeats: int, warmup: int, threads: int | None) -> None:
    """Bounds of the calls, the threads (the machine's cores) and the chain (the chain step's
    time is the chain's over its steps). Raises ``LatentEBMError``: a bound exceeded."""
    if repeats > MAX_CALLS or warmup > MAX_CALLS:
        raise LatentEBMError(
            f"--repeats ({repeats}) and --warmup ({warmup}) must be at most 10**6 calls"
        )
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        raise LatentEBMError(f"--threads must be at most {cores} (the cores here), got {threads}")
    if cfg.train.post_steps < 1:
        raise LatentEBMError(
            "bench times a posterior chain step: config field 'train.post_steps' must be at least 1"
        )


def _check_duration(seconds: float, what: str) -> None:
    """The matrix-multiply peak alone lasts ``seconds``: a warning beyond :data:`LONG_SECONDS`,
    ``LatentEBMError`` beyond :data:`ABSURD_SECONDS` (``what`` names the options)."""
    hours = f"{seconds / 3600:.3g} h"
    if seconds > ABSURD_SECONDS:
        raise LatentEBMError(f"{what}: the matrix-multiply peak alone would take {hours}")
    if seconds > LONG_SECONDS:
        warnings.warn(f"{what}: the matrix-multiply peak alone takes about {hours}", stacklevel=3)


def _bench(
    cfg: Config,
    precision: str,
    stage: int,
    repeats: int,
    warmup: int,
    peak_seconds: float,
    profile: bool,
) -> dict[str, Any]:
    t = cfg.train
    device = resolve_device(t.device)
    shape, _ = dataset_info(cfg.data.name, cfg.data.size, cfg.data.holdout)
    batch, nz = t.batch_size, cfg.model.nz
    peak = {
        p: matmul_peak(p, device, peak_seconds, repeats) for p in dict.fromkeys((precision, "fp32"))
    }

    # The model at the requested stage, a synthetic batch and its random numbers.
    torch.manual_seed(t.seed)
    model, opt_g, bank, x, idx = synthetic_batch(cfg, shape, stage, batch, device)
    model.compile_generator(t.compile)
    if t.compile != "none":
        warmup = max(warmup, 1)  # the first compiled call compiles: never timed
    streams = rng.Streams(t.seed, 0, batch, slice(0, batch), device)
    z0, eps = streams.normal(rng.POSTERIOR_INIT, nz), streams.normal(rng.POSTERIOR_NOISE, nz)

    steps = t.post_steps

    def chain() -> torch.Tensor:
        with autocast(precision, device):
            return model.infer(x, z0, steps, t.post_step_size, lambda step: eps, training=True)

    iterations = itertools.count()

    def iteration() -> Any:
        s = rng.Streams(t.seed, next(iterations), batch, slice(0, batch), device)
        return train_iteration(model, opt_g, bank, x, idx, s, cfg)

    # Time the chain step and the iteration; profile one more iteration.
    parts = {
        "chain_step": per_step(time_part(chain, device, batch, precision, repeats, warmup), steps),
        "iteration": time_part(iteration, device, batch, precision, repeats, warmup),
    }
    if t.post_init != "noise":
        parts["noise_iteration"] = _noise_iteration(cfg, shape, stage, x, idx, repeats, warmup)
        parts["iteration"]["vs_noise"] = (
            parts["iteration"]["seconds"] / parts["noise_iteration"]["seconds"]
        )
    if profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            iteration()
            sync(device)
            wall = time.perf_counter() - t0
        parts["iteration"]["outside_kernels"] = outside_kernels(prof.events(), wall, device)

    # Sampling from the final prior, in float32 as the library samples.
    model.eval()
    model.prior.set_stage(num_stages(cfg), bank)

    def sample() -> torch.Tensor:
        z = sample_latents(
            model, batch, steps=cfg.sample.steps, step_size=cfg.sample.step_size, batch_size=batch
        )
        return model.decode(z, batch_size=batch)

    parts["sampling"] = time_part(sample, device, batch, "fp32", repeats, warmup)
    parts["sampling"]["seconds_per_image"] = parts["sampling"]["seconds"] / batch
    for part in parts.values():
        part["fraction_of_peak"] = part["flops_per_s"] / peak[part["precision"]]["flops_per_s"]
    return {
        "precision": precision,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": batch,
        "image_shape": list(shape),
        "stage": stage,
        "repeats": repeats,
        "warmup": warmup,
        "peak": peak,
        "parts": parts,
        "config": config_to_dict(cfg),
    }


def _noise_iteration(
    cfg: Config,
    shape: tuple[int, int, int],
    stage: int,
    x: torch.Tensor,
    idx: torch.Tensor,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """The part ``noise_iteration``: the iteration of ``cfg`` with the paper's posterior chain
    (``train.post_init=noise``, ``train.post_steps`` steps) on the same batch ``x``, rows
    ``idx``, timed in the same call as a warm start's iteration, whose time it divides."""
    base = copy.deepcopy(cfg)
    base.train.post_init, base.train.warm_steps = "noise", None
    t = base.train
    torch.manual_seed(t.seed)
    model, opt_g, bank, _, _ = synthetic_batch(base, shape, stage, len(x), x.device)
    model.compile_generator(t.compile)
    iterations = itertools.count()

    def iteration() -> Any:
        s = rng.Streams(t.seed, next(iterations), len(x), slice(0, len(x)), x.device)
        return train_iteration(model, opt_g, bank, x, idx, s, base)

    warmup = max(warmup, 1) if t.compile != "none" else warmup
    return time_part(iteration, x.device, len(x), t.precision, repeats, warmup)


def compare_precisions(
    cfg: Config, rounds: int = 3, precisions: tuple[str, ...] = ("fp32", "bf16"), **kwargs: Any
) -> dict[str, Any]:
    """:func:`bench` of each precision in turn, ``rounds`` times, in one process.

    A shared machine's speed drifts over minutes; alternating the precisions and taking the
    ratio within each round compares them under the same conditions. ``kwargs`` go to
    :func:`bench`.

    Returns:
        ``{"rounds": [{precision: bench result}], "speedup": {part: [per-round ratio of the
        first precision's time to the last's]}, "median_speedup": {part: median}}``.
    """
    if rounds < 1:
        raise LatentEBMError(f"rounds must be at least 1, got {rounds}")
    repeats, peak_seconds = kwargs.get("repeats", 5), kwargs.get("peak_seconds", 0.5)
    peaks = rounds * len(precisions) * repeats * peak_seconds
    _check_duration(peaks, "--compare x --repeats x --peak-seconds")
    results = [{p: bench(cfg, p, **kwargs) for p in precisions} for _ in range(rounds)]
    first, last = precisions[0], precisions[-1]
    speedup = {
        part: [
            r[first]["parts"][part]["seconds"] / r[last]["parts"][part]["seconds"] for r in results
        ]
        for part in ("chain_step", "iteration")
    }
    return {
        "precisions": list(precisions),
        "rounds": results,
        "speedup": speedup,
        "median_speedup": {part: statistics.median(v) for part, v in speedup.items()},
    }


def format_comparison(comparison: dict[str, Any]) -> str:
    """The lines that ``latent-ebm bench --compare`` prints after each round's reports."""
    first, last = comparison["precisions"][0], comparison["precisions"][-1]
    lines = []
    for part, ratios in comparison["speedup"].items():
        name = part.replace("_", " ")
        per_round = ", ".join(f"{r:.2f}x" for r in ratios)
        lines.append(
            f"{name}: {last} is {comparison['median_speedup'][part]:.2f}x faster than {first} "
            f"(median of {len(ratios)} rounds: {per_round})"
        )
    return "\n".join(lines)


def _seconds(s: float) -> str:
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def format_report(result: dict[str, Any]) -> str:
    """The table that ``latent-ebm bench`` prints for a :func:`bench` result."""
    lines = [
        f"device {result['device']} ({result['device_name']}), {result['threads']} threads, "
        f"torch {result['torch']}; batch {result['batch_size']} of "
        f"{'x'.join(map(str, result['image_shape']))}, prior stage {result['stage']}; "
        f"median of {result['repeats']} after {result['warmup'] + 1} warm-up call(s)"
    ]
    for p in result["peak"].values():
        lines.append(
            f"matmul peak {p['precision']}: {format_count(p['flops_per_s'], 'FLOP/s')} "
            f"(n = {p['n']}, {p['products']} product(s) a repeat, best of {result['repeats']})"
        )
    header = ("part", "precision", "time", "images/s", "operations", "rate", "of peak")
    rows = [header]
    names = {
        "chain_step": "chain step",
        "iteration": "iteration",
        "noise_iteration": "iteration, noise start",
        "sampling": "sampling",
    }
    for key, part in result["parts"].items():
        rows.append(
            (
                names[key],
                part["precision"],
                _seconds(part["seconds"]),
                f"{part['images_per_s']:,.0f}"
                if part["images_per_s"] >= 100
                else f"{part['images_per_s']:.3g}",
                format_count(part["flops"], "FLOP"),
                format_count(part["flops_per_s"], "FLOP/s"),
                f"{part['fraction_of_peak']:.1%}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    s = result["parts"]["sampling"]
    lines.append(
        f"sampling: {s['images']} images of {result['config']['sample']['steps']} prior-chain "
        f"steps and a decoding, {_seconds(s['seconds_per_image'])} per image"
    )
    it, train = result["parts"]["iteration"], result["config"]["train"]
    if "vs_noise" in it:
        warm = train["post_steps"] if train["warm_steps"] is None else train["warm_steps"]
        lines.append(
            f"iteration with the {train['post_init']} start ({warm} chain steps): "
            f"{it['vs_noise']:.3f}x the time of the noise-started one ({train['post_steps']} "
            "steps; same batch, same call)"
        )
    out = result["parts"]["iteration"].get("outside_kernels")
    if out is not None and math.isfinite(out["share"]):
        lines.append(
            f"iteration time outside matmul/convolution operators: {out['share']:.1%} "
            f"({_seconds(out['wall_s'] - out['kernel_s'])} of {_seconds(out['wall_s'])}, "
            "one profiled iteration)"
        )
    return "\n".join(lines)
