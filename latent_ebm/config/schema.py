"""The configuration's typed dataclasses (a default and a comment on every field) and their
conversion to and from nested dicts (:mod:`latent_ebm.config`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from latent_ebm.errors import LatentEBMError


@dataclass
class DataConfig:
    name: str = "digits"  # data set: digits | mnist | fashion-mnist | svhn | cifar10 | celeba | ...
    data_dir: str | None = None  # folder of the data files (None: $LATENT_EBM_DATA, then default)
    holdout: int | None = None  # anomaly protocol: class held out of training (ARCHITECTURE §7)
    size: int | None = None  # image side of celeba, celeba-hq, imagefolder (None: their default)


@dataclass
class ModelConfig:
    nz: int = 16  # latent dimension d
    ngf: int = 32  # generator width (channels of the last hidden layer)
    arch: str = "auto"  # generator family (ARCHITECTURE §5): auto (by image size) | cifar10
    sigma: float = 0.3  # std of the observation noise, p(x|z) = N(g(z), sigma^2 I)
    ratio_hidden: int = 200  # width of each ratio network's hidden layers (paper Table 4)


@dataclass
class PriorConfig:
    kind: str = "adaptive"  # a key of latent_ebm.priors.PRIORS (ARCHITECTURE §4): Algorithm 1
    stages: int = 4  # K: stages or ratios of the priors that read it (see each prior's class)
    prior_samples: str = "persistent"  # adaptive NCE noise: persistent (memory bank) | langevin
    prior_steps: int = 60  # prior-chain length: adaptive's langevin mode, lebm training
    prior_step_size: float = 0.4  # prior-chain step size: adaptive's langevin mode, lebm
    lr: float = 5e-5  # Adam learning rate of the prior's networks (paper A.3)


@dataclass
class TrainConfig:
    iters: int = 1500  # T, total training iterations, split evenly into the K stages
    batch_size: int = 100  # global mini-batch size
    lr: float = 1e-4  # Adam learning rate of the generator (paper A.3)
    beta1: float = 0.5  # Adam beta1 for every optimiser (LEBM reference)
    beta2: float = 0.999  # Adam beta2 for every optimiser
    post_steps: int = 30  # L, posterior Langevin steps per iteration
    post_step_size: float = 0.1  # posterior Langevin step size s
    post_init: str = "noise"  # posterior chain start: noise (paper) | bank (example's bank row)
    warm_steps: int = 0  # posterior steps when post_init=bank (0: train.post_steps)
    precision: str = "fp32"  # fp32 | bf16: autocast in the chains and the generator update
    compile: str = "none"  # none | default | reduce-overhead | max-autotune: torch.compile mode
    seed: int = 0  # seeds initialisation, batch order and every chain's noise
    log_every: int = 10  # iterations per line of metrics.jsonl (window means)
    keep_every: int = 0  # iterations between model snapshots kept in snapshots/ (0: none)
    ckpt_every: int = 500  # iterations between checkpoints (also at the end and on a signal)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    eval_every: int = 0  # iterations between in-training evaluations, also at the end (0: off)
    eval_n: int = 1000  # test images (recon MSE) and prior samples (FID) of each evaluation
    keep_best: str = "none"  # none | fid: keep best.pt, the model of the lowest in-training FID
    tensorboard: bool = False  # also write TensorBoard events under DIR/tensorboard/


@dataclass
class SampleConfig:
    steps: int = 100  # test-time prior Langevin steps (paper A.3)
    step_size: float = 0.1  # test-time prior Langevin step size
    grid: int = 100  # images in the sample and reconstruction grids


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Nested plain dict of a config (what ``config.yaml`` holds)."""
    return dataclasses.asdict(cfg)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against a field type (``int``, ``float``, ``str``, ``str | None``)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    base = next((a for a in args if a is not type(None)), tp) if args else tp
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is float and isinstance(value, str):  # YAML reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if (isinstance(value, bool) and base is not bool) or not isinstance(value, base):
        raise LatentEBMError(
            f"config field '{name}' must be {base.__name__}, got {value!r} ({type(value).__name__})"
        )
    return value


def config_from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested dict of overrides on ``base`` (default: the defaults).

    Unknown sections or fields and values of the wrong type raise ``LatentEBMError`` naming
    the field.
    """
    cfg = dataclasses.replace(base) if base is not None else Config()
    hints = typing.get_type_hints(Config)
    for section, values in (d or {}).items():
        if section not in hints:
            known = ", ".join(hints)
            raise LatentEBMError(f"unknown config section '{section}' (known: {known})")
        if not isinstance(values, dict):
            raise LatentEBMError(f"config section '{section}' must be a mapping of fields")
        sub = dataclasses.replace(getattr(cfg, section))
        sub_hints = typing.get_type_hints(type(sub))
        for key, value in values.items():
            if key not in sub_hints:
                known = ", ".join(sub_hints)
                raise LatentEBMError(
                    f"unknown config field '{section}.{key}' (fields of '{section}': {known})"
                )
            setattr(sub, key, _coerce(f"{section}.{key}", value, sub_hints[key]))
        setattr(cfg, section, sub)
    return cfg
