"""Counter-based random streams: every random number of a training run is a function of
(seed, iteration, stream, position in the global batch) only.

A stream's generator is seeded from those keys, and every process draws the *whole global
batch* of numbers and keeps its own rows (ARCHITECTURE §2). A run's result then does not depend on
how the batch is split across processes, and a resumed run repeats an uninterrupted one
without restoring any generator state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "AMORTISED_INIT",
    "BATCH_ORDER",
    "EVAL_SUBSET",
    "IMPORTANCE",
    "MEMORY_INIT",
    "POSTERIOR_INIT",
    "POSTERIOR_NOISE",
    "PRIOR_DRAW",
    "PRIOR_NOISE",
    "REFIT",
    "SMC",
    "Streams",
    "batch_indices",
    "generator_for",
]

# Stream identifiers: one per purpose, so that no two purposes share numbers.
BATCH_ORDER = 0
POSTERIOR_INIT = 1
POSTERIOR_NOISE = 2
PRIOR_DRAW = 3
PRIOR_NOISE = 4
MEMORY_INIT = 5
EVAL_SUBSET = 6  # the test images of the in-training evaluations
REFIT = 7  # the post-hoc refit of the prior (keys: seed, REFIT, part)
AMORTISED_INIT = 8  # the standard-normal draw of the amortised posterior start
SMC = 9  # a prior's normalising constants by SMC (keys: seed, SMC, repeat)
IMPORTANCE = 10  # the importance samples of log p(x) (keys: seed, IMPORTANCE)


def generator_for(*keys: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded by hashing the integer ``keys``."""
    seed = int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0])
    return torch.Generator(device=device).manual_seed(seed & ((1 << 63) - 1))


@dataclass
class Streams:
    """The random numbers of one iteration, for the rows ``rows`` of a global batch.

    Arguments:
        seed: the run's seed.
        iteration: the iteration (0-based).
        global_batch: number of rows in the global batch.
        rows: this process's rows of the global batch.
        device: where the numbers are made.
    """

    seed: int
    iteration: int
    global_batch: int
    rows: slice
    device: torch.device

    def _gen(self, stream: int) -> torch.Generator:
        return generator_for(self.seed, self.iteration, stream, device=self.device)

    def normal(self, stream: int, dim: int) -> torch.Tensor:
        """One ``(rows, dim)`` standard-normal draw."""
        g = self._gen(stream)
        return torch.randn(self.global_batch, dim, generator=g, device=self.device)[self.rows]

    def randint(self, stream: int, high: int) -> torch.Tensor:
        """``(rows,)`` integers uniform in ``[0, high)``."""
        g = self._gen(stream)
        out = torch.randint(high, (self.global_batch,), generator=g, device=self.device)
        return out[self.rows]

    def chain_noise(self, stream: int, dim: int) -> Callable[[int], torch.Tensor]:
        """Noise for a Langevin chain: ``randn(step)`` gives ``(rows, dim)`` for each step.

        The draws are made step after step from one generator, so the function must be called
        with steps 0, 1, 2, ... in order (as :func:`latent_ebm.langevin.langevin` does).
        """
        g = self._gen(stream)

        def randn(step: int) -> torch.Tensor:
            return torch.randn(self.global_batch, dim, generator=g, device=self.device)[self.rows]

        return randn


def batch_indices(iteration: int, num_train: int, batch_size: int, seed: int) -> torch.Tensor:
    """Data-set indices of the global mini-batch of ``iteration``, ``(batch_size,)``.

    Each epoch is a permutation seeded by ``(seed, epoch)``; the last partial batch of an
    epoch is dropped, so iteration ``t`` always sees the same examples.
    """
    epoch, b = divmod(iteration, num_train // batch_size)
    return _epoch_order(num_train, seed, epoch)[b * batch_size : (b + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _epoch_order(num_train: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of epoch ``epoch``, made once per epoch rather than per iteration."""
    return torch.randperm(num_train, generator=generator_for(seed, epoch, BATCH_ORDER))
