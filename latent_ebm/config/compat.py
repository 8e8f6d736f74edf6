"""Config files written by earlier versions keep their meaning: fields that moved are read
under their new names (:data:`RENAMED`, :func:`current_keys`), a field that did not exist yet
takes the value that repeats what such a run did, and a value whose meaning changed keeps the
old one (:func:`old_meanings`)."""

from __future__ import annotations

from typing import Any

from latent_ebm.errors import LatentEBMError

__all__ = ["RENAMED", "current_keys", "old_meanings"]


# Fields that moved, (section, old name) -> (section, new name): a file written with the old
# name (a run's config.yaml, a --config file) still loads with the same meaning; a --set
# override with the old name is refused, naming the new one.
RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("prior", f"refit_{name}"): ("refit", name)
    for name in (
        "steps",
        "split",
        "batch",
        "lr",
        "samples",
        "chain_steps",
        "sampler",
        "noise",
        "holdout",
        "check",
        "patience",
    )
}


def current_keys(d: dict[str, Any]) -> dict[str, Any]:
    """The mapping of sections ``d`` (as a config file holds it) with every field of
    :data:`RENAMED` under its new name; ``d`` itself is not changed.

    Raises:
        LatentEBMError: ``d`` names a field by both its old and its new name.
    """
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for (section, old), (new_section, new) in RENAMED.items():
        if not isinstance(out.get(section), dict) or old not in out[section]:
            continue
        value = out[section].pop(old)
        target = out.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # config_from_dict refuses the section
        if new in target:
            raise LatentEBMError(
                f"config field '{new_section}.{new}' is also given by its old name "
                f"'{section}.{old}'; keep only {new_section}.{new}"
            )
        target[new] = value
    return out


# Fields added after runs were saved without them, with the value that repeats what those
# runs did (not the new default): a run's config.yaml keeps meaning what it meant.
_ABSENT_MEANS = {("refit", "steps"): 0}  # no refit before version 0.3


def old_meanings(d: dict[str, Any]) -> dict[str, Any]:
    """A run's ``config.yaml`` mapping ``d`` (fields under their current names) with the
    values that repeat what it meant when it was written: a field it lacks takes its value of
    :data:`_ABSENT_MEANS`, ``train.recipe`` follows from the refit it ran
    (:func:`_old_recipe`), and ``train.warm_steps`` is read by :func:`_old_warm_steps`."""
    if isinstance(d.get("prior"), dict):  # a run's config.yaml: every section is written
        for (section, key), value in _ABSENT_MEANS.items():
            if isinstance(d.get(section, {}), dict) and key not in d.get(section, {}):
                d = {**d, section: {**d.get(section, {}), key: value}}
        d = _old_recipe(d)
    return _old_warm_steps(d)


def _old_recipe(d: dict[str, Any]) -> dict[str, Any]:
    """A run saved before ``train.recipe`` existed: ``paper`` when it ran no refit
    (``refit.steps`` 0), else ``refit`` (its other fields are in the file: the label only)."""
    train, refit = d.get("train"), d.get("refit")
    if not isinstance(train, dict) or "recipe" in train or not isinstance(refit, dict):
        return d
    return {**d, "train": {"recipe": "paper" if refit.get("steps") == 0 else "refit", **train}}


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
