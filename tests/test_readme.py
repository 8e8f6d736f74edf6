"""The README runs as written: its Python example, and every command of its other code blocks
in the order shown, each rewritten by one rule of :data:`RULES` to run in seconds (the tiny
config of ``tests/conftest.py``, fewer images) and checked, right after it ran, for what it
must write. A README command that no rule matches fails
:func:`test_every_readme_command_has_a_rule`; an option of the command-line synopsis that the
parser does not know fails :func:`test_synopsis_options_exist`."""

import contextlib
import io
import json
import math
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import yaml

from latent_ebm.arguments import build_parser
from latent_ebm.cli import main
from latent_ebm.rundir import read_metrics
from tests.conftest import SETS, assert_same_state, checkpoint_state
from tests.test_distributed import ATOL, RTOL

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PREFIXES = ("latent-ebm", "torchrun", "make", "pip")
SYNOPSIS = "Command line"  # the heading of the block of usage lines: checked, not run
# The tiny settings but the data set: the README's own --set follow them and win.
TINY_SETS = [
    a
    for k, v in zip(SETS[::2], SETS[1::2], strict=True)
    if not v.startswith("data.")
    for a in (k, v)
]
ITERS = 12  # the tiny train.iters
STOP = 6  # --max-iters of the README's interrupted run, below ITERS

pytestmark = pytest.mark.filterwarnings("ignore:each stage lasts")


def readme_blocks(text: str) -> list[tuple[str, list[str]]]:
    """``(heading, command lines)`` of every fenced block but ``python``: the lines that start
    with one of :data:`PREFIXES`, an indented line joined to the one above, ``#`` comments
    dropped, spaces normalised."""
    blocks, heading = [], ""
    for part in re.split(r"^(```\w*\n.*?^```)$", text, flags=re.S | re.M):
        if not part.startswith("```"):
            heads = re.findall(r"^#+ (.+)$", part, re.M)
            heading = heads[-1] if heads else heading
        elif not part.startswith("```python"):
            lines = []
            for line in part.splitlines()[1:-1]:
                if line.startswith((" ", "\t")) and lines:
                    lines[-1] += " " + line.strip()
                elif line.startswith(PREFIXES):
                    lines.append(line)
            blocks.append((heading, [" ".join(shlex.split(x, comments=True)) for x in lines]))
    return blocks


def readme_commands() -> list[str]:
    """The README's commands in order: every block's but the synopsis's."""
    blocks = readme_blocks(README.read_text())
    return [line for heading, lines in blocks if heading != SYNOPSIS for line in lines]


@dataclass
class Ran:
    """What one README command did: the arguments it ran with, its status (``None``: not run,
    only checked) and output."""

    args: list[str]
    code: int | None
    out: str = ""
    err: str = ""


@dataclass
class Place:
    """Where the commands run: ``tour/`` (the quick start's demo, then the tour, in order);
    ``images`` a folder of PNG files for ``PATH/TO/IMAGES``."""

    root: Path
    images: Path
    outcomes: dict = field(default_factory=dict)  # README line -> None or its check's exception

    @property
    def tour(self) -> Path:
        return self.root / "tour"


def in_process(args: list[str], cwd: Path) -> Ran:
    """``latent-ebm ARGS`` through :func:`latent_ebm.cli.main`, in ``cwd``."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as e:  # argparse: an unknown option or subcommand
                code = e.code
    return Ran(args, code, out.getvalue(), err.getvalue().strip())


def set_option(args: list[str], option: str, value: str) -> list[str]:
    """``args`` with the value after ``option`` (which must be there) replaced by ``value``."""
    assert option in args, f"the README command {args} no longer has {option}"
    i = args.index(option) + 1
    return [*args[:i], value, *args[i + 1 :]]


def tiny_train(args: list[str]) -> list[str]:
    """``... train ...`` with the tiny settings first (the command's own options win)."""
    i = args.index("train") + 1
    return [*args[:i], *TINY_SETS, *args[i:], "--no-progress"]


# Runners: a README line -> what it did.


def _train(line: str, place: Place) -> Ran:
    args = tiny_train(line.split()[1:])
    if "--max-iters" in args:
        args = set_option(args, "--max-iters", str(STOP))
    args = [a.replace("PATH/TO/IMAGES", str(place.images)) for a in args]
    args = [a.replace("train.eval_every=500", "train.eval_every=6") for a in args]
    return in_process(args, place.tour)


def _sample(line: str, place: Place) -> Ran:
    return in_process([*set_option(line.split()[1:], "--n", "16"), "--no-progress"], place.tour)


def _eval(line: str, place: Place) -> Ran:
    fewer = {
        "fid": ["--n", "50"],
        "prior-nll": ["--particles", "100", "--repeats", "2"],
        "nll": ["--particles", "100", "--repeats", "2", "--samples", "20", "--chains", "2"],
    }
    args = line.split()[1:]
    return in_process([*args, *fewer[args[args.index("--metric") + 1]]], place.tour)


def _reproduce(line: str, place: Place) -> Ran:
    args = set_option(line.split()[1:], "--scale", "tiny")
    return in_process([*args, "--fid-n", "50", "--no-progress"], place.tour)


def _as_written(line: str, place: Place) -> Ran:
    return in_process(line.split()[1:], place.tour)


def _torchrun(line: str, place: Place) -> Ran:
    """The venv's torchrun on a free port, 2 gloo processes on the CPU."""
    torchrun = Path(sys.executable).parent / "torchrun"
    if not (dist.is_available() and dist.is_gloo_available() and torchrun.exists()):
        pytest.skip("needs torch.distributed gloo and torchrun")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [str(torchrun), "--master-port", str(port), *tiny_train(line.split()[1:])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        args, cwd=place.tour, env=env, capture_output=True, text=True, timeout=300
    )
    return Ran(args, proc.returncode, proc.stdout, proc.stderr.strip())


def makefile_recipe(target: str) -> list[str]:
    """The recipe lines of a Makefile target, ``$(BIN)/`` dropped."""
    text = (ROOT / "Makefile").read_text()
    body = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M).group(1)
    return [line.strip().replace("$(BIN)/", "") for line in body.splitlines()]


def _make_demo(line: str, place: Place) -> Ran:
    """Not make (it installs): the demo target's commands in ``tour/``, the training tiny and
    the FID of 200 images; the tour starts from the run. The training's arguments, the
    outputs of both."""
    commands = [c.split()[1:] for c in makefile_recipe("demo") if c.startswith("latent-ebm ")]
    assert [c[0] for c in commands] == ["train", "eval"], commands
    ran = in_process(tiny_train(commands[0]), place.tour)
    if ran.code != 0:
        return ran
    fid = in_process([*set_option(commands[1], "--n", "200"), "--no-progress"], place.tour)
    return Ran(ran.args, fid.code, ran.out + fid.out, ran.err + fid.err)


def _not_run(line: str, place: Place) -> Ran:
    """``make test`` (the test suite itself, which CI runs) and ``pip install``: checked."""
    return Ran(line.split(), None)


# Checks: what each command must have written.


def _ok(ran: Ran) -> None:
    assert ran.code == 0, f"{' '.join(ran.args)}\n{ran.err}"


def _run_dir(place: Place, ran: Ran) -> Path:
    return place.tour / ran.args[ran.args.index("--out") + 1]


def _check_interrupted(ran: Ran, place: Place) -> None:
    _ok(ran)
    run = _run_dir(place, ran)
    assert checkpoint_state(run)["iteration"] == STOP
    assert [m["iteration"] for m in read_metrics(run)][-1] == STOP


def _check_resumed(ran: Ran, place: Place) -> None:
    """The resumed run equals one trained straight through, bit for bit."""
    _ok(ran)
    straight = [a for a in ran.args if a != "--resume"]
    straight = set_option(straight, "--out", "runs/straight")
    _ok(in_process(straight, place.tour))
    resumed = checkpoint_state(_run_dir(place, ran))
    assert resumed["iteration"] == ITERS
    assert_same_state(checkpoint_state(place.tour / "runs/straight"), resumed)


def _check_imagefolder(ran: Ran, place: Place) -> None:
    _ok(ran)
    run = _run_dir(place, ran)
    assert tuple(checkpoint_state(run)["shape"]) == (3, 64, 64)  # RGB, resized to 64 px
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["name"] == "imagefolder"
    assert math.isfinite(json.loads((run / "eval/recon.json").read_text())["value"])


def _check_watched(ran: Ran, place: Place) -> None:
    """Recon and FID in the metrics log while training; TensorBoard events beside them."""
    _ok(ran)
    run = _run_dir(place, ran)
    evals = {m["iteration"]: m["eval"] for m in read_metrics(run) if "eval" in m}
    assert sorted(evals) == [6, 12] and all({"recon", "fid"} <= e.keys() for e in evals.values())
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


def _check_sample(ran: Ran, place: Place) -> None:
    _ok(ran)
    method = ran.args[ran.args.index("--method") + 1]
    samples = place.tour / ran.args[1] / "samples"
    assert (samples / f"{method}.png").stat().st_size > 0
    images = np.load(samples / f"{method}.npz")["images"]
    assert images.shape == (16, 1, 8, 8) and np.isfinite(images).all()


def _check_eval(ran: Ran, place: Place) -> None:
    _ok(ran)
    metric = ran.args[ran.args.index("--metric") + 1]
    written = place.tour / ran.out.strip().rsplit(" -> ", 1)[1]  # the report it names
    assert written.parent == place.tour / ran.args[1] / "eval"
    report = json.loads(written.read_text())
    assert report["metric"] == metric and report["iteration"] == ITERS
    assert math.isfinite(report["value"])
    if metric == "fid":
        features = ran.args[ran.args.index("--features") + 1] if "--features" in ran.args else None
        assert report["features"]["name"] == (features or "classifier")
    if metric == "prior-nll":
        assert [s["stage"] for s in report["stages"]] == [0, 1, 2]  # 2 stages and N(0, I)
    if metric == "nll":
        assert math.isfinite(report["bits_per_dim"]) and report["bits_per_dim"] > 0


def _check_refit(ran: Ran, place: Place) -> None:
    _ok(ran)
    run = _run_dir(place, ran)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["prior"]["kind"], cfg["prior"]["stages"]) == ("tre", 4)
    assert Path(cfg["refit"]["source"]).resolve() == (place.tour / ran.args[1]).resolve()
    assert checkpoint_state(run)["iteration"] == ITERS


def _check_compare(ran: Ran, place: Place) -> None:
    _ok(ran)
    out = _run_dir(place, ran)
    lines = (out / "compare.md").read_text().splitlines()
    rows = [r.split("|")[1].strip() for r in lines if r.startswith("|")]
    assert {"digits", "digits-tre"} <= set(rows)
    assert (out / "compare.png").stat().st_size > 0


def _check_reproduce(ran: Ran, place: Place) -> None:
    _ok(ran)
    out = _run_dir(place, ran)
    models = [m["name"] for m in json.loads((out / "stages.json").read_text())["models"]]
    assert models == ["gaussian", "nce", "adaptive-K2", "adaptive-K4", "adaptive-K8"]
    for name in models:
        assert (out / "runs" / name / "eval/fid.json").exists()
    assert (out / "stages.md").read_text() in ran.out


def _check_torchrun(ran: Ran, place: Place) -> None:
    """Two processes end where one did (runs/digits, same config and seed)."""
    _ok(ran)
    ddp, one = checkpoint_state(_run_dir(place, ran)), checkpoint_state(place.tour / "runs/digits")
    assert ddp["iteration"] == ITERS
    for k, v in one["model"].items():
        torch.testing.assert_close(ddp["model"][k], v, rtol=RTOL, atol=ATOL)


def _check_dry_run(ran: Ran, place: Place) -> None:
    _ok(ran)
    assert ran.out.startswith("data:\n  name: fashion-mnist\n")  # the resolved config
    assert "parameters: generator" in ran.out and "operations per iteration" in ran.out
    assert not _run_dir(place, ran).exists()  # nothing trained, nothing downloaded


def _check_demo(ran: Ran, place: Place) -> None:
    """The files and the line that the quick start says the demo writes."""
    _ok(ran)
    command = " ".join(ran.args)
    assert "--preset digits" in command and "--out runs/digits" in command
    run = place.tour / "runs/digits"
    for name in ("samples.png", "reconstructions.png", "transition.png", "nce_loss.png"):
        assert (run / name).stat().st_size > 0
    assert read_metrics(run) and checkpoint_state(run)["iteration"] == ITERS
    assert (run / "eval/recon.json").exists() and "recon = " in ran.out
    fid = json.loads((run / "eval/fid.json").read_text())
    assert fid["settings"]["n"] == 200 and fid["features"]["name"] == "classifier"
    assert f"fid = {fid['value']:.4f}" in ran.out


def _check_make_test(ran: Ran, place: Place) -> None:
    recipe = makefile_recipe("test")
    assert "python -m pytest -q" in recipe
    assert {"ruff check .", "ruff format --check ."} <= set(recipe)


def _check_pip(ran: Ran, place: Place) -> None:
    """A ``pip install`` names extras that pyproject.toml defines."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    for named in re.findall(r"\[([\w,-]+)\]", " ".join(ran.args)):
        assert set(named.split(",")) <= extras.keys(), named


@dataclass
class Rule:
    """README commands that ``pattern`` matches (from the start) run by ``run``, then
    ``check``."""

    pattern: str
    run: Callable[[str, Place], Ran]
    check: Callable[[Ran, Place], None]


RULES = [
    Rule(r"make demo$", _make_demo, _check_demo),
    Rule(r"make test$", _not_run, _check_make_test),
    Rule(r"pip install ", _not_run, _check_pip),
    Rule(r"latent-ebm train .*--max-iters ", _train, _check_interrupted),
    Rule(r"latent-ebm train .*--resume", _train, _check_resumed),
    Rule(r"latent-ebm train .*data\.name=imagefolder", _train, _check_imagefolder),
    Rule(r"latent-ebm train .*--tensorboard", _train, _check_watched),
    Rule(r"latent-ebm train .*--dry-run", _as_written, _check_dry_run),
    Rule(r"latent-ebm sample ", _sample, _check_sample),
    Rule(r"latent-ebm eval ", _eval, _check_eval),
    Rule(r"latent-ebm refit ", _as_written, _check_refit),
    Rule(r"latent-ebm compare ", _as_written, _check_compare),
    Rule(r"latent-ebm reproduce stages ", _reproduce, _check_reproduce),
    Rule(r"torchrun .* -m latent_ebm\.cli train ", _torchrun, _check_torchrun),
]


def rule_of(line: str) -> Rule | None:
    """The first rule that matches a README command, or ``None``."""
    return next((r for r in RULES if re.match(r.pattern, line)), None)


@pytest.fixture(scope="module")
def readme_runs(tmp_path_factory) -> dict:
    """Every README command, run in order and checked at once (a later command may change
    what an earlier one wrote): README line -> ``None`` or the exception its check raised."""
    root = tmp_path_factory.mktemp("readme")
    images = root / "images"
    images.mkdir()
    gen = np.random.default_rng(0)
    from PIL import Image

    for i in range(60):  # 54 train, 6 test; not square: cropped to their centre
        Image.fromarray(gen.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(images / f"{i}.png")
    place = Place(root, images)
    (root / "tour").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENT_EBM_CACHE", str(root / "cache"))  # the FID classifiers
        for line in readme_commands():
            rule = rule_of(line)
            try:
                assert rule, f"no rule of tests/test_readme.py runs the README command {line!r}"
                torch.manual_seed(0)
                rule.check(rule.run(line, place), place)
                place.outcomes[line] = None
            except (Exception, pytest.skip.Exception) as e:
                place.outcomes[line] = e
    return place.outcomes


def test_every_readme_command_has_a_rule():
    commands = readme_commands()
    assert len(commands) >= 15
    unmatched = [line for line in commands if rule_of(line) is None]
    assert not unmatched, f"README commands that no rule of tests/test_readme.py runs: {unmatched}"


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command(readme_runs, line):
    """The README command exits 0 and writes what its check of :data:`RULES` names."""
    if readme_runs[line] is not None:
        raise readme_runs[line]


def test_synopsis_options_exist():
    """Each subcommand and option of the README's command-line synopsis is the parser's."""
    synopsis = [
        lines for heading, lines in readme_blocks(README.read_text()) if heading == SYNOPSIS
    ]
    assert len(synopsis) == 1 and len(synopsis[0]) >= 8
    subparsers = next(a for a in build_parser()._actions if a.choices and "train" in a.choices)
    for usage in synopsis[0]:
        command = usage.split()[1]
        assert command in subparsers.choices, usage
        known = set(subparsers.choices[command]._option_string_actions)
        named = set(re.findall(r"--[a-z][a-z0-9-]*", usage))
        assert named <= known, f"{command}: {sorted(named - known)} not options"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "runs/api-demo/my-samples.png").stat().st_size > 0
    assert (tmp_path / "runs/api-demo/checkpoint.pt").exists()
