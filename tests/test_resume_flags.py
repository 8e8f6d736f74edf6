"""``train --resume`` accepts the command that started the run, repeated: the original flags
resume the run exactly; a flag that would change the run is refused in one line naming the
flag, the field and both values."""

import pytest

from latent_ebm.rundir import CONFIG

from .conftest import (
    assert_one_line,
    assert_same_state,
    checkpoint_state,
    run_cli,
    train_cli,
)

ORIGINAL = ["--preset", "digits", "--seed", "3", "--data-dir", "{tmp}/data"]


def _original(tmp_path, *extra: str) -> list[str]:
    return [a.replace("{tmp}", str(tmp_path)) for a in [*ORIGINAL, *extra]]


def test_original_command_with_resume_ends_as_uninterrupted_run(tmp_path, capsys, digits):
    full, part = tmp_path / "full", tmp_path / "part"
    code, err = train_cli(full, capsys, *_original(tmp_path))
    assert code == 0, err
    code, err = train_cli(part, capsys, *_original(tmp_path, "--max-iters", "5"))
    assert code == 0, err
    assert checkpoint_state(part)["iteration"] < checkpoint_state(full)["iteration"]
    # The same command with --resume; the data folder written another way is the same folder.
    again = _original(tmp_path, "--resume")
    again[again.index("--data-dir") + 1] = str(tmp_path / "elsewhere" / ".." / "data")
    code, err = train_cli(part, capsys, *again)
    assert code == 0, err
    assert_same_state(checkpoint_state(full), checkpoint_state(part))


@pytest.fixture
def stopped_run(tmp_path, capsys, digits):
    """A tiny run of the original command, stopped after 2 of its 12 iterations."""
    run = tmp_path / "run"
    code, err = train_cli(run, capsys, *_original(tmp_path, "--max-iters", "2"))
    assert code == 0, err
    return run


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (["--set", "train.lr=0.001"], ["--set train.lr=0.001", "train.lr from 0.0005", "0.001"]),
        (["--seed", "7"], ["--seed 7", "train.seed from 3", "to 7"]),
        (["--preset", "svhn"], ["--preset svhn", "prior.lr from 0.0002", "5e-05"]),
        (["--data-dir", "{tmp}/other"], ["--data-dir", "data.data_dir from", "other"]),
        (["--holdout", "1"], ["--holdout 1", "data.holdout from None", "to 1"]),
        (["--tensorboard"], ["--tensorboard ", "train.tensorboard from False", "to True"]),
    ],
    ids=["set", "seed", "preset", "data-dir", "holdout", "tensorboard"],
)
def test_flag_that_changes_the_run_is_refused(stopped_run, tmp_path, capsys, change, expected):
    config = (stopped_run / CONFIG).read_bytes()
    code, err = train_cli(stopped_run, capsys, *_original(tmp_path, "--resume", *change))
    assert_one_line(code, err, "--resume: ", "(the run's config.yaml)", *expected)
    assert (stopped_run / CONFIG).read_bytes() == config  # the run is left as it was
    assert checkpoint_state(stopped_run)["iteration"] == 2


def test_flags_left_out_change_nothing(stopped_run, capsys):
    # Without --preset and --config, the flags given apply to the run's own config: the tiny
    # --set values and --preset left out are not read as the digits preset's defaults.
    args = ["train", "--out", stopped_run, "--resume", "--seed", "3", "--no-tensorboard"]
    code, _, err = run_cli([*args, "--max-iters", "4", "--no-progress", "--no-eval"], capsys)
    assert code == 0, err
    assert checkpoint_state(stopped_run)["iteration"] == 4


def test_resume_with_force_is_refused(stopped_run, tmp_path, capsys):
    code, err = train_cli(stopped_run, capsys, *_original(tmp_path, "--resume", "--force"))
    assert_one_line(code, err, "--resume", "--force")
    assert checkpoint_state(stopped_run)["iteration"] == 2
