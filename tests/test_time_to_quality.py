"""The time-to-quality benchmark script (benchmarks/time_to_quality.py) end to end on digits at a
tiny budget: equal operations for the warm and amortised runs, one evaluated point per kept
snapshot at its training time, the amortised start's recon and the posterior quality,
resumable evaluations, the table and the figures."""

import json

import pytest

from latent_ebm.config import num_stages
from latent_ebm.data import load_dataset
from latent_ebm.evaluation import recon_mse
from latent_ebm.experiments import curves, iteration_flops
from latent_ebm.rundir import load_run, read_metrics, snapshots
from tests.conftest import TINY, load_script

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def ttq():
    return load_script("time_to_quality")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


def test_warm_run_gets_the_operations_of_the_noise_run(ttq):
    variants = ["noise", "warm", "bf16", "amortised"]
    cfgs = ttq.configs("digits", [*TINY, "train.post_steps=8"], 2, variants, 3)
    noise, warm, bf16, amortised = (cfgs[v] for v in variants)
    assert (warm.train.post_init, warm.train.warm_steps) == ("bank", 2)
    assert (amortised.train.post_init, amortised.train.warm_steps) == ("amortised", 2)
    # The amortiser's draw and update cost operations: fewer iterations than warm's.
    assert amortised.train.iters == 3 * round(ttq.equal_time_iters(noise, amortised, SHAPE) / 3)
    assert noise.train.iters < amortised.train.iters < warm.train.iters
    assert bf16.train.precision == "bf16" and bf16.train.iters == noise.train.iters == 12
    # Each stage's iteration costs (8 + update) vs (2 + update) chain steps: more iterations.
    per = [sum(iteration_flops(c, SHAPE, s) for s in (0, 1)) for c in (noise, warm)]
    assert warm.train.iters == 3 * round(12 * per[0] / per[1] / 3) and warm.train.iters > 24
    assert ttq.equal_time_iters(noise, warm, SHAPE) == round(12 * per[0] / per[1])
    assert [c.train.keep_every for c in (noise, warm)] == [4, warm.train.iters // 3]


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_script_end_to_end_and_rerun(ttq, tmp_path, monkeypatch, capsys):
    args = ["--out", str(tmp_path), "--variants", "noise", "amortised", "--warm-steps", "2"]
    args += ["--points", "3", "--fid-n", "100", "--posterior-n", "10"]
    args += [a for s in TINY for a in ("--set", s)]
    assert ttq.main(args) == 0
    # Every run is trained before any snapshot is evaluated (only training needs a quiet machine).
    err = capsys.readouterr().err
    assert 0 <= err.index("training done") < err.index("noise: iteration")
    results = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert list(results) == ["noise", "amortised"]
    for variant, r in results.items():
        points = r["points"]
        keep = r["config"]["train"]["keep_every"]
        assert [p["iteration"] for p in points] == [keep * i for i in (1, 2, 3)]
        # A point's time is the training time when its snapshot was kept: after the log line
        # of its iteration, before the next one.
        times = {m["iteration"]: m["time"] for m in read_metrics(tmp_path / variant)}
        for p in points:
            assert times[p["iteration"]] - 1e-3 <= p["minutes"] * 60
            later = [t for it, t in times.items() if it > p["iteration"]]
            assert p["minutes"] * 60 <= min(later, default=float("inf"))
            assert p["recon"] > 0 and p["fid"] > 0 and p["fid_q"] > 0
            chains = ["noise-4", "noise-2"] + (["amortised-2"] if variant == "amortised" else [])
            assert list(p["posterior"]) == chains
            assert ("recon_amortised" in p) == (variant == "amortised")
    # The last point of the amortised run, measured again here: the amortised start's recon.
    last = results["amortised"]["points"][-1]
    _, model, _ = load_run(tmp_path / "amortised", checkpoint=snapshots(tmp_path / "amortised")[-1])
    data = load_dataset("digits")
    assert last["recon_amortised"] == recon_mse(model, data.test_x, 2, 0.1, start="amortised")
    table = (tmp_path / "time_to_quality.md").read_text()
    assert (
        "| noise start, 4 steps (paper) | 12 |" in table
        and "amortised / noise at the end: recon" in table
    )
    assert "- amortised first reaches noise's final recon" in table
    assert "| amortised start, 2 steps | amortised-2 |" in table
    for figure in ("time_to_quality.png", "posterior_quality.png"):
        assert (tmp_path / figure).stat().st_size > 0

    # A rerun trains and evaluates nothing again.
    monkeypatch.setattr(curves, "fid", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(ttq, "train", lambda *a, **k: pytest.fail("trained again"))
    assert ttq.main(args) == 0
    assert json.loads((tmp_path / "time_to_quality.json").read_text()) == results


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_several_seeds_are_averaged_point_by_point(ttq, tmp_path, monkeypatch, capsys):
    common = ["--variants", "noise", "amortised", "--warm-steps", "2", "--points", "2"]
    common += ["--fid-n", "100", "--posterior-n", "10", "--x", "gflop"]
    common += [a for s in TINY for a in ("--set", s)]
    args = ["--out", str(tmp_path), *common, "--seeds", "2"]
    assert ttq.main(args) == 0
    results = json.loads((tmp_path / "time_to_quality.json").read_text())
    for variant in ("noise", "amortised"):
        r = results[variant]
        assert r["seeds"] == [0, 1] and list(r["runs"]) == ["0", "1"]
        for seed, name in ((0, variant), (1, f"{variant}-seed1")):
            assert load_run(tmp_path / name)[0].train.seed == seed
        a, b = r["runs"]["0"], r["runs"]["1"]
        assert a[-1]["fid"] != b[-1]["fid"]  # two seeds, two runs
        for mean, pa, pb in zip(r["points"], a, b, strict=True):
            for key in ("recon", "fid", "fid_q", "minutes"):
                assert mean[key] == pytest.approx((pa[key] + pb[key]) / 2)
                # Two values: the standard error of their mean is half their distance.
                assert mean[f"{key}_se"] == pytest.approx(abs(pa[key] - pb[key]) / 2)
    # Operations: the sum over the iterations of each stage's iteration count.
    cfg = load_run(tmp_path / "noise")[0]
    k = num_stages(cfg)
    per_stage = [iteration_flops(cfg, SHAPE, s) / 1e9 for s in range(k)]
    total = sum(per_stage) * cfg.train.iters / k
    assert results["noise"]["points"][-1]["gflop"] == pytest.approx(total, rel=1e-9)
    amortised = results["amortised"]["points"][-1]["gflop"]
    assert amortised == pytest.approx(total, rel=0.15)  # equal operations, up to rounding
    table = (tmp_path / "time_to_quality.md").read_text()
    assert "- amortised beats noise on recon at the end: **" in table
    assert "of noise's training operations (seeds 0, 1)" in table
    assert "mean ± standard error over 2 seeds" in table and "Criterion" in table

    # The recorded seeds, in another folder with no runs: nothing trained or evaluated, the
    # same table. Other settings: a clear error naming them.
    other = tmp_path / "elsewhere"
    again = [*args[2:], "--out", str(other), "--recorded", str(tmp_path / "time_to_quality.json")]
    with monkeypatch.context() as m:
        m.setattr(curves, "fid", lambda *a, **k: pytest.fail("evaluated again"))
        m.setattr(ttq, "train", lambda *a, **k: pytest.fail("trained again"))
        assert ttq.main(again) == 0
    assert json.loads((other / "time_to_quality.json").read_text()) == results
    with pytest.raises(
        SystemExit, match=r"other settings \(train\.lr is 0\.0003 there, 0\.123 here\)"
    ):
        ttq.main([*again, "--set", "train.lr=0.123"])
    (tmp_path / "tampered.json").write_text('{"noise": {"runs": 3}}')
    for name in ("missing.json", "tampered.json"):
        with pytest.raises(SystemExit, match=r"cannot read it as a time_to_quality\.json"):
            ttq.main([*again[:-1], str(tmp_path / name)])
    with pytest.raises(SystemExit, match="holds none of this call's seeds"):
        ttq.main([*again, "--seeds", "5", "6"])

    # One seed alone (one process per seed): the same runs and measurements as in the 2-seed
    # call (the wall time aside).
    alone = tmp_path / "alone"
    seed1 = ["--out", str(alone), *common, "--seed", "1"]
    assert ttq.main(seed1) == 0
    one = json.loads((alone / "time_to_quality.json").read_text())
    for variant in ("noise", "amortised"):
        assert one[variant]["seeds"] == [1] and list(one[variant]["runs"]) == ["1"]
        for p, q in zip(one[variant]["runs"]["1"], results[variant]["runs"]["1"], strict=True):
            assert {**p, "minutes": 0} == {**q, "minutes": 0}
        assert load_run(alone / f"{variant}-seed1")[0].train.seed == 1
    with pytest.raises(SystemExit, match=r"give --seed S .* or --seeds, not both"):
        ttq.main([*seed1, "--seeds", "2"])
