"""Sizes (issue 30): what training or sampling would allocate, estimated before anything is
allocated, and refused in one line when it cannot fit (:func:`check_memory`), or when the work
is beyond any reason (:func:`check_work`). :func:`training_memory` is also what
``train --dry-run`` prints (:func:`latent_ebm.experiments.cost.describe`)."""

from __future__ import annotations

import os

import torch
from torch.overrides import TorchFunctionMode

from latent_ebm.config.schema import Config
from latent_ebm.errors import LatentEBMError

__all__ = [
    "FLOAT_BYTES",
    "MEMORY_CAP",
    "WORK_CAP",
    "activation_elements",
    "check_memory",
    "check_training_memory",
    "check_training_work",
    "check_work",
    "format_bytes",
    "training_memory",
]

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
    - the refit's posterior samples and noise (``refit.samples``, ``refit.noise``)
      and a batch of its ratio networks (``refit.batch``), when it runs;
    - the in-training FID's samples (``train.eval_n``) when it runs;
    - the figures' samples (``sample.grid``) of the finished run.
    """
    from latent_ebm.amortiser import Amortiser
    from latent_ebm.nets import Generator
    from latent_ebm.priors import build_prior

    m, t, r = cfg.model, cfg.train, cfg.refit
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
    if r.steps:  # (a prior with nothing to refit ignores these settings)
        # The samples and their order in the training set (int64); the noise chains, all rows
        # at once through a ratio network and back (MALA); a batch of the ratios' updates.
        parts["the refit's samples (refit.samples, model.nz)"] = r.samples * (
            m.nz * FLOAT_BYTES + 8
        )
        hidden = m.nz + 2 * m.ratio_hidden
        parts["the refit's noise chains (refit.noise, model.nz, model.ratio_hidden)"] = (
            2 * r.noise * hidden * FLOAT_BYTES
        )
        parts["a refit batch (refit.batch, model.nz, model.ratio_hidden)"] = (
            2 * r.batch * hidden * FLOAT_BYTES
        )
    if t.eval_every:
        parts["the in-training FID's samples (train.eval_n, model.nz)"] = (
            t.eval_n * (m.nz + image) * FLOAT_BYTES
        )
    # The figures of a finished run (train --eval, plot): sample.grid samples and images.
    parts["the figures' samples (sample.grid, model.nz)"] = cfg.sample.grid * (
        m.nz * FLOAT_BYTES + image * (2 * FLOAT_BYTES + 1)
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


def check_training_work(cfg: Config, stages: int) -> None:
    """The chains of training and of the refit stay under :func:`check_work`'s 10**12 chain
    steps of one row, whatever the memory (e.g. ``train.iters=10**12``).

    Raises:
        LatentEBMError: naming the settings whose product is too large.
    """
    t, p, r = cfg.train, cfg.prior, cfg.refit
    check_work(
        t.iters * t.batch_size,
        max(t.post_steps, t.chain_steps(t.post_init) or 0, p.prior_steps, 1),
        "train.iters x train.batch_size x the chain steps (train.post_steps, prior.prior_steps)",
    )
    if r.steps:
        check_work(r.steps, r.batch, "refit.steps x refit.batch")
        check_work(
            r.samples,
            max(t.post_steps, 1),
            "refit.samples x train.post_steps",
        )
        check_work(
            r.noise * max(stages, 1),
            max(r.chain_steps, 1),
            "refit.noise x prior.stages x refit.chain_steps",
        )
    check_work(cfg.sample.grid, max(cfg.sample.steps, 1), "sample.grid x sample.steps")
    if t.eval_every:
        check_work(
            t.eval_n * (t.iters // t.eval_every),
            max(cfg.sample.steps, 1),
            "train.eval_n x the evaluations (train.iters / train.eval_every) x sample.steps",
        )
