"""Several priors fitted post hoc on the same trained generators (issue 15): the prior
estimators compared with everything else held fixed.

``gaussian``, ``nce`` and ``tre`` runs (and ``adaptive`` with ``prior.inference=gaussian``)
train bit-identical generators: their training-time posterior chains all run under
``N(0, I)`` (README, "Why the adaptive prior cannot win on digits: the ceiling"). On such a
generator the prior is whatever the refit (the ``refit`` section, ARCHITECTURE §4) learns from the
aggregate posterior, so the priors can be compared on one generator, paired by seed:

    python benchmarks/priors_on_generator.py runs/fm-cpu/runs/nce{,-seed1,-seed2} \\
        --priors nce adaptive-K4 tre-K4 --set refit.steps=16000 \\
        --set adaptive:refit.sampler=chain --fid-n 5000 --out runs/pog

For every run (a generator), the script draws the aggregate posterior once
(:func:`latent_ebm.refit.refit_rows`, the run's own chain, ``refit.samples`` rows); every prior
of ``--priors`` is built from the run's config with its own settings (``kind`` or
``kind-K<stages>``, optionally ``/tag`` to tell two settings of one kind apart), re-initialised
and refitted on those same rows (the fit of ``latent-ebm refit``,
:func:`latent_ebm.experiments.posthoc.refitted`; the command draws its own rows), and scored by
the FID of ``--fid-n`` samples of the run's test-time chain (``sample.steps`` of
``sample.step_size``) in classifier features, seeded by the run's ``train.seed``. ``--set
KEY=VALUE`` applies to every prior, ``--set SCOPE:KEY=VALUE`` to the priors whose label or kind
is ``SCOPE``. ``gaussian`` is ``N(0, I)`` (nothing to refit). The ceiling, the FID of the
generator at the aggregate posterior rows themselves, is reported per run.

``--steps 500`` also scores every prior with chains of 500 steps (a correct prior does not get
worse with a longer chain). The priors are done one by one, each on every run, in the order
given. Resumable: each (run, prior) result is a line of ``OUT/results.jsonl`` and each refitted
prior is kept in ``OUT/priors/<run>/<label>.pt``; a rerun skips what is done, and a new
``--steps`` value is scored on the kept priors without refitting them.

Writes ``OUT/priors_on_generator.{md,json}``: mean ± standard error over the runs, and each
prior against the first, paired by run (the mean of the per-run differences and its standard
error) and unpaired (the project's criterion).

``--curve NAME=LABEL,LABEL,...`` (repeatable) also draws the paper's Table 3 figure,
``OUT/stages.png``: each curve's FID (and FID at every ``--steps``) against the number of
stages of its priors (``gaussian`` 0, ``nce`` 1, ``kind-K<k>`` k), mean ± SE over the runs.
For example ``--curve adaptive=nce,adaptive-K2,adaptive-K4 --curve tre=nce,tre-K2,tre-K4``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from latent_ebm.config import apply_overrides, load_config, validate
from latent_ebm.evaluation import fid_at
from latent_ebm.evaluation.classifier import classifier_features
from latent_ebm.evaluation.metrics import reference_stats
from latent_ebm.experiments.figures import draw_stage_curves, points_of
from latent_ebm.experiments.posthoc import refitted
from latent_ebm.experiments.stats import CRITERION, beats, paired, summarize
from latent_ebm.files import load_weights, save_atomic
from latent_ebm.priors import PRIORS, build_prior
from latent_ebm.refit import refit_rows
from latent_ebm.rundir import CONFIG, load_data, load_run
from latent_ebm.sampling import sample_latents


def script_command(script: str, argv: list[str] | None) -> str:
    """The command line that ran the benchmark ``script`` (its ``__file__``) with ``argv``
    (``None``: this process's arguments), as the tables record it."""
    return f"python benchmarks/{Path(script).name} " + " ".join(argv or sys.argv[1:])


def parse_label(label: str) -> tuple[str, int | None]:
    """The prior kind and stages of ``label`` (``kind``, ``kind-K<k>``, ``.../tag``); stages
    ``None`` without ``-K``."""
    kind, _, k = label.split("/")[0].partition("-K")
    if kind not in PRIORS:
        raise SystemExit(f"error: --priors {label}: unknown kind '{kind}' (one of {list(PRIORS)})")
    if k and not k.isdigit():
        raise SystemExit(f"error: --priors {label}: '-K' takes a number of stages, got '{k}'")
    return kind, int(k) if k else None


def prior_settings(label: str, sets: list[str]) -> list[str]:
    """The config settings of the prior ``label`` (:func:`parse_label`): its kind and stages,
    then the ``--set`` settings that apply to it, in order."""
    kind, stages = parse_label(label)
    out = [f"prior.kind={kind}"] + ([f"prior.stages={stages}"] if stages is not None else [])
    for s in sets:
        scope, sep, setting = s.partition(":")
        if not sep:
            out.append(s)
        elif scope in (label, kind):
            out.append(setting)
    return out


def stages_of(label: str) -> int:
    """The number of stages of the prior ``label`` on a Table 3 axis: 0 for ``gaussian``, 1
    for ``nce`` (and a kind without ``-K``), else the ``K`` of ``kind-K<k>``."""
    kind, stages = parse_label(label)
    return 0 if kind == "gaussian" else stages or 1


def parse_curve(text: str) -> tuple[str, list[str]]:
    """``NAME=LABEL,LABEL,...`` of ``--curve``: the curve's name and its priors' labels."""
    name, sep, labels = text.partition("=")
    if not sep or not name or not labels:
        raise SystemExit(f"error: --curve {text}: expected NAME=LABEL,LABEL,...")
    return name, labels.split(",")


def stage_figure(
    results: list[dict], curves: list[tuple[str, list[str]]], keys: list[str], path: Path
) -> Path:
    """The Table 3 figure of ``curves``: one panel per result key (``fid``, ``fid500``, ...),
    each curve's mean ± SE over the runs against :func:`stages_of` its labels."""
    panels = []
    for key in keys:
        drawn = {}
        for name, labels in curves:
            by_stage = {}
            for label in labels:
                values = [r[key] for r in results if r["label"] == label and key in r]
                if values:
                    by_stage[stages_of(label)] = values
            drawn[name] = points_of(by_stage)
        steps = key[3:] or "default"
        panels.append((f"FID ({steps} chain steps)", drawn))
    n = max((p[3] for _, d in panels for pts in d.values() for p in pts), default=0)
    title = f"Priors refitted on the same generators ({n} runs; bars ± 1 SE)"
    return draw_stage_curves(panels, title, path)


def prior_path(out: Path, run: str, label: str) -> Path:
    """Where the refitted prior of ``label`` on ``run`` is kept (its state dict)."""
    return out / "priors" / Path(run).name / (label.replace("/", "_") + ".pt")


def load_kept(out: Path, run: str, label: str, cfg: Any) -> Any:
    """The prior ``label`` that an earlier call kept for ``run`` in ``out``, built from the
    run's config ``cfg`` (its kind and stages from the label)."""
    path = prior_path(out, run, label)
    if not path.exists():
        raise SystemExit(
            f"error: no refitted prior {label} of {run} in {out}: run this script first"
        )
    c = validate(apply_overrides(copy.deepcopy(cfg), prior_settings(label, [])))
    prior = build_prior(c)
    prior.load_state_dict(load_weights(path))
    return prior


def _fitted(run: str, label: str, sets: list[str], z_q: Any, out: Path) -> tuple[Any, Any, dict]:
    """The run's model and config with the prior ``label``: loaded from ``out`` if it was
    refitted before, else refitted on ``z_q`` (and kept). The dict: the refit's losses and
    seconds (with the held-out stopping rule also each fit's kept updates and held-out loss),
    only when it ran here."""
    cfg, model, _ = load_run(run)
    cfg = validate(apply_overrides(copy.deepcopy(cfg), prior_settings(label, sets)))
    path = prior_path(out, run, label)
    if path.exists():
        model.prior = build_prior(cfg).to(model.device)
        model.prior.load_state_dict(load_weights(path))
        return cfg, model, {}
    t = time.time()
    losses = refitted(model, cfg, z_q, progress=True)  # latent-ebm refit's fit ([]: gaussian)
    finite = [x if math.isfinite(x) else None for x in losses]  # no update ran: NaN
    info = {"refit_losses": finite, "refit_s": round(time.time() - t, 1)}
    fits = getattr(model.prior, "last_refit", [])
    if any(fit.held is not None for fit in fits):  # the held-out stopping rule ran
        info |= {"refit_updates": [f.updates for f in fits], "refit_held": [f.held for f in fits]}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(model.prior.state_dict(), path)
    return cfg, model, info


def _key(steps: int, cfg: Any) -> str:
    """The result key of the FID with chains of ``steps``: ``fid`` at the run's
    ``sample.steps``, ``fid<steps>`` otherwise."""
    return "fid" if steps == cfg.sample.steps else f"fid{steps}"


def scoring_context(cfg: Any, networks: Sequence[str] = ("classifier",)) -> dict[str, Any]:
    """What every FID of the runs of one data set shares: the training images (``train_x``),
    for each feature network of ``networks`` its features and their reference statistics
    (``spaces``: network -> (features, reference); the first also as ``ext`` and ``ref``); and
    the test images (``test_x``)."""
    data = load_data(cfg)
    spaces = {}
    for network in networks:
        ext = classifier_features(data, progress=True, network=network)
        spaces[network] = (ext, reference_stats(data.train_x, ext, 500, True))
    ext, ref = spaces[networks[0]]
    return {
        "train_x": data.train_x,
        "test_x": data.test_x,
        "ext": ext,
        "ref": ref,
        "spaces": spaces,
    }


def read_results(out: Path) -> dict[tuple[str, str | None], dict]:
    """``OUT/results.jsonl`` by (run, label); the label ``None`` holds the run's ceiling."""
    path = out / "results.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {(r["run"], r["label"]): r for r in map(json.loads, lines)}


def _result_key(steps: int, cfg: Any, network: str) -> str:
    """The result key of the FID of ``steps``-step chains (:func:`_key`) in ``network``'s
    features: :func:`_key` for ``classifier`` (the tables' FID), ``_<network>`` added for
    another."""
    return _key(steps, cfg) + ("" if network == "classifier" else f"_{network}")


def scores(cfg: Any, model: Any, steps: list[int], n: int, ctx: dict) -> dict[str, float]:
    """FID of ``n`` samples of the test-time chain for each number of ``steps`` (keys
    :func:`_key`), in every feature space of ``ctx["spaces"]`` (the same samples; a space
    other than ``classifier`` adds its name to the key, e.g. ``fid_classifier2``)."""
    out = {}
    for k in steps:
        z = sample_latents(
            model, n, seed=cfg.train.seed, progress=True, steps=k, step_size=cfg.sample.step_size
        )
        for network, (ext, ref) in ctx["spaces"].items():
            out[_result_key(k, cfg, network)] = fid_at(model, z, ctx["train_x"], ext, reference=ref)
    return out


def table(
    results: list[dict],
    labels: list[str],
    runs: list[str],
    ceilings: dict,
    extra: Sequence[str] = (),
    key: str = "fid",
) -> list[str]:
    """The Markdown: each prior's FID (result ``key``) over the runs, and against the first
    prior; then the FIDs at the ``extra`` chain lengths (keys ``fid<steps>``) and their ratio
    to ``fid``; then the ceiling (``key`` ``fid`` only)."""
    by = {(r["run"], r["label"]): r[key] for r in results if key in r}
    first = {run: by[(run, labels[0])] for run in runs if (run, labels[0]) in by}
    lines = [
        f"| prior | n | FID (mean ± SE) | per run | vs {labels[0]}, paired (mean ± SE of "
        "differences) | beats, paired | beats, unpaired |",
        "|---|---|---|---|---|---|---|",
    ]
    for label in labels:
        have = [run for run in runs if (run, label) in by]  # a prior may lack a run (--table)
        if not have:
            continue
        vals = [by[(run, label)] for run in have]
        s = summarize(vals)
        cells = [label, str(len(have)), s.format(2), " / ".join(f"{v:.2f}" for v in vals)]
        both = [run for run in have if run in first]
        if label == labels[0] or not both:  # not against itself, nor without a common run
            cells += ["-", "-", "-"]
        else:
            d, verdict = paired([by[(r, label)] for r in both], [first[r] for r in both])
            cells += [d.format(2), verdict, beats(s, summarize(list(first.values())))]
        lines.append("| " + " | ".join(cells) + " |")
    if extra:
        lines += [
            "",
            "| prior | " + " | ".join(f"{k[3:]} steps | ratio to FID" for k in extra) + " |",
            "|---|" + "---|---|" * len(extra),
        ]
        for label in labels:
            row = [r for run in runs for r in results if (r["run"], r["label"]) == (run, label)]
            row = [r for r in row if all(k in r for k in extra)]
            if not row:
                continue
            cells = []
            for k in extra:
                cells.append(summarize([r[k] for r in row]).format(2))
                cells.append(summarize([r[k] / r["fid"] for r in row]).format(3))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if key != "fid":
        return lines
    c = summarize([ceilings[run] for run in runs])
    lines += [
        "",
        f"Ceiling (FID of the generator at the aggregate posterior rows): {c.format(2)} "
        f"({' / '.join(f'{ceilings[r]:.2f}' for r in runs)}).",
        "",
        "Paired: holds when the mean of the per-run differences is more than twice its standard "
        f"error in the prior's favour. Unpaired: {CRITERION}",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="trained run directories (generators)")
    ap.add_argument("--priors", nargs="+", required=True, metavar="LABEL")
    ap.add_argument("--set", action="append", default=[], metavar="[SCOPE:]KEY=VALUE")
    ap.add_argument("--fid-n", type=int, default=5000)
    ap.add_argument(
        "--steps", type=int, nargs="+", default=[], help="also FID at these chain lengths"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--classifier2",
        action="store_true",
        help="also the FID in classifier2 features, on the same samples (key fid_classifier2)",
    )
    ap.add_argument(
        "--curve",
        action="append",
        default=[],
        metavar="NAME=LABEL,...",
        help="draw OUT/stages.png: FID against stages for these priors (repeatable)",
    )
    ap.add_argument(
        "--table", action="store_true", help="only write the table of what is done, compute nothing"
    )
    a = ap.parse_args(argv)
    for label in a.priors:
        prior_settings(label, a.set)  # bad labels fail before any work
    curves = [parse_curve(c) for c in a.curve]
    for name, labels in curves:
        if missing := [x for x in labels if x not in a.priors]:
            raise SystemExit(f"error: --curve {name}: {missing} not among --priors")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "results.jsonl"
    results = read_results(a.out)

    def save() -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in results.values()))

    networks = ("classifier", "classifier2") if a.classifier2 else ("classifier",)
    ctx: dict[str, Any] = {}
    z_qs: dict[str, Any] = {}

    def z_q(run: str) -> Any:
        """The run's aggregate posterior rows (drawn once; with the data, features, ceiling)."""
        if run not in z_qs:
            cfg, model, _ = load_run(run)
            if not ctx:
                ctx.update(scoring_context(cfg, networks))
            z_qs[run] = refit_rows(model, ctx["train_x"], cfg, progress=True)
            if (run, None) not in results:
                c = fid_at(model, z_qs[run], ctx["train_x"], ctx["ext"], reference=ctx["ref"])
                results[(run, None)] = {"run": run, "label": None, "ceiling": c}
                save()
        return z_qs[run]

    for label in [] if a.table else a.priors:  # prior by prior: the first complete first
        for run in a.runs:
            cfg = load_config(Path(run) / CONFIG)  # the config only: no checkpoint to load
            steps = [cfg.sample.steps, *a.steps]
            old = results.get((run, label), {"run": run, "label": label})
            wanted = [k for k in steps if any(_result_key(k, cfg, f) not in old for f in networks)]
            if (run, None) in results and not wanted:
                continue
            cfg, model, info = _fitted(run, label, a.set, z_q(run), a.out)
            old.update(info)
            old.update(scores(cfg, model, wanted, a.fid_n, ctx))
            results[(run, label)] = old
            save()
            print(f"{run} {label}: FID {old['fid']:.2f}", file=sys.stderr)
    scored = [r for r in results.values() if r["label"] in a.priors and r["run"] in a.runs]
    ceilings = {r["run"]: r["ceiling"] for r in results.values() if r["label"] is None}
    command = script_command(__file__, argv)
    extra = [f"fid{s}" for s in a.steps]
    md = [f"Command: `{command}`", "", *table(scored, a.priors, a.runs, ceilings, extra)]
    if any("fid_classifier2" in r for r in scored):
        md += [
            "",
            "The same samples in classifier2 features (`--classifier2`):",
            "",
            *table(scored, a.priors, a.runs, ceilings, key="fid_classifier2"),
        ]
    (a.out / "priors_on_generator.md").write_text("\n".join(md) + "\n")
    (a.out / "priors_on_generator.json").write_text(
        json.dumps(
            {"command": command, "results": list(results.values())}, indent=2, allow_nan=False
        )
        + "\n"
    )
    if curves:
        print(f"wrote {stage_figure(scored, curves, ['fid', *extra], a.out / 'stages.png')}")
    print("\n".join(md))
    return 0 if all(math.isfinite(r["fid"]) for r in scored) else 1


if __name__ == "__main__":
    sys.exit(main())
