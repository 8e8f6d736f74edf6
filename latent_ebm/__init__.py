"""latent-ebm: generator models with an energy-based latent prior learned by adaptive
multi-stage density ratio estimation (Xiao & Han)."""

from latent_ebm.config import Config, load_preset, resolve_config
from latent_ebm.data import Dataset, load_dataset
from latent_ebm.errors import ChainDivergedError, LatentEBMError
from latent_ebm.langevin import langevin
from latent_ebm.model import LatentEBM, build_model
from latent_ebm.priors import (
    PRIORS,
    AdaptivePrior,
    GaussianPrior,
    LEBMPrior,
    NCEPrior,
    Prior,
    TREPrior,
    build_prior,
    nce_loss,
)
from latent_ebm.rundir import load_run
from latent_ebm.train import train

__all__ = [
    "PRIORS",
    "AdaptivePrior",
    "ChainDivergedError",
    "Config",
    "Dataset",
    "GaussianPrior",
    "LEBMPrior",
    "LatentEBM",
    "LatentEBMError",
    "NCEPrior",
    "Prior",
    "TREPrior",
    "build_model",
    "build_prior",
    "langevin",
    "load_dataset",
    "load_preset",
    "load_run",
    "nce_loss",
    "resolve_config",
    "train",
]
__version__ = "0.2.0"
