"""latent-ebm: generator models with an energy-based latent prior learned by adaptive
multi-stage density ratio estimation (Xiao & Han)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Names are imported when first used (PEP 562), so that ``import latent_ebm`` (and so the
# command line's start, where Ctrl-C must stay a one-line exit) does not wait for torch.
_EXPORTS = {
    "Amortiser": "amortiser",
    "Config": "config",
    "load_preset": "config",
    "resolve_config": "config",
    "Dataset": "data",
    "load_dataset": "data",
    "ChainDivergedError": "errors",
    "LatentEBMError": "errors",
    "langevin": "langevin",
    "LatentEBM": "model",
    "build_model": "model",
    "PRIORS": "priors",
    "AdaptivePrior": "priors",
    "GaussianPrior": "priors",
    "LEBMPrior": "priors",
    "NCEPrior": "priors",
    "Prior": "priors",
    "TREPrior": "priors",
    "build_prior": "priors",
    "nce_loss": "priors",
    "load_run": "rundir",
    "train": "train",
}

if TYPE_CHECKING:
    from latent_ebm.amortiser import Amortiser
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


class _Package(types.ModuleType):
    """This package: importing the submodule ``train`` (or ``langevin``) binds it on the
    package, over the function of the same name; the function is kept, as an eager
    ``from latent_ebm.train import train`` left it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """An exported name (imported from its module on first use), or a submodule."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"latent_ebm.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"latent_ebm.{name}")
    except ModuleNotFoundError:
        raise AttributeError(f"module 'latent_ebm' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "PRIORS",
    "AdaptivePrior",
    "Amortiser",
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
__version__ = "0.9.0"
