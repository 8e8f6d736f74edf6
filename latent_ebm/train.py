"""The training loop (Algorithm 1) with exact resume.

Every random number of iteration ``t`` is a function of ``(seed, t, stream)``
(:mod:`latent_ebm.rng`), so a run resumed from a checkpoint ends with exactly the parameters of
an uninterrupted one. Under ``torchrun`` the processes split each global batch and follow the
1-process run (:mod:`latent_ebm.distributed`). What the loop writes (``config.yaml``,
``metrics.jsonl``, checkpoints, snapshots) and how is :mod:`latent_ebm.rundir`'s.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, NoReturn

import torch
from tqdm.auto import tqdm

from latent_ebm import distributed, rng, rundir
from latent_ebm.config import Config, config_to_dict, num_stages, validate
from latent_ebm.data import Dataset, to_float
from latent_ebm.errors import ChainDivergedError, LatentEBMError, TrainingInterrupted
from latent_ebm.langevin import Cause, remedy
from latent_ebm.memory import MemoryBank
from latent_ebm.model import LatentEBM, build_model
from latent_ebm.monitor import Monitor, check_finite, check_tensorboard, refuse_non_finite
from latent_ebm.posterior import posterior_step, setting
from latent_ebm.precision import autocast
from latent_ebm.priors import stage_of
from latent_ebm.refit import refit_prior

__all__ = ["train", "train_iteration"]


@distributed.in_process_group
def train(
    cfg: Config | None,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    max_iters: int | None = None,
    progress: bool = True,
    data: Dataset | None = None,
) -> LatentEBM:
    """Train the model of ``cfg`` by Algorithm 1 into the run directory ``out``.

    Arguments:
        cfg: the configuration (``None`` with ``resume``: the run's own).
        out: run directory.
        resume: continue from ``out/checkpoint.pt`` exactly.
        force: delete an existing run in ``out`` first.
        max_iters: stop after this many iterations in all (the stage schedule still follows
            ``train.iters``), e.g. to resume later.
        progress: show a tqdm bar.
        data: an already loaded data set (default: load ``cfg.data``).

    Under ``torchrun`` (``$WORLD_SIZE > 1``) each process trains its share of every global
    batch (:func:`latent_ebm.distributed.shard`), gradients are averaged before every
    optimiser step, the memory bank's new rows and the logged losses are shared after every
    iteration, and only rank 0 writes files; every process returns the same model.

    Returns:
        The trained model.

    Everything that needs no run directory is checked first (the config, ``out``, the data
    set and the config against it); then rank 0 takes the run directory's lock
    (:class:`latent_ebm.rundir.RunLock`) and holds it until training ends. A new run that fails
    before its first iteration removes what it made. Losses are checked after every
    iteration and parameters before every save: nothing non-finite is written or resumed.
    SIGINT or SIGTERM (:func:`latent_ebm.distributed.catch_signals`) waits for the end of an
    iteration, or stops an evaluation or the post-hoc refit at once; the checkpoint is saved
    (marking an evaluation cut short, which ``resume`` runs first), then every process raises
    ``TrainingInterrupted``.

    Raises:
        LatentEBMError: bad config or run directory, another process writing ``out``, data
            errors, a diverged chain or a NaN/Inf loss or parameter (naming the setting that
            caused it: a network's learning rate, else the chain's step size; the last good
            checkpoint is kept), a non-finite checkpoint on resume, a full disk, or a global
            batch the processes cannot split evenly; ``TrainingInterrupted`` after a signal.
    """
    out = Path(out)
    main = distributed.is_main()
    # Everything that can be checked before the run directory changes: the config, the
    # folder, the data set and the config against the data.
    seen = None  # what a new run's out held when checked: all that --force may delete
    if resume:
        cfg = distributed.main_only(rundir.read_run_config, out)
        rundir.check_trained_here(cfg, out)
    else:
        assert cfg is not None, "a new run needs a config"
        validate(cfg)
        distributed.shard(cfg.train.batch_size)  # a bad split fails before any file is made
        seen = distributed.main_only(rundir.check_new_run_dir, out, force)
    check_tensorboard(cfg.train.tensorboard)  # a missing extra fails before any file is made
    t_cfg = cfg.train
    data = data if data is not None else distributed.main_first(rundir.load_data, cfg)
    num_train = len(data.train_x)
    with warnings.catch_warnings():
        if not main:  # rank 0 warns once for the run
            warnings.simplefilter("ignore")
        validate(cfg, num_train, data.shape)
    device = distributed.local_device(distributed.resolve_device(t_cfg.device))

    # The one writer of the run directory: rank 0 holds its lock until training ends.
    held: list[rundir.RunLock] = []

    def open_run_dir() -> None:
        held.append(rundir.open_run_dir(out, None if resume else cfg, resume, force, seen))

    distributed.main_only(open_run_dir)
    started: list[bool] = []  # set when the first iteration begins
    try:
        return _train_locked(cfg, out, resume, max_iters, progress, data, device, started)
    except BaseException:
        if held and not resume and not started:
            rundir.abandon_new_run(out, held[0])  # failed in setup: leave no folder behind
        raise
    finally:
        for lock in held:
            lock.release()


def _train_locked(
    cfg: Config,
    out: Path,
    resume: bool,
    max_iters: int | None,
    progress: bool,
    data: Dataset,
    device: torch.device,
    started: list[bool],
) -> LatentEBM:
    """The body of :func:`train`, in a prepared run directory whose lock rank 0 holds;
    ``started`` receives an item when the loop begins."""
    main = distributed.is_main()
    t_cfg = cfg.train
    num_train = len(data.train_x)
    iters, stages, batch = t_cfg.iters, num_stages(cfg), t_cfg.batch_size
    rows = distributed.shard(batch)  # this process's rows of every global batch

    # Build the model, the generator's optimiser and the memory bank.
    torch.manual_seed(t_cfg.seed)
    model = build_model(cfg, data.shape).to(device)
    model.compile_generator(t_cfg.compile)
    opt_g = torch.optim.Adam(
        model.generator.parameters(), lr=t_cfg.lr, betas=(t_cfg.beta1, t_cfg.beta2)
    )
    bank = MemoryBank(num_train, cfg.model.nz, t_cfg.seed, device)
    amortiser = model.amortiser  # train.post_init=amortised: the chain's learned start
    distributed.average_gradients(
        opt_g, *model.prior.optims, *(amortiser.optims if amortiser else [])
    )
    start, elapsed, window, best, refit = 0, 0.0, defaultdict(list), None, None
    pending = False  # the evaluation due at `start` is still to do

    # Restore a checkpoint.
    ckpt_path, metrics_path = out / rundir.CHECKPOINT, out / rundir.METRICS
    if resume and ckpt_path.exists():
        state = rundir.load_checkpoint(ckpt_path, cfg, resume=True)
        rundir.load_model_state(model, state, ckpt_path)
        refuse_non_finite(state, cfg, ckpt_path)
        optims = {"opt_g": [opt_g], "opt_prior": model.prior.optims}
        if amortiser is not None:
            optims["opt_amortiser"] = amortiser.optims
        rundir.restore_training(state, ckpt_path, optims, bank)  # optimisers, bank, rng
        start, elapsed, refit = state["iteration"], state["elapsed"], state.get("refit")
        window = defaultdict(list, state["window"])
        best = state.get("best")  # {"fid", "iteration"} of best.pt (train.keep_best)
        pending = bool(state.get("eval_pending"))  # an evaluation cut short by a signal
        if main:
            rundir.truncate_metrics(out, start)
    elif resume and main:
        metrics_path.unlink(missing_ok=True)

    def checkpoint_state(iteration: int, eval_pending: bool = False) -> dict[str, Any]:
        # Tensors and plain values only: loaded with weights_only=True (rundir). Training
        # draws no number from numpy's global generator, so its state is not kept.
        state = {
            "iteration": iteration,
            "elapsed": elapsed + time.perf_counter() - t0,
            "shape": data.shape,
            "config": config_to_dict(cfg),
            "model": model.state_dict(),
            "opt_g": opt_g.state_dict(),
            "opt_prior": model.prior.optimizer_state(),
            "opt_amortiser": amortiser.optimizer_state() if amortiser else [],
            "bank": bank.state_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "window": dict(window),
            "best": monitor.best,
            "refit": refit,  # last losses of the post-hoc refit, once done (None before)
            "eval_pending": eval_pending,  # the evaluation of `iteration` was cut short
        }
        refuse_non_finite(state, cfg, None, iteration, rundir.kept_checkpoint(out, last_saved))
        return state

    def finite(iteration: int, scalars: dict[str, float]) -> None:
        # Before anything is saved: a non-finite loss or parameter stops the run, naming it.
        check_finite(model, scalars, cfg, iteration, rundir.kept_checkpoint(out, last_saved))

    stop = iters if max_iters is None else min(max_iters, iters)
    last_saved = start
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=stop, initial=start, disable=not (progress and main), desc="train", unit="it")
    monitor = Monitor(cfg, out if main else None, data, device, start, best)  # rank 0 writes
    started.append(True)
    with distributed.catch_signals() as signals, contextlib.ExitStack() as closing:
        closing.callback(monitor.close)
        closing.callback(bar.close)

        def evaluate(done: int, stage: int, seconds: float) -> tuple[int, bool]:
            # The evaluation due after `done` iterations, if any (its time is not training
            # time); a signal stops it at once. Returns the signal that stops the run, shared
            # so that every process stops here (0: none), and whether it was cut short.
            nonlocal t0
            if not monitor.due(done):
                return 0, False
            cut, state = False, functools.partial(checkpoint_state, done)
            try:
                t0 += monitor.evaluate(model, done, stage, seconds, state, signals.interruptible)
            except KeyboardInterrupt:
                if not signals.first:  # raised by code, not by a signal
                    raise
                cut = True
            except ChainDivergedError as e:
                kept = rundir.kept_checkpoint(out, last_saved)
                message = f"iteration {done}: {e}; stopped, {kept}"
                raise ChainDivergedError(message, e.rows) from None
            return distributed.mean_scalars({}, signals.first)[1], cut

        def interrupted(
            signum: int, where: str, saved: str = "checkpoint saved, continue"
        ) -> NoReturn:
            name = signal.Signals(signum).name
            raise TrainingInterrupted(f"{name} {where}; {saved} with --resume --out {out}")

        if pending:  # the evaluation a signal cut short: first, as in an uninterrupted run
            signum, pending = evaluate(start, stage_of(start - 1, iters, stages), elapsed)
            if main:
                rundir.save_checkpoint(ckpt_path, checkpoint_state(start, pending), last_saved)
            if signum:
                interrupted(signum, f"during the evaluation at iteration {start}")

        for it in range(start, stop):
            stage = stage_of(it, iters, stages)
            if window and window["stage"][-1] != stage:  # flush the window at a transition
                monitor.line(window, it, elapsed + time.perf_counter() - t0)
            model.prior.set_stage(stage, bank)  # also puts frozen ratios in eval mode
            batch_idx = rng.batch_indices(it, num_train, batch, t_cfg.seed)
            idx = batch_idx[rows]
            x = to_float(data.train_x[idx]).to(device)
            streams = rng.Streams(t_cfg.seed, it, batch, rows, device)

            try:
                with distributed.fail_together():  # one process's diverged chain stops all
                    loss_g, logs = train_iteration(model, opt_g, bank, x, idx, streams, cfg)
            except ChainDivergedError as e:
                finite(it + 1, {})  # a chain under non-finite networks: name those
                where = f" (process {e.process})" if hasattr(e, "process") else ""
                raise ChainDivergedError(
                    f"iteration {it + 1}{where}: {e}; stopped, "
                    f"{rundir.kept_checkpoint(out, last_saved)}",
                    e.rows,
                ) from None

            # Share the processes' new bank rows, their mean losses and any signal. From here
            # on only the shared `signum` decides: a signal arriving later counts at the next
            # sharing point (the next iteration, an evaluation, or the end of the loop).
            if distributed.world_size() > 1:
                bank.write(batch_idx, distributed.gather_rows(bank.read(idx)))
            scalars, signum = distributed.mean_scalars(
                {"loss_g": loss_g.item(), **logs}, signals.first
            )
            done = it + 1
            finite(done, scalars)

            # Log window means, evaluate (its time is not training time), checkpoint.
            window["stage"].append(stage)
            for k, v in scalars.items():
                window[k].append(v)
            logs = {k: f"{v:.3f}" for k, v in scalars.items() if k != "loss_g"}
            seconds = elapsed + time.perf_counter() - t0  # one clock for the line and the eval
            if done % t_cfg.log_every == 0:
                monitor.line(window, done, seconds)
            bar.update(1)
            bar.set_postfix(stage=stage, loss_g=f"{scalars['loss_g']:.1f}", **logs)
            if done == iters:  # the last transition: every ratio joins the prior
                model.prior.set_stage(stage_of(iters, iters, stages), bank)
            pending = monitor.due(done)
            if not signum:
                signum, pending = evaluate(done, stage, seconds)
            if done % t_cfg.ckpt_every == 0 or done == stop or signum:
                if main:
                    state = checkpoint_state(done, pending)
                    rundir.save_checkpoint(ckpt_path, state, last_saved)
                last_saved = done
            kept = t_cfg.keep_every and (done % t_cfg.keep_every == 0 or done == iters)
            if kept and main:
                keep = {
                    "iteration": done,
                    "elapsed": elapsed + time.perf_counter() - t0,  # training seconds so far
                    "shape": data.shape,
                    "model": model.state_dict(),
                }
                rundir.save_snapshot(out, keep, last_saved, cfg)
            if signum:
                distributed.barrier()  # the checkpoint exists before any process exits
                cut = " during its evaluation" if pending else ""
                interrupted(signum, f"at iteration {done}{cut}")
        bar.close()

        # A signal after the last sharing point (e.g. while the last checkpoint was written)
        # stops every process here; the checkpoint of the last iteration exists.
        signum = distributed.mean_scalars({}, signals.first)[1]
        if signum:
            interrupted(signum, f"after iteration {stop}")
        if stop == iters and refit is None:  # the post-hoc refit; every process does the same
            try:
                with signals.interruptible():
                    refit = refit_prior(model.eval(), data, cfg, progress and main)
            except KeyboardInterrupt:
                if not signals.first:  # raised by code, not by a signal
                    raise
                cut = f"the checkpoint of iteration {iters} is kept, redo the refit"
                interrupted(signals.first, "during the post-hoc refit", cut)
            except LatentEBMError as e:
                kept = rundir.kept_checkpoint(out, last_saved)
                raise LatentEBMError(f"after iteration {iters}: {e}; stopped, {kept}") from None
            if refit is not None and main:
                rundir.save_checkpoint(ckpt_path, checkpoint_state(iters), last_saved)
        if signals.first:  # while the refit was saved: the run is complete
            interrupted(signals.first, "at the end of training", "the run is complete; check")
    distributed.barrier()  # rank 0's files are complete when train() returns anywhere
    return model.eval()


def train_iteration(
    model: LatentEBM,
    opt_g: torch.optim.Optimizer,
    bank: MemoryBank,
    x: torch.Tensor,
    idx: torch.Tensor,
    streams: rng.Streams,
    cfg: Config,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Steps 2-4 of Algorithm 1 on one batch, at the prior's current stage.

    Arguments:
        model: the model in training mode, its prior already at this iteration's stage.
        opt_g: the generator's optimiser.
        bank: the memory bank; rows ``idx`` receive the posterior samples.
        x: the batch ``(B, C, H, W)`` in ``[-1, 1]``, data-set rows ``idx`` ``(B,)``.
        streams: this iteration's random streams (:class:`latent_ebm.rng.Streams`).
        cfg: the run's configuration: the posterior chain and its start
            (:func:`latent_ebm.posterior.posterior_step`: ``train.post_init`` ``noise``, the
            paper's ``N(0, I)`` draw; ``bank``, the example's last posterior sample;
            ``amortised``, a draw of the amortiser, which is then fitted to the chain's
            samples) and ``train.precision`` (:mod:`latent_ebm.precision`: bf16 autocast in
            the chain and the generator's forward pass; ``z``, the losses, the prior's and the
            amortiser's updates and the optimiser steps stay float32).

    Returns:
        The generator loss (Eq. 7, after its update's forward pass; float32) and the logs of
        the prior and the amortiser.

    Raises:
        ChainDivergedError: the posterior chain (its message names the data-set examples) or
            the prior's chain reached NaN/Inf; the message names the setting to change
            (:func:`latent_ebm.langevin.remedy`).
    """
    # Posterior samples under the current prior (Alg. 1 step 2), into the memory bank; the
    # amortiser, if any, learns from them.
    z, amortiser_logs = posterior_step(model, bank, x, idx, streams, cfg)

    # Update the ratio network of this stage (Alg. 1 step 3), in float32.
    try:
        logs = model.prior.train_step(z, streams, bank)
    except ChainDivergedError as e:
        prior = Cause("the prior's log-density", model.prior.log_prob, setting(cfg, "prior.lr"))
        z0 = streams.normal(rng.PRIOR_DRAW, cfg.model.nz)  # where the prior's chain starts
        fix = remedy(z0, [prior], setting(cfg, "prior.prior_step_size"))
        raise ChainDivergedError(f"the prior's chain diverged: {e}; {fix}", e.rows) from None

    # Update the generator at the posterior samples (Alg. 1 step 4, Eq. 7). Only the forward
    # pass is autocast: backward follows the forward's dtypes, the weights stay float32.
    with autocast(cfg.train.precision, x.device):
        loss_g = model.generator_loss(x, z)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return loss_g, {**logs, **amortiser_logs}
