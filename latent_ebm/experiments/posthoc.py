"""A prior of any kind fitted post hoc on a trained run's generator (``latent-ebm refit``;
ARCHITECTURE §4, "The post-hoc refit"; beyond the paper).

The source run's generator is kept as it is. ``refit.samples`` rows of its aggregate posterior
are drawn by the source run's own posterior chain under its own final prior
(:func:`latent_ebm.refit.refit_rows`); a new prior, built from the source's config with
``prior.kind`` (and ``prior.stages``) of ``--prior``, is re-initialised and fitted on those rows
by its :meth:`~latent_ebm.priors.Prior.refit` with the ``refit`` section's settings. The result
is a run directory like any other (``config.yaml`` with ``refit.source``, the source run's
absolute path,
and ``checkpoint.pt``), which ``eval``, ``sample``, ``plot`` and ``compare`` read.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from latent_ebm.config import (
    RECIPES,
    Config,
    apply_overrides,
    config_to_dict,
    load_config,
    override_fields,
    validate,
)
from latent_ebm.distributed import resolve_device
from latent_ebm.errors import LatentEBMError
from latent_ebm.model import LatentEBM
from latent_ebm.priors import PRIORS, build_prior
from latent_ebm.refit import fit_prior, refit_rows
from latent_ebm.rundir import (
    CHECKPOINT,
    CONFIG,
    abandon_new_run,
    check_new_run_dir,
    check_run_dir,
    load_data,
    load_run,
    open_run_dir,
    save_checkpoint,
)

__all__ = ["REFIT_SECTIONS", "Refitted", "parse_prior", "refit_config", "refit_run", "refitted"]

# The config sections that `latent-ebm refit --set` may change: the generator, its data and
# its training stay the source run's.
REFIT_SECTIONS = ("prior", "refit", "sample")


@dataclass(frozen=True)
class Refitted:
    """What :func:`refit_run` wrote: the new run directory, its config and each fitted part's
    last NCE loss."""

    run_dir: Path
    cfg: Config
    losses: list[float]


def parse_prior(label: str) -> tuple[str, int | None]:
    """The prior kind and stages of ``KIND`` or ``KIND-K<k>`` (stages ``None`` without ``-K``).

    Raises:
        LatentEBMError: an unknown kind, or ``-K`` without a whole number.
    """
    kind, sep, k = label.partition("-K")
    if kind not in PRIORS:
        raise LatentEBMError(
            f"--prior {label}: unknown prior kind '{kind}' (known: {', '.join(PRIORS)})"
        )
    if sep and not k.isdigit():
        raise LatentEBMError(f"--prior {label}: '-K' takes a number of stages, e.g. {kind}-K4")
    return kind, int(k) if sep else None


def refit_config(
    source_cfg: Config, label: str, overrides: list[str] = (), source: str | None = None
) -> Config:
    """The validated config of the prior ``label`` (:func:`parse_prior`) refitted on the
    generator of a run of ``source_cfg``: its kind and stages, then ``overrides``
    (``section.field=value`` of :data:`REFIT_SECTIONS`), and ``refit.source`` = ``source``. A
    source that ran no refit (``refit.steps`` 0: the ``paper`` recipe) takes the ``refit``
    recipe's ``refit.steps`` unless ``overrides`` set it.

    Raises:
        LatentEBMError: a bad label, an override of another section, a kind with nothing to
            refit, ``refit.steps`` 0, or a setting that validation refuses.
    """
    kind, stages = parse_prior(label)
    if not PRIORS[kind].refits:
        refittable = ", ".join(k for k, c in PRIORS.items() if c.refits)
        raise LatentEBMError(
            f"--prior {label}: a {kind} prior has nothing to refit post hoc; choose one of "
            f"{refittable}"
        )
    for item in overrides:
        section = item.partition("=")[0].partition(".")[0].strip()
        if section not in REFIT_SECTIONS:
            raise LatentEBMError(
                f"--set {item.partition('=')[0]}: the refit keeps the source run's generator, "
                f"data and training; only {', '.join(s + '.*' for s in REFIT_SECTIONS)} may be set"
            )
    settings = [f"prior.kind={kind}"] + ([f"prior.stages={stages}"] if stages is not None else [])
    cfg = apply_overrides(copy.deepcopy(source_cfg), [*settings, *overrides])
    cfg.refit.source = source
    if cfg.refit.steps == 0 and "refit.steps" not in override_fields(overrides):
        cfg.refit.steps = RECIPES["refit"]["refit.steps"]  # a paper-recipe run: the refit recipe's
    if cfg.refit.steps == 0:
        raise LatentEBMError("refit.steps is 0: nothing would be fitted; set refit.steps > 0")
    return validate(cfg)


def refitted(
    model: LatentEBM, cfg: Config, z_q: torch.Tensor, progress: bool = False
) -> list[float]:
    """Replace ``model``'s prior by a new one of ``cfg`` (re-initialised) fitted on the
    aggregate-posterior rows ``z_q`` ``(n, nz)`` (:func:`latent_ebm.refit.fit_prior`); returns
    each fitted part's last loss."""
    model.prior = build_prior(cfg).to(model.device)
    return fit_prior(model.eval(), z_q.to(model.device), cfg, progress)


def refit_run(
    source: str | Path,
    prior: str,
    out: str | Path,
    overrides: list[str] = (),
    force: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> Refitted:
    """Fit the prior ``prior`` (``KIND`` or ``KIND-K<k>``) post hoc on the generator of the run
    ``source`` and write the result to the new run directory ``out`` (module docstring).

    ``out``'s ``checkpoint.pt`` holds the source's generator (and amortiser) with the new
    prior, at the source's iteration; it is a finished run to evaluate, not one to resume.

    Raises:
        LatentEBMError: ``source`` is not a finished run, ``out`` is ``source`` or exists without
            ``force``, a bad ``prior`` or override (:func:`refit_config`), or the fit diverged
            (nothing is left in ``out``).
    """
    source, out = Path(source), Path(out)
    check_run_dir(source, "cannot refit: ")
    if out.resolve() == source.resolve():
        raise LatentEBMError(f"--out {out} is the source run; give a new folder for the refit")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise LatentEBMError(
            f"{out} already exists; pass --force to replace it or choose another --out"
        )
    src_cfg = validate(load_config(source / CONFIG))
    cfg = refit_config(src_cfg, prior, list(overrides), str(source.resolve()))
    seen = check_new_run_dir(out, force)
    _, model, state = load_run(source, resolve_device(device, "--device"))
    if state["iteration"] < src_cfg.train.iters:
        raise LatentEBMError(
            f"cannot refit: {source} stopped at iteration {state['iteration']} of "
            f"{src_cfg.train.iters}; finish it first with latent-ebm train --resume --out {source}"
        )
    data = load_data(cfg)
    z_q = refit_rows(model, data.train_x, cfg, progress)  # under the source's own prior
    lock = open_run_dir(out, cfg, resume=False, force=force, seen=seen)
    try:
        losses = refitted(model, cfg, z_q, progress)
        checkpoint = {
            "iteration": state["iteration"],
            "elapsed": state.get("elapsed", 0.0),
            "shape": list(state["shape"]),
            "config": config_to_dict(cfg),
            "model": model.state_dict(),
            "refit": losses,
        }
        save_checkpoint(out / CHECKPOINT, checkpoint, state["iteration"])
    except BaseException:
        abandon_new_run(out, lock)
        raise
    lock.release()
    return Refitted(out, cfg, losses)
