"""The refit's own config section (issue 33 item 4) and ``latent-ebm refit`` (item 3)."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml

from latent_ebm.config import RefitConfig, apply_overrides, load_config, save_config, validate
from latent_ebm.errors import LatentEBMError
from latent_ebm.priors import PRIORS
from latent_ebm.refit import refit_prior
from latent_ebm.rundir import CHECKPOINT, CONFIG, load_run

from .conftest import assert_one_line, run_cli, tiny_config, train_cli

OLD_NAMES = {f.name for f in dataclasses.fields(RefitConfig)} - {"source"}


def _old_style(d: dict) -> dict:
    """A config mapping as versions before the refit section wrote it: ``prior.refit_*``."""
    refit = d.pop("refit")
    d["prior"] |= {f"refit_{k}": v for k, v in refit.items() if k != "source"}
    return d


def test_a_config_yaml_with_the_old_prior_refit_keys_loads_with_the_same_meaning(tmp_path):
    cfg = tiny_config(
        "refit.steps=33",
        "refit.split=stage",
        "refit.lr=0.002",
        "refit.sampler=chain",
        "refit.holdout=0.25",
        "refit.check=7",
        "refit.patience=3",
    )
    save_config(cfg, tmp_path / "config.yaml")
    old = _old_style(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert {k.removeprefix("refit_") for k in old["prior"] if k.startswith("refit_")} == OLD_NAMES
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    loaded = load_config(tmp_path / "config.yaml")
    assert loaded == cfg
    assert (loaded.refit.steps, loaded.refit.sampler, loaded.refit.check) == (33, "chain", 7)
    validate(loaded)


def test_a_config_file_naming_a_refit_field_twice_is_refused(tmp_path):
    d = yaml.safe_load(yaml.safe_dump(dataclasses.asdict(tiny_config())))
    d["prior"]["refit_steps"] = 5
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(LatentEBMError, match=r"'refit\.steps' is also given by its old name"):
        load_config(tmp_path / "config.yaml")


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_override_with_an_old_refit_key_names_the_new_one(old):
    with pytest.raises(LatentEBMError, match=rf"'prior\.refit_{old}' is now 'refit\.{old}'"):
        apply_overrides(tiny_config(), [f"prior.refit_{old}=1"])


def _refit(run: Path, out: Path, capsys, *extra: str) -> tuple[int, str, str]:
    return run_cli(["refit", run, "--out", out, "--no-progress", *extra], capsys)


def test_refit_writes_a_run_that_eval_sample_plot_and_compare_read(tiny_run, tmp_path, capsys):
    out = tmp_path / "tre"
    code, printed, err = _refit(tiny_run, out, capsys, "--prior", "tre-K3")
    assert code == 0, err
    assert f"wrote {out}" in printed
    cfg = load_config(out / CONFIG)
    assert (cfg.prior.kind, cfg.prior.stages, cfg.refit.source) == (
        "tre",
        3,
        str(tiny_run.resolve()),
    )
    source = load_config(tiny_run / CONFIG)
    assert (cfg.model, cfg.train, cfg.data) == (source.model, source.train, source.data)
    _, model, state = load_run(out)
    _, src_model, _ = load_run(tiny_run)
    assert type(model.prior) is PRIORS["tre"] and len(model.prior.ratios) == 3
    assert len(state["refit"]) == 3 and all(math.isfinite(v) for v in state["refit"])
    for name, p in src_model.generator.state_dict().items():  # the source's generator, kept
        assert torch.equal(model.generator.state_dict()[name], p), name
    code, printed, err = run_cli(["eval", out, "--metric", "recon", "--no-progress"], capsys)
    assert code == 0 and "recon" in printed, err
    code, printed, err = run_cli(["sample", out, "--n", "8", "--no-progress"], capsys)
    assert code == 0 and "8 images" in printed, err
    code, printed, err = run_cli(["plot", out], capsys)
    assert code == 0 and "samples.png" in printed, err
    code, printed, err = run_cli(["compare", tiny_run, out, "--out", tmp_path / "cmp"], capsys)
    assert code == 0, err
    assert (tmp_path / "cmp" / "compare.md").exists()
    before = (out / CHECKPOINT).read_bytes()
    code, _, err = run_cli(["train", "--out", out, "--resume", "--no-progress"], capsys)
    assert_one_line(code, err, "is a prior refitted on", "no training to resume")
    assert (out / CHECKPOINT).read_bytes() == before


def test_the_command_fits_what_refit_prior_fits_with_the_same_settings(
    tiny_run, digits, tmp_path, capsys
):
    # The adaptive prior of the tiny run, refitted post hoc with other settings, equals the
    # training loop's refit (refit.refit_prior) of the same loaded model with those settings.
    sets = ["refit.steps=30", "refit.lr=0.002", "refit.split=stage"]
    code, _, err = _refit(
        tiny_run,
        tmp_path / "a",
        capsys,
        "--prior",
        "adaptive-K2",
        *(x for s in sets for x in ("--set", s)),
    )
    assert code == 0, err
    _, refitted_model, _ = load_run(tmp_path / "a")
    cfg, model, _ = load_run(tiny_run)
    expected = refit_prior(model, digits, apply_overrides(cfg, sets))
    assert load_run(tmp_path / "a")[2]["refit"] == expected
    theirs, ours = refitted_model.prior.state_dict(), model.prior.state_dict()
    assert theirs.keys() == ours.keys()
    for name, p in ours.items():
        assert torch.equal(theirs[name], p), name


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--prior", "gaussian"], "a gaussian prior has nothing to refit"),
        (["--prior", "lebm"], "a lebm prior has nothing to refit"),
        (["--prior", "flow"], "unknown prior kind 'flow'"),
        (["--prior", "tre-Kx"], "'-K' takes a number of stages"),
        (["--prior", "tre", "--set", "model.nz=8"], "only prior.*, refit.*, sample.* may be set"),
        (["--prior", "tre", "--set", "refit.steps=0"], "refit.steps is 0"),
        (["--prior", "tre", "--set", "prior.refit_steps=5"], "is now 'refit.steps'"),
    ],
)
def test_bad_input_is_one_line(tiny_run, tmp_path, capsys, args, expected):
    out = tmp_path / "new"
    assert_one_line(*_refit(tiny_run, out, capsys, *args)[::2], expected)
    assert not out.exists()


def test_missing_run_existing_out_and_out_equal_to_the_source(tiny_run, tmp_path, capsys):
    out = tmp_path / "new"
    assert_one_line(*_refit(tmp_path / "nothing", out, capsys, "--prior", "nce")[::2], "nothing")
    assert_one_line(*_refit(tiny_run, tiny_run, capsys, "--prior", "nce")[::2], "is the source run")
    out.mkdir()
    (out / "config.yaml").write_text("x")
    assert_one_line(*_refit(tiny_run, out, capsys, "--prior", "nce")[::2], "pass --force")
    assert (out / "config.yaml").read_text() == "x"
    code, _, err = _refit(tiny_run, tmp_path / "nce", capsys, "--prior", "nce")
    assert code == 0, err
    code, _, err = _refit(tiny_run, tmp_path / "nce", capsys, "--prior", "tre", "--force")
    assert code == 0, err
    assert load_config(tmp_path / "nce" / CONFIG).prior.kind == "tre"


def test_an_unfinished_run_is_refused(tmp_path, capsys):
    code, err = train_cli(tmp_path / "run", capsys, "--max-iters", "6")
    assert code == 0, err
    code, _, err = _refit(tmp_path / "run", tmp_path / "new", capsys, "--prior", "nce")
    assert_one_line(code, err, "stopped at iteration 6 of 12", "train --resume")
    assert not (tmp_path / "new").exists()


def test_train_set_with_an_old_refit_key_is_one_line_naming_the_new_key(tmp_path, capsys):
    code, _, err = run_cli(
        ["train", "--out", tmp_path / "r", "--dry-run", "--set", "prior.refit_steps=5"], capsys
    )
    assert_one_line(code, err, "'prior.refit_steps' is now 'refit.steps'")
