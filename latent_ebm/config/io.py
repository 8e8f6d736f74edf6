"""Configurations in and out: presets, YAML files, ``--set`` overrides, ``config.yaml``."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from latent_ebm.config.schema import Config
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import write_atomic

__all__ = [
    "PRESETS",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "keep_holdout_snapshots",
    "load_config",
    "load_preset",
    "resolve_config",
    "save_config",
]


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


# Fields added after runs were saved without them, with the value that repeats what those
# runs did (not the new default): a run's config.yaml keeps meaning what it meant.
_ABSENT_MEANS = {("prior", "refit_steps"): 0}  # no refit before version 0.3


def load_config(path: str | Path) -> Config:
    """Read a ``config.yaml`` written by :func:`save_config`; a field it lacks because it was
    written before the field existed takes the value that repeats the old behaviour
    (``prior.refit_steps: 0``), not the new default, and a value whose meaning changed keeps
    the old one (:func:`_old_warm_steps`)."""
    d = _read_yaml(Path(path))
    for (section, key), value in _ABSENT_MEANS.items():
        if isinstance(d.get(section), dict) and key not in d[section]:
            d[section] = {**d[section], key: value}
    return config_from_dict(_old_warm_steps(d))


def _old_warm_steps(d: dict[str, Any]) -> dict[str, Any]:
    """``train.warm_steps: 0`` of a run saved before ``train.post_init=amortised`` existed meant
    ``train.post_steps`` (every such run holds it: it was the default); that is ``null`` now,
    and 0 means a chain of no step. Only ``amortised`` runs, which are newer, keep a 0 (the
    validation refuses 0 with ``bank`` and any value with ``noise``, so no newer run of those
    holds one)."""
    train = d.get("train")
    old = isinstance(train, dict) and train.get("post_init", "noise") != "amortised"
    if old and train.get("warm_steps") == 0:
        d = {**d, "train": {**train, "warm_steps": None}}
    return d
