"""Signals and divergence (docs/errors.md): SIGINT or SIGTERM stops every long phase with
one line and status 130, after a checkpoint where training state is at stake, and ``--resume``
finishes the run as if nothing had happened; a diverged run names the setting that caused it,
and a non-finite training state is neither resumed nor saved."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from latent_ebm.model import LatentEBM
from latent_ebm.monitor import Monitor
from latent_ebm.rundir import CHECKPOINT, METRICS, read_metrics
from tests.conftest import CLOCK, TINY, checkpoint_state, run_cli

SETS = [a for s in TINY for a in ("--set", s)]
TRAIN = ["train", "--no-progress", "--no-eval", *SETS]
RESUME = ["train", "--resume", "--no-progress", "--no-eval", "--out"]
EVAL_EVERY_6 = ["--set", "train.eval_every=6", "--set", "train.eval_n=100"]


def _assert_interrupted(code: int, err: str) -> None:
    """Status 130 and one line ``interrupted: ...`` beside any progress bar (tqdm's)."""
    assert code == 130, err
    lines = [line for line in err.strip().splitlines() if "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("interrupted: "), err


@pytest.fixture
def sigterm_kept():
    """SIGTERM recorded instead of killing pytest, where the code under test leaves it alone
    (today's code does outside the training loop); ``main`` installs its own."""
    received: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, old)


def _kill_self_then(fn, signum: int):
    """``fn`` that first sends ``signum`` to this process, then does its work."""

    def wrapper(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(0.05)  # a handler that raises does so here
        return fn(*args, **kwargs)

    return wrapper


def _evals(run: Path) -> list[dict]:
    return [
        {k: v for k, v in m.items() if k not in CLOCK} for m in read_metrics(run) if "eval" in m
    ]


# 1. A signal during an in-training evaluation stops the run at that iteration.


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize("at", [6, 12], ids=["middle", "final"])
def test_a_signal_during_an_evaluation_stops_there_and_resume_repeats_it(
    tmp_path, capsys, monkeypatch, sigterm_kept, signum, at
):
    full, run = tmp_path / "full", tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--out", full, *EVAL_EVERY_6], capsys)
    assert code == 0, err
    measure = Monitor._measure
    calls = []

    def interrupted(self, model):
        calls.append(1)
        if len(calls) == at // 6:
            return _kill_self_then(measure, signum)(self, model)
        return measure(self, model)

    with monkeypatch.context() as m:
        m.setattr(Monitor, "_measure", interrupted)
        code, out, err = run_cli([*TRAIN, "--out", run, *EVAL_EVERY_6], capsys)
    _assert_interrupted(code, err)
    assert "trained" not in out
    assert f"iteration {at}" in err and "--resume" in err
    assert checkpoint_state(run)["iteration"] == at
    assert all(m["iteration"] < at for m in _evals(run))  # the cut evaluation left no line
    code, _, err = run_cli([*RESUME, run], capsys)
    assert code == 0, err
    assert _evals(run) == _evals(full)  # each evaluation once, with the same values
    state, expected = checkpoint_state(run), checkpoint_state(full)
    assert state["refit"] == expected["refit"]
    for k in expected["model"]:
        assert torch.equal(state["model"][k], expected["model"][k]), k


def test_sigterm_during_the_final_evaluation_of_a_real_run(tmp_path, capsys):
    # A real process and a real signal: the final evaluation is long (3000 sampling steps), and
    # the signal goes out once the loss line of the last iteration, written just before it,
    # is there.
    run = tmp_path / "run"
    long_eval = ["--set", "train.eval_every=12", "--set", "train.eval_n=360"]
    long_eval += ["--set", "sample.steps=3000"]
    cmd = [sys.executable, "-m", "latent_ebm.cli", *TRAIN, "--out", str(run), *long_eval]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(m["iteration"] == 12 for m in read_metrics(run)):
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: "))
    _assert_interrupted(proc.returncode, err)
    assert "trained" not in out
    assert checkpoint_state(run)["iteration"] == 12
    assert not _evals(run)
    code, _, err = run_cli([*RESUME, run], capsys)
    assert code == 0, err
    assert [m["iteration"] for m in _evals(run)] == [12]
    assert checkpoint_state(run)["refit"] is not None


# 2. A signal during the post-hoc refit.


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
def test_a_signal_during_the_refit_stops_and_resume_redoes_it(
    tmp_path, capsys, monkeypatch, sigterm_kept, signum
):
    from latent_ebm.priors import AdaptivePrior

    full, run = tmp_path / "full", tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--out", full], capsys)
    assert code == 0, err
    with monkeypatch.context() as m:
        m.setattr(AdaptivePrior, "refit", _kill_self_then(AdaptivePrior.refit, signum))
        code, out, err = run_cli([*TRAIN, "--out", run], capsys)
    _assert_interrupted(code, err)
    assert "trained" not in out
    assert "refit" in err and "--resume" in err
    state = checkpoint_state(run)
    assert state["iteration"] == 12 and state["refit"] is None
    code, _, err = run_cli([*RESUME, run], capsys)
    assert code == 0, err
    state, expected = checkpoint_state(run), checkpoint_state(full)
    assert state["refit"] == expected["refit"]
    for k in expected["model"]:
        assert torch.equal(state["model"][k], expected["model"][k]), k


# Under torchrun every process stops at the same iteration, whichever got the signal.


def _signalled_worker(rank: int, port: int, root: Path) -> None:
    """One of two processes; each run sends SIGTERM to one of them at iteration 6."""
    from latent_ebm import distributed
    from latent_ebm.train import train
    from tests.conftest import tiny_config

    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))  # what torchrun sets
    torch.set_num_threads(1)
    evaluate, outcomes = Monitor.evaluate, {}
    cfg = tiny_config("train.eval_every=6", "train.eval_n=50")
    with distributed.process_group():
        for signalled in (0, 1):  # rank 0 during its measurement; rank 1 while rank 0 measures

            def signalling(self, model, iteration, *args, signalled=signalled, **kwargs):
                if rank == signalled and iteration == 6:
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)
                return evaluate(self, model, iteration, *args, **kwargs)

            Monitor.evaluate = signalling
            try:
                train(cfg, root / f"run{signalled}", progress=False)
                outcomes[signalled] = ("finished", "")
            except Exception as e:
                outcomes[signalled] = (type(e).__name__, str(e))
    torch.save(outcomes, root / f"signalled{rank}.pt")


def test_every_process_stops_at_the_signalled_iteration(tmp_path):

    from tests.test_distributed import needs_gloo, spawn_two

    if needs_gloo.args[0]:
        pytest.skip(needs_gloo.kwargs["reason"])
    spawn_two(_signalled_worker, tmp_path, 120, "a process still waits for the one signalled")
    outcomes = [torch.load(tmp_path / f"signalled{r}.pt") for r in (0, 1)]
    for signalled in (0, 1):
        for out in outcomes:
            kind, message = out[signalled]
            assert kind == "TrainingInterrupted" and "SIGTERM at iteration 6" in message
        state = checkpoint_state(tmp_path / f"run{signalled}")
        assert state["iteration"] == 6
        # Rank 0's measurement was cut (its resume repeats it), or it finished first.
        assert state["eval_pending"] == (signalled == 0)
        evals = [m["iteration"] for m in read_metrics(tmp_path / f"run{signalled}") if "eval" in m]
        assert evals == ([] if signalled == 0 else [6])


# 3. Every other long command stops on SIGINT and SIGTERM with one line and status 130.


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    from latent_ebm.cli import main

    run = tmp_path_factory.mktemp("signals") / "run"
    assert main([str(a) for a in [*TRAIN, "--out", run, "--set", "refit.steps=0"]]) == 0
    return run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])
@pytest.mark.parametrize(
    "command",
    [
        ["eval", "{run}", "--metric", "recon", "--no-progress"],
        ["eval", "{run}", "--metric", "fid", "--n", "100", "--no-progress"],
        ["sample", "{run}", "--n", "16"],
        ["plot", "{run}"],
        ["bench", *SETS, "--repeats", "1", "--warmup", "0"],
    ],
    ids=["eval-recon", "eval-fid", "sample", "plot", "bench"],
)
def test_a_signal_stops_every_long_command(
    finished_run, capsys, monkeypatch, sigterm_kept, command, signum
):
    before = sorted(p.name for p in finished_run.rglob("*"))
    monkeypatch.setattr(LatentEBM, "decode", _kill_self_then(LatentEBM.decode, signum))
    args = [str(a).replace("{run}", str(finished_run)) for a in command]
    code, out, err = run_cli(args, capsys)
    _assert_interrupted(code, err)
    assert not sigterm_kept  # the command's own handler took it
    assert "wrote" not in out
    assert sorted(p.name for p in finished_run.rglob("*")) == before  # no file, no temp file


def test_sigterm_during_sample_of_a_real_process(finished_run):
    # A real process: the signal goes out once the chain's progress bar shows on stderr; its
    # 100000 steps outlast that by far.
    cmd = [sys.executable, "-m", "latent_ebm.cli", "sample", str(finished_run), "--n", "16"]
    proc = subprocess.Popen(
        [*cmd, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = ""
    while "sample (" not in seen and proc.poll() is None:
        seen += proc.stderr.read(1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    _assert_interrupted(proc.returncode, err)
    assert "wrote" not in out


# 4. Divergence names the setting that caused it.

# Every setting a divergence message may name; exactly one of them is the cause.
CAUSES = [
    "train.lr",
    "prior.lr",
    "refit.lr",
    "train.amortiser_lr",
    "train.post_step_size",
    "prior.prior_step_size",
    "sample.step_size",
]


@pytest.mark.parametrize(
    ("cause", "extra"),
    [
        ("train.lr", []),
        ("train.lr", ["prior.kind=gaussian"]),
        ("train.lr", ["prior.kind=lebm"]),
        ("train.lr", ["train.post_init=bank"]),
        ("train.lr", ["train.post_init=amortised", "train.warm_steps=2"]),
        ("prior.lr", []),
        ("prior.lr", ["prior.kind=lebm"]),
        ("prior.lr", ["prior.kind=tre"]),
        ("prior.lr", ["prior.kind=nce", "train.iters=4"]),
        ("prior.lr", ["prior.prior_samples=langevin", "prior.prior_steps=5"]),
        ("refit.lr", []),
        ("refit.lr", ["prior.kind=tre"]),
        ("refit.lr", ["refit.sampler=chain"]),
        ("refit.lr", ["refit.holdout=0.2", "refit.check=5"]),
        ("train.amortiser_lr", ["train.post_init=amortised", "train.warm_steps=2"]),
        ("train.post_step_size", []),
        ("prior.prior_step_size", ["prior.kind=lebm", "prior.prior_steps=5"]),
        ("sample.step_size", ["train.eval_every=6", "train.eval_n=50"]),
        ("sample.step_size", ["refit.sampler=chain"]),
    ],
)
def test_a_diverging_setting_is_named(tmp_path, capsys, cause, extra):
    run = tmp_path / "run"
    sets = [a for s in [*extra, f"{cause}=1e30", "train.ckpt_every=1"] for a in ("--set", s)]
    code, out, err = run_cli([*TRAIN, "--out", run, *sets], capsys)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("warning: "))
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"{cause} (now 1e+30)" in err, err
    assert [c for c in CAUSES if c in err] == [cause], err
    assert "trained" not in out
    for path in [run / CHECKPOINT, *run.glob("snapshots/*.pt"), run / "best.pt"]:
        if path.exists():
            state = torch.load(path, weights_only=True)
            assert all(
                torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
            ), path


# 5. A non-finite training state is neither resumed nor saved.


def _nan_first(tensor: torch.Tensor) -> None:
    tensor[(0,) * tensor.dim()] = float("nan")


@pytest.mark.parametrize(
    ("part", "named"),
    [
        (lambda s: _nan_first(s["bank"]["bank"]), "memory bank"),
        (lambda s: _nan_first(s["bank"]["snapshot"]), "memory bank"),
        (lambda s: _nan_first(next(iter(s["opt_g"]["state"].values()))["exp_avg"]), "opt_g"),
        (lambda s: _nan_first(s["opt_prior"][0]["state"][0]["exp_avg_sq"]), "opt_prior"),
    ],
    ids=["bank", "snapshot", "opt_g", "opt_prior"],
)
def test_a_checkpoint_with_a_non_finite_state_is_refused_on_resume(tmp_path, capsys, part, named):
    run = tmp_path / "run"
    code, _, err = run_cli([*TRAIN, "--out", run, "--max-iters", "4"], capsys)
    assert code == 0, err
    state = torch.load(run / CHECKPOINT, weights_only=True)
    part(state)
    torch.save(state, run / CHECKPOINT)
    before = (run / CHECKPOINT).read_bytes(), (run / METRICS).read_bytes()
    code, _, err = run_cli([*RESUME, run], capsys)
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert named in err and "NaN/Inf" in err and str(run / CHECKPOINT) in err, err
    assert ((run / CHECKPOINT).read_bytes(), (run / METRICS).read_bytes()) == before


def test_a_non_finite_memory_bank_is_never_saved(tmp_path, capsys, monkeypatch):
    from latent_ebm.memory import MemoryBank

    write = MemoryBank.write

    def poisoned(self, idx, z):
        write(self, idx, z)
        self.bank[idx[0]] = float("nan")

    run = tmp_path / "run"
    monkeypatch.setattr(MemoryBank, "write", poisoned)
    code, _, err = run_cli([*TRAIN, "--out", run], capsys)
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert "memory bank" in err and "NaN/Inf" in err, err
    assert not (run / CHECKPOINT).exists()
