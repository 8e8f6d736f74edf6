"""The post-hoc refit of a trained prior (ARCHITECTURE §4; beyond the paper).

After the last training iteration, a ratio prior re-learns its ratios on samples of the
final aggregate posterior: ``refit.samples`` posterior samples of training images (a
seeded permutation of the training set, cycled, so every image gives about as many), each
drawn by the run's posterior chain under the final model: ``train.post_steps`` steps of
``train.post_step_size`` from ``N(0, I)``, or, for a run trained with
``train.post_init=amortised``, ``train.warm_steps`` steps from its amortiser's draws (the
chain its generator learned from). A ``bank`` run's samples start from ``N(0, I)``. The
prior's own :meth:`~latent_ebm.priors.Prior.refit` does the fitting; priors with nothing to
refit (``gaussian``, ``lebm``) return at once.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from latent_ebm import rng
from latent_ebm.config import Config
from latent_ebm.data import Dataset, to_float
from latent_ebm.errors import ChainDivergedError, LatentEBMError
from latent_ebm.langevin import Cause, Setting, finite_at, remedy
from latent_ebm.model import LatentEBM
from latent_ebm.priors.base import Refit

__all__ = [
    "aggregate_posterior",
    "fit_prior",
    "own_chain",
    "refit_prior",
    "refit_rows",
    "refit_settings",
]

_INIT, _NOISE, _ORDER = 0, 1, 2  # sub-streams of rng.REFIT for the posterior samples


def refit_settings(cfg: Config) -> Refit:
    """The :class:`~latent_ebm.priors.base.Refit` of a config's ``refit`` section."""
    p = cfg.refit
    chain = p.sampler == "chain"  # the test-time prior chain, else MALA
    return Refit(
        steps=p.steps,
        per_stage=p.split == "stage",
        batch=p.batch,
        lr=p.lr,
        betas=(cfg.train.beta1, cfg.train.beta2),
        chain_steps=cfg.sample.steps if chain else p.chain_steps,
        noise=p.noise,
        sampler=p.sampler,
        step_size=cfg.sample.step_size if chain else 0.1,
        seed=cfg.train.seed,
        holdout=p.holdout,
        check=p.check,
        patience=p.patience,
    )


def own_chain(cfg: Config) -> tuple[str, int, float]:
    """The run's own posterior chain for samples of its aggregate posterior: its start
    (``amortised`` for a run trained with ``train.post_init=amortised``, else ``noise``: a
    ``bank`` run's rows belong to training), steps and step size."""
    start = "amortised" if cfg.train.post_init == "amortised" else "noise"
    return start, cfg.train.chain_steps(start), cfg.train.post_step_size


def aggregate_posterior(
    model: LatentEBM,
    images: torch.Tensor,
    n: int,
    steps: int,
    step_size: float,
    *,
    seed: int = 0,
    batch_size: int = 100,
    progress: bool = False,
    amortised: bool = False,
) -> torch.Tensor:
    """``n`` samples ``(n, nz)`` of the aggregate posterior ``q(z) = E_x p(z | x)`` over the
    ``uint8`` ``images``: the images in a seeded order, repeated until ``n``, each row a
    posterior chain of ``steps`` steps of ``step_size`` under the learned prior, from
    ``eps ~ N(0, I)`` or, with ``amortised``, from the model's amortiser's draw
    ``mu(x) + sigma(x) eps``. Seeded: the same model, images and seed give the same samples."""
    g = rng.generator_for(seed, rng.REFIT, _ORDER)
    rounds = -(-n // len(images))
    order = torch.cat([torch.randperm(len(images), generator=g) for _ in range(rounds)])[:n]
    device = model.device
    out = []
    starts = range(0, n, batch_size)
    for b, i in enumerate(tqdm(starts, desc="posterior for refit", disable=not progress)):
        x = to_float(images[order[i : i + batch_size]]).to(device)
        z0 = torch.randn(len(x), model.nz, generator=rng.generator_for(seed, rng.REFIT, _INIT, b))
        z0 = z0.to(device)
        if amortised:
            z0 = model.amortiser.draw(x, z0)
        g_noise = rng.generator_for(seed, rng.REFIT, _NOISE, b)

        def randn(step: int, m: int = len(x), g_noise: torch.Generator = g_noise) -> torch.Tensor:
            return torch.randn(m, model.nz, generator=g_noise).to(device)

        out.append(model.infer(x, z0, steps, step_size, randn))
    return torch.cat(out)


def refit_rows(
    model: LatentEBM, images: torch.Tensor, cfg: Config, progress: bool = False
) -> torch.Tensor:
    """The aggregate-posterior samples a refit of ``cfg`` learns from: ``refit.samples``
    rows of :func:`aggregate_posterior` over ``images``, drawn by the run's own chain
    (:func:`own_chain`) with the refit's seed."""
    start, steps, step_size = own_chain(cfg)
    return aggregate_posterior(
        model,
        images,
        cfg.refit.samples,
        steps,
        step_size,
        seed=refit_settings(cfg).seed,
        progress=progress,
        amortised=start == "amortised",
    )


def refit_prior(
    model: LatentEBM, data: Dataset, cfg: Config, progress: bool = False
) -> list[float] | None:
    """Refit ``model``'s prior as the config says; ``None`` when ``refit.steps`` is 0,
    else each fitted part's last loss (``[]`` for a prior with nothing to refit).

    Raises:
        LatentEBMError: a chain or the fit diverged, naming the setting to change: for the
            posterior samples ``train.lr`` or ``prior.lr`` (a network not finite where the
            chains start) else ``train.post_step_size``; for the fit ``refit.lr`` (a
            loss, a ratio's weights or the refitted log-density not finite), else, for a chain
            of ``refit.sampler=chain``, ``sample.step_size``.
    """
    settings = refit_settings(cfg)
    if settings.steps == 0:
        return None
    if not model.prior.refits:  # nothing to refit: spare the posterior samples
        return []
    images = data.train_x
    try:
        z_q = refit_rows(model, images, cfg, progress)
    except ChainDivergedError as e:
        x = to_float(images[:100]).to(model.device)
        g = rng.generator_for(settings.seed, rng.REFIT, _INIT)
        z0 = torch.randn(len(x), model.nz, generator=g).to(model.device)
        causes = [
            Cause(
                "the generator's log-likelihood",
                lambda z: model.log_likelihood(x, z),
                Setting("train.lr", cfg.train.lr),
            ),
            Cause(
                "the prior's log-density", model.prior.log_prob, Setting("prior.lr", cfg.prior.lr)
            ),
        ]
        fix = remedy(z0, causes, Setting("train.post_step_size", cfg.train.post_step_size))
        raise ChainDivergedError(f"the refit's posterior samples: {e}; {fix}", e.rows) from None
    return fit_prior(model, z_q, cfg, progress)


def fit_prior(
    model: LatentEBM, z_q: torch.Tensor, cfg: Config, progress: bool = False
) -> list[float]:
    """Refit ``model``'s prior on the aggregate-posterior rows ``z_q`` ``(n, nz)``
    (:func:`refit_rows`) with the settings of ``cfg``'s ``refit`` section; each fitted part's
    last loss (``[]`` for a prior with nothing to refit).

    Raises:
        LatentEBMError: the fit diverged, naming the setting to change (as
            :func:`refit_prior`).
    """
    settings = refit_settings(cfg)
    prior = Cause(
        "the refitted prior's log-density",
        model.prior.log_prob,
        Setting("refit.lr", settings.lr),
    )
    try:
        losses = model.prior.refit(z_q, settings, progress)
    except ChainDivergedError as e:
        # Only the unadjusted chain has a step size to blame: MALA rejects what diverges.
        step = prior.setting
        if settings.sampler == "chain":
            step = Setting("sample.step_size", settings.step_size)
        fix = remedy(z_q, [prior], step)
        raise ChainDivergedError(f"a chain of the refit: {e}; {fix}", e.rows) from None
    _check_refit(model, z_q, losses, prior)
    return losses


def _check_refit(model: LatentEBM, z_q: torch.Tensor, losses: list[float], prior: Cause) -> None:
    """Refuse a refit whose losses or ratio weights, or whose log-density or its gradient at
    the fitted rows ``z_q``, are not finite (NaN/Inf), naming ``prior``'s setting (the refit's
    learning rate).

    Raises:
        LatentEBMError: the refit diverged.
    """
    bad = [name for name, p in model.prior.named_parameters() if not bool(p.isfinite().all())]
    if not all(math.isfinite(v) for v in losses):
        culprit = f"its NCE loss is {next(v for v in losses if not math.isfinite(v))}"
    elif bad:
        culprit = f"parameter prior.{bad[0]} is not finite (NaN/Inf)"
    elif not finite_at(prior.log_prob, z_q):
        culprit = f"{prior.what} is not finite (NaN/Inf) at the samples it fitted"
    else:
        return
    raise LatentEBMError(f"the post-hoc refit diverged: {culprit}; lower {prior.setting}")
