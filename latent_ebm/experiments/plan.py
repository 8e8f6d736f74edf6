"""The runs of a ``reproduce`` experiment (:func:`experiment_runs`): every model of its table,
per seed and held-out class, with its full, validated configuration.

Every config is the scale's base config (:data:`~latent_ebm.experiments.tables.SCALES`), then
the ``--set`` settings (:mod:`latent_ebm.experiments.settings`), then the model's own
overrides. :mod:`latent_ebm.experiments.reproduction` trains and evaluates them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from latent_ebm.config import Config, apply_overrides, resolve_config, validate
from latent_ebm.data import DATASETS, load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.experiments.settings import split_settings
from latent_ebm.experiments.tables import EXPERIMENTS, SCALES, ModelSpec

__all__ = ["PlannedRun", "check_choice", "experiment_runs"]


@dataclass(frozen=True)
class PlannedRun:
    """One model of an experiment: its spec, held-out class and full configuration."""

    spec: ModelSpec
    holdout: int | None
    cfg: Config

    @property
    def name(self) -> str:
        """``<model>[-holdout<C>][-seed<s>]``: seed 0 keeps the plain name of earlier versions."""
        name = self.spec.name if self.holdout is None else f"{self.spec.name}-holdout{self.holdout}"
        seed = self.cfg.train.seed
        return name if seed == 0 else f"{name}-seed{seed}"


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Raise a one-line error unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise LatentEBMError(f"unknown {what} '{value}' (choose from {', '.join(choices)})")


def _base_config(dataset: str, scale: str, seed: int, data_dir: str | Path | None) -> Config:
    s = SCALES[scale]
    preset = s["preset"].format(dataset=dataset) if s["preset"] else None
    cfg = resolve_config(preset, None, [*s["set"], f"data.name={dataset}", f"train.seed={seed}"])
    cfg.data.data_dir = None if data_dir is None else str(data_dir)
    return cfg


def _holdouts(
    dataset: str, scale: str, holdout: Sequence[int] | None, data_dir: str | Path | None
) -> list[int]:
    """The held-out classes, checked against the data set's labels (loads the data set)."""
    data = load_dataset(dataset, data_dir)
    labels = sorted(set(data.train_y.tolist()) | set(data.test_y.tolist()))
    wanted = holdout if holdout is not None else SCALES[scale]["holdout"]
    wanted = list(dict.fromkeys(labels if wanted is None else wanted))  # unique, in order
    if not wanted:
        raise LatentEBMError("--holdout needs at least one class")
    bad = [c for c in wanted if c not in labels]
    if bad:
        raise LatentEBMError(
            f"--holdout {bad[0]} is not a label of {dataset} (labels {labels[0]}..{labels[-1]})"
        )
    return wanted


def experiment_runs(
    experiment: str,
    dataset: str = "fashion-mnist",
    scale: str = "cpu",
    *,
    seed: int = 0,
    holdout: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
    models: Sequence[str] | None = None,
) -> list[PlannedRun]:
    """The models of ``experiment`` at ``scale``: their validated configs, in table order.

    Every config is the scale's base config, then ``overrides`` (``section.field=value``, the
    same for every model, e.g. ``prior.prior_samples=langevin``; ``KIND:section.field=value``
    only for the models whose ``prior.kind`` is ``KIND``, e.g. ``lebm:prior.lr=2e-4``, after
    the shared ones), then only the model's own overrides (``prior.kind``/``prior.stages``, and
    ``lebm``'s ``train.post_steps``);
    ``anomaly`` adds ``data.holdout`` and keeps 20 snapshots per run, as ``latent-ebm train
    --holdout`` does. ``models``: only these models (their run names, e.g. ``nce
    adaptive-K4``), in table order; default every model of the experiment.

    Raises:
        LatentEBMError: unknown experiment, scale, data set or model; ``holdout`` outside the labels
            or given to an experiment without classes; an override of a field that the
            experiment sets per model; a config that does not validate.
    """
    check_choice("experiment", experiment, tuple(EXPERIMENTS))
    check_choice("scale", scale, tuple(SCALES))
    check_choice("data set", dataset, DATASETS)
    if seed < 0:
        raise LatentEBMError(f"--seed must be >= 0, got {seed}")
    exp = EXPERIMENTS[experiment]
    if holdout is not None and not exp.per_class:
        raise LatentEBMError(f"--holdout applies to the anomaly experiment, not '{experiment}'")
    specs = _models(experiment, exp.models, models)
    shared, scoped = split_settings(experiment, exp, overrides)
    base = apply_overrides(_base_config(dataset, scale, seed, data_dir), shared)
    classes: list[int | None] = [None]
    if exp.per_class:
        classes = list(_holdouts(dataset, scale, holdout, data_dir))
        base.train.keep_every = max(1, base.train.iters // 20)
    runs = []
    for spec in specs:
        for c in classes:
            held = [] if c is None else [f"data.holdout={c}"]
            cfg = apply_overrides(copy.deepcopy(base), scoped[spec.kind] + spec.overrides + held)
            runs.append(PlannedRun(spec, c, validate(cfg)))
    return runs


def _models(
    experiment: str, specs: Sequence[ModelSpec], names: Sequence[str] | None
) -> list[ModelSpec]:
    """The experiment's model specs named in ``names`` (run names), in table order."""
    if names is None:
        return list(specs)
    known = [s.name for s in specs]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise LatentEBMError(
            f"--models: {', '.join(unknown) or 'none given'} not in '{experiment}'; its models "
            f"are {', '.join(known)}"
        )
    return [s for s in specs if s.name in names]
