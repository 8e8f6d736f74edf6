"""The documentation site (mkdocs.yml, docs/hooks.py): it builds with ``mkdocs build --strict``
(no broken link, anchor or API reference), its configuration reference lists every field of
every config section with its comment, and its CLI reference every subcommand and option."""

import dataclasses
import html
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from latent_ebm.arguments import build_parser
from latent_ebm.config import Config

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


@dataclasses.dataclass
class _Commented:
    a: int = 1  # the trailing comment
    # A block comment
    # over two lines
    b: str = "x"
    c: float = 0.5  # starts a group
    d: int = 2
    e: int = 3

    f: int = 4


def test_field_comments_reads_trailing_block_and_grouped_comments():
    assert hooks.field_comments(_Commented) == {
        "a": "the trailing comment",
        "b": "A block comment over two lines",
        "c": "starts a group",
        "d": "See `c`.",
        "e": "See `c`.",
        "f": "",
    }


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site, built strictly into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def _codes(page: str) -> set[str]:
    """The text of every code span of an HTML page."""
    return {html.unescape(c) for c in re.findall(r"<code>(.*?)</code>", page)}


def test_config_reference_lists_every_field_with_its_comment(site):
    page = (site / "reference" / "config.html").read_text()
    codes = _codes(page)
    rows = 0
    for section in dataclasses.fields(Config):
        cls = type(section.default_factory())
        comments = hooks.field_comments(cls)
        for f in dataclasses.fields(cls):
            assert f"{section.name}.{f.name}" in codes, f"{section.name}.{f.name} missing"
            assert comments[f.name], f"{section.name}.{f.name} has no comment in the schema"
            rows += 1
    assert page.count("<tr>") == rows + len(dataclasses.fields(Config))  # + one header each


def test_cli_reference_lists_every_subcommand_and_option(site):
    page = (site / "reference" / "cli.html").read_text()
    sections = re.split(r"<h2 ", page)[1:]
    by_command = {}
    for text in sections:
        heading = html.unescape(re.search(r"<code>(.*?)</code>", text).group(1))
        by_command[heading.removeprefix("latent-ebm ")] = _codes(text)
    commands = hooks._subcommands(build_parser())
    assert sorted(by_command) == sorted(name for name, _, _ in commands)
    for name, _, sub in commands:
        for action in sub._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert any(flag in c.replace(",", " ").split() for c in by_command[name]), (
                        f"{name} {flag} missing"
                    )


def test_pages_outside_docs_join_the_site(site):
    """docs/guide.md links to ../benchmarks/RESULTS.md: the site has a copy and links to it."""
    assert (site / "repo" / "benchmarks" / "RESULTS.html").is_file()
    assert 'href="repo/benchmarks/RESULTS.html' in (site / "guide.html").read_text()
