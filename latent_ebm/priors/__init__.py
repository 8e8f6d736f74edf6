"""Latent priors behind one interface (ARCHITECTURE §4), one module each, named by the registry
:data:`PRIORS`.

Every prior is a :class:`Prior` (:mod:`latent_ebm.priors.base`): ``log_prob(z)`` (the
learned prior, up to a constant), ``inference_log_prob(z)`` (the prior the posterior chains
use while training), ``set_stage(k, bank)`` (called before every iteration with the stage of
the schedule) and ``train_step(z_post, streams, bank)`` (one update of the prior's own
parameters); its classmethods ``num_stages(cfg)`` and ``check_config(cfg)`` give the length of
its schedule and check its config fields. The training loop, the evaluations and
:mod:`latent_ebm.config` call only these; they never test which prior they hold.

- ``gaussian``, :class:`GaussianPrior`: ``N(0, I)``, nothing to learn (the paper's SRI /
  "0 stages").
- ``adaptive``, :class:`AdaptivePrior`: ``log p_k(z) = sum_{i<k} f_i(z) - ||z||^2 / 2``
  (paper Eq. 5), learned by adaptive multi-stage NCE (Algorithm 1); ``nce``,
  :class:`NCEPrior`, is its case ``K = 1`` (one ratio, the paper's Table 3 "1 stage").
- ``tre``, :class:`TREPrior`: the same form with ``K`` ratios learned together by
  non-adaptive telescoping ratio estimation on waymarks (Rhodes et al. 2020; Table 3
  "non-adaptive").
- ``lebm``, :class:`LEBMPrior`: ``log p(z) = f(z) - ||z||^2 / 2`` learned by maximum
  likelihood with a prior Langevin chain (Pang et al. 2020).

:class:`RatioPrior` (:mod:`latent_ebm.priors.ratio`) holds what the Eq. 5 priors
(``adaptive``, ``nce``, ``tre``) share. A new prior is one module with one :class:`Prior`
subclass and one line in :data:`PRIORS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from latent_ebm.priors.adaptive import AdaptivePrior, NCEPrior
from latent_ebm.priors.base import Prior, nce_loss, stage_of
from latent_ebm.priors.gaussian import GaussianPrior
from latent_ebm.priors.lebm import LEBMPrior
from latent_ebm.priors.ratio import RatioPrior
from latent_ebm.priors.tre import TREPrior, tre_waymarks

if TYPE_CHECKING:
    from latent_ebm.config import Config

__all__ = [
    "PRIORS",
    "AdaptivePrior",
    "GaussianPrior",
    "LEBMPrior",
    "NCEPrior",
    "Prior",
    "RatioPrior",
    "TREPrior",
    "build_prior",
    "nce_loss",
    "stage_of",
    "tre_waymarks",
]

#: ``prior.kind`` -> its class; the config's choices of ``prior.kind`` are these keys.
PRIORS: dict[str, type[Prior]] = {
    "gaussian": GaussianPrior,
    "nce": NCEPrior,
    "adaptive": AdaptivePrior,
    "tre": TREPrior,
    "lebm": LEBMPrior,
}


def build_prior(cfg: Config) -> Prior:
    """The prior named by ``cfg.prior.kind``."""
    return PRIORS[cfg.prior.kind].from_config(cfg)
