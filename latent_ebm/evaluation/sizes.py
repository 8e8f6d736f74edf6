"""The sizes of an evaluation or a sampling request, checked before the work (issue 30):
too much memory or work is refused in one line, a long request is announced with its
estimated time (:mod:`latent_ebm.config.sizes` holds the estimates and the limits)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch

from latent_ebm.config.sizes import (
    FLOAT_BYTES,
    activation_elements,
    check_memory,
    check_work,
    format_bytes,
)
from latent_ebm.model import LatentEBM
from latent_ebm.refit import own_chain
from latent_ebm.sampling import sample_latents

__all__ = ["LONG_SECONDS", "check_request", "check_sampling"]

LONG_SECONDS = 600.0  # sampling estimated to take longer than this is announced first


def check_sampling(
    model: LatentEBM,
    rows: int,
    steps: int,
    *,
    method: str = "langevin",
    proposals: int = 10,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
    keep_images: bool = True,
    options: str = "--n and --steps",
    rows_name: str = "--n",
    estimate_time: bool = True,
    extra: dict[str, int] | None = None,
) -> None:
    """The sizes of a request for ``rows`` samples (or chains) of ``steps`` steps, checked
    before any work: refused in one line when the work exceeds
    :func:`~latent_ebm.config.sizes.check_work`'s 10**12 chain steps or the estimated
    memory exceeds what ``device`` has (:func:`~latent_ebm.config.sizes.check_memory`:
    the latents, the images when ``keep_images``, a batch of chains through the generator,
    the SIR proposals, and the ``extra`` parts in bytes; ``rows_name`` names what sets
    ``rows``); a warning with the estimated time
    when it exceeds :data:`LONG_SECONDS`, measured on one step of one batch of the prior
    chain (``estimate_time``; only when the request is large, so small ones cost nothing).

    Raises:
        LatentEBMError: too much work or memory, naming ``options``.
    """
    per_chain = proposals if method == "sir" else max(steps, 1)
    check_work(rows, per_chain, f"{options} ({rows:,} x {per_chain:,})")
    nz, batch = model.nz, min(batch_size, rows)
    one = torch.zeros(1, nz, device=model.device)
    with torch.no_grad():
        image = model.generator(one).numel()
    per_row = activation_elements(model.generator, one)
    parts = {
        f"the latents ({rows_name}, model.nz)": rows * nz * FLOAT_BYTES,
        "a batch of chains (--batch-size, model.ngf)": batch * (2 * per_row + image) * FLOAT_BYTES,
    }
    if keep_images:  # the decoded floats, their copy and the uint8 images
        parts[f"the images ({rows_name})"] = rows * image * (2 * FLOAT_BYTES + 1)
    if method == "sir":  # the candidates, their copies, and the float64 weights and CDF
        parts["the SIR proposals (--proposals, model.nz)"] = (
            batch * proposals * (3 * nz + 5) * FLOAT_BYTES
        )
    check_memory({**parts, **(extra or {})}, str(device), "sampling")
    if not estimate_time or rows * per_chain < 10**7:
        return
    probe = min(batch, 100)
    t0 = time.perf_counter()
    sample_latents(model, probe, method=method, steps=1, proposals=proposals, batch_size=probe)
    seconds = (time.perf_counter() - t0) / probe * rows * per_chain
    if seconds > LONG_SECONDS:
        warnings.warn(
            f"{options}: {rows:,} samples of {per_chain:,} steps take about "
            f"{seconds / 3600:.3g} h here (measured on one step; memory about "
            f"{format_bytes(sum(parts.values()))}); Ctrl-C stops it, or lower them",
            stacklevel=2,
        )


def check_request(r: Any, metric: str) -> None:
    """:func:`check_sampling` of the request ``r`` of :func:`latent_ebm.evaluation.evaluate_run`
    (its model, data, options and chains) for ``metric``: ``fid``'s ``n`` prior samples (or
    aggregate-posterior samples) and their features, or the posterior chains of the test
    split (``recon``, ``anomaly``), before the work."""
    if metric == "fid":
        rows, aggregate = r.n, r.method == "aggregate"
        steps = r.chain(own_chain(r.cfg)[1] if aggregate else r.cfg.sample.steps, 1.0)["steps"]
        # Each image's features: at least 128 numbers (the classifier's; Inception's 2048).
        extra = {"the images' features (--n)": rows * 128 * 4}
        chain = "--proposals" if r.method == "sir" else "--steps"
        method = "langevin" if aggregate else r.method
        options, estimate = f"--n and {chain}", not aggregate
    else:
        rows, steps, extra = len(r.data.test_x), r.posterior_chain()["steps"], {}
        options, method, estimate = "--steps (on the test split)", "langevin", False
    check_sampling(
        r.model,
        rows,
        steps,
        method=method,
        proposals=r.proposals,
        batch_size=r.batch_size,
        device=r.device,
        keep_images=False,
        options=options,
        rows_name="--n" if metric == "fid" else "the test split",
        estimate_time=estimate,
        extra=extra,
    )
