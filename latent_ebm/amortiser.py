"""The amortised start of the posterior chain (ARCHITECTURE §2; beyond the paper).

With ``train.post_init=amortised`` each training iteration starts its posterior chain at a draw
of a learned Gaussian ``q(z | x) = N(mu(x), diag sigma(x)^2)`` instead of ``N(0, I)``, runs
``train.warm_steps`` Langevin steps on the exact posterior ``p(z | x)``, and then fits ``q`` to
the chain's final samples by one Adam step on their Gaussian negative log-likelihood

    loss = mean_i sum_d [ log sigma_d(x_i) + (z_id - mu_d(x_i))^2 / (2 sigma_d(x_i)^2) ]

with ``z`` detached (a regression of ``mu`` on the chain's output and of ``sigma`` on its
spread: the forward KL of the chain's law to ``q``, which covers its mass). The chain still
targets ``p(z | x)``; ``q`` only moves its start. The idea of learning the chain's start from its
own outputs is DAMC's (Yu et al., NeurIPS 2023, which distils a diffusion model); this is the
simplest such initialiser, an encoder. Untrained, the encoder gives ``N(0, I)``, the paper's
start (:class:`latent_ebm.nets.Encoder`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from latent_ebm.nets import Encoder

if TYPE_CHECKING:  # config sits above this room: no import at run time
    from latent_ebm.config import Config

__all__ = ["Amortiser"]


class Amortiser(nn.Module):
    """The encoder ``x -> (mu, log sigma)`` of the posterior chain's start, and its optimiser.

    Arguments:
        encoder: a :class:`latent_ebm.nets.Encoder`.
        lr, betas: its Adam settings (``train.amortiser_lr``, ``train.beta1``/``beta2``).
    """

    def __init__(
        self, encoder: Encoder, lr: float = 1e-3, betas: tuple[float, float] = (0.5, 0.999)
    ) -> None:
        super().__init__()
        self.encoder = encoder
        # A list, as a prior's optimisers: checkpointed, and averaged over processes.
        self.optims = [torch.optim.Adam(encoder.parameters(), lr=lr, betas=betas)]

    @classmethod
    def from_config(cls, cfg: Config, shape: tuple[int, int, int]) -> Amortiser | None:
        """The amortiser of a run with ``train.post_init=amortised`` for images of ``shape``
        ``(C, H, W)``, sized as its generator (``model.nz``, ``ngf``, ``arch``); ``None`` for
        the other starts."""
        if cfg.train.post_init != "amortised":
            return None
        c, h, _ = shape
        m, t = cfg.model, cfg.train
        return cls(Encoder(m.nz, m.ngf, c, h, m.arch), t.amortiser_lr, (t.beta1, t.beta2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``mu``, ``log sigma`` ``(B, nz)`` of the images ``x`` ``(B, C, H, W)``."""
        return self.encoder(x)

    @torch.no_grad()
    def draw(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The chain's start ``z0 = mu(x) + sigma(x) * eps`` ``(B, nz)`` for standard-normal
        ``eps`` ``(B, nz)`` (the caller's random stream); no gradient."""
        mu, log_sigma = self(x)
        return mu + log_sigma.exp() * eps

    def nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``-log q(z | x)`` up to ``nz log(2 pi) / 2``, per row ``(B,)``, for ``z`` ``(B, nz)``
        (detached: only ``q`` learns)."""
        mu, log_sigma = self(x)
        return (log_sigma + 0.5 * ((z.detach() - mu) * (-log_sigma).exp()).pow(2)).sum(1)

    def train_step(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, float]:
        """One Adam step on :meth:`nll` of the chain's final samples ``z`` of ``x`` (mean over
        the batch); returns ``{"loss_amortiser": the loss before the step}``."""
        (opt,) = self.optims
        loss = self.nll(x, z).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss_amortiser": loss.item()}

    def optimizer_state(self) -> list[dict[str, Any]]:
        """State of the optimiser (for checkpoints)."""
        return [o.state_dict() for o in self.optims]

    def load_optimizer_state(self, states: list[dict[str, Any]]) -> None:
        """Restore :meth:`optimizer_state`."""
        for o, state in zip(self.optims, states, strict=True):
            o.load_state_dict(state)
