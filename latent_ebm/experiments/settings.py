"""The ``--set`` settings of a ``reproduce`` experiment: for every model, or for one prior kind's.

``section.field=value`` applies to every model of the table; ``KIND:section.field=value`` only
to the models whose ``prior.kind`` is ``KIND`` (e.g. ``lebm:prior.lr=2e-4``: an energy-based
prior at its own learning rate beside ratio priors at theirs), after the shared settings. A
field that the experiment sets per model (``prior.kind``, ``prior.stages``, ``lebm``'s
``train.post_steps``, the seed and the held-out class) is refused.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from latent_ebm.errors import LatentEBMError

if TYPE_CHECKING:
    from latent_ebm.experiments.tables import Experiment

__all__ = ["describe_setting", "split_settings"]


def split_settings(
    name: str, exp: Experiment, overrides: Sequence[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """The settings for every model, and those of each prior kind (``{kind: [settings]}``).

    Raises:
        LatentEBMError: a setting of a field the experiment sets per model, or of a prior
            kind that no model of the experiment has.
    """
    per_model = {"data.holdout", "train.seed"} | {
        o.split("=")[0] for spec in exp.models for o in spec.overrides
    }
    kinds = sorted({spec.kind for spec in exp.models})
    shared, scoped = [], defaultdict(list)
    for o in overrides:
        kind, _, key = o.split("=")[0].strip().rpartition(":")
        if key in per_model:
            raise LatentEBMError(
                f"--set {o}: '{name}' sets {key} itself (per model, "
                "or by --holdout / --seed); override other fields"
            )
        if kind and kind not in kinds:
            raise LatentEBMError(
                f"--set {o}: '{name}' has no model of prior kind '{kind}' "
                f"(its kinds: {', '.join(kinds)})"
            )
        if kind:
            scoped[kind].append(o.split(":", 1)[1])
        else:
            shared.append(o)
    return shared, scoped


def describe_setting(o: str) -> str:
    """A ``--set`` of the command in words, for a table's header."""
    kind, _, setting = o.partition(":")
    return f" `{kind}` models: `{setting}`." if "=" not in kind else f" Every model: `{o}`."
