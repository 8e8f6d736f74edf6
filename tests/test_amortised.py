"""The amortised start of the posterior chain (``train.post_init=amortised``): where the chain
starts, what the amortiser learns (a linear-Gaussian model whose posterior is known in closed
form), every prior, exact resume, the test-time start and the meaning of ``train.warm_steps``."""

import json
import re

import pytest
import torch

from latent_ebm import rng
from latent_ebm.amortiser import Amortiser
from latent_ebm.config import load_config, save_config, validate
from latent_ebm.errors import ChainDivergedError, LatentEBMError
from latent_ebm.evaluation import evaluate_run, posterior_quality, recon_mse
from latent_ebm.experiments import bench, count_flops, describe, format_report, iteration_flops
from latent_ebm.memory import MemoryBank
from latent_ebm.model import LatentEBM, build_model
from latent_ebm.nets import Encoder
from latent_ebm.posterior import posterior_step
from latent_ebm.priors import PRIORS, build_prior
from latent_ebm.refit import aggregate_posterior
from latent_ebm.rundir import load_run
from latent_ebm.train import train, train_iteration
from tests.conftest import (
    assert_iteration_writes_rows,
    assert_resume_matches,
    checkpoint_state,
    run_cli,
    tiny_config,
)

SHAPE = (1, 8, 8)
AMORTISED = ("train.post_init=amortised",)


def _setup(*overrides):
    """A tiny amortised model at stage 1 whose amortiser is not ``N(0, I)`` (its output layer
    randomised), a bank of 30 rows, a batch of 6 of them and its streams."""
    cfg = validate(tiny_config("train.batch_size=6", *AMORTISED, *overrides))
    model = build_model(cfg, SHAPE).train()
    torch.nn.init.normal_(model.amortiser.encoder.net[-1].weight, std=0.3)
    bank = MemoryBank(30, cfg.model.nz, 0)
    model.prior.set_stage(1, bank)
    opt_g = torch.optim.Adam(model.generator.parameters())
    x, idx = torch.rand(6, *SHAPE) * 2 - 1, torch.tensor([3, 29, 0, 11, 7, 20])
    streams = rng.Streams(0, 4, 6, slice(0, 6), torch.device("cpu"))
    return cfg, model, bank, opt_g, x, idx, streams


@pytest.mark.parametrize("kind", list(PRIORS))
def test_zero_warm_steps_give_exactly_the_amortisers_draws(kind):
    # Every prior: with no chain step the posterior samples (the bank rows written) are the
    # amortiser's draws mu(x) + sigma(x) eps, eps from the AMORTISED_INIT stream, and the
    # amortiser then takes one Adam step on their negative log-likelihood.
    cfg, model, bank, opt_g, x, idx, streams = _setup(f"prior.kind={kind}", "train.warm_steps=0")
    eps = streams.normal(rng.AMORTISED_INIT, cfg.model.nz)
    draws = model.amortiser.draw(x, eps)
    mu, log_sigma = model.amortiser(x)
    assert torch.equal(draws, (mu + log_sigma.exp() * eps).detach())
    assert not torch.allclose(draws, eps)  # the amortiser is not the noise start here
    nll = model.amortiser.nll(x, draws).mean().item()
    before = model.amortiser.encoder.net[-1].weight.clone()
    _, logs = train_iteration(model, opt_g, bank, x, idx, streams, cfg)
    assert torch.equal(bank.bank[idx], draws)
    assert logs["loss_amortiser"] == nll
    assert not torch.equal(model.amortiser.encoder.net[-1].weight, before)


def test_warm_chain_runs_from_the_amortised_draw():
    # warm_steps Langevin steps on the exact posterior from the draw, with the iteration's
    # chain noise; the rows outside the batch are untouched.
    cfg, model, bank, opt_g, x, idx, streams = _setup("train.warm_steps=3")
    z0 = model.amortiser.draw(x, streams.normal(rng.AMORTISED_INIT, cfg.model.nz))
    noise = streams.chain_noise(rng.POSTERIOR_NOISE, cfg.model.nz)
    expected = model.infer(x, z0, 3, cfg.train.post_step_size, noise, True)
    assert_iteration_writes_rows(model, opt_g, bank, x, idx, streams, cfg, expected)


def test_untrained_amortiser_is_the_standard_normal():
    # The encoder's output layer starts at zero: mu = 0, sigma = 1, so a new run's first
    # chains start from N(0, I) draws as the paper's do.
    cfg = validate(tiny_config(*AMORTISED))
    model = build_model(cfg, SHAPE)
    mu, log_sigma = model.amortiser(torch.rand(5, *SHAPE) * 2 - 1)
    assert torch.equal(mu, torch.zeros(5, 4)) and torch.equal(log_sigma, torch.zeros(5, 4))
    # Built last: the generator and prior start as in a run without an amortiser.
    torch.manual_seed(0)
    plain = build_model(validate(tiny_config()), SHAPE)
    torch.manual_seed(0)
    model = build_model(cfg, SHAPE)
    for k, v in plain.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


class _Linear(torch.nn.Module):
    """``g(z) = W z`` on 8x8 images."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.w.T).view(-1, *SHAPE)


def test_amortiser_learns_the_posterior_of_a_linear_gaussian_model():
    # x = W z + sigma e with z ~ N(0, I) and orthogonal columns W = Q diag(a): the posterior
    # is N(m(x), diag 1 / lam) with lam = 1 + a^2 / sigma^2 and m(x) = W^T x / (sigma^2 lam).
    # Trained by the real posterior step (20 Langevin steps of s = 0.2 from its own draws),
    # the amortiser's mean must match m(x), and its sigma the chain's stationary spread (for a
    # Gaussian target the unadjusted chain keeps the mean and has variance
    # 1 / (lam (1 - h lam / 2)), h = s^2 / 2).
    nz, sigma, s = 2, 0.3, 0.2
    cfg = validate(
        tiny_config(
            *AMORTISED,
            "prior.kind=gaussian",
            f"model.nz={nz}",
            f"model.sigma={sigma}",
            "train.warm_steps=20",
            f"train.post_step_size={s}",
            "train.batch_size=100",
        )
    )
    q, _ = torch.linalg.qr(torch.randn(64, nz, generator=torch.Generator().manual_seed(1)))
    a = torch.tensor([1.0, 1.5])
    w = q * a
    lam = 1 + a**2 / sigma**2
    spread = (1 / (lam * (1 - s**2 / 4 * lam))).sqrt()

    def images(n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randn(n, nz, generator=g) @ w.T + sigma * torch.randn(n, 64, generator=g)

    amortiser = Amortiser(Encoder(nz, 8, 1, 8), lr=1e-3)
    model = LatentEBM(_Linear(w), build_prior(cfg), sigma, amortiser)
    bank, idx = MemoryBank(100, nz, 0), torch.arange(100)
    test = images(1000, torch.Generator().manual_seed(2)).view(-1, *SHAPE)
    m = test.flatten(1) @ w / sigma**2 / lam

    def error() -> float:
        with torch.no_grad():
            return float((amortiser(test)[0] - m).pow(2).sum() / m.pow(2).sum())

    assert error() == 1.0  # mu = 0 at the start
    g, losses = torch.Generator().manual_seed(3), []
    for it in range(300):
        streams = rng.Streams(0, it, 100, slice(None), torch.device("cpu"))
        x = images(100, g).view(-1, *SHAPE)
        losses.append(posterior_step(model, bank, x, idx, streams, cfg)[1]["loss_amortiser"])
    assert error() < 0.02
    with torch.no_grad():
        learned = amortiser(test)[1].exp().mean(0)
    assert torch.allclose(learned, spread, rtol=0.2), (learned, spread)
    # The regression loss falls from the N(0, I) start's to near the Gaussian optimum
    # sum_d log spread_d + nz / 2 of a q that matches the chain exactly.
    optimum = float(spread.log().sum() + nz / 2)
    assert sum(losses[:5]) / 5 > optimum + 2
    assert abs(sum(losses[-50:]) / 50 - optimum) < 0.2


@pytest.mark.parametrize("kind", ["adaptive", "lebm"])
def test_amortised_run_resumes_bitwise(tmp_path, digits, kind):
    cfg = tiny_config(*AMORTISED, "train.warm_steps=2", f"prior.kind={kind}")
    full, metrics = assert_resume_matches(cfg, tmp_path, 6, digits)
    part = checkpoint_state(tmp_path / "part")
    assert any(k.startswith("amortiser.encoder.") for k in full["model"])  # in the checkpoint
    (sa,), (sb,) = full["opt_amortiser"], part["opt_amortiser"]
    assert sa["state"].keys() == sb["state"].keys() and sa["state"]
    for p in sa["state"]:
        assert all(torch.equal(sa["state"][p][k], sb["state"][p][k]) for k in sa["state"][p])
    assert metrics and all("loss_amortiser" in m for m in metrics)


@pytest.mark.filterwarnings("ignore:each stage lasts")
def test_test_time_amortised_start(tmp_path, digits, capsys):
    # `eval --start amortised` starts each posterior chain at the amortiser's draw and runs
    # the run's warm_steps by default, into its own report beside the noise-started one.
    run = tmp_path / "run"
    train(tiny_config(*AMORTISED, "train.warm_steps=2"), run, progress=False, data=digits)
    code, out, err = run_cli(["eval", run, "--metric", "recon", "--start", "amortised"], capsys)
    assert code == 0, err
    report = json.loads((run / "eval/recon-amortised.json").read_text())
    assert report["settings"] == {"steps": 2, "step_size": 0.1, "start": "amortised", "seed": 0}
    assert str(run / "eval/recon-amortised.json") in out
    _, model, _ = load_run(run)
    expected = recon_mse(model, digits.test_x, 2, 0.1, batch_size=500, start="amortised")
    assert report["value"] == expected
    noise = evaluate_run(run, "recon", progress=False)
    assert noise["settings"]["start"] == "noise" and noise["settings"]["steps"] == 4
    assert (run / "eval/recon.json").exists()
    zero = evaluate_run(run, "recon", steps=0, start="amortised", progress=False, name="z")
    # No step: g at the amortiser's draws (recon of noise draws would be far worse).
    assert zero["value"] < evaluate_run(run, "recon", steps=0, progress=False, name="n")["value"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--metric", "recon", "--start", "amortised"], "trained without an amortiser"),
        (["--metric", "fid", "--start", "amortised"], "--start applies to the posterior"),
        (["--metric", "recon", "--start", "bank"], "unknown --start 'bank'"),
    ],
)
def test_bad_start_is_one_line_and_keeps_the_run(tmp_path, digits, capsys, args, expected):
    run = tmp_path / "run"
    train(tiny_config(), run, progress=False, data=digits)
    before = sorted(p.name for p in run.rglob("*"))
    code, _, err = run_cli(["eval", run, *args, "--no-progress"], capsys)
    assert code != 0 and err.startswith("error: ") and expected in err, err
    assert len(err.splitlines()) == 1
    assert sorted(p.name for p in run.rglob("*")) == before


def test_diverged_amortiser_names_its_learning_rate(tmp_path, digits):
    # Adam moves every weight by about the learning rate: 1e38 makes the next draws Inf.
    cfg = tiny_config(*AMORTISED, "train.amortiser_lr=1e38", "train.ckpt_every=1")
    with pytest.raises(ChainDivergedError, match=r"amortised start .* lower train.amortiser_lr"):
        train(cfg, tmp_path / "run", progress=False, data=digits)
    assert checkpoint_state(tmp_path / "run")["iteration"] >= 1  # the good checkpoint stays


@pytest.mark.parametrize(
    ("post_init", "saved", "loaded", "steps"),
    [
        ("bank", 0, None, 4),  # before amortised existed, 0 meant train.post_steps
        ("noise", 0, None, 4),  # every older run holds the old default 0
        ("bank", 2, 2, 2),
        ("amortised", 0, 0, 0),  # newer: 0 is a chain of no step
        ("amortised", None, None, 4),
    ],
)
def test_warm_steps_of_saved_configs_keep_their_meaning(tmp_path, post_init, saved, loaded, steps):
    cfg = tiny_config(f"train.post_init={post_init}")
    cfg.train.warm_steps = saved
    save_config(cfg, tmp_path / "config.yaml")  # as a run directory's config.yaml
    cfg = validate(load_config(tmp_path / "config.yaml"))
    assert cfg.train.warm_steps == loaded
    assert cfg.train.chain_steps(post_init) == steps


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("train.post_init=bank", "train.warm_steps=0"), "must be >= 1 with train.post_init=bank"),
        (("train.post_init=noise", "train.warm_steps=2"), "applies to train.post_init=bank or"),
        ((*AMORTISED, "train.warm_steps=-2"), "'train.warm_steps' must be >= 0"),
        ((*AMORTISED, "train.amortiser_lr=0"), "'train.amortiser_lr' must be positive"),
    ],
)
def test_bad_amortised_fields(overrides, message):
    with pytest.raises(LatentEBMError, match=re.escape(message)):
        validate(tiny_config(*overrides))


def test_cost_and_bench_count_the_amortiser():
    # The operation count of an amortised iteration is its chain of warm_steps steps plus the
    # amortiser (one encoder draw, one encoder update); the bench times it beside the
    # noise-started iteration of the same config, in the same call, and reports the ratio.
    noise = validate(tiny_config())
    short = validate(tiny_config(*AMORTISED, "train.warm_steps=1"))
    flops = {c: iteration_flops(cfg, SHAPE) for c, cfg in (("noise", noise), ("short", short))}
    model = build_model(short, SHAPE)
    x = torch.zeros(1, *SHAPE)
    draw = count_flops(lambda: model.amortiser.draw(x, torch.zeros(1, 4)))
    update = count_flops(lambda: model.amortiser.train_step(x, torch.zeros(1, 4)))
    one_step = validate(tiny_config("train.post_steps=1"))
    b = short.train.batch_size
    assert flops["short"] == iteration_flops(one_step, SHAPE) + b * (draw + update)
    assert flops["short"] < flops["noise"]
    result = bench(short, "fp32", repeats=1, warmup=0, peak_seconds=0.01, profile=False)
    parts = result["parts"]
    assert parts["iteration"]["flops"] == flops["short"]
    assert parts["noise_iteration"]["flops"] == flops["noise"]
    ratio = parts["iteration"]["seconds"] / parts["noise_iteration"]["seconds"]
    assert parts["iteration"]["vs_noise"] == ratio
    assert f"amortised start (1 chain steps): {ratio:.3f}x" in format_report(result)
    assert "amortiser " in describe(short, SHAPE)


def test_posterior_quality_of_a_known_posterior():
    # The linear-Gaussian model's posterior is N(m(x), diag 1 / lam); long unadjusted chains
    # of step s reach N(m(x), diag c) with c = 1 / (lam (1 - s^2 lam / 4)). Their spread is
    # sqrt(c) and their mean log joint is log p(x, m(x)) - sum_d lam_d c_d / 2.
    nz, sigma, s = 2, 0.3, 0.2
    cfg = validate(tiny_config("prior.kind=gaussian", f"model.nz={nz}", f"model.sigma={sigma}"))
    q, _ = torch.linalg.qr(torch.randn(64, nz, generator=torch.Generator().manual_seed(1)))
    w = q * torch.tensor([1.0, 1.5])
    lam = 1 + torch.tensor([1.0, 1.5]) ** 2 / sigma**2
    c = 1 / (lam * (1 - s**2 / 4 * lam))
    model = LatentEBM(_Linear(w), build_prior(cfg), sigma)
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(5, nz, generator=g) @ w.T).clamp(-1, 1).view(-1, *SHAPE)
    images = ((x + 1) * 127.5).round().to(torch.uint8)
    xf = images.float() / 127.5 - 1
    m = xf.flatten(1) @ w / sigma**2 / lam
    expected = float(model.log_joint(xf, m).mean() - 0.5 * (lam * c).sum())
    got = posterior_quality(model, images, 60, s, chains=400, batch_size=500)
    assert got["spread"] == pytest.approx(float(c.sqrt().mean()), rel=0.05)
    assert got["log_joint"] == pytest.approx(expected, abs=0.1)


def test_refit_samples_the_amortised_runs_own_chain(digits):
    # The refit's aggregate posterior of an amortised run starts at the amortiser's draws:
    # with no step, they are mu(x) + sigma(x) eps for the images in the refit's seeded order.
    _, model, *_ = _setup()
    images = digits.train_x[:30]
    z = aggregate_posterior(model, images, 40, 0, 0.1, seed=2, batch_size=25, amortised=True)
    eps = aggregate_posterior(model, images, 40, 0, 0.1, seed=2, batch_size=25)
    g = rng.generator_for(2, rng.REFIT, 2)  # the refit's order: seeded permutations, cycled
    order = torch.cat([torch.randperm(30, generator=g) for _ in range(2)])
    x = images[order[:40]].float() / 127.5 - 1
    assert torch.allclose(z, model.amortiser.draw(x, eps), atol=1e-6)
    assert not torch.allclose(z, eps)
