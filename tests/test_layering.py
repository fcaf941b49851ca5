"""The layering of docs/contributing.md, read from the import statements of every module.

Each rule is checked on the parsed source (``ast``), so an import hidden inside a function
counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from simulations.cli import COMMAND_MODULES

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("clients", "common", "server", "simulations")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, package: str | None = None) -> set[str]:
    """Every absolute module name ``path`` imports (``from a.b import c`` gives a.b and a.b.c);
    ``package`` (default: read from the path) anchors relative imports."""
    names: set[str] = set()
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def offending(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    out = {}
    for path in modules(package):
        bad = sorted(n for n in imported(path)
                     if any(n == f or n.startswith(f + ".") for f in forbidden))
        if bad:
            out[str(path.relative_to(ROOT))] = bad
    return out


def test_the_reader_finds_relative_and_nested_imports(tmp_path):
    """The reader itself: a relative import and one inside a function are both found."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..server import validation\n"
                     "def f():\n    import server.strategy\n    from . import x\n")
    assert imported(probe, package="clients.synthesizers") == {
        "clients.server", "clients.server.validation", "server.strategy",
        "clients.synthesizers", "clients.synthesizers.x"}


@pytest.mark.parametrize("package, forbidden", [
    ("common", ("clients", "server", "simulations")),
    ("clients", ("server", "simulations")),
    ("server", ("clients", "simulations")),
])
def test_imports_only_go_down(package, forbidden):
    """common/ is the floor; the server never imports client code, nor the clients the server:
    what both sides need lives in common/."""
    assert offending(package, forbidden) == {}


def test_common_is_flower_free_except_the_message_contract():
    users = {p for p, _ in offending("common", ("flwr",)).items()}
    assert users <= {"common/protocol.py"}


def test_command_modules_do_not_import_each_other():
    """What two commands share lives in a module below them (options, engine, comparison...)."""
    commands = set(COMMAND_MODULES) | {"simulations.cli"}
    for name in COMMAND_MODULES:
        path = ROOT / (name.replace(".", "/") + ".py")
        others = sorted(n for n in imported(path) if n in commands - {name})
        assert others == [], f"{name} imports the command module(s) {others}"


def test_no_module_is_a_second_copy_of_a_monolith():
    """No module over 500 lines (docs/contributing.md): a module that grows past it is split by
    concern."""
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in modules(pkg)
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}
