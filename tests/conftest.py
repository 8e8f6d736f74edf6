"""Shared fixtures: a tiny configuration on the built-in digits data set."""

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

from latent_ebm.cli import main
from latent_ebm.config import Config, apply_overrides
from latent_ebm.data import load_dataset
from latent_ebm.rundir import CHECKPOINT, read_metrics
from latent_ebm.train import train

TINY = [
    "data.name=digits",
    "model.nz=4",
    "model.ngf=4",
    "model.ratio_hidden=16",
    "prior.stages=2",
    "refit.steps=20",
    "refit.batch=50",
    "refit.samples=200",
    "refit.chain_steps=10",
    "refit.noise=200",
    "train.iters=12",
    "train.batch_size=50",
    "train.post_steps=4",
    "train.log_every=2",
    "train.ckpt_every=4",
    "sample.steps=5",
    "sample.grid=16",
]


def load_script(name: str) -> ModuleType:
    """A script of ``benchmarks/`` as a module (they are not a package)."""
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


SETS = [a for s in TINY for a in ("--set", s)]  # TINY as command-line options


def train_cli(run: Path, capsys, *extra: str) -> tuple[int, str]:
    """``latent-ebm train`` of the tiny config into ``run``: exit status, stripped stderr."""
    code, _, err = run_cli(
        ["train", "--out", run, "--no-progress", "--no-eval", *SETS, *extra], capsys
    )
    return code, err


@pytest.fixture
def tiny_run(tmp_path, capsys) -> Path:
    """A finished tiny run (with snapshots every 6 iterations)."""
    run = tmp_path / "run"
    code, err = train_cli(run, capsys, "--set", "train.keep_every=6")
    assert code == 0, err
    return run


def assert_one_line(code: int, err: str, *expected: str) -> None:
    """A user error: a non-zero status and one line ``error: ...`` holding ``expected``."""
    assert code not in (0, None), err
    assert err.startswith("error: "), err
    assert len(err.splitlines()) == 1, err
    for e in expected:
        assert e in err, err


def checkpoint_state(run: Path) -> dict:
    """The checkpoint of a run directory."""
    return torch.load(run / CHECKPOINT, weights_only=False)


def assert_same_state(a: dict, b: dict) -> None:
    """Two checkpoints hold bitwise-equal parameters, optimiser states and memory banks."""
    assert a["iteration"] == b["iteration"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for (pa, va), (pb, vb) in zip(
        a["opt_g"]["state"].items(), b["opt_g"]["state"].items(), strict=True
    ):
        assert pa == pb and all(torch.equal(va[k], vb[k]) for k in va)
    assert torch.equal(a["bank"]["bank"], b["bank"]["bank"])
    assert torch.equal(a["bank"]["snapshot"], b["bank"]["snapshot"])
    for sa, sb in zip(a["opt_prior"], b["opt_prior"], strict=True):
        for (pa, va), (pb, vb) in zip(sa["state"].items(), sb["state"].items(), strict=True):
            assert pa == pb and all(torch.equal(va[k], vb[k]) for k in va)


CLOCK = ("time", "eval_time")  # the wall-clock fields of metrics.jsonl: no run repeats them


def assert_resume_matches(cfg: Config, tmp_path: Path, stop: int, data) -> tuple[dict, list]:
    """Train ``cfg`` straight through and, separately, to ``stop`` then ``--resume``: both
    end with the same checkpoint and the same metrics. Returns the checkpoint and metrics."""
    train(cfg, tmp_path / "full", progress=False, data=data)
    train(cfg, tmp_path / "part", progress=False, data=data, max_iters=stop)
    assert checkpoint_state(tmp_path / "part")["iteration"] == stop
    train(None, tmp_path / "part", resume=True, progress=False, data=data)
    full = checkpoint_state(tmp_path / "full")
    assert_same_state(full, checkpoint_state(tmp_path / "part"))
    metrics = [
        [{k: v for k, v in m.items() if k not in CLOCK} for m in read_metrics(tmp_path / run)]
        for run in ("full", "part")
    ]
    assert metrics[0] == metrics[1]
    return full, metrics[0]


def assert_iteration_writes_rows(model, opt_g, bank, x, idx, streams, cfg, expected) -> None:
    """One training iteration writes ``expected`` into the bank rows ``idx`` and leaves every
    other row as it was."""
    from latent_ebm.train import train_iteration

    others = torch.ones(len(bank.bank), dtype=torch.bool)
    others[idx] = False
    untouched = bank.bank[others].clone()
    train_iteration(model, opt_g, bank, x, idx, streams, cfg)
    assert torch.equal(bank.bank[idx], expected)
    assert torch.equal(bank.bank[others], untouched)
