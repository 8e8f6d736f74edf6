"""Shared fixtures: a tiny configuration on the built-in digits data set."""

import pytest
import torch

from latent_ebm.cli import main
from latent_ebm.config import Config, apply_overrides
from latent_ebm.data import load_dataset

TINY = [
    "data.name=digits",
    "model.nz=4",
    "model.ngf=4",
    "model.ratio_hidden=16",
    "prior.stages=2",
    "train.iters=12",
    "train.batch_size=50",
    "train.post_steps=4",
    "train.log_every=2",
    "train.ckpt_every=4",
    "sample.steps=5",
    "sample.grid=16",
]


def tiny_config(*overrides: str) -> Config:
    """A configuration that trains in about a second on the digits data set."""
    return apply_overrides(Config(), [*TINY, *overrides])


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """Run ``latent-ebm ARGS`` in-process: exit status, stdout, stripped stderr."""
    capsys.readouterr()  # drop what earlier steps printed
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err.strip()
