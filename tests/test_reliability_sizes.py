"""Issue 30, classes 5 and 8: a command that writes a file after long work checks the path
before the work and writes it atomically; a size that cannot fit in memory, or work beyond any
reason, is refused in one line before anything is allocated (a slow but possible request is
announced with its estimated time), and the estimate is the one ``train --dry-run`` prints."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

import latent_ebm.experiments as experiments
import latent_ebm.experiments.reproduction as rep
from latent_ebm.data import dataset_info
from latent_ebm.errors import LatentEBMError
from tests.conftest import SETS, TINY, assert_one_line, run_cli, tiny_config

BIG = 10**9


@pytest.fixture
def run(tiny_run: Path) -> Path:
    """A finished tiny run (conftest's ``tiny_run``)."""
    return tiny_run


def _no_work(*args, **kwargs):
    raise AssertionError("the work started before the input was checked")


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _left_behind(folder: Path) -> list[Path]:
    """Temporary or empty files in ``folder``: what a failed write must not leave."""
    return [
        p for p in folder.rglob("*") if p.is_file() and (p.suffix == ".tmp" or not p.stat().st_size)
    ]


# 5. Writers after long work: the output path is checked first, the file written atomically.


@pytest.fixture
def places(tmp_path) -> dict[str, Path]:
    (tmp_path / "afile").write_text("a file, not a folder")
    (tmp_path / "folder.json").mkdir()
    return {
        "folder": tmp_path / "folder.json",
        "parent-is-a-file": tmp_path / "afile" / "bench.json",
        "unwritable": Path("/proc/latent-ebm-test/bench.json"),
    }


@pytest.mark.parametrize("where", ["folder", "parent-is-a-file", "unwritable"])
def test_bench_json_to_a_bad_path_is_refused_before_the_measurement(
    places, capsys, monkeypatch, where
):
    monkeypatch.setattr(experiments, "bench", _no_work)
    code, out, err = run_cli(["bench", *SETS, "--json", places[where]], capsys)
    assert_one_line(code, err, "--json", str(places[where]))
    assert out == ""


def _fake_bench(monkeypatch) -> None:
    """A benchmark that finishes at once: the test is about what happens after it."""
    monkeypatch.setattr(experiments, "bench", lambda cfg, precision, **kw: {"precision": "fp32"})
    monkeypatch.setattr(experiments, "format_report", lambda result: "(report)")


def test_bench_json_on_a_full_disk_is_one_line_and_keeps_the_old_file(
    tmp_path, capsys, monkeypatch
):
    import latent_ebm.files as files

    _fake_bench(monkeypatch)
    path = tmp_path / "bench.json"
    path.write_text('{"earlier": true}\n')
    monkeypatch.setattr(files.os, "replace", _enospc)
    code, _, err = run_cli(["bench", *SETS, "--json", path], capsys)
    assert_one_line(code, err, str(path), "No space left")
    assert path.read_text() == '{"earlier": true}\n'
    assert _left_behind(tmp_path) == []


def test_bench_json_is_written_whole(tmp_path, capsys, monkeypatch):
    _fake_bench(monkeypatch)
    path = tmp_path / "new" / "bench.json"
    code, out, err = run_cli(["bench", *SETS, "--json", path], capsys)
    assert code == 0, err
    assert json.loads(path.read_text())["overrides"] == TINY
    assert f"wrote {path}" in out


REPRODUCE = ["reproduce", "compare", "--dataset", "digits", "--scale", "tiny"]


@pytest.mark.parametrize("bad", ["out-is-a-file", "table-is-a-folder", "runs-is-a-file"])
def test_reproduce_checks_out_before_any_output_or_training(tmp_path, capsys, monkeypatch, bad):
    out = tmp_path / "repro"
    if bad == "out-is-a-file":
        out.write_text("a file")
    else:
        out.mkdir()
        (out / "compare.json").mkdir() if bad == "table-is-a-folder" else (out / "runs").touch()
    monkeypatch.setattr(rep, "train", _no_work)
    code, stdout, err = run_cli([*REPRODUCE, "--out", out, "--no-progress"], capsys)
    assert_one_line(code, err, "--out")
    assert stdout == ""  # no progress line before the error


def _fake_runs(monkeypatch) -> None:
    """Training and evaluation that finish at once: the test is about the tables."""
    state = {"iteration": 16, "elapsed": 1.0}
    report = {"value": 0.5, "n": 10, "features": {"name": "classifier"}}
    monkeypatch.setattr(rep, "_train", lambda *args: state)
    monkeypatch.setattr(rep, "_evaluate", lambda run_dir, key, *args: report)


def test_reproduce_tables_on_a_full_disk_are_one_line_and_not_partial(
    tmp_path, capsys, monkeypatch
):
    import latent_ebm.files as files

    _fake_runs(monkeypatch)
    out = tmp_path / "repro"
    args = [*REPRODUCE, "--models", "gaussian", "nce", "--fid-n", "10", "--out", out]
    code, _, err = run_cli([*args, "--no-progress"], capsys)
    assert code == 0, err
    before = {p: p.read_bytes() for p in out.glob("compare.*")}
    assert set(before) == {out / "compare.md", out / "compare.json"}
    monkeypatch.setattr(files.os, "replace", _enospc)
    code, _, err = run_cli([*args, "--no-progress"], capsys)
    assert_one_line(code, err, "No space left")
    assert {p: p.read_bytes() for p in out.glob("compare.*")} == before
    assert _left_behind(out) == []


# 8. Sizes: refused in one line before any allocation, with the estimate.


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--dry-run", "--set", f"model.nz={BIG}"], ["memory", "model.nz"]),
        (["train", "--set", f"model.nz={BIG}"], ["memory", "model.nz"]),
        (["train", "--set", f"model.ratio_hidden={BIG}"], ["memory", "model.ratio_hidden"]),
        (["train", "--set", "model.ngf=100000"], ["memory", "model.ngf"]),
        (["train", "--set", f"train.batch_size={BIG}"], ["train.batch_size", "training set"]),
        (["train", "--dry-run", "--set", f"train.batch_size={BIG}"], ["train.batch_size"]),
        (["train", "--set", f"refit.samples={10 * BIG}"], ["refit.samples"]),
        (["train", "--dry-run", "--set", f"train.iters={10**12}"], ["train.iters", "10**12"]),
        (["train", "--set", f"refit.noise={BIG}"], ["memory", "refit.noise"]),
        (["train", "--set", f"refit.batch={BIG}"], ["memory", "refit.batch"]),
        (
            ["train", "--set", "train.eval_every=4", "--set", f"train.eval_n={BIG}"],
            ["memory", "train.eval_n"],
        ),
        (["train", "--set", f"sample.grid={BIG}"], ["memory", "sample.grid"]),
        (["train", "--set", "refit.steps=1"], ["refit.steps", "every stage"]),
        (
            ["train", "--set", "refit.holdout=0.9", "--set", "refit.samples=1"],
            ["refit.holdout", "raise refit.samples"],
        ),
        (["bench", "--set", f"train.batch_size={BIG}"], ["memory", "train.batch_size"]),
        (["bench", "--set", f"model.nz={BIG}"], ["memory", "model.nz"]),
        (["bench", "--set", "train.post_steps=0"], ["train.post_steps", "at least 1"]),
        (["bench", "--threads", "100000"], ["--threads", "cores"]),
        (["bench", "--repeats", str(10**11)], ["--repeats", "10**6"]),
        (["bench", "--peak-seconds", "1e12"], ["--peak-seconds", "h"]),
        (["bench", "--compare", str(10**11)], ["--compare", "h"]),
    ],
)
def test_a_config_that_cannot_fit_is_refused_before_any_allocation(
    tmp_path, capsys, args, expected
):
    out = tmp_path / "run"
    if args[0] == "train":
        args = [*args[:1], "--out", out, "--no-progress", "--no-eval", *SETS, *args[1:]]
    else:
        args = [*args[:1], *SETS, *args[1:]]
    code, _, err = run_cli(args, capsys)
    assert_one_line(code, err, *expected)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sample", "{run}", "--method", "sir", "--proposals", str(BIG)], ["--proposals"]),
        (["sample", "{run}", "--n", str(BIG)], ["memory", "--n"]),
        (["sample", "{run}", "--steps", str(10**12)], ["--steps", "10**12"]),
        (["sample", "{run}", "--n", str(10**7), "--steps", str(10**6)], ["10**12"]),
        (["eval", "{run}", "--metric", "fid", "--n", str(BIG)], ["memory", "--n"]),
        (
            ["eval", "{run}", "--metric", "fid", "--method", "sir", "--proposals", str(BIG)],
            ["--proposals"],
        ),
        (["eval", "{run}", "--metric", "fid", "--method", "aggregate", "--n", str(BIG)], ["--n"]),
        (["eval", "{run}", "--metric", "recon", "--steps", str(10**12)], ["--steps"]),
    ],
)
def test_a_sampling_request_that_cannot_finish_is_refused_before_the_work(
    run, capsys, monkeypatch, args, expected
):
    import latent_ebm.evaluation as evaluation
    import latent_ebm.evaluation.classifier as classifier
    import latent_ebm.evaluation.metrics as metrics
    import latent_ebm.evaluation.plots as plots

    for module, name in [(plots, "sample_latents"), (metrics, "sample_latents")]:
        monkeypatch.setattr(module, name, _no_work)
    monkeypatch.setattr(classifier, "classifier_features", _no_work)
    monkeypatch.setattr(evaluation, "recon_mse", _no_work)
    args = [a.replace("{run}", str(run)) for a in args]
    code, _, err = run_cli([*args, "--no-progress"], capsys)
    assert_one_line(code, err, *expected)
    assert not (run / "samples").exists()


class _Started(LatentEBMError):
    """Raised by the sampler in place of the work: the test stops there."""


def test_slow_sampling_is_announced_with_its_time_before_it_starts(run, capsys, monkeypatch):
    import latent_ebm.evaluation.plots as plots

    def started(*args, **kwargs):
        raise _Started("sampling started")

    monkeypatch.setattr(plots, "sample_latents", started)
    args = ["sample", run, "--n", str(10**6), "--steps", str(10**5), "--no-progress"]
    with pytest.warns(UserWarning, match=r"^--n and --steps: 1,000,000 samples .* h here"):
        code, _, err = run_cli(args, capsys)
    assert err == "error: sampling started" and code == 1  # warned, then started


def test_a_long_bench_is_announced_with_its_time_before_it_starts(capsys, monkeypatch):
    import latent_ebm.experiments.benchmark as benchmark

    def started(*args, **kwargs):
        raise _Started("measurement started")

    monkeypatch.setattr(benchmark, "matmul_peak", started)
    with pytest.warns(UserWarning, match=r"^--repeats x --peak-seconds: .* about 1\.39 h$"):
        code, _, err = run_cli(["bench", *SETS, "--repeats", "5", "--peak-seconds", "1000"], capsys)
    assert err == "error: measurement started" and code == 1


def test_small_sampling_is_not_delayed_by_a_time_estimate(run, capsys, monkeypatch):
    import latent_ebm.evaluation.sizes as sizes

    monkeypatch.setattr(sizes, "sample_latents", _no_work)  # the time estimate's probe
    code, _, err = run_cli(["sample", run, "--n", "8", "--no-progress"], capsys)
    assert code == 0 and "warning" not in err, err


def test_the_dry_run_prints_the_estimate_that_validation_refuses(tmp_path, capsys, monkeypatch):
    """One estimate (``training_memory``): printed by ``--dry-run``, checked by training."""
    import latent_ebm.config.sizes as sizes
    from latent_ebm.config.sizes import format_bytes, training_memory

    cfg = tiny_config()
    shape, num_train = dataset_info("digits", None, None)
    total = format_bytes(sum(training_memory(cfg, shape, num_train).values()))
    code, out, err = run_cli(["train", "--dry-run", "--out", tmp_path / "r", *SETS], capsys)
    assert code == 0, err
    assert f"memory: about {total} (" in out

    monkeypatch.setattr(sizes, "_memory_available", lambda device: (1000, "here"))
    for extra in (["--dry-run"], []):
        code, out, err = run_cli(["train", *extra, "--out", tmp_path / "r", *SETS], capsys)
        assert_one_line(code, err, f"needs about {total} of memory, more than the 1 kB here")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("suffix", [".png", ".npz"])
def test_sample_out_onto_a_folder_is_refused_before_sampling(
    run: Path, tmp_path: Path, capsys, monkeypatch, suffix: str
) -> None:
    """``sample --out P`` where ``P.png`` or ``P.npz`` is a folder fails before the chain runs,
    not after it."""
    from latent_ebm.evaluation import plots

    prefix = tmp_path / "out" / "s"
    prefix.with_suffix(suffix).mkdir(parents=True)
    monkeypatch.setattr(plots, "sample_latents", _no_work)
    code, _, err = run_cli(["sample", run, "--n", "4", "--out", prefix, "--no-progress"], capsys)
    assert_one_line(code, err, f"s{suffix}", "is a folder")
    assert sorted(p.name for p in prefix.parent.iterdir()) == [f"s{suffix}"]


def test_sir_resamples_from_more_proposals_than_torch_multinomial_allows():
    """``torch.multinomial`` refuses more than 2**24 categories; SIR pools a batch's
    ``--n x --proposals`` (the probe's ``--n 200 --proposals 90000``: 1.8e7), so it draws the
    index by inverse CDF there, seeded by its generator, in proportion to the weights."""
    from latent_ebm.sampling import resample

    logw = torch.zeros(2**24 + 1)
    logw[-1] = 40.0  # every draw of weight e**40 against 2**24 of weight 1
    logw[7] = 40.0
    draw = resample(logw, 1000, torch.Generator().manual_seed(0))
    assert draw.shape == (1000,) and set(draw.tolist()) == {7, 2**24}
    assert 400 < (draw == 7).sum() < 600
    assert torch.equal(draw, resample(logw, 1000, torch.Generator().manual_seed(0)))


def test_sample_sir_beyond_the_multinomial_limit_writes_its_samples(
    run, tmp_path, capsys, monkeypatch
):
    """The probe's ``sample --method sir --n 200 --proposals 90000`` at a small scale: a
    ``torch.multinomial`` whose limit is 16 categories, ``--n 8 --proposals 10``."""
    import latent_ebm.sampling as sampling

    real = torch.multinomial

    def limited(weights, *args, **kwargs):
        if weights.shape[-1] > 16:
            raise RuntimeError("number of categories cannot exceed 2^24")
        return real(weights, *args, **kwargs)

    monkeypatch.setattr(torch, "multinomial", limited)
    monkeypatch.setattr(sampling, "MULTINOMIAL_LIMIT", 16, raising=False)
    args = ["sample", run, "--method", "sir", "--n", "8", "--proposals", "10"]
    code, _, err = run_cli([*args, "--out", tmp_path / "s", "--no-progress"], capsys)
    assert code == 0, err
    assert (tmp_path / "s.npz").is_file()
