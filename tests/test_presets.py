"""Every preset: ``--dry-run`` reports it, and two iterations of it train on tiny files written
in its data set's real format (the preset's networks; a batch of 2 and one chain step). Every
registered data set: its record agrees with what its loader reads from such files."""

import pytest
import torch

from latent_ebm.config import PRESETS, load_preset, validate
from latent_ebm.data import DATASETS, dataset_info, load_dataset
from latent_ebm.experiments import estimate
from latent_ebm.model import build_model
from latent_ebm.rundir import load_run
from tests.conftest import run_cli
from tests.formats import write_celeba, write_cifar10, write_idx_set, write_imagefolder, write_svhn

# How to write each data set's tiny files: data.name -> writer(folder).
WRITERS = {
    "digits": None,  # built in
    "mnist": lambda d: write_idx_set(d, 20, 10),
    "fashion-mnist": lambda d: write_idx_set(d, 20, 10),
    "svhn": lambda d: write_svhn(d, n_train=6, n_test=3),
    "cifar10": lambda d: write_cifar10(d, n_per_batch=2),
    "celeba": lambda d: write_celeba(d, n=10),
    "celeba-hq": lambda d: write_imagefolder(d, n=10, size=20),
    "imagefolder": lambda d: write_imagefolder(d, n=10, size=12),
}


def test_every_preset_is_covered():
    assert set(PRESETS) == {
        "digits",
        "mnist",
        "fashion-mnist",
        "fashion-mnist-cpu",
        "svhn",
        "cifar10",
        "celeba64",
        "celebahq128",
        "mnist-anomaly",
    }
    assert {load_preset(p).data.name for p in PRESETS} <= set(WRITERS)


@pytest.mark.parametrize("preset", PRESETS)
def test_dry_run(preset, tmp_path, capsys):
    code, out, err = run_cli(
        ["train", "--preset", preset, "--out", tmp_path / "run", "--dry-run", "--throughput", "1T"],
        capsys,
    )
    assert code == 0, err
    assert not (tmp_path / "run").exists()
    cfg = validate(load_preset(preset))
    shape, _ = dataset_info(cfg.data.name, cfg.data.size, cfg.data.holdout)
    model = build_model(cfg, shape)
    g = sum(p.numel() for p in model.generator.parameters())
    assert f"name: {cfg.data.name}\n" in out and f"iters: {cfg.train.iters}\n" in out
    assert f"parameters: generator {g:,}, prior " in out
    assert "operations per iteration (stage 0: " in out
    assert "time: " in out and "at 1 TFLOP/s" in out


def test_paper_networks_and_budgets():
    # Appendix A: SVHN's generator (Table 5, top) at nz 100, ngf 64, counted by hand.
    svhn = estimate(validate(load_preset("svhn")), (3, 32, 32))
    layers = [(100, 512, 4), (512, 256, 4), (256, 128, 4), (128, 3, 4)]  # (C_in, C_out, k)
    assert svhn.generator_params == sum(ci * co * k * k + co for ci, co, k in layers)
    # Table 4: each ratio network has 100*200 + 200*200 + 200 weights and 401 biases.
    assert svhn.ratio_params == [60_601] * 4
    assert svhn.iters == 73_200 and svhn.stage_iters == {s: 18_300 for s in range(4)}
    cifar = validate(load_preset("cifar10"))
    assert (cifar.model.nz, cifar.model.ngf, cifar.model.arch) == (128, 128, "cifar10")
    assert (cifar.train.post_steps, cifar.train.iters, cifar.prior.stages) == (40, 100_000, 4)
    celeba = validate(load_preset("celeba64"))
    assert (celeba.data.size, celeba.model.nz, celeba.model.ngf) == (64, 100, 128)
    assert celeba.train.iters == 100 * 40_000 // 100


@pytest.mark.filterwarnings("ignore:each stage lasts")  # batch 2: stages shorter than an epoch
@pytest.mark.parametrize("preset", PRESETS)
def test_two_iterations_on_tiny_files(preset, tmp_path, capsys):
    cfg = load_preset(preset)
    data_dir = tmp_path / "data"
    writer = WRITERS[cfg.data.name]
    if writer is not None:
        writer(data_dir)
    run = tmp_path / "run"
    args = ["train", "--preset", preset, "--out", run, "--data-dir", data_dir, "--max-iters", "2"]
    args += ["--set", "train.batch_size=2", "--set", "train.post_steps=1"]
    code, _, err = run_cli([*args, "--no-eval", "--no-progress"], capsys)
    assert code == 0, err
    run_cfg, model, state = load_run(run)
    assert state["iteration"] == 2
    assert run_cfg.model == cfg.model  # the preset's networks, unchanged
    shape, _ = dataset_info(cfg.data.name, cfg.data.size)
    assert tuple(state["shape"]) == shape
    with torch.no_grad():
        x = model.generator(torch.zeros(1, cfg.model.nz))
    assert x.shape == (1, *shape) and torch.isfinite(x).all()


@pytest.mark.parametrize("name", list(DATASETS))
def test_record_agrees_with_loader(name, tmp_path):
    """What ``dataset_info`` says without files (``--dry-run``, bench) is what loading gives."""
    assert set(WRITERS) == set(DATASETS)  # a new data set needs a writer of its tiny files
    writer = WRITERS[name]
    if writer is not None:
        writer(tmp_path)
    spec = DATASETS[name]
    ds = load_dataset(name, tmp_path, download=False)
    shape, num_train = dataset_info(name)
    assert ds.shape == shape == (spec.channels, spec.size, spec.size)
    if name == "digits":  # the only set whose real files are at hand
        assert len(ds.train_x) == num_train
    if spec.resizable:
        assert load_dataset(name, tmp_path, size=6).shape == dataset_info(name, 6)[0]
