"""The refit's own config section (issue 33 item 4) and ``latent-ebm refit`` (item 3)."""

import dataclasses

import pytest
import yaml

from latent_ebm.config import RefitConfig, apply_overrides, load_config, save_config, validate
from latent_ebm.errors import LatentEBMError

from .conftest import tiny_config

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
