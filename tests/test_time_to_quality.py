"""The time-to-quality benchmark script (benchmarks/time_to_quality.py) end to end on digits at a
tiny budget: equal operations for the warm run, one evaluated point per kept snapshot at its
training time, resumable evaluations, the table and the figure."""

import json

import pytest

from latent_ebm.experiments import iteration_flops
from latent_ebm.rundir import read_metrics
from tests.conftest import TINY, load_script


@pytest.fixture(scope="module")
def ttq():
    return load_script("time_to_quality")


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("LATENT_EBM_CACHE", str(tmp_path_factory.mktemp("classifiers")))


def test_warm_run_gets_the_operations_of_the_noise_run(ttq):
    cfgs = ttq.configs("digits", [*TINY, "train.post_steps=8"], 2, ["noise", "warm", "bf16"], 3)
    noise, warm, bf16 = cfgs["noise"], cfgs["warm"], cfgs["bf16"]
    assert (warm.train.post_init, warm.train.warm_steps) == ("bank", 2)
    assert bf16.train.precision == "bf16" and bf16.train.iters == noise.train.iters == 12
    # Each stage's iteration costs (8 + update) vs (2 + update) chain steps: more iterations.
    per = [sum(iteration_flops(c, (1, 8, 8), s) for s in (0, 1)) for c in (noise, warm)]
    assert warm.train.iters == 3 * round(12 * per[0] / per[1] / 3) and warm.train.iters > 24
    assert ttq.equal_time_iters(noise, warm, (1, 8, 8)) == round(12 * per[0] / per[1])
    assert [c.train.keep_every for c in (noise, warm)] == [4, warm.train.iters // 3]


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_script_end_to_end_and_rerun(ttq, tmp_path, monkeypatch, capsys):
    args = ["--out", str(tmp_path), "--variants", "noise", "warm", "--warm-steps", "2"]
    args += ["--points", "3", "--fid-n", "100"] + [a for s in TINY for a in ("--set", s)]
    assert ttq.main(args) == 0
    # Every run is trained before any snapshot is evaluated (only training needs a quiet machine).
    err = capsys.readouterr().err
    assert 0 <= err.index("training done") < err.index("noise: iteration")
    results = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert list(results) == ["noise", "warm"]
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
            assert p["recon"] > 0 and p["fid"] > 0
    table = (tmp_path / "time_to_quality.md").read_text()
    assert "| noise start, 4 steps (paper) | 12 |" in table and "warm / noise: recon" in table
    assert (tmp_path / "time_to_quality.png").stat().st_size > 0

    # A rerun trains and evaluates nothing again.
    monkeypatch.setattr(ttq, "fid", lambda *a, **k: pytest.fail("evaluated again"))
    monkeypatch.setattr(ttq, "train", lambda *a, **k: pytest.fail("trained again"))
    assert ttq.main(args) == 0
    assert json.loads((tmp_path / "time_to_quality.json").read_text()) == results
