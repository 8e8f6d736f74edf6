"""benchmarks/anomaly_parts.py: the AUPRC of each term of the anomaly score; the full score's
is exactly what ``latent-ebm eval --metric anomaly`` reports for the same snapshots."""

import json

import pytest
import torch

from latent_ebm.data import to_float
from latent_ebm.evaluation import evaluate_run
from latent_ebm.rundir import load_run
from latent_ebm.train import train
from tests.conftest import load_script, tiny_config


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_full_score_matches_eval_and_parts_add_up(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_config(
        "prior.kind=adaptive", "prior.stages=2", "data.holdout=1", "train.keep_every=4"
    )
    train(cfg, run)
    script = load_script("anomaly_parts")
    assert script.main([str(run), "--last", "2"]) == 0
    parts = json.loads((run / "eval/anomaly_parts.json").read_text())
    assert parts["holdout"] == 1 and capsys.readouterr().out.count("AUPRC score") == 2

    report = evaluate_run(run, "anomaly", last=2, progress=False)
    assert [s["iteration"] for s in parts["snapshots"]] == report["iterations"]
    assert [s["score"] for s in parts["snapshots"]] == pytest.approx(report["values"])
    for s in parts["snapshots"]:
        assert all(0 < s[p] <= 1 for p in script.PARTS)

    _, model, _ = load_run(run)
    z = torch.randn(7, model.nz)
    images = torch.randint(0, 256, (7, *model.generator(z[:1]).shape[1:]), dtype=torch.uint8)
    terms = script.score_parts(model, images, z, batch_size=3)
    with torch.no_grad():
        joint = model.log_joint(to_float(images), z)
    assert torch.allclose(terms["score"], -joint)  # the score the library ranks by
    assert torch.allclose(terms["gaussian"], z.pow(2).sum(1) / 2)
    assert not torch.allclose(terms["learned"], torch.zeros(7))  # two trained ratios
