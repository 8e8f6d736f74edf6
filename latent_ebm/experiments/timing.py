"""Timing against the machine's own peak: the helpers of :mod:`latent_ebm.experiments.benchmark`.

- :func:`matmul_peak`: the best matrix-multiply rate of a device in a precision (square
  products, ``2 n^3`` operations each, best of the repeats);
- :func:`time_calls` and :func:`time_part`: seconds of repeated calls after warm-up ones, and a
  part's operations (:func:`latent_ebm.experiments.cost.count_flops`, counted eagerly on the
  first warm-up call) over its median time;
- :func:`outside_kernels`: the share of a profiled wall time spent outside the operators
  whose operations are counted (:data:`KERNEL_OPS`).
"""

from __future__ import annotations

import functools
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry

from latent_ebm.experiments.cost import count_flops
from latent_ebm.precision import DTYPES

__all__ = [
    "KERNEL_OPS",
    "device_name",
    "matmul_peak",
    "outside_kernels",
    "per_step",
    "sync",
    "time_calls",
    "time_part",
]

# The operators whose operations cost.count_flops counts: the "kernels" of the profile.
KERNEL_OPS = frozenset(
    name for op in flop_registry if (name := getattr(op, "_qualified_op_name", None)) is not None
)


def sync(device: torch.device) -> None:
    """Wait for the work queued on ``device``.

    CUDA kernels run asynchronously: without this a clock would time their launch only.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int
) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def matmul_peak(
    precision: str,
    device: torch.device | str = "cpu",
    seconds: float = 0.5,
    repeats: int = 5,
    max_n: int = 16384,
) -> dict[str, Any]:
    """The best matrix-multiply rate of ``device`` in ``precision``'s dtype.

    The size ``n`` doubles from 256 until one ``(n, n) @ (n, n)`` product takes a tenth of
    ``seconds`` (or ``n`` reaches ``max_n``); each repeat then runs ``k`` products back to back,
    ``k`` chosen so that it lasts about ``seconds``. Rate: ``k * 2 n^3 / t``, best of
    ``repeats``.

    Returns:
        ``{"precision", "n", "products" (k), "seconds" (best repeat), "flops_per_s"}``.
    """
    device, dtype = torch.device(device), DTYPES[precision]
    g = torch.Generator(device=device).manual_seed(0)
    n = 256
    while True:
        a = torch.randn(n, n, generator=g, device=device).to(dtype)
        b = torch.randn(n, n, generator=g, device=device).to(dtype)
        (t,) = time_calls(functools.partial(torch.mm, a, b), device, 1, 1)
        if t >= seconds / 10 or n >= max_n:
            break
        n = min(2 * n, max_n)
    k = max(1, round(seconds / t))

    def products() -> None:
        for _ in range(k):
            torch.mm(a, b)

    best = min(time_calls(products, device, repeats, 0))
    flops = k * 2 * n**3
    return {
        "precision": precision,
        "n": n,
        "products": k,
        "seconds": best,
        "flops_per_s": flops / best,
    }


def outside_kernels(events: Iterable[Any], wall: float, device: torch.device) -> dict[str, float]:
    """Share of ``wall`` seconds spent outside the :data:`KERNEL_OPS` operators.

    ``events``: a profile's ``FunctionEvent``s. Kernel time sums, over the outermost kernel
    operators (an ``aten::_convolution`` inside an ``aten::convolution`` counts once), their
    total CPU time, or on CUDA the device time of the kernels they launched.
    """
    kernel_us = 0.0
    for e in events:
        if e.name not in KERNEL_OPS:
            continue
        parent, nested = e.cpu_parent, False
        while parent is not None and not nested:
            nested, parent = parent.name in KERNEL_OPS, parent.cpu_parent
        if not nested:
            kernel_us += e.device_time_total if device.type == "cuda" else e.cpu_time_total
    kernel = kernel_us * 1e-6
    return {"share": 1.0 - kernel / wall, "kernel_s": kernel, "wall_s": wall}


def time_part(
    fn: Callable[[], Any],
    device: torch.device,
    images: int,
    precision: str,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    """Operations (counted on the first warm-up call, run eagerly) and times of ``fn``."""
    with torch.compiler.set_stance("force_eager"):  # the counter sees every operator
        flops = count_flops(fn)
    times = time_calls(fn, device, repeats, warmup)
    seconds = statistics.median(times)
    return {
        "precision": precision,
        "images": images,
        "flops": flops,
        "seconds": seconds,
        "times": times,
        "images_per_s": images / seconds,
        "flops_per_s": flops / seconds,
    }


def per_step(part: dict[str, Any], steps: int) -> dict[str, Any]:
    """A chain's part as one of its ``steps`` identical steps (``chain_seconds``: the whole)."""
    per = dict(part, steps=steps, chain_seconds=part["seconds"], chain_flops=part["flops"])
    per["flops"] = part["flops"] // steps
    per["seconds"] = part["seconds"] / steps
    per["times"] = [t / steps for t in part["times"]]
    per["images_per_s"] = part["images"] / per["seconds"]
    per["flops_per_s"] = per["flops"] / per["seconds"]
    return per


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
