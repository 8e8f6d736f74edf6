"""Multi-process training with ``torchrun``: process group, batch split and synchronisation.

``torchrun --nproc-per-node N -m latent_ebm.cli train ...`` starts N processes with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment; :func:`process_group` turns
those into a ``torch.distributed`` process group (gloo for CPU tensors, NCCL for CUDA ones,
one GPU per process: ``cuda:LOCAL_RANK``). Without those variables every function here is the
identity of a single process, so a plain run behaves as if this module did not exist.

What is split and what is replicated (ARCHITECTURE §2): every process holds the whole model, its
optimisers and the whole memory bank, computes the same global batch of data-set indices and
takes the rows :func:`shard` gives it; its random streams are those rows of the global batch's
streams. Then

- :func:`average_gradients`: each optimiser's ``step()`` first averages the gradients over the
  processes. The losses are means over equal shards, so the average is the gradient of the
  global batch, and every process applies the same update;
- :func:`gather_rows`: the memory-bank rows of the whole global batch, shard after shard;
- :func:`mean_scalars`: the logged losses averaged over the processes, in rank order.

A process whose part of an iteration fails (a posterior chain that diverges on its shard
only) must not leave the others waiting in a collective it will never join:
:func:`fail_together` wraps the iteration, every gradient average inside it first asks
whether a process has failed, and then every process raises the failed process's error.
Likewise a signal that reaches one process (:func:`catch_signals`, in
:mod:`~latent_ebm.distributed.signals`) is shared through :func:`mean_scalars`, so that every
process stops after the same iteration.
:func:`resolve_device` and :func:`local_device` pick the device of each process.

A run with N processes therefore follows the 1-process run with the same global batch, up to
the summation order of the reductions (float rounding).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import torch
import torch.distributed as dist

from latent_ebm.distributed.signals import Signals, catch_signals
from latent_ebm.errors import LatentEBMError, one_line

__all__ = [
    "Signals",
    "average_gradients",
    "barrier",
    "catch_signals",
    "fail_together",
    "gather_rows",
    "in_process_group",
    "init",
    "is_main",
    "local_device",
    "main_first",
    "main_only",
    "mean_scalars",
    "process_group",
    "rank",
    "resolve_device",
    "shard",
    "teardown",
    "world_size",
]

P = ParamSpec("P")
T = TypeVar("T")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError:
        raise LatentEBMError(f"environment variable {name}={value!r} is not an integer") from None


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes of the run (1 without a process group)."""
    return dist.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank: the process group's, else ``$RANK`` of the launch (0 if unset)."""
    return dist.get_rank() if _initialized() else _env_int("RANK", 0)


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0)."""
    return rank() == 0


def init() -> bool:
    """Join the process group that ``$WORLD_SIZE > 1`` announces; returns whether it did.

    Nothing happens in a single process or when a group already exists. The backend is gloo,
    with NCCL for CUDA tensors when a GPU is present (``cpu:gloo,cuda:nccl``; this process's
    GPU is ``cuda:$LOCAL_RANK``). Rendezvous is ``env://`` (``MASTER_ADDR``, ``MASTER_PORT``).
    """
    if _initialized() or _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not dist.is_available():
        raise LatentEBMError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
        backend = "cpu:gloo,cuda:nccl"
    try:
        dist.init_process_group(backend)
    except ValueError as e:  # a missing RANK / MASTER_ADDR / MASTER_PORT
        raise LatentEBMError(f"cannot join the process group: {e}; launch with torchrun") from None
    return True


def teardown() -> None:
    """Leave the process group, if any."""
    if _initialized():
        dist.destroy_process_group()


@contextmanager
def process_group() -> Iterator[None]:
    """:func:`init` on entry; :func:`teardown` on exit if this call made the group."""
    owned = init()
    try:
        yield
    finally:
        if owned:
            teardown()


def in_process_group(fn: Callable[P, T]) -> Callable[P, T]:
    """Decorator: run ``fn`` inside :func:`process_group`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with process_group():
            return fn(*args, **kwargs)

    return wrapper


def resolve_device(name: str, option: str = "config field 'train.device'") -> torch.device:
    """The device that ``name`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) names: ``auto`` is
    CUDA when a GPU is present, else the CPU. :func:`local_device` then picks this process's
    GPU. ``option`` names where ``name`` came from in the message.

    Raises:
        LatentEBMError: a CUDA device without a GPU, or a GPU index that is not present.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise LatentEBMError(f"{option} is '{name}' but no GPU is available")
        index = torch.device(name).index
        if index is not None and index >= torch.cuda.device_count():
            raise LatentEBMError(
                f"{option} is '{name}' but there are {torch.cuda.device_count()} GPUs"
            )
    return torch.device(name)


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda:$LOCAL_RANK`` for CUDA in a multi-process run (one GPU
    per process, whatever index the config names), else ``device``."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return device


def shard(batch_size: int, world: int | None = None, rank_: int | None = None) -> slice:
    """This process's rows of a global batch: ``rank * B / N`` to ``(rank + 1) * B / N``.

    Raises:
        LatentEBMError: ``B`` is not a multiple of ``N``.
    """
    world = world_size() if world is None else world
    rank_ = rank() if rank_ is None else rank_
    if batch_size % world:
        raise LatentEBMError(
            f"config field 'train.batch_size' ({batch_size}) is not divisible by the number of "
            f"processes ({world}): each process takes an equal share of the global batch; "
            f"choose a batch size that is a multiple of {world} or another number of processes"
        )
    n = batch_size // world
    return slice(rank_ * n, (rank_ + 1) * n)


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if world_size() > 1:
        dist.barrier()


def _announce(error: BaseException | None) -> None:
    """Rank 0 tells the others whether its part failed; they raise the same error."""
    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None and not is_main():
        raise box[0]


def main_only(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` on rank 0 only; every process returns its result or raises its exception
    (the result is pickled: keep it small, e.g. a config)."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    box: list[Any] = [None, None]
    if is_main():
        try:
            box[0] = fn(*args, **kwargs)
        except Exception as e:
            box[1] = e
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]


def main_first(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn`` on rank 0, then on the other processes (e.g. loading a data set that the
    first call downloads or caches); if rank 0 fails, every process raises its exception."""
    if world_size() == 1:
        return fn(*args, **kwargs)
    if not is_main():
        _announce(None)
        return fn(*args, **kwargs)
    try:
        result = fn(*args, **kwargs)
    except Exception as e:
        _announce(e)
        raise
    _announce(None)
    return result


def _all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` in place over the processes, one flat buffer per dtype and device."""
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        buckets[(t.dtype, t.device)].append(t)
    for group in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)  # sum
        flat /= world_size()
        for t, v in zip(group, flat.split([t.numel() for t in group]), strict=True):
            t.copy_(v.view_as(t))


class _PeerFailed(Exception):
    """Another process failed inside the same :func:`fail_together` section."""


_guarded = False  # inside fail_together: each collective is preceded by a status exchange


def _any_failed(failed: bool) -> bool:
    """Whether any process passes ``failed = True`` (a one-element all-reduce, max)."""
    flag = torch.tensor([int(failed)])
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _check_peers() -> None:
    """Inside :func:`fail_together`, before a collective: stop if a process has failed."""
    if _guarded and _any_failed(False):
        raise _PeerFailed


@contextmanager
def fail_together() -> Iterator[None]:
    """Run a section that every process runs, such that an exception in one process is
    raised in all of them instead of leaving the others blocked in a collective.

    Each status exchange of the section (before every gradient average, and one at its end)
    is a one-element all-reduce that a failed process also joins, from its exit: the first
    exchange after a failure, wherever each process stands, tells every process. The
    processes then exchange their errors and each raises its own, or that of the
    lowest-ranked process that failed; the error's ``process`` attribute is the rank where
    it arose (kept when a nested section re-raises it).
    Errors that cannot be pickled travel as a :class:`LatentEBMError` with their message.
    Nothing happens in a single process.
    """
    global _guarded
    if world_size() == 1:
        yield
        return
    outer, _guarded = _guarded, True
    error: Exception | None = None
    try:
        try:
            yield
        except _PeerFailed:
            pass  # the status is known everywhere
        except Exception as e:
            error = e
            _any_failed(True)
        else:
            if not _any_failed(False):
                return
    finally:
        _guarded = outer  # a nested section hands the checks back to the enclosing one
    _raise_first(error)


def _raise_first(error: Exception | None) -> None:
    """Exchange the processes' errors; raise this process's, else the first one's."""
    sent: Exception | None = error
    if error is not None:
        try:
            pickle.dumps(error)
        except Exception:
            sent = LatentEBMError(f"{type(error).__name__}: {one_line(error)}")
    errors: list[Exception | None] = [None] * world_size()
    dist.all_gather_object(errors, sent)
    failed = [r for r, e in enumerate(errors) if e is not None]
    if error is None:
        raised = errors[failed[0]]
        assert raised is not None
        raised.process = getattr(raised, "process", failed[0])  # type: ignore[attr-defined]
        raise raised
    error.process = getattr(error, "process", rank())  # type: ignore[attr-defined]
    raise error


def _average_before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    _check_peers()
    grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
    _all_reduce_mean_(grads)


def average_gradients(*optimizers: torch.optim.Optimizer) -> None:
    """Make each optimiser's ``step()`` first average its parameters' gradients over the
    processes (a step pre-hook; nothing in a single process).

    Every process runs the same code, so the same parameters have a gradient everywhere.
    With losses that are means over equal shards of the global batch, the average equals the
    global batch's gradient. The optimisers' types and state dicts are untouched.
    """
    if world_size() == 1:
        return
    for opt in optimizers:
        opt.register_step_pre_hook(_average_before_step)


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every process's ``rows`` ``(b, ...)`` concatenated in rank order: ``(N * b, ...)``,
    i.e. the global batch's rows when each process holds its :func:`shard`."""
    if world_size() == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(world_size())]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def mean_scalars(values: dict[str, float], flag: int = 0) -> tuple[dict[str, float], int]:
    """Means of ``values`` over the processes (summed in rank order, in float64) and the
    largest ``flag`` (e.g. a signal number, 0 for none). Every process passes the same keys."""
    if world_size() == 1:
        return dict(values), flag
    mine = torch.tensor([*values.values(), float(flag)], dtype=torch.float64)
    parts = [torch.empty_like(mine) for _ in range(world_size())]
    dist.all_gather(parts, mine)
    table = torch.stack(parts)
    means = dict(zip(values, table[:, :-1].mean(0).tolist(), strict=True))
    return means, int(table[:, -1].max())
