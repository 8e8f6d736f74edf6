"""Experiments on top of training and evaluation: costs, speed and the paper's tables.

- :mod:`~latent_ebm.experiments.cost`: parameter and operation counts of a configuration
  (``latent-ebm train --dry-run``);
- :mod:`~latent_ebm.experiments.timing`: the matrix-multiply peak and the timing helpers;
- :mod:`~latent_ebm.experiments.benchmark`: measured speed against that peak
  (``latent-ebm bench``);
- :mod:`~latent_ebm.experiments.tables`: the experiments, their scales and models, and the
  Markdown tables;
- :mod:`~latent_ebm.experiments.plan`: an experiment's runs and their configs, per seed and
  held-out class (``--set``: :mod:`~latent_ebm.experiments.settings`);
- :mod:`~latent_ebm.experiments.reproduction`: training and evaluating them, and the table
  (``latent-ebm reproduce``);
- :mod:`~latent_ebm.experiments.comparison`: several runs side by side, grouped over seeds
  (``latent-ebm compare``);
- :mod:`~latent_ebm.experiments.posthoc`: a prior of any kind fitted post hoc on a trained
  run's generator, written as a new run (``latent-ebm refit``).
- :mod:`~latent_ebm.experiments.curves`: quality against training time or operations, a
  point per kept snapshot, over seeds (``benchmarks/time_to_quality.py``).

The modules are not named after the functions they hold (``bench``, ``reproduce``): the
re-export below would rebind the package's attribute, so that ``import
latent_ebm.experiments.reproduce as m`` gave the function and ``monkeypatch.setattr`` on it
patched nothing.
"""

from latent_ebm.experiments.benchmark import (
    bench,
    compare_precisions,
    format_comparison,
    format_report,
)
from latent_ebm.experiments.columns import format_cell
from latent_ebm.experiments.comparison import Comparison, compare_runs
from latent_ebm.experiments.cost import (
    Estimate,
    count_flops,
    describe,
    estimate,
    format_count,
    iteration_flops,
    parse_rate,
    synthetic_batch,
)
from latent_ebm.experiments.plan import PlannedRun, experiment_runs
from latent_ebm.experiments.reproduction import Reproduction, reproduce
from latent_ebm.experiments.tables import (
    EXPERIMENTS,
    SCALES,
    Experiment,
    ModelSpec,
    markdown_table,
)
from latent_ebm.experiments.timing import KERNEL_OPS, matmul_peak, outside_kernels

__all__ = [
    "EXPERIMENTS",
    "KERNEL_OPS",
    "SCALES",
    "Comparison",
    "Estimate",
    "Experiment",
    "ModelSpec",
    "PlannedRun",
    "Reproduction",
    "bench",
    "compare_precisions",
    "compare_runs",
    "count_flops",
    "describe",
    "estimate",
    "experiment_runs",
    "format_cell",
    "format_comparison",
    "format_count",
    "format_report",
    "iteration_flops",
    "markdown_table",
    "matmul_peak",
    "outside_kernels",
    "parse_rate",
    "reproduce",
    "synthetic_batch",
]
