"""``latent-ebm bench``: its operation counts are exactly cost.count_flops of the timed calls,
its rates and fractions are positive and finite, and the command line prints and saves them.
No assertion on a time."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from latent_ebm.config import num_stages
from latent_ebm.experiments import bench, count_flops, iteration_flops, matmul_peak, outside_kernels
from latent_ebm.memory import MemoryBank
from latent_ebm.model import build_model
from latent_ebm.sampling import sample_latents
from tests.conftest import TINY, run_cli, tiny_config

SHAPE = (1, 8, 8)  # digits
FAST = {"repeats": 1, "warmup": 0, "peak_seconds": 0.01}


def _chain_step_flops(cfg, stage):
    model = build_model(cfg, SHAPE).train()
    model.prior.set_stage(stage, MemoryBank(1, cfg.model.nz, 0))
    b, nz = cfg.train.batch_size, cfg.model.nz
    x, z0, eps = torch.zeros(b, *SHAPE), torch.zeros(b, nz), torch.zeros(b, nz)
    return count_flops(lambda: model.infer(x, z0, 1, 0.1, lambda step: eps, training=True))


def _sampling_flops(cfg):
    model = build_model(cfg, SHAPE).eval()
    model.prior.set_stage(num_stages(cfg), MemoryBank(1, cfg.model.nz, 0))
    n = cfg.train.batch_size

    def sample():
        return model.decode(sample_latents(model, n, steps=cfg.sample.steps, batch_size=n))

    return count_flops(sample)


def _check_numbers(result):
    for part in result["parts"].values():
        for key in ("seconds", "images_per_s", "flops_per_s", "fraction_of_peak"):
            assert 0 < part[key] < math.inf, key
    for peak in result["peak"].values():
        assert peak["n"] >= 256 and peak["products"] >= 1 and 0 < peak["flops_per_s"] < math.inf
    out = result["parts"]["iteration"]["outside_kernels"]
    assert 0 <= out["share"] <= 1 and 0 < out["kernel_s"] <= out["wall_s"]


def test_bench_counts_are_those_of_the_timed_calls():
    cfg = tiny_config("prior.stages=2")
    result = bench(cfg, "fp32", stage=1, **FAST)
    parts = result["parts"]
    # Every count equals a count of the same computation made here on a fresh model.
    assert parts["iteration"]["flops"] == iteration_flops(cfg, SHAPE, stage=1)
    # The chain step is timed as a whole chain of L steps: its per-step numbers are exact.
    step = parts["chain_step"]
    assert step["flops"] == _chain_step_flops(cfg, 1) and step["steps"] == cfg.train.post_steps
    assert step["chain_flops"] == step["steps"] * step["flops"]
    assert step["seconds"] == pytest.approx(step["chain_seconds"] / step["steps"])
    assert parts["sampling"]["flops"] == _sampling_flops(cfg)
    assert parts["chain_step"]["flops"] > 0 and parts["sampling"]["flops"] > 0
    assert list(result["peak"]) == ["fp32"]
    assert result["batch_size"] == 50 and result["image_shape"] == list(SHAPE)
    _check_numbers(result)
    json.dumps(result)  # JSON-ready


def test_bench_bf16_counts_the_same_operations():
    # Autocast changes the dtype of the kernels, not their number: with the Gaussian prior an
    # iteration is L chain steps and a generator update, sampling one generator forward.
    cfg = tiny_config("prior.kind=gaussian")
    result = bench(cfg, "bf16", **FAST)
    parts = result["parts"]
    step = _chain_step_flops(cfg, 0)
    assert parts["chain_step"]["flops"] == step
    assert parts["iteration"]["flops"] == iteration_flops(cfg, SHAPE)
    assert parts["sampling"]["flops"] == step // 2  # a chain step: forward and backward to z
    assert (parts["chain_step"]["precision"], parts["sampling"]["precision"]) == ("bf16", "fp32")
    assert list(result["peak"]) == ["bf16", "fp32"]
    assert result["config"]["train"]["precision"] == "bf16"
    _check_numbers(result)


def test_matmul_peak_runs_in_the_precision_dtype():
    peak = matmul_peak("bf16", "cpu", seconds=0.005, repeats=1)
    assert peak["precision"] == "bf16" and peak["flops_per_s"] > 0


def test_outside_kernels_counts_nested_kernels_once():
    # aten::convolution (30 us) holds aten::_convolution (28 us): 30 us of kernel, not 58;
    # aten::mm (10 us) inside a non-kernel op counts; aten::add does not.
    def event(name, us, parent=None):
        return SimpleNamespace(name=name, cpu_time_total=us, device_time_total=0, cpu_parent=parent)

    conv = event("aten::convolution", 30.0, event("aten::conv_transpose2d", 31.0))
    events = [conv, event("aten::_convolution", 28.0, conv), event("aten::mm", 10.0)]
    events.append(event("aten::add", 50.0))
    out = outside_kernels(events, 100e-6, torch.device("cpu"))
    assert out["kernel_s"] == pytest.approx(40e-6)
    assert out["share"] == pytest.approx(0.6)


def _bench_cli(tmp_path, capsys, *options) -> tuple[str, dict]:
    """``latent-ebm bench`` of the tiny config, fast settings: its output and its JSON."""
    sets = [a for item in TINY for a in ("--set", item)]
    args = ["bench", *sets, *options, "--repeats", "1", "--warmup", "0"]
    args += ["--peak-seconds", "0.01", "--json", tmp_path / "bench.json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    return out, json.loads((tmp_path / "bench.json").read_text())


def test_bench_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out, saved = _bench_cli(tmp_path, capsys, "--precision", "bf16")
    for text in ("preset digits, precision bf16", "matmul peak bf16", "matmul peak fp32"):
        assert text in out
    for row in ("chain step", "iteration", "sampling", "of peak", "outside matmul/convolution"):
        assert row in out
    assert saved["preset"] == "digits" and saved["overrides"] == TINY
    assert set(saved["parts"]) == {"chain_step", "iteration", "sampling"}
    assert saved["parts"]["iteration"]["flops"] == iteration_flops(tiny_config(), SHAPE)


def test_bench_compare_alternates_precisions_in_one_process(tmp_path, capsys):
    out, saved = _bench_cli(tmp_path, capsys, "--compare", "2")
    order = [line for line in out.splitlines() if line.startswith("latent-ebm bench:")]
    assert [line.split("precision ")[1] for line in order] == [
        f"{p}, round {r}" for r in (1, 2) for p in ("fp32", "bf16")
    ]
    assert saved["precisions"] == ["fp32", "bf16"] and len(saved["rounds"]) == 2
    for part in ("chain_step", "iteration"):
        ratios = [
            r["fp32"]["parts"][part]["seconds"] / r["bf16"]["parts"][part]["seconds"]
            for r in saved["rounds"]
        ]
        assert saved["speedup"][part] == pytest.approx(ratios)
        assert saved["median_speedup"][part] == pytest.approx(sum(ratios) / 2)
        assert f"{part.replace('_', ' ')}: bf16 is" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "prior.stages=2", "--stage", "2"], "error: stage must lie in 0..1"),
        (["--repeats", "0"], "error: repeats and threads must be at least 1"),
        (["--set", "train.precision=fp16"], "'train.precision' must be one of fp32, bf16"),
        (["--compare", "2", "--precision", "bf16"], "--compare measures fp32 and bf16"),
        (["--compare", "0"], "error: rounds must be at least 1"),
    ],
)
def test_bench_cli_errors(args, message, capsys):
    code, _, err = run_cli(["bench", *args], capsys)
    assert code == 1 and message in err and "\n" not in err


def test_bench_cli_rejects_an_unknown_precision_at_parse_time(capsys):
    with pytest.raises(SystemExit) as e:
        run_cli(["bench", "--precision", "fp16"], capsys)
    assert e.value.code == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err
