"""Evidence over seeds: mean and standard error, claim verdicts, and `reproduce --seeds`."""

import json
import math

import pytest

from latent_ebm.arguments import seed_list
from latent_ebm.errors import LatentEBMError
from latent_ebm.experiments import experiment_runs, reproduce
from latent_ebm.experiments.columns import SHARPENED
from latent_ebm.experiments.stats import beats, no_worse, summarize, within
from latent_ebm.experiments.tables import EXPERIMENTS, SCALES


def test_summary_is_the_mean_and_its_standard_error():
    s = summarize([1.0, 2.0, 3.0, 6.0])
    assert s.mean == 3.0 and s.n == 4
    # sample variance (4 + 1 + 0 + 9) / 3 = 14 / 3; SE = sqrt(14 / 3 / 4)
    assert s.se == pytest.approx(math.sqrt(14 / 12))
    assert s.format(2) == "3.00 ± 1.08"
    one = summarize([5.0])
    assert one.n == 1 and math.isnan(one.se) and one.format(1) == "5.0"


def test_verdicts_follow_the_two_standard_error_rule():
    a = summarize([10.0, 11.0, 12.0])  # mean 11, SE 1/sqrt(3)
    far = summarize([20.0, 21.0, 22.0])
    near = summarize([11.5, 12.5, 13.5])  # 1.5 apart, SE of the difference 0.816
    assert beats(a, far) == "holds" and beats(far, a) == "fails"
    assert beats(a, near) == "not resolved"
    assert beats(far, a, lower_is_better=False) == "holds"  # AUPRC: higher is better
    assert no_worse(near, a) == "holds" and no_worse(far, a) == "fails"
    assert beats(summarize([1.0]), far) == "not resolved"  # one seed: no standard error
    assert within([1.0, 1.02, 1.04])[1] == "holds"
    assert within([1.3, 1.32, 1.34])[1] == "fails"
    assert within([1.0, 1.2, 1.4])[1] == "not resolved"


def test_seed_options():
    assert seed_list(None, None) == [0]
    assert seed_list(3, None) == [3]
    assert seed_list(None, [5]) == [0, 1, 2, 3, 4]
    assert seed_list(None, [2, 7]) == [2, 7]
    for seed, seeds in [(1, [2]), (None, [0]), (None, [-1, 2])]:
        with pytest.raises(LatentEBMError):
            seed_list(seed, seeds)


def test_the_digits_scale_has_the_papers_stage_length():
    cfg = experiment_runs("compare", "digits", "digits")[2].cfg  # adaptive K=4
    epochs_a_stage = cfg.train.iters / cfg.prior.stages * cfg.train.batch_size / 1437
    assert 24 <= epochs_a_stage <= 27
    assert SCALES["digits"]["fid_n"] == 5_000


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_reproduce_over_two_seeds_gives_mean_and_standard_error(tmp_path):
    out = tmp_path / "repro"
    lines = []
    kw = {"dataset": "digits", "scale": "tiny", "progress": False, "echo": lines.append}
    result = reproduce("adaptive", out, seeds=[0, 1], **kw)
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert "adaptive-K2" in runs and "adaptive-K2-seed1" in runs and "tre-K8-seed1" in runs
    rows = result.results["models"]
    assert {r["seed"] for r in rows} == {0, 1}
    # The FID cell of adaptive K=2 is the mean ± SE of the two runs' own reports.
    values = [
        json.loads((out / "runs" / name / "eval" / "fid.json").read_text())["value"]
        for name in ("adaptive-K2", "adaptive-K2-seed1")
    ]
    cell = summarize(values).format(2)
    row = next(x for x in result.markdown.splitlines() if x.startswith("| adaptive K=2 |"))
    assert cell in row
    # Every claim of the experiment has a verdict, under the stated criterion; without
    # --sharpen there is no column, and no claim, at a chosen beta.
    assert "β chosen" not in result.markdown
    for claim in EXPERIMENTS["adaptive"].claims:
        if claim.column == SHARPENED:
            continue
        line = next(x for x in result.markdown.splitlines() if x.startswith(f"| {claim.text()}"))
        assert line.rstrip(" |").split("| ")[-1] in ("holds", "fails", "not resolved")
    assert "Criterion:" in result.markdown and "--seeds 2" in result.markdown
    # A rerun trains and evaluates nothing again.
    lines.clear()
    again = reproduce("adaptive", out, seeds=[0, 1], **kw)
    assert again.markdown == result.markdown
    assert not any("training" in x or "evaluating" in x for x in lines)
