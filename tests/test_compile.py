"""``train.compile``: the generator's forward runs compiled in training and in the bench, with
the eager model's results, checkpoints and operation counts. The compiler backend here is
``aot_eager`` (PyTorch's graph capture and autograd tracing without code generation: no C++
compiler needed, seconds to compile); inductor is PyTorch's to test."""

import pytest
import torch

from latent_ebm.config import validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.experiments import bench
from latent_ebm.rundir import load_run
from latent_ebm.train import train
from tests.conftest import assert_same_state, checkpoint_state, tiny_config

FAST = {"repeats": 1, "warmup": 0, "peak_seconds": 0.01, "profile": False}


@pytest.fixture
def compiled(monkeypatch):
    """Record each module compiled, with the aot_eager backend."""
    seen = []
    original = torch.nn.Module.compile

    def compile_(self, *args, mode=None, **kwargs):
        seen.append((type(self).__name__, mode))
        original(self, *args, backend="aot_eager", **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", compile_)
    torch._dynamo.reset()
    yield seen
    torch._dynamo.reset()


def test_compiled_training_matches_eager_training(tmp_path, digits, compiled):
    cfg = tiny_config("train.iters=6", "prior.kind=adaptive")
    eager = train(cfg, tmp_path / "eager", progress=False, data=digits)
    cfg.train.compile = "reduce-overhead"
    model = train(cfg, tmp_path / "compiled", progress=False, data=digits)
    assert compiled == [("Generator", "reduce-overhead")]
    assert model.generator._compiled_call_impl is not None  # the compiled forward ran
    # aot_eager runs the same ATen operators: the same numbers, and the same checkpoint keys.
    a, b = checkpoint_state(tmp_path / "eager"), checkpoint_state(tmp_path / "compiled")
    assert a["model"].keys() == b["model"].keys() == eager.state_dict().keys()
    assert b["config"]["train"]["compile"] == "reduce-overhead"
    b["config"]["train"]["compile"] = "none"
    assert_same_state(a, b)
    load_run(tmp_path / "compiled")  # an uncompiled model loads the compiled run


def test_bench_counts_compiled_calls_like_eager_ones(compiled):
    cfg = tiny_config("prior.kind=gaussian")
    eager = bench(cfg, "fp32", **FAST)["parts"]
    cfg.train.compile = "default"
    result = bench(cfg, "fp32", **FAST)
    assert compiled == [("Generator", "default")]
    assert result["warmup"] == 1  # the compiling call is not timed
    for name, part in result["parts"].items():
        assert part["flops"] == eager[name]["flops"], name


def test_unknown_compile_mode_is_a_config_error():
    with pytest.raises(LatentEBMError, match=r"train\.compile.*reduce-overhead"):
        validate(tiny_config("train.compile=fast"))
