"""Multi-process training: two gloo processes follow the 1-process run with the same global
batch, resume exactly, and only rank 0 writes files; with the paper's noise-started posterior
chains and with the amortised start (``train.post_init=amortised``)."""

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from latent_ebm import distributed, rng
from latent_ebm.cli import main
from latent_ebm.data import load_dataset
from latent_ebm.errors import LatentEBMError
from latent_ebm.rundir import read_metrics
from latent_ebm.train import train
from tests.conftest import assert_same_state, checkpoint_state, tiny_config

# The all-reduce sums the shards' gradients in another order than one process sums the
# batch, and kernels may round differently at another batch size: after 12 iterations the
# states agree to these tolerances (observed: parameters 2e-8, bank 3e-7 apart, Adam moments
# 2e-7 relative; without the gradient averaging or the bank gather: 1e-4 to 1e-3 apart).
RTOL, ATOL = 1e-4, 1e-5

# Adaptive prior, persistent NCE noise, 2 stages: the stage transition at iteration 6 takes a
# snapshot of a bank that both processes wrote.
OVERRIDES = ("prior.kind=adaptive", "prior.prior_samples=persistent", "train.keep_every=6")
# The posterior chain's start: the paper's noise, or the amortiser (whose encoder is trained
# on each process's shard, its gradients averaged like the generator's).
STARTS = {"noise": (), "amortised": ("train.post_init=amortised", "train.warm_steps=2")}
STOP = 5  # the interrupted run stops here, between checkpoints and before the transition

WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_two(worker, root: Path, seconds: float, stuck: str) -> None:
    """Run ``worker(rank, port, root)`` in 2 processes; kill them and fail with ``stuck``
    if they have not both ended within ``seconds``."""
    ctx = mp.spawn(worker, args=(_free_port(), root), nprocs=2, join=False)
    deadline = time.monotonic() + seconds
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(stuck)


def _record_writes(root: Path, writes: list) -> None:
    """Record every file-system change under ``root`` that this process makes (audit hook)."""

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(mode, str):
                writing = any(c in mode for c in "wax+")
            else:
                writing = bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        else:
            path, writing = args[0] if args else None, event in WRITE_EVENTS
        if writing and isinstance(path, str | Path) and str(path).startswith(str(root)):
            writes.append(f"{event} {path}")

    sys.addaudithook(hook)


def _worker(rank: int, port: int, root: Path, start: tuple[str, ...]) -> None:
    """One of two processes: a full run, a run cut at STOP, and its resume by the CLI
    (``start``: the overrides of the chain's start)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))  # what torchrun sets
    torch.set_num_threads(1)
    data = load_dataset("digits")
    cfg = tiny_config(*OVERRIDES, *start)
    writes: list[str] = []
    if rank:
        _record_writes(root / "two", writes)
    with distributed.process_group():
        assert distributed.world_size() == 2 and distributed.rank() == rank
        model = train(cfg, root / "two/full", progress=False, data=data)
        train(cfg, root / "two/part", progress=False, data=data, max_iters=STOP)
        args = ["train", "--resume", "--out", root / "two/part", "--no-progress", "--no-eval"]
        assert main([str(a) for a in args]) == 0
    torch.save({"model": model.state_dict(), "writes": writes}, root / f"rank{rank}.pt")


def _assert_close_states(a: dict, b: dict) -> None:
    """Parameters, optimiser states, bank and snapshot agree to (RTOL, ATOL)."""

    def close(x: torch.Tensor, y: torch.Tensor, what: str) -> None:
        ok = torch.allclose(x.float(), y.float(), rtol=RTOL, atol=ATOL)
        assert ok, f"{what}: max difference {(x.float() - y.float()).abs().max():.2e}"

    assert a["iteration"] == b["iteration"]
    for k in a["model"]:
        close(a["model"][k], b["model"][k], k)
    optims = [("opt_g", a["opt_g"], b["opt_g"])]
    optims += [
        (f"{key}[{i}]", *p)
        for key in ("opt_prior", "opt_amortiser")
        for i, p in enumerate(zip(a[key], b[key], strict=True))
    ]
    for name, sa, sb in optims:
        assert sa["state"].keys() == sb["state"].keys(), name
        for p in sa["state"]:
            for k in sa["state"][p]:
                close(sa["state"][p][k], sb["state"][p][k], f"{name} {p} {k}")
    close(a["bank"]["bank"], b["bank"]["bank"], "bank")
    close(a["bank"]["snapshot"], b["bank"]["snapshot"], "snapshot")


def _without_time(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "time"} for m in read_metrics(run)]


@needs_gloo
@pytest.mark.parametrize("start", list(STARTS))
def test_two_processes_follow_one_process_resume_and_only_rank0_writes(tmp_path, digits, start):
    mp.spawn(_worker, args=(_free_port(), tmp_path, STARTS[start]), nprocs=2, join=True)
    train(tiny_config(*OVERRIDES, *STARTS[start]), tmp_path / "one", progress=False, data=digits)
    one, two = checkpoint_state(tmp_path / "one"), checkpoint_state(tmp_path / "two/full")

    # The 2-process run equals the 1-process run with the same global batch, to rounding.
    assert one["iteration"] == two["iteration"] == 12
    assert int(two["model"]["prior.stage"]) == 2  # it went through the stage transitions
    assert any(k.startswith("amortiser.") for k in two["model"]) == (start == "amortised")
    _assert_close_states(one, two)
    m1, m2 = _without_time(tmp_path / "one"), _without_time(tmp_path / "two/full")
    assert [m.keys() for m in m1] == [m.keys() for m in m2]
    for a, b in zip(m1, m2, strict=True):
        assert a == pytest.approx(b, rel=RTOL)

    # Cut at STOP and resumed with 2 processes: bit for bit the uninterrupted 2-process run.
    assert_same_state(two, checkpoint_state(tmp_path / "two/part"))
    assert _without_time(tmp_path / "two/part") == m2

    # Rank 1 holds rank 0's final model and wrote nothing; rank 0 wrote each file once.
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for k, v in ranks[0]["model"].items():
        assert torch.equal(v, ranks[1]["model"][k]) and torch.equal(v, two["model"][k]), k
    assert ranks[1]["writes"] == []
    files = sorted(
        p.relative_to(tmp_path / "two/full").as_posix() for p in (tmp_path / "two/full").rglob("*")
    )
    assert files == [
        "checkpoint.pt",
        "config.yaml",
        "metrics.jsonl",
        "snapshots",
        "snapshots/model-0000006.pt",
        "snapshots/model-0000012.pt",
    ]
    assert [m["iteration"] for m in m2] == [2, 4, 6, 8, 10, 12]


class _Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.callback = lambda: None  # pickling the error fails


def _outcome(section, together: bool = True) -> tuple[str, str, int | None]:
    """Run ``section`` (in fail_together): ("ok", "", None) or the error's type, message and
    process."""
    try:
        with distributed.fail_together() if together else contextlib.nullcontext():
            section()
    except Exception as e:
        return type(e).__name__, str(e), getattr(e, "process", None)
    return "ok", "", None


def _failing_worker(rank: int, port: int, root: Path) -> None:
    """Sections where one, none or both processes fail, then a run whose chain diverges on
    rank 1 only: every process must raise, none may wait for the other."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2"}
    os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    outcomes = {}
    with distributed.process_group():
        w = torch.nn.Parameter(torch.zeros(3))
        opt = torch.optim.SGD([w], lr=1.0)
        distributed.average_gradients(opt)

        def step(fail: bool, error: type = ValueError) -> None:
            if fail:
                raise error(f"bad shard on rank {rank}")
            w.grad = torch.full((3,), float(rank))
            opt.step()  # a gradient average: rank 0 would wait here for ever

        outcomes["none"] = _outcome(lambda: step(False))
        outcomes["rank1"] = _outcome(lambda: step(rank == 1))
        outcomes["both"] = _outcome(lambda: step(True))
        outcomes["unpicklable"] = _outcome(lambda: step(rank == 1, _Unpicklable))
        outcomes["w"] = w.detach().clone()

        original = rng.Streams.chain_noise

        def poisoned(self, stream, dim):  # NaN noise in rank 1's chains from iteration 5 on
            noise = original(self, stream, dim)
            if rank == 0 or self.iteration < 4:
                return noise
            return lambda step: noise(step) * float("nan")

        rng.Streams.chain_noise = poisoned
        cfg = tiny_config("train.ckpt_every=2")
        outcomes["train"] = _outcome(lambda: train(cfg, root / "run", progress=False), False)
    torch.save(outcomes, root / f"outcome{rank}.pt")


@needs_gloo
def test_a_failure_in_one_process_stops_every_process(tmp_path):
    spawn_two(_failing_worker, tmp_path, 300, "a process still waits for the one that failed")
    ranks = [torch.load(tmp_path / f"outcome{r}.pt", weights_only=False) for r in (0, 1)]
    for r, out in enumerate(ranks):
        assert out["none"] == ("ok", "", None)
        # Rank 1's error reaches rank 0, which was about to average gradients.
        assert out["rank1"] == ("ValueError", "bad shard on rank 1", 1)
        assert out["both"] == ("ValueError", f"bad shard on rank {r}", r)  # each its own
        assert out["unpicklable"][1:] == (
            ("_Unpicklable: " if r == 0 else "") + "bad shard on rank 1",
            1,
        )
        assert torch.equal(out["w"], torch.full((3,), -0.5))  # only the good step counted
        kind, msg, _ = out["train"]
        assert kind == "ChainDivergedError"
        assert msg.startswith("iteration 5 (process 1): the posterior chain of data-set examples")
        assert "post_step_size" in msg and "(iteration 4) is kept" in msg
    assert [out["unpicklable"][0] for out in ranks] == ["LatentEBMError", "_Unpicklable"]
    assert checkpoint_state(tmp_path / "run")["iteration"] == 4


def test_shard_splits_the_global_batch_by_position():
    assert [distributed.shard(50, 2, r) for r in (0, 1)] == [slice(0, 25), slice(25, 50)]
    assert distributed.shard(50) == slice(0, 50)  # a single process takes the whole batch
    with pytest.raises(LatentEBMError, match=r"'train.batch_size' \(50\).*processes \(3\)"):
        distributed.shard(50, 3, 0)


def test_streams_of_shards_are_the_global_batch_streams():
    """Each process's random numbers are its rows of the 1-process run's numbers."""
    full = rng.Streams(7, 3, 6, slice(0, 6), torch.device("cpu"))
    shards = [rng.Streams(7, 3, 6, slice(r * 2, r * 2 + 2), torch.device("cpu")) for r in range(3)]
    assert torch.equal(
        torch.cat([s.normal(rng.POSTERIOR_INIT, 4) for s in shards]),
        full.normal(rng.POSTERIOR_INIT, 4),
    )
    assert torch.equal(
        torch.cat([s.randint(rng.PRIOR_DRAW, 100) for s in shards]),
        full.randint(rng.PRIOR_DRAW, 100),
    )
    noises = [s.chain_noise(rng.POSTERIOR_NOISE, 4) for s in shards]
    whole = full.chain_noise(rng.POSTERIOR_NOISE, 4)
    for step in range(3):
        assert torch.equal(torch.cat([n(step) for n in noises]), whole(step))


def test_single_process_helpers_are_the_identity():
    t = torch.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(t) is t
    assert distributed.mean_scalars({"a": 1.5}, 2) == ({"a": 1.5}, 2)
    assert distributed.main_only(lambda x: x + 1, 1) == 2
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.local_device(torch.device("cpu")) == torch.device("cpu")
