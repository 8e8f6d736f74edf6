"""The recipe switch (issue 32): ``train.recipe`` fills in the fields it names that no preset,
file or ``--set`` gave; ``paper`` is bit-identical to a run with ``refit.steps=0``; old runs
load with their old meaning."""

import pytest
import yaml

from latent_ebm.config import (
    DEFAULT_RECIPE,
    RECIPES,
    Config,
    load_config,
    resolve_config,
    save_config,
)
from latent_ebm.experiments.posthoc import refit_config

from .conftest import SETS, TINY, assert_one_line, assert_same_state, checkpoint_state, run_cli

NO_REFIT_STEPS = [a for s in TINY if not s.startswith("refit.steps") for a in ("--set", s)]


def field(cfg: Config, name: str):
    section, key = name.split(".")
    return getattr(getattr(cfg, section), key)


def test_the_defaults_are_the_default_recipe():
    assert Config().train.recipe == DEFAULT_RECIPE
    assert all(field(Config(), k) == v for k, v in RECIPES[DEFAULT_RECIPE].items())
    names = {frozenset(values) for values in RECIPES.values()}
    assert len(names) == 1  # every recipe names the same fields: a switch changes them all
    assert RECIPES["paper"]["refit.steps"] == 0


def test_the_recipe_sets_what_nobody_set_by_hand(tmp_path):
    assert resolve_config("digits", None, ["train.recipe=paper"]).refit.steps == 0
    assert resolve_config("digits", None, []).refit.steps == RECIPES[DEFAULT_RECIPE]["refit.steps"]
    # A field set by hand wins, whichever layer set it: --set, or a --config file.
    assert resolve_config(None, None, ["train.recipe=paper", "refit.steps=30"]).refit.steps == 30
    f = tmp_path / "c.yaml"
    f.write_text("refit:\n  steps: 30\n")
    assert resolve_config("digits", f, ["train.recipe=paper"]).refit.steps == 30
    f.write_text("train:\n  recipe: paper\n")  # the recipe chosen in a file
    assert resolve_config("digits", f, []).refit.steps == 0
    # An old file's field name counts as set by hand too.
    f.write_text("prior:\n  refit_steps: 30\ntrain:\n  recipe: paper\n")
    assert resolve_config("digits", f, []).refit.steps == 30


def test_paper_recipe_is_bit_identical_to_no_refit(tmp_path, capsys):
    a, b = tmp_path / "paper", tmp_path / "steps0"
    base = ["train", "--no-progress", "--no-eval", *NO_REFIT_STEPS]
    assert run_cli([*base, "--out", a, "--recipe", "paper"], capsys)[0] == 0
    assert (
        run_cli([*base, "--out", b, "--recipe", "refit", "--set", "refit.steps=0"], capsys)[0] == 0
    )
    assert_same_state(checkpoint_state(a), checkpoint_state(b))
    ca, cb = load_config(a / "config.yaml"), load_config(b / "config.yaml")
    assert ca.train.recipe == "paper" and cb.train.recipe == "refit"
    cb.train.recipe = "paper"
    assert ca == cb  # the same run, field for field
    first = (a / "config.yaml").read_text().splitlines()[0]
    assert first.startswith("# recipe paper: refit.steps=0;"), first
    note = (b / "config.yaml").read_text().splitlines()[0]
    assert f"refit.steps={RECIPES['refit']['refit.steps']} (this run: 0)" in note, note
    # The default recipe's run is the same run as naming that recipe.
    c, named = tmp_path / "default", tmp_path / "named"
    assert run_cli([*base, "--out", c], capsys)[0] == 0
    assert run_cli([*base, "--out", named, "--recipe", DEFAULT_RECIPE], capsys)[0] == 0
    assert_same_state(checkpoint_state(named), checkpoint_state(c))
    assert load_config(named / "config.yaml") == load_config(c / "config.yaml")


def test_config_yaml_records_the_recipe_and_round_trips(tmp_path):
    cfg = resolve_config("digits", None, ["train.recipe=paper", "refit.steps=30"])
    save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert text.splitlines()[0] == (
        "# recipe paper: refit.steps=0 (this run: 30); every field below is what the run used"
    )
    d = yaml.safe_load(text)
    assert d["train"]["recipe"] == "paper" and d["refit"]["steps"] == 30
    assert load_config(tmp_path / "config.yaml") == cfg


def test_old_runs_load_with_their_old_meaning(tmp_path):
    d = yaml.safe_load(_saved(resolve_config("digits", None, [])))
    del d["train"]["recipe"]
    for steps, recipe in ((0, "paper"), (4000, "refit"), (16000, "refit")):
        d["refit"]["steps"] = steps
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
        cfg = load_config(tmp_path / "config.yaml")
        assert (cfg.train.recipe, cfg.refit.steps) == (recipe, steps)
    del d["refit"]  # before the refit existed: none ran
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(d))
    cfg = load_config(tmp_path / "config.yaml")
    assert (cfg.train.recipe, cfg.refit.steps) == ("paper", 0)


def _saved(cfg: Config) -> str:
    from latent_ebm.config import config_to_dict

    return yaml.safe_dump(config_to_dict(cfg))


def test_bad_recipe_and_resume_with_another_recipe(tmp_path, capsys):
    code, _, err = run_cli(
        ["train", "--out", tmp_path / "x", "--set", "train.recipe=fast", "--dry-run"], capsys
    )
    assert_one_line(code, err, "train.recipe", "paper", "refit", "'fast'")
    with pytest.raises(SystemExit) as e:  # argparse's own refusal, before any work
        run_cli(["train", "--out", tmp_path / "x", "--recipe", "fast"], capsys)
    assert e.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    run = tmp_path / "run"
    assert run_cli(["train", "--out", run, "--no-progress", "--no-eval", *SETS], capsys)[0] == 0
    other = next(r for r in RECIPES if r != DEFAULT_RECIPE)
    code, _, err = run_cli(["train", "--out", run, "--resume", "--recipe", other], capsys)
    assert_one_line(code, err, f"--recipe {other} would change train.recipe from {DEFAULT_RECIPE}")


def test_refit_of_a_paper_run_takes_the_refit_recipe():
    paper = resolve_config("digits", None, ["train.recipe=paper"])
    assert refit_config(paper, "adaptive-K2").refit.steps == RECIPES["refit"]["refit.steps"]
    assert refit_config(paper, "nce", ["refit.steps=30"]).refit.steps == 30
    ran = resolve_config("digits", None, ["refit.steps=16000"])  # its own refit is kept
    assert refit_config(ran, "nce").refit.steps == 16000
