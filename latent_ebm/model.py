"""The generator model with a latent prior, ``p(x, z) = p(z) N(x; g(z), sigma^2 I)``
(ARCHITECTURE §1).

One object holds the generator and the prior so that training and every evaluation compute
the joint density, the posterior chain and prior samples the same way.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from latent_ebm.amortiser import Amortiser
from latent_ebm.config import Config
from latent_ebm.langevin import langevin
from latent_ebm.nets import Generator
from latent_ebm.priors import Prior, build_prior

__all__ = ["LatentEBM", "build_model"]


class LatentEBM(nn.Module):
    """Generator ``g`` with observation noise ``sigma`` and a latent ``prior``.

    Arguments:
        generator: maps ``(B, nz)`` to ``(B, C, H, W)``.
        prior: a :class:`latent_ebm.priors.Prior`.
        sigma: std of ``p(x | z)``.
        amortiser: the learned start of the posterior chain (``train.post_init=amortised``,
            :class:`latent_ebm.amortiser.Amortiser`), or ``None``. Its parameters are part of
            the model's state dict, so checkpoints and snapshots keep it.
    """

    def __init__(
        self,
        generator: Generator,
        prior: Prior,
        sigma: float,
        amortiser: Amortiser | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.prior = prior
        self.sigma = sigma
        self.amortiser = amortiser

    @property
    def nz(self) -> int:
        return self.prior.nz

    @property
    def device(self) -> torch.device:
        """Where the model's tensors live (the CPU for a model without any)."""
        tensors = itertools.chain(self.parameters(), self.buffers())
        return next((t.device for t in tensors), torch.device("cpu"))

    def compile_generator(self, mode: str) -> None:
        """``torch.compile`` the generator's forward pass in place (``train.compile``).

        Every chain step, generator update and decoding then runs the compiled forward (and
        its compiled backward); the first calls of each input shape compile. The module and
        its state-dict keys are unchanged, so checkpoints do not depend on the option.
        ``mode``: ``none`` (nothing) or a mode of ``torch.compile`` (``reduce-overhead``
        records CUDA graphs on a GPU).
        """
        if mode != "none":
            self.generator.compile(mode=mode)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z) = -||x - g(z)||^2 / (2 sigma^2)`` (+ const): ``(B,)``."""
        return -(x - self.generator(z)).pow(2).flatten(1).sum(1) / (2 * self.sigma**2)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor, training: bool = False) -> torch.Tensor:
        """``log p(x, z) = log p(x | z) + log p(z)`` (+ const), ``(B,)``.

        With ``training`` the prior term is the one the training-time posterior chain uses
        (:meth:`Prior.inference_log_prob`), else the learned prior.
        """
        log_prior = self.prior.inference_log_prob(z) if training else self.prior.log_prob(z)
        return self.log_likelihood(x, z) + log_prior

    def infer(
        self,
        x: torch.Tensor,
        z0: torch.Tensor,
        steps: int,
        step_size: float,
        randn: Callable[[int], torch.Tensor] | None = None,
        training: bool = False,
    ) -> torch.Tensor:
        """Posterior samples ``z ~ p(z | x)`` by short-run Langevin from ``z0`` (paper Eq. 3).

        ``x`` ``(B, C, H, W)`` in ``[-1, 1]``, ``z0`` ``(B, nz)``; returns ``(B, nz)``.
        """
        return langevin(z0, lambda z: self.log_joint(x, z, training), steps, step_size, randn=randn)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Images ``g(z)`` ``(N, C, H, W)`` in ``[-1, 1]`` on the CPU, in batches."""
        return torch.cat(
            [self.generator(z[i : i + batch_size]).cpu() for i in range(0, len(z), batch_size)]
        )

    def generator_loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``||x - g(z)||^2 / (2 sigma^2)``, summed over pixels, mean over the batch (Eq. 7)."""
        return -self.log_likelihood(x, z).mean()


def build_model(cfg: Config, shape: tuple[int, int, int]) -> LatentEBM:
    """The model of ``cfg`` for images of ``shape`` ``(C, H, W)``, with an amortiser when
    ``train.post_init=amortised`` (made last, so that the generator and the prior start as
    in a run without one)."""
    c, h, w = shape
    if h != w:
        raise ValueError(f"square images expected, got {h}x{w}")
    m = cfg.model
    generator = Generator(m.nz, m.ngf, c, h, m.arch)
    prior = build_prior(cfg)
    return LatentEBM(generator, prior, m.sigma, Amortiser.from_config(cfg, shape))
