"""Typed configuration: dataclasses with a default and a comment on every field, named presets,
YAML in and out (this module), and validation that names the offending field.

A configuration is resolved in this order, each step overriding the last:
the dataclass defaults, a named preset (``latent_ebm/configs/<name>.yaml``), a user YAML file
(``--config``), and ``section.field=value`` overrides (``--set``).

- :mod:`~latent_ebm.config.schema`: the dataclasses, to and from nested dicts;
- :mod:`~latent_ebm.config.validation`: :func:`validate` and its checks.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from latent_ebm.config.schema import (
    Config,
    DataConfig,
    ModelConfig,
    PriorConfig,
    SampleConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from latent_ebm.config.validation import (
    SEED_LIMIT,
    check_device,
    check_seed,
    num_stages,
    validate,
)
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import write_atomic

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


def _preset_dir() -> Path:
    return Path(str(resources.files("latent_ebm") / "configs"))


PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in _preset_dir().glob("*.yaml")))


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
