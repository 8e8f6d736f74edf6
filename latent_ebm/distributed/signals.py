"""SIGINT and SIGTERM during training (the room :mod:`latent_ebm.distributed`): recorded and
acted on where the training state is whole, or raised at once in a section that changes no
training state.

The training loop shares what :func:`catch_signals` records with the other processes through
:func:`latent_ebm.distributed.mean_scalars`, so that every process stops at the same point.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Signals", "catch_signals"]


class Signals:
    """The SIGINT/SIGTERM that reached this process inside :func:`catch_signals`.

    By default a signal is only recorded (:attr:`caught`): the loop acts on it at the end of
    the section it arrived in, where the training state is whole. Inside
    :meth:`interruptible` it is also raised at once as ``KeyboardInterrupt``: a long section
    that changes no training state (an evaluation, the post-hoc refit) stops there.
    """

    def __init__(self) -> None:
        self.caught: list[int] = []  # signal numbers, in order of arrival
        self._raising = False

    @property
    def first(self) -> int:
        """The first signal caught (0: none)."""
        return self.caught[0] if self.caught else 0

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A section that a signal stops at once with ``KeyboardInterrupt``; one caught before
        it, not yet acted on, stops it before it begins."""
        if self.caught:
            raise KeyboardInterrupt(signal.Signals(self.caught[0]).name)
        outer, self._raising = self._raising, True
        try:
            yield
        finally:
            self._raising = outer

    def _handle(self, signum: int, frame: Any) -> None:
        self.caught.append(signum)
        if self._raising:
            self._raising = False  # one interruption; the caller's cleanup is not cut short
            raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def catch_signals() -> Iterator[Signals]:
    """Turn SIGINT/SIGTERM into a flag that the loop checks after each iteration.

    Yields the :class:`Signals` caught so far. The loop shares the first with the other
    processes through :func:`mean_scalars`, so that every process stops at the same
    iteration, after the same checkpoint; inside :meth:`Signals.interruptible` sections a
    signal raises ``KeyboardInterrupt`` at once. The previous handlers return on exit.
    """
    signals = Signals()
    old = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            old[s] = signal.signal(s, signals._handle)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield signals
    finally:
        for s, h in old.items():
            signal.signal(s, h)
