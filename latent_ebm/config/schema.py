"""The configuration's fields: one dataclass per section, with a default and a comment on
every field (ARCHITECTURE §8, the `config/` room)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "COMPILE_MODES",
    "Config",
    "DataConfig",
    "ModelConfig",
    "PriorConfig",
    "RefitConfig",
    "SampleConfig",
    "TrainConfig",
]


@dataclass
class DataConfig:
    name: str = "digits"  # data set: digits | mnist | fashion-mnist | svhn | cifar10 | celeba | ...
    data_dir: str | None = None  # folder of the data files (None: $LATENT_EBM_DATA, then default)
    holdout: int | None = None  # anomaly protocol: class held out of training (ARCHITECTURE §7)
    size: int | None = None  # image side of celeba, celeba-hq, imagefolder (None: their default)


@dataclass
class ModelConfig:
    nz: int = 16  # latent dimension d
    ngf: int = 32  # generator width (channels of the last hidden layer)
    arch: str = "auto"  # generator family (ARCHITECTURE §5): auto (by image size) | cifar10
    sigma: float = 0.3  # std of the observation noise, p(x|z) = N(g(z), sigma^2 I)
    ratio_hidden: int = 200  # width of each ratio network's hidden layers (paper Table 4)


@dataclass
class PriorConfig:
    kind: str = "adaptive"  # a key of latent_ebm.priors.PRIORS (ARCHITECTURE §4): Algorithm 1
    stages: int = 4  # K: stages or ratios of the priors that read it (see each prior's class)
    prior_samples: str = "persistent"  # adaptive NCE noise: persistent (memory bank) | langevin
    prior_steps: int = 60  # prior-chain length: adaptive's langevin mode, lebm training
    prior_step_size: float = 0.4  # prior-chain step size: adaptive's langevin mode, lebm
    lr: float = 5e-5  # Adam learning rate of the prior's networks (paper A.3)
    # The prior under which adaptive/nce training-time posterior chains run: current (p_k,
    # Algorithm 1) | gaussian (N(0, I), as tre's always do; beyond the paper, ARCHITECTURE §4)
    inference: str = "current"


@dataclass
class RefitConfig:
    # The post-hoc refit after the last iteration (ARCHITECTURE §4; beyond the paper): the ratio
    # priors re-learn their ratios on posterior samples of the final generator. Also the
    # settings of `latent-ebm refit`. An older config.yaml names them prior.refit_*.
    steps: int = 0  # Adam updates in all (split over adaptive's stages); 0: off (recipe paper)
    # How adaptive's refit shares refit.steps out: total (split evenly over its K stages) |
    # stage (every stage gets refit.steps, K * refit.steps in all; beyond the paper)
    split: str = "total"
    batch: int = 500  # rows of each side of every refit NCE update
    lr: float = 1e-3  # Adam learning rate of the refit
    samples: int = 6000  # posterior samples of the training images (cycled) to fit
    chain_steps: int = 400  # MALA steps drawing each adaptive stage's noise from p_k
    # How each adaptive refit stage draws its noise: mala (refit.chain_steps exact MALA steps
    # on p_k) | chain (the test-time prior chain on p_k, sample.steps of sample.step_size)
    sampler: str = "mala"
    noise: int = 10000  # samples of p_k drawn for each adaptive stage
    # The held-out stopping rule (beyond the paper): this fraction of the refit rows (and of
    # each adaptive stage's noise) is kept out of fitting; every refit.check updates its NCE
    # loss is measured, and a ratio stops after refit.patience checks without a new best and
    # returns to its best weights (refit.steps is then a cap). 0: off
    holdout: float = 0.0
    check: int = 250  # updates between two measurements of the held-out loss
    patience: int = 4  # measurements without a new best after which a ratio stops
    # The run whose generator `latent-ebm refit` kept, with this prior refitted post hoc on
    # its aggregate posterior (None: a trained run)
    source: str | None = None


@dataclass
class TrainConfig:
    # The recipe (config/recipes.py): paper (Algorithm 1 as the paper runs it: refit.steps 0) |
    # refit (Algorithm 1, then the exact-noise refit). It sets the fields it names that no
    # preset, file or --set gave; a field set by hand keeps its value
    recipe: str = "paper"
    iters: int = 1500  # T, total training iterations, split evenly into the K stages
    batch_size: int = 100  # global mini-batch size
    lr: float = 1e-4  # Adam learning rate of the generator (paper A.3)
    beta1: float = 0.5  # Adam beta1 for every optimiser (LEBM reference)
    beta2: float = 0.999  # Adam beta2 for every optimiser
    post_steps: int = 30  # L, posterior Langevin steps per iteration
    post_step_size: float = 0.1  # posterior Langevin step size s
    post_init: str = "noise"  # posterior chain start: noise (paper) | bank | amortised
    warm_steps: int | None = None  # chain steps of post_init=bank|amortised (None: post_steps)
    amortiser_lr: float = 1e-3  # Adam learning rate of the amortiser (post_init=amortised)
    precision: str = "fp32"  # fp32 | bf16: autocast in the chains and the generator update
    compile: str = "none"  # none | default | reduce-overhead | max-autotune: torch.compile mode
    seed: int = 0  # seeds initialisation, batch order and every chain's noise
    log_every: int = 10  # iterations per line of metrics.jsonl (window means)
    keep_every: int = 0  # iterations between model snapshots kept in snapshots/ (0: none)
    ckpt_every: int = 500  # iterations between checkpoints (also at the end and on a signal)
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    eval_every: int = 0  # iterations between in-training evaluations, also at the end (0: off)
    eval_n: int = 1000  # test images (recon MSE) and prior samples (FID) of each evaluation
    keep_best: str = "none"  # none | fid: keep best.pt, the model of the lowest in-training FID
    tensorboard: bool = False  # also write TensorBoard events under DIR/tensorboard/

    def chain_steps(self, start: str) -> int:
        """Steps of a posterior chain that starts at ``start`` (a ``post_init`` value):
        ``post_steps`` from ``noise``; ``warm_steps`` from ``bank`` or ``amortised``, where
        ``None`` means ``post_steps`` and 0 means no step (the chain returns its start)."""
        if start == "noise" or self.warm_steps is None:
            return self.post_steps
        return self.warm_steps


@dataclass
class SampleConfig:
    steps: int = 100  # test-time prior Langevin steps (paper A.3)
    step_size: float = 0.1  # test-time prior Langevin step size
    grid: int = 100  # images in the sample and reconstruction grids


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


# torch.compile modes of the generator in training (LatentEBM.compile_generator); "none": eager.
# "reduce-overhead" records CUDA graphs on a GPU.
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
