"""Experiments on top of training and evaluation: the paper's tables and their runs.

- :mod:`~latent_ebm.experiments.tables`: the experiments, their scales and models, and the
  Markdown tables;
- :mod:`~latent_ebm.experiments.reproduction`: planning, training and evaluating an
  experiment's runs (``latent-ebm reproduce``).

The modules are not named after the functions they hold (``reproduce``), so that
``latent_ebm.experiments.reproduce`` is always the function and never a module that the
re-export below would shadow.
"""

from latent_ebm.experiments.reproduction import (
    PlannedRun,
    Reproduction,
    experiment_runs,
    reproduce,
)
from latent_ebm.experiments.tables import (
    EXPERIMENTS,
    SCALES,
    Experiment,
    ModelSpec,
    format_cell,
    markdown_table,
)

__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Experiment",
    "ModelSpec",
    "PlannedRun",
    "Reproduction",
    "experiment_runs",
    "format_cell",
    "markdown_table",
    "reproduce",
]
