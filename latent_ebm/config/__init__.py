"""Typed configuration: dataclasses with a default and a comment on every field, named presets,
YAML in and out, and validation that names the offending field.

A configuration is resolved in this order, each step overriding the last:
the dataclass defaults, a named preset (``latent_ebm/configs/<name>.yaml``), a user YAML file
(``--config``), and ``section.field=value`` overrides (``--set``); then the recipe
(``train.recipe``, :mod:`~latent_ebm.config.recipes`) sets the fields it names that none of
those gave.

The package: :mod:`~latent_ebm.config.schema` (the fields), :mod:`~latent_ebm.config.io`
(presets, YAML without aliases, overrides) and :mod:`~latent_ebm.config.validation`.
"""

from __future__ import annotations

from latent_ebm.config.io import (
    MAX_CONFIG_BYTES,
    PRESETS,
    apply_overrides,
    clip,
    config_from_dict,
    config_to_dict,
    current_keys,
    keep_holdout_snapshots,
    load_config,
    load_preset,
    override_fields,
    resolve_config,
    save_config,
)
from latent_ebm.config.recipes import DEFAULT_RECIPE, RECIPES, apply_recipe
from latent_ebm.config.schema import (
    COMPILE_MODES,
    Config,
    DataConfig,
    ModelConfig,
    PriorConfig,
    RefitConfig,
    SampleConfig,
    TrainConfig,
)
from latent_ebm.config.validation import (
    SEED_LIMIT,
    check_device,
    check_seed,
    num_stages,
    validate,
)

__all__ = [
    "COMPILE_MODES",
    "DEFAULT_RECIPE",
    "MAX_CONFIG_BYTES",
    "PRESETS",
    "RECIPES",
    "SEED_LIMIT",
    "Config",
    "DataConfig",
    "ModelConfig",
    "PriorConfig",
    "RefitConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "apply_recipe",
    "check_device",
    "check_seed",
    "clip",
    "config_from_dict",
    "config_to_dict",
    "current_keys",
    "keep_holdout_snapshots",
    "load_config",
    "load_preset",
    "num_stages",
    "override_fields",
    "resolve_config",
    "save_config",
    "validate",
]
