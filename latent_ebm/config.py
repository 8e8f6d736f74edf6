"""Typed configuration: dataclasses with a default and a comment on every field, named presets,
YAML in and out, and validation that names the offending field.

A configuration is resolved in this order, each step overriding the last:
the dataclass defaults, a named preset (``latent_ebm/configs/<name>.yaml``), a user YAML file
(``--config``), and ``section.field=value`` overrides (``--set``).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from latent_ebm.data import DATASETS
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import write_atomic
from latent_ebm.nets import GENERATOR_FAMILIES
from latent_ebm.precision import PRECISIONS
from latent_ebm.priors import PRIORS

__all__ = [
    "PRESETS",
    "SEED_LIMIT",
    "Config",
    "DataConfig",
    "ModelConfig",
    "PriorConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "check_device",
    "check_seed",
    "config_from_dict",
    "config_to_dict",
    "keep_holdout_snapshots",
    "load_config",
    "load_preset",
    "num_stages",
    "resolve_config",
    "save_config",
    "validate",
]


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


# torch.compile modes of the generator in training (LatentEBM.compile_generator); "none": eager.
# "reduce-overhead" records CUDA graphs on a GPU.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")

_CHOICES = {
    "data.name": DATASETS,
    "model.arch": ("auto", "cifar10"),
    "prior.kind": PRIORS,
    "prior.prior_samples": ("persistent", "langevin"),
    "train.post_init": ("noise", "bank"),
    "train.precision": PRECISIONS,
    "train.compile": COMPILE_MODES,
}
_POSITIVE = (
    "model.nz",
    "model.ngf",
    "model.sigma",
    "model.ratio_hidden",
    "prior.prior_step_size",
    "prior.lr",
    "train.iters",
    "train.batch_size",
    "train.lr",
    "train.post_step_size",
    "train.log_every",
    "train.ckpt_every",
    "sample.step_size",
    "sample.grid",
)
_NON_NEGATIVE = (
    "prior.stages",
    "prior.prior_steps",
    "train.post_steps",
    "train.warm_steps",
    "train.keep_every",
    "sample.steps",
)

# Seeds lie in [0, 2**63): torch.manual_seed and numpy's SeedSequence take them, and they fit
# an int64 tensor.
SEED_LIMIT = 2**63
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_seed(seed: Any, name: str) -> int:
    """``seed`` when it is an integer in ``[0, 2**63)``; ``name`` names it in the message
    (``"--seed"``, ``"config field 'train.seed'"``).

    Raises:
        LatentEBMError: anything else.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise LatentEBMError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def check_device(device: Any, name: str) -> str:
    """``device`` when it is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``name`` names it in the
    message (``"--device"``, ``"config field 'train.device'"``). Whether a GPU is present is
    :func:`latent_ebm.distributed.resolve_device`'s check.

    Raises:
        LatentEBMError: anything else.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise LatentEBMError(f"{name} must be auto, cpu, cuda or cuda:N, got {device!r}")
    return device


def _preset_dir() -> Path:
    return Path(str(resources.files("latent_ebm") / "configs"))


PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in _preset_dir().glob("*.yaml")))


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


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise LatentEBMError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise LatentEBMError(f"config file {path} is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise LatentEBMError(f"config file {path} is not a text (YAML) file") from None
    except OSError as e:
        raise LatentEBMError(f"config file {path} is unreadable ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise LatentEBMError(f"config file {path} is not valid YAML: {first}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise LatentEBMError(f"config file {path} must hold a mapping of sections")
    return d


def load_preset(name: str) -> Config:
    """The defaults overridden by the named preset."""
    if name not in PRESETS:
        raise LatentEBMError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return config_from_dict(_read_yaml(_preset_dir() / f"{name}.yaml"))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings; values are parsed as YAML scalars."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key.count(".") != 1:
            raise LatentEBMError(f"--set expects section.field=value, got '{item}'")
        section, name = key.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return config_from_dict(nested, cfg)


def validate(
    cfg: Config, num_train: int | None = None, shape: tuple[int, int, int] | None = None
) -> Config:
    """Check choices and ranges; raise ``LatentEBMError`` naming the first bad field.

    With ``num_train`` (training-set size) it also checks the batch size against it and warns
    when a stage of the persistent prior-sample mode lasts less than an epoch (ARCHITECTURE
    §3: rows never visited in a stage would still hold samples from an earlier stage). With
    ``shape`` (the data's ``(C, H, W)``) it checks that ``model.arch`` has a generator for it.
    """
    flat = {f"{s}.{k}": v for s, sub in config_to_dict(cfg).items() for k, v in sub.items()}
    for name, choices in _CHOICES.items():
        if flat[name] not in choices:
            raise LatentEBMError(
                f"config field '{name}' must be one of {', '.join(choices)}, got {flat[name]!r}"
            )
    for name in _POSITIVE:
        if not (flat[name] > 0 and math.isfinite(flat[name])):
            raise LatentEBMError(f"config field '{name}' must be positive, got {flat[name]!r}")
    for name in _NON_NEGATIVE:
        if flat[name] < 0:
            raise LatentEBMError(f"config field '{name}' must be >= 0, got {flat[name]!r}")
    check_seed(cfg.train.seed, "config field 'train.seed'")
    check_device(cfg.train.device, "config field 'train.device'")
    if cfg.data.size is not None and cfg.data.size < 1:
        raise LatentEBMError(f"config field 'data.size' must be positive, got {cfg.data.size}")
    if not (0 <= cfg.train.beta1 < 1 and 0 <= cfg.train.beta2 < 1):
        raise LatentEBMError("config fields 'train.beta1' and 'train.beta2' must lie in [0, 1)")
    if shape is not None:
        _check_arch(cfg, shape)
    PRIORS[cfg.prior.kind].check_config(cfg)
    stages = num_stages(cfg)
    if stages > cfg.train.iters:
        raise LatentEBMError(
            f"config field 'prior.stages' ({stages}) exceeds 'train.iters' ({cfg.train.iters}): "
            "every stage needs at least one iteration"
        )
    if num_train is not None:
        if cfg.train.batch_size > num_train:
            raise LatentEBMError(
                f"config field 'train.batch_size' ({cfg.train.batch_size}) exceeds the "
                f"training set ({num_train} examples)"
            )
        epoch = num_train // cfg.train.batch_size
        persistent = stages > 1 and cfg.prior.prior_samples == "persistent"
        if persistent and cfg.train.iters // stages < epoch:
            warnings.warn(
                f"each stage lasts {cfg.train.iters // stages} iterations, less than an "
                f"epoch ({epoch}): the persistent prior samples of a stage then include "
                "memory-bank rows from earlier stages (raise train.iters or lower "
                "prior.stages)",
                stacklevel=2,
            )
    return cfg


def _check_arch(cfg: Config, shape: tuple[int, int, int]) -> None:
    """``model.arch`` has a generator for images of ``shape`` (ARCHITECTURE §5)."""
    _, h, w = shape
    sizes = ", ".join(f"{k}x{k}" for k in GENERATOR_FAMILIES if k.isdigit())
    if h != w or (cfg.model.arch == "auto" and str(h) not in GENERATOR_FAMILIES):
        raise LatentEBMError(
            f"{cfg.data.name} images are {h}x{w}: no generator for that size (sizes: {sizes}); "
            "set data.size to one of them"
        )
    if cfg.model.arch == "cifar10" and (h, w) != (32, 32):
        raise LatentEBMError(
            f"config field 'model.arch' is cifar10, the generator of 32x32 images, but "
            f"{cfg.data.name} images are {h}x{w}: use model.arch=auto"
        )


def num_stages(cfg: Config) -> int:
    """Number of stages of the training schedule (:func:`latent_ebm.priors.stage_of`): the
    ``num_stages`` of the prior class that ``prior.kind`` names (0: no schedule)."""
    return PRIORS[cfg.prior.kind].num_stages(cfg)


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] = (),
) -> Config:
    """Defaults, then preset, then YAML file, then ``--set`` overrides (not yet validated);
    then :func:`keep_holdout_snapshots`."""
    cfg = load_preset(preset) if preset else Config()
    if config_file is not None:
        cfg = config_from_dict(_read_yaml(Path(config_file)), cfg)
    return keep_holdout_snapshots(apply_overrides(cfg, list(overrides)))


def keep_holdout_snapshots(cfg: Config) -> Config:
    """The anomaly protocol's snapshots: a run with ``data.holdout`` set and ``train.keep_every``
    0 keeps 20 model snapshots (``keep_every = max(1, iters // 20)``); ``cfg`` is returned,
    changed in place. The protocol averages the AUPRC over the last evaluations (ARCHITECTURE §7),
    which these snapshots are.
    """
    if cfg.data.holdout is not None and cfg.train.keep_every == 0:
        cfg.train.keep_every = max(1, cfg.train.iters // 20)
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``config.yaml`` (atomically: a crash leaves the old file or the new one)."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    write_atomic(path, lambda f: f.write(text.encode()))


def load_config(path: str | Path) -> Config:
    """Read a ``config.yaml`` written by :func:`save_config`."""
    return config_from_dict(_read_yaml(Path(path)))
