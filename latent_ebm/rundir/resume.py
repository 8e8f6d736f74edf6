"""What a resumed run's command-line flags would change in the run's ``config.yaml``.

``latent-ebm train --resume`` continues a run with its own ``config.yaml``; repeating the
command that started it (its ``--preset``, ``--config`` and overrides) is accepted when that
command describes the same config (:func:`resume_change`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latent_ebm.config import (
    Config,
    apply_overrides,
    config_to_dict,
    keep_holdout_snapshots,
    resolve_config,
)
from latent_ebm.errors import LatentEBMError
from latent_ebm.rundir.layout import read_run_config

__all__ = ["check_trained_here", "resume_change"]


def resume_change(
    run_dir: Path,
    preset: str | None,
    config_file: Path | None,
    overrides: list[str],
) -> tuple[str, Any, Any] | None:
    """The first field (in the config's order) of the run in ``run_dir`` that a new run's
    flags would change, as ``(field, the run's value, the flags' value)``; ``None`` if they
    describe the run's config.

    The flags resolve as a new run's do (:func:`latent_ebm.config.resolve_config`: the preset,
    by default ``digits``, the file, the overrides), except that with neither ``preset`` nor
    ``config_file`` the overrides apply to the run's own config: a flag left out changes
    nothing. ``data.data_dir`` compares folders (``data`` and ``./data`` are one).

    Raises:
        LatentEBMError: no run in ``run_dir`` or a bad ``config.yaml`` (``cannot resume: ...``),
            or a bad override or config file.
    """
    run_cfg = read_run_config(run_dir)
    if preset is None and config_file is None:
        cfg = keep_holdout_snapshots(apply_overrides(run_cfg, overrides))
    else:
        cfg = resolve_config(preset or "digits", config_file, overrides)
    given = config_to_dict(cfg)
    for section, fields in config_to_dict(run_cfg).items():
        for name, was in fields.items():
            field, now = f"{section}.{name}", given[section][name]
            if not _same_value(field, was, now):
                return field, was, now
    return None


def _same_value(field: str, was: Any, now: Any) -> bool:
    """Whether a field's value ``now`` keeps the run's ``was``: equal, or for
    ``data.data_dir`` two ways of writing one folder."""
    if field == "data.data_dir" and isinstance(was, str) and isinstance(now, str):
        return Path(was).expanduser().resolve() == Path(now).expanduser().resolve()
    return now == was


def check_trained_here(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume a run that ``latent-ebm refit`` wrote (``refit.source`` set): it was
    never trained here, so it has nothing to resume.

    Raises:
        LatentEBMError: naming the source run.
    """
    if cfg.refit.source is not None:
        raise LatentEBMError(
            f"{run_dir} is a prior refitted on {cfg.refit.source} (latent-ebm refit): it has no "
            "training to resume; resume the source run, or refit it again with --force"
        )
