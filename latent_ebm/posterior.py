"""The posterior chain of a training iteration (Algorithm 1 step 2) and where any posterior
chain starts (ARCHITECTURE §2).

A chain starts (``train.post_init``; ``start`` of :func:`chain_start`) at

- ``noise``: the iteration's ``N(0, I)`` draw (stream ``POSTERIOR_INIT``), the paper's start,
  and runs ``train.post_steps`` steps;
- ``bank``: the example's memory-bank row, its last posterior sample (training only);
- ``amortised``: a draw ``mu(x) + sigma(x) eps`` of the model's amortiser
  (:mod:`latent_ebm.amortiser`; ``eps`` from stream ``AMORTISED_INIT``), which is then fitted to
  the chain's final samples.

The warm starts run ``train.warm_steps`` steps (``None``: ``train.post_steps``;
:meth:`latent_ebm.config.TrainConfig.chain_steps`). Every start is followed by the same
Langevin chain on the exact posterior ``p(z | x)``; only the start differs.
"""

from __future__ import annotations

import torch

from latent_ebm import rng
from latent_ebm.config import Config
from latent_ebm.errors import ChainDivergedError, LatentEBMError
from latent_ebm.langevin import Cause, Setting, remedy
from latent_ebm.memory import MemoryBank
from latent_ebm.model import LatentEBM
from latent_ebm.precision import autocast

__all__ = ["STARTS", "chain_causes", "chain_start", "posterior_step", "setting"]

STARTS = ("noise", "amortised")  # the starts of a chain outside training (no memory bank)


def setting(cfg: Config, name: str) -> Setting:
    """The config field ``name`` (``section.field``) and its value in ``cfg``."""
    section, field = name.split(".")
    return Setting(name, getattr(getattr(cfg, section), field))


def chain_causes(
    model: LatentEBM, cfg: Config, x: torch.Tensor | None = None, training: bool = False
) -> list[Cause]:
    """The networks a chain of ``model`` runs through, each with the learning rate that
    trained it (:func:`latent_ebm.langevin.remedy`): the prior (``prior.lr``; with
    ``training``, the prior of the training-time posterior chains) and, for posterior chains of
    the images ``x`` ``(B, C, H, W)``, the generator (``train.lr``)."""
    log_prior = model.prior.inference_log_prob if training else model.prior.log_prob
    causes = [Cause("the prior's log-density", log_prior, setting(cfg, "prior.lr"))]
    if x is not None:
        x = x.detach()

        def log_likelihood(z: torch.Tensor) -> torch.Tensor:
            return model.log_likelihood(x, z)

        likelihood = "the generator's log-likelihood"
        causes.insert(0, Cause(likelihood, log_likelihood, setting(cfg, "train.lr")))
    return causes


def chain_start(
    model: LatentEBM,
    x: torch.Tensor,
    streams: rng.Streams,
    start: str,
    bank: MemoryBank | None = None,
    idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """The start ``z0`` ``(B, nz)`` of the posterior chains of the images ``x`` ``(B, C, H, W)``.

    Arguments:
        model: the model (its amortiser for ``amortised``).
        x: the images in ``[-1, 1]``.
        streams: the random streams of the batch.
        start: ``noise``, ``bank`` (the rows ``idx`` of ``bank``) or ``amortised``.
        bank, idx: the memory bank and the batch's data-set rows, for ``bank``.

    Raises:
        LatentEBMError: ``amortised`` for a model without an amortiser.
    """
    if start == "bank":
        assert bank is not None and idx is not None, "a bank start needs the bank and the rows"
        return bank.read(idx).to(x.device)
    if start == "amortised":
        if model.amortiser is None:
            raise LatentEBMError(
                "an amortised start needs a model trained with train.post_init=amortised"
            )
        return model.amortiser.draw(x, streams.normal(rng.AMORTISED_INIT, model.nz))
    return streams.normal(rng.POSTERIOR_INIT, model.nz)


def posterior_step(
    model: LatentEBM,
    bank: MemoryBank,
    x: torch.Tensor,
    idx: torch.Tensor,
    streams: rng.Streams,
    cfg: Config,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Posterior samples of a training batch under the current prior, written into the bank
    (Algorithm 1 step 2); then one update of the amortiser, if the model has one.

    Arguments:
        model: the model in training mode, its prior at this iteration's stage.
        bank: the memory bank; rows ``idx`` receive the samples.
        x: the batch ``(B, C, H, W)`` in ``[-1, 1]``, data-set rows ``idx`` ``(B,)``.
        streams: this iteration's random streams.
        cfg: the run's configuration: the chain's start (``train.post_init``), its steps
            (:meth:`~latent_ebm.config.TrainConfig.chain_steps`), ``post_step_size`` and
            ``precision`` (bf16 autocast in the chain; the amortiser's update is float32).

    Returns:
        The samples ``z`` ``(B, nz)`` and the amortiser's logs (``{}`` without one).

    Raises:
        ChainDivergedError: the chain reached NaN/Inf (the message names the examples and the
            setting to change: the learning rate of a network that is not finite where the
            chain starts, else ``train.post_step_size``; :func:`latent_ebm.langevin.remedy`).
    """
    # A warm chain continues from a bank row or an amortised draw: the bank rows written below
    # stay posterior samples, so the persistent prior samples keep their meaning.
    t_cfg = cfg.train
    z0 = chain_start(model, x, streams, t_cfg.post_init, bank, idx)
    # Only a diverged amortiser makes a non-finite start: noise and bank starts skip the check
    # (a host sync every iteration on a GPU).
    bad = []
    if t_cfg.post_init == "amortised":
        bad = (~torch.isfinite(z0).all(1)).nonzero().flatten().tolist()
    if bad:
        raise ChainDivergedError(
            f"the amortised start of data-set examples {_examples(bad, idx)} is not finite "
            f"(NaN/Inf): its weights diverged; lower {setting(cfg, 'train.amortiser_lr')}",
            bad,
        )
    noise = streams.chain_noise(rng.POSTERIOR_NOISE, cfg.model.nz)
    steps = t_cfg.chain_steps(t_cfg.post_init)
    try:
        with autocast(t_cfg.precision, x.device):
            z = model.infer(x, z0, steps, t_cfg.post_step_size, noise, training=True)
    except ChainDivergedError as e:
        causes = chain_causes(model, cfg, x, training=True)
        raise ChainDivergedError(
            f"the posterior chain of data-set examples {_examples(e.rows, idx)} diverged "
            f"(NaN/Inf): {remedy(z0, causes, setting(cfg, 'train.post_step_size'))}",
            e.rows,
        ) from None
    bank.write(idx, z)
    logs = model.amortiser.train_step(x, z) if model.amortiser is not None else {}
    return z, logs


def _examples(rows: list[int], idx: torch.Tensor, show: int = 8) -> str:
    """Data-set indices of the batch rows ``rows``, the first ``show`` of them."""
    listed = ", ".join(str(int(idx[r])) for r in rows[:show])
    return listed + (f" and {len(rows) - show} more" if len(rows) > show else "")
