"""The memory bank of posterior samples, one row per training example (paper §3.2).

``bank[i]`` holds the latest posterior sample of example ``i``; it starts as ``N(0, I)`` draws,
so a row never visited is a ``p_0`` sample. At each stage transition a *snapshot* is frozen:
during stage ``k`` it holds posterior samples under ``p_{k-1}``, i.e. draws from
``q_{k-1} ~= p_k``, which the ``persistent`` mode uses as NCE noise samples (ARCHITECTURE §3).

In a multi-process run every process holds the whole bank: after each iteration the training
loop writes the rows of the whole global batch everywhere (:mod:`latent_ebm.distributed`), so
the banks, and the snapshots taken from them, stay identical across processes.
"""

from __future__ import annotations

import torch

from latent_ebm.rng import MEMORY_INIT, generator_for

__all__ = ["MemoryBank"]


class MemoryBank:
    """Posterior samples ``(N, nz)`` and the snapshot taken at the last stage transition.

    Arguments:
        size: number of training examples N.
        nz: latent dimension.
        seed: seeds the initial ``N(0, I)`` rows.
        device: where the bank lives.
    """

    def __init__(self, size: int, nz: int, seed: int, device: torch.device | str = "cpu") -> None:
        g = generator_for(seed, 0, MEMORY_INIT)
        self.bank = torch.randn(size, nz, generator=g).to(device)
        self.snapshot = self.bank.clone()

    def write(self, idx: torch.Tensor, z: torch.Tensor) -> None:
        """``bank[idx] = z`` for the examples ``idx`` ``(B,)`` and samples ``z`` ``(B, nz)``."""
        self.bank[idx.to(self.bank.device)] = z.detach().to(self.bank.dtype)

    def read(self, idx: torch.Tensor) -> torch.Tensor:
        """Current rows ``bank[idx]`` ``(B, nz)`` (e.g. to share them between processes)."""
        return self.bank[idx.to(self.bank.device)]

    def take_snapshot(self) -> None:
        """Freeze the current bank as the noise distribution of the next stage."""
        self.snapshot = self.bank.clone()

    def draw(self, rows: torch.Tensor) -> torch.Tensor:
        """Snapshot rows ``rows`` ``(B,)`` -> ``(B, nz)``."""
        return self.snapshot[rows.to(self.snapshot.device)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"bank": self.bank.cpu(), "snapshot": self.snapshot.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.bank.device
        self.bank = state["bank"].to(device)
        self.snapshot = state["snapshot"].to(device)
