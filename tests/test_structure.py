"""The package's structure (docs/ARCHITECTURE.md §8): every import points down the layers.

Each room (a module, or a package with its modules) has a layer; a module may import its own
room and rooms of strictly lower layers. Rooms of one layer do not import each other, so
evaluation never goes through the training loop. Imports are read from the source (module
level and inside functions); those under ``if TYPE_CHECKING:`` are for type hints only and
are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "latent_ebm"

# Layers, lowest first (docs/ARCHITECTURE.md §8).
LAYERS: dict[str, int] = {
    "errors": 0,
    "rng": 0,
    "files": 0,
    "precision": 0,
    "nets": 1,
    "langevin": 1,
    "memory": 1,
    "distributed": 1,
    "data": 1,
    "priors": 2,
    "amortiser": 2,
    "smc": 2,
    "config": 3,
    "model": 4,
    "sampling": 5,
    "refit": 5,
    "posterior": 5,
    "rundir": 6,
    "evaluation": 7,
    "monitor": 8,
    "train": 9,
    "experiments": 10,
    "arguments": 11,
    "cli": 12,
    "__init__": 13,
}


def _room(path: Path) -> str:
    """``latent_ebm/data/formats.py`` -> ``data``; ``latent_ebm/train.py`` -> ``train``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_rooms(path: Path, root: Path = PACKAGE) -> set[str]:
    """The rooms of ``latent_ebm`` that ``path`` (a module under ``root``) imports at run time."""
    package = ".".join(("latent_ebm", *path.relative_to(root).parent.parts))
    rooms: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            # `from latent_ebm import rng` imports the room rng.
            names = [f"{base}.{a.name}" for a in node.names] if base == "latent_ebm" else [base]
        else:
            names = []
        for name in names:
            parts = name.split(".")
            if parts[0] == "latent_ebm" and len(parts) > 1:
                rooms.add(parts[1])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return rooms


def test_every_room_has_a_layer():
    rooms = {_room(p) for p in _modules()}
    assert rooms <= set(LAYERS), f"give these rooms a layer: {sorted(rooms - set(LAYERS))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    room = _room(path)
    upward = {r for r in _imported_rooms(path) if r != room and LAYERS.get(r, 99) >= LAYERS[room]}
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {LAYERS[room]}) imports {upward}"


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, f"split these modules: {long}"


def test_the_checker_sees_upward_lazy_and_relative_imports(tmp_path):
    """The rule itself: a data module importing the training loop is caught, whether the
    import is lazy or relative; a type-only import is not counted."""
    fake = tmp_path / "latent_ebm" / "data" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import formats\n"
        "from ..errors import LatentEBMError\n"
        "if TYPE_CHECKING:\n"
        "    from latent_ebm.config import Config\n"
        "def f():\n"
        "    from latent_ebm.train import train\n"
    )
    rooms = _imported_rooms(fake, root=tmp_path / "latent_ebm")
    assert rooms == {"data", "errors", "train"}
    assert LAYERS["train"] > LAYERS["data"]
