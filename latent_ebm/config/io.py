"""Configurations in and out: presets, YAML files, ``--set`` overrides, ``config.yaml``.

Every YAML text from the user or a run directory (``--config``, ``config.yaml``, ``--set``
values) is read by one loader (:func:`parse_yaml`): ``yaml.safe_load`` without aliases (a
351-byte "billion laughs" file expands to gigabytes through them), at most
:data:`MAX_YAML_DEPTH` levels deep, from a file of at most :data:`MAX_CONFIG_BYTES`. Errors
quote the input clipped to :data:`QUOTE_LIMIT` characters (:func:`clip`).
"""

from __future__ import annotations

import dataclasses
import os
import select
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from latent_ebm.config.compat import RENAMED, current_keys, old_meanings
from latent_ebm.config.recipes import apply_recipe, recipe_note
from latent_ebm.config.schema import Config
from latent_ebm.errors import LatentEBMError
from latent_ebm.files import NotRegularFileError, open_regular, write_atomic

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "PRESETS",
    "QUOTE_LIMIT",
    "YAMLRefused",
    "apply_overrides",
    "clip",
    "config_from_dict",
    "config_to_dict",
    "current_keys",
    "keep_holdout_snapshots",
    "load_config",
    "load_preset",
    "override_fields",
    "parse_yaml",
    "resolve_config",
    "save_config",
]


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few kB; a larger one is not a config
MAX_YAML_DEPTH = 16  # nesting levels of a YAML text (a config has 2; a --set value 0 or 1)
QUOTE_LIMIT = 200  # characters of the input an error message quotes
_MAX_STRING = 4096  # characters of a string field (a path: PATH_MAX)


def clip(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``str(text)`` cut to ``limit`` characters (with how long it was), for error messages: a
    value or key quoted from the input never makes a long line."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text):,} characters)"


class YAMLRefused(Exception):
    """A YAML text that :func:`parse_yaml` refuses to build: an alias, too deep a nesting, or a
    scalar Python cannot convert. The message says why, without quoting the text."""


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``, and so merge keys ``<<: *name``) and
    nesting deeper than :data:`MAX_YAML_DEPTH`, before anything is built: an alias makes a
    node stand for a copy of another, so a few of them expand without bound."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        where = f"line {event.start_mark.line + 1}" if event.start_mark else "the text"
        if isinstance(event, yaml.AliasEvent):
            raise YAMLRefused(
                f"it uses the YAML alias *{clip(event.anchor, 40)} ({where}); write the value "
                f"out in full (aliases are refused: they can expand without bound)"
            )
        if self._depth >= MAX_YAML_DEPTH:
            raise YAMLRefused(f"it nests deeper than {MAX_YAML_DEPTH} levels ({where})")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str) -> Any:
    """The value of a YAML text, as ``yaml.safe_load`` builds it, but without aliases.

    Raises:
        YAMLRefused: an alias, nesting deeper than :data:`MAX_YAML_DEPTH`, or a scalar that
            cannot be converted (an integer of thousands of digits, a date such as 2001-13-45).
        yaml.YAMLError: not valid YAML.
    """
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except (ValueError, OverflowError, RecursionError) as e:  # raised while building a scalar
        reason = " ".join(str(e).split(";")[0].split()) or type(e).__name__
        raise YAMLRefused(f"it holds a value YAML cannot convert ({clip(reason, 120)})") from None
    finally:
        loader.dispose()


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML syntax error in one short line: the problem and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return clip(" ".join(e.problem.split()), 120) + where
    return clip((str(e).splitlines() or ["syntax error"])[0], 120)


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
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise LatentEBMError(
                f"config field '{name}' must be a float, got an integer of "
                f"{value.bit_length():,} bits, beyond any float"
            ) from None
    if base is float and isinstance(value, str):  # YAML reads "1e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if (isinstance(value, bool) and base is not bool) or not isinstance(value, base):
        raise LatentEBMError(
            f"config field '{name}' must be {base.__name__}, got {clip(repr(value))} "
            f"({type(value).__name__})"
        )
    if isinstance(value, str) and len(value) > _MAX_STRING:
        raise LatentEBMError(
            f"config field '{name}' is a string of {len(value):,} characters (at most "
            f"{_MAX_STRING:,}): {clip(repr(value))}"
        )
    return value


def config_from_dict(d: dict[str, Any], base: Config | None = None) -> Config:
    """Build a config from a nested dict of overrides on ``base`` (default: the defaults).

    Unknown sections or fields and values of the wrong type raise ``LatentEBMError`` naming
    the field (keys and values quoted at most :data:`QUOTE_LIMIT` characters long).
    """
    cfg = dataclasses.replace(base) if base is not None else Config()
    hints = typing.get_type_hints(Config)
    for section, values in (d or {}).items():
        if section not in hints:
            known = ", ".join(hints)
            raise LatentEBMError(f"unknown config section '{clip(section, 60)}' (known: {known})")
        if not isinstance(values, dict):
            raise LatentEBMError(f"config section '{section}' must be a mapping of fields")
        sub = dataclasses.replace(getattr(cfg, section))
        sub_hints = typing.get_type_hints(type(sub))
        for key, value in values.items():
            if (section, key) in RENAMED:
                new = ".".join(RENAMED[section, key])
                raise LatentEBMError(
                    f"config field '{section}.{key}' is now '{new}' (the refit's settings have "
                    f"their own section, refit); write {new}"
                )
            if key not in sub_hints:
                known = ", ".join(sub_hints)
                raise LatentEBMError(
                    f"unknown config field '{section}.{clip(key, 60)}' "
                    f"(fields of '{section}': {known})"
                )
            setattr(sub, key, _coerce(f"{section}.{key}", value, sub_hints[key]))
        setattr(cfg, section, sub)
    return cfg


PIPE_WAIT = 5.0  # seconds a named pipe (e.g. --config <(...)) may take to start writing


def _read_config_bytes(path: Path) -> bytes:
    """The bytes of a config file, at most one past :data:`MAX_CONFIG_BYTES` (an endless
    source ends too). A named pipe is read once, as the shell's ``--config <(...)`` gives
    one; a device or a socket is refused before it is read.

    Raises:
        LatentEBMError: a named pipe that brought nothing within :data:`PIPE_WAIT` seconds
            (no writer).
        NotRegularFileError: a device or a socket.
        OSError: missing, a folder, unreadable.
    """
    with open_regular(path, fifo=True) as f:
        if os.get_blocking(f.fileno()):
            return f.read(MAX_CONFIG_BYTES + 1)
        # A pipe without a writer reads as empty at once; a writer has PIPE_WAIT to start.
        raw = b""
        if select.select([f], [], [], PIPE_WAIT)[0]:
            os.set_blocking(f.fileno(), True)
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if not raw:
            raise LatentEBMError(
                f"config file {path} is a named pipe (FIFO) that nothing wrote to within "
                f"{PIPE_WAIT:g} s; give a YAML file (a pipe must have a writer, as "
                "--config <(...) has)"
            )
        return raw


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping of a YAML config file (``--config``, a run's ``config.yaml``, a preset).

    Raises:
        LatentEBMError: missing, unreadable, larger than :data:`MAX_CONFIG_BYTES`, not UTF-8
            text, not valid YAML, refused by :func:`parse_yaml` (aliases, depth), or not a
            mapping.
    """
    try:
        raw = _read_config_bytes(path)
        if len(raw) > MAX_CONFIG_BYTES:
            raise LatentEBMError(
                f"config file {path} is larger than {MAX_CONFIG_BYTES:,} bytes: it is not a "
                f"latent-ebm config (those are a few kB); check the path"
            )
        d = parse_yaml(raw.decode("utf-8"))
    except FileNotFoundError:
        raise LatentEBMError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise LatentEBMError(f"config file {path} is a folder, not a YAML file") from None
    except NotRegularFileError as e:
        raise LatentEBMError(
            f"config file {path} is {e.kind}, not a file; give a YAML file"
        ) from None
    except UnicodeDecodeError:
        raise LatentEBMError(f"config file {path} is not a text (YAML) file") from None
    except OSError as e:
        raise LatentEBMError(f"config file {path} is unreadable ({e.strerror or e})") from None
    except YAMLRefused as e:
        raise LatentEBMError(f"config file {path} is refused: {e}") from None
    except yaml.YAMLError as e:
        raise LatentEBMError(f"config file {path} is not valid YAML: {_yaml_problem(e)}") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise LatentEBMError(f"config file {path} must hold a mapping of sections")
    return d


def _from_file(path: Path, d: dict[str, Any], base: Config | None = None) -> Config:
    """:func:`config_from_dict` of a file's mapping (old field names taken under their new
    ones, :func:`current_keys`); its errors name the file."""
    try:
        return config_from_dict(current_keys(d), base)
    except LatentEBMError as e:
        raise LatentEBMError(f"config file {path}: {e}") from None


def _preset_file(name: str) -> Path:
    if name not in PRESETS:
        raise LatentEBMError(f"unknown preset '{name}' (known: {', '.join(PRESETS)})")
    return _preset_dir() / f"{name}.yaml"


def load_preset(name: str) -> Config:
    """The defaults overridden by the named preset."""
    path = _preset_file(name)
    return _from_file(path, _read_yaml(path))


def _fields_named(d: dict[str, Any]) -> set[str]:
    """The ``section.field`` names that a config file's mapping ``d`` sets (old names under
    their new ones)."""
    return {f"{s}.{k}" for s, sub in current_keys(d).items() if isinstance(sub, dict) for k in sub}


def override_fields(overrides: Iterable[str]) -> set[str]:
    """The ``section.field`` names that ``section.field=value`` overrides set."""
    return {item.partition("=")[0].strip() for item in overrides}


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.field=value`` strings; values are parsed as YAML (:func:`parse_yaml`;
    text that is not valid YAML is taken as a string).

    Raises:
        LatentEBMError: not ``section.field=value``, a value :func:`parse_yaml` refuses
            (aliases, depth), or an unknown or ill-typed field (input quoted clipped).
    """
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key.count(".") != 1:
            raise LatentEBMError(f"--set expects section.field=value, got '{clip(item)}'")
        section, name = key.strip().split(".")
        try:
            value = parse_yaml(raw) if raw.strip() else None
        except YAMLRefused as e:
            raise LatentEBMError(f"--set {clip(key, 100)} is refused: {e}") from None
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
    then the recipe (``train.recipe``, :func:`~latent_ebm.config.recipes.apply_recipe`) sets
    the fields it names that none of those gave; then :func:`keep_holdout_snapshots`."""
    files = [_preset_file(preset)] if preset else []
    if config_file is not None:
        files.append(Path(config_file))
    cfg, given = Config(), override_fields(overrides)
    for path in files:
        d = _read_yaml(path)
        cfg = _from_file(path, d, cfg)
        given |= _fields_named(d)
    cfg = apply_overrides(cfg, list(overrides))
    return keep_holdout_snapshots(apply_recipe(cfg, given))


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
    """Write ``config.yaml`` (atomically: a crash leaves the old file or the new one), opened
    by a comment on the run's recipe (:func:`~latent_ebm.config.recipes.recipe_note`)."""
    text = recipe_note(cfg) + "\n" + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    write_atomic(path, lambda f: f.write(text.encode()))


def load_config(path: str | Path) -> Config:
    """Read a ``config.yaml`` written by :func:`save_config`, old field names under their new
    ones (:data:`RENAMED`); a field it lacks because it was written before the field existed
    takes the value that repeats the old behaviour (``refit.steps: 0``), not the new default,
    and a value whose meaning changed keeps the old one (:func:`old_meanings`)."""
    return _from_file(Path(path), old_meanings(current_keys(_read_yaml(Path(path)))))
