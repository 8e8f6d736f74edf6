"""MkDocs hooks of the documentation site (``mkdocs.yml``, ``hooks:``).

- The configuration reference (``reference/config.md``) is generated from the config schema:
  the sections of :class:`latent_ebm.config.Config`, each field's name, type and default from
  :func:`dataclasses.fields`, and its description from the ``#`` comment on or above the field
  in the source. The CLI reference (``reference/cli.md``) is generated from
  :func:`latent_ebm.arguments.build_parser`. Both exist only in the built site, so they cannot
  drift from the code.
- The pages under ``docs/`` link to files elsewhere in the repository (``../README.md``,
  ``../benchmarks/RESULTS.md``, figures), so that the links work when the Markdown is read in
  the repository. Those files, and the files that they link to in turn, join the site under
  ``repo/<path>``, and every relative link is rewritten to point at the site's copy.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import posixpath
import re
import textwrap
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = "docs/"
REPO = "repo/"  # where the site keeps the repository's files from outside docs/
CONFIG_PAGE = "reference/config.md"
CLI_PAGE = "reference/cli.md"

# An inline Markdown link or image: ](target) or ](target "title").
_LINK = re.compile(r"\]\(([^)\s]+)((?:\s+\"[^\"]*\")?)\)")


# Configuration reference.


def field_comments(cls: type) -> dict[str, str]:
    """The comment of every field of the dataclass ``cls``, read from its source.

    A field's comment is the ``#`` comment at the end of its line, else the block of comment
    lines right above it. A field with neither that directly follows another field (no blank
    line between) belongs to that field's group, and its comment points there.

    Returns:
        Field name -> comment text (empty where the source has none).
    """
    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    comments: dict[int, str] = {}  # line -> text of the comment on it
    code_lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    out: dict[str, str] = {}
    previous: tuple[str, int] | None = None  # the last field: name, last line
    for name, start, end in _field_lines(source):
        text = comments.get(end, "") if end in code_lines else ""
        if not text:
            above, line = [], start - 1
            while line in comments and line not in code_lines:
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above)
        if not text and previous is not None and previous[1] == start - 1:
            head = previous[0]
            text = out[head] if out[head].startswith("See ") else f"See `{head}`."
        out[name] = text
        previous = (name, end)
    return out


def _field_lines(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, last line) of each annotated field of the class in ``source``."""
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    return [
        (node.target.id, node.lineno, node.end_lineno or node.lineno)
        for node in body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    ]


def _default(f: dataclasses.Field) -> Any:
    """The default value of the field ``f``."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _yaml(value: Any) -> str:
    """``value`` as written in ``config.yaml``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value or '""'
    return repr(value)


def _cell(text: str) -> str:
    """``text`` escaped for a Markdown table cell (outside code spans)."""
    text = text.replace("\\", "\\\\").replace("<", "&lt;").replace(">", "&gt;")
    for char in "|*_[]":
        text = text.replace(char, "\\" + char)
    return text


def _code(text: str) -> str:
    """``text`` as a code span in a Markdown table cell."""
    return "`" + text.replace("|", "\\|") + "`"


def config_sections() -> list[tuple[str, type]]:
    """(key, dataclass) of every section of :class:`latent_ebm.config.Config`."""
    from latent_ebm.config import Config

    return [(f.name, type(_default(f))) for f in dataclasses.fields(Config)]


def config_reference() -> str:
    """The Markdown page of every configuration field: key, type, default and comment."""
    out = [
        "# Configuration reference",
        "",
        "Every field of the configuration, generated from `latent_ebm/config/schema.py` when the "
        "site is built. A run's `config.yaml` holds these sections; `--config FILE` reads one, "
        "`--set section.field=value` overrides one field, and a preset (`--preset NAME`) is a "
        "named set of overrides ([User guide](../guide.md)).",
        "",
    ]
    for key, cls in config_sections():
        comments = field_comments(cls)
        out += [f"## `{key}`", ""]
        doc = inspect.getdoc(cls)
        if doc and not doc.startswith(cls.__name__ + "("):
            out += [doc, ""]
        out += [f"`{cls.__name__}`", "", "| Key | Type | Default | Meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            out.append(
                f"| {_code(f'{key}.{f.name}')} | {_code(str(f.type))} "
                f"| {_code(_yaml(_default(f)))} | {_cell(comments.get(f.name, ''))} |"
            )
        out.append("")
    return "\n".join(out)


# CLI reference.


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of every subcommand of ``parser``, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    """One Markdown table row per argument of ``parser``: flags, default, help."""
    formatter = parser._get_formatter()
    rows = []
    for action in parser._actions:
        skip = isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        if skip or action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            flags = ", ".join(action.option_strings)
            if action.nargs != 0:
                flags += " " + formatter._format_args(
                    action, formatter._get_default_metavar_for_optional(action)
                )
        else:
            flags = formatter._format_args(
                action, formatter._get_default_metavar_for_positional(action)
            )
        default = action.default
        if action.required:
            shown = "required"
        elif default in (None, argparse.SUPPRESS, False, []):
            shown = ""
        else:
            shown = _code(_yaml(default))
        help_text = _cell(formatter._expand_help(action)) if action.help else ""
        rows.append(f"| {_code(flags)} | {shown} | {help_text} |")
    return rows


def cli_reference() -> str:
    """The Markdown page of every subcommand of ``latent-ebm``: usage, options, defaults, help."""
    from latent_ebm.arguments import build_parser

    parser = build_parser()
    out = [
        "# CLI reference",
        "",
        "Every subcommand of `latent-ebm` and its options, generated from "
        "`latent_ebm.arguments.build_parser()` when the site is built. `latent-ebm COMMAND "
        "--help` prints the same. Worked examples are in the [User guide](../guide.md).",
        "",
    ]
    pending = [(parser.prog, parser)]
    while pending:
        prog, current = pending.pop(0)
        for name, help_text, sub in _subcommands(current):
            full = f"{prog} {name}"
            usage = " ".join(sub.format_usage().split())
            out += [f"## `{full}`", "", _cell(help_text), "", "```text", usage, "```", ""]
            if sub.description:
                out += [_cell(sub.description), ""]
            out += ["| Option | Default | Meaning |", "|---|---|---|", *_option_rows(sub), ""]
            pending.append((full, sub))
    return "\n".join(out)


# Files outside docs/ and the links to them.


def _repo_path(src_uri: str) -> str:
    """The repository path of the site file ``src_uri``."""
    return src_uri[len(REPO) :] if src_uri.startswith(REPO) else DOCS + src_uri


def _site_uri(repo_path: str) -> str:
    """The site path of the repository file ``repo_path``."""
    return repo_path[len(DOCS) :] if repo_path.startswith(DOCS) else REPO + repo_path


def _targets(markdown: str, repo_path: str) -> list[tuple[str, str]]:
    """(link as written, repository path it points to) of every relative link in ``markdown``."""
    out = []
    for match in _LINK.finditer(markdown):
        link = match.group(1)
        path = link.split("#", 1)[0]
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("/"):
            continue
        out.append((link, posixpath.normpath(posixpath.join(posixpath.dirname(repo_path), path))))
    return out


def outside_files(docs_pages: list[str]) -> list[str]:
    """Repository paths of the files outside ``docs/`` that the docs pages link to, directly
    or through the Markdown files that they link to (links to missing files are left for
    MkDocs to report)."""
    seen: set[str] = set()
    pending = [DOCS + page for page in docs_pages]
    while pending:
        repo_path = pending.pop()
        for _, target in _targets((ROOT / repo_path).read_text(encoding="utf-8"), repo_path):
            if target.startswith((DOCS, "../")) or target in seen:
                continue
            if (ROOT / target).is_file():
                seen.add(target)
                if target.endswith(".md"):
                    pending.append(target)
    return sorted(seen)


def on_files(files: Any, config: Any) -> Any:
    """Add the generated reference pages and the repository files that the docs link to."""
    from mkdocs.structure.files import File

    docs_pages = [f.src_uri for f in files if f.src_uri.endswith(".md")]
    files.append(File.generated(config, CONFIG_PAGE, content=config_reference()))
    files.append(File.generated(config, CLI_PAGE, content=cli_reference()))
    for repo_path in outside_files(docs_pages):
        files.append(
            File.generated(config, _site_uri(repo_path), abs_src_path=str(ROOT / repo_path))
        )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Point every relative link of ``page`` at the site's copy of its target."""
    src_uri = page.file.src_uri
    if src_uri in (CONFIG_PAGE, CLI_PAGE):
        return markdown
    here = posixpath.dirname(src_uri)

    def rewrite(match: re.Match) -> str:
        targets = _targets(match.group(0), _repo_path(src_uri))
        if not targets:
            return match.group(0)
        link, target = targets[0]
        if not target.startswith(DOCS) and not (ROOT / target).is_file():
            return match.group(0)  # missing: MkDocs reports the link as written
        anchor = link[len(link.split("#", 1)[0]) :]
        new = posixpath.relpath(_site_uri(target), here or ".")
        return f"]({new}{anchor}{match.group(2)})"

    return _LINK.sub(rewrite, markdown)
