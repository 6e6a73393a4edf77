"""Imports run one way: ``cli -> registry -> core``, ``plugins -> core``, and registry/ is a DAG.

Every module's imports are read with ``ast``, wherever they stand (module level, inside functions,
under ``TYPE_CHECKING``), together with ``importlib.import_module("...")`` and ``__import__("...")``
calls on string literals, since a hidden import is still an import.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "quatrain", "plugins": "quatrain.plugins", "registry": "quatrain.registry", "cli": "quatrain.cli"}
"""Source folder -> import name (pyproject's package-dir)."""
FORBIDDEN = {"core": {"registry", "plugins", "cli"}, "plugins": {"registry", "cli"}, "registry": {"cli", "plugins"}}
"""Layer -> the layers it must never import."""
MAX_LINES = 400
OVERSIZED_ALLOWED: set[str] = set()


def module_names(root: Path) -> dict[str, Path]:
    """Every module under the four source folders, by its import name."""
    found: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> str | None:
    """'core', 'plugins', 'registry' or 'cli' for a quatrain module, None for anything else."""
    if module != "quatrain" and not module.startswith("quatrain."):
        return None
    for name in ("plugins", "registry", "cli"):
        if module == f"quatrain.{name}" or module.startswith(f"quatrain.{name}."):
            return name
    return "core"


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, relative ones resolved."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:  # `from pkg import mod` imports the module pkg.mod
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if candidate in known else base))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            literal = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
            if name in ("import_module", "__import__") and literal and not literal.startswith("."):
                found.append((node.lineno, literal))
    return found


def graph(root: Path) -> tuple[dict[str, Path], dict[str, list[tuple[int, str]]]]:
    modules = module_names(root)
    known = set(modules)
    return modules, {name: imports_of(path, name, known) for name, path in modules.items()}


def upward_imports(root: Path) -> list[str]:
    modules, edges = graph(root)
    bad = []
    for name, found in edges.items():
        mine = layer(name)
        for line, target in found:
            if mine is not None and layer(target) in FORBIDDEN.get(mine, set()):
                bad.append(f"{modules[name].relative_to(root)}:{line}: {mine} imports {target} ({layer(target)})")
    return bad


def registry_cycles(root: Path) -> list[list[str]]:
    """Cycles among registry modules (the package's own __init__ counts as a module)."""
    _, edges = graph(root)
    inside = {n for n in edges if layer(n) == "registry"}
    succ = {n: sorted({t for _, t in edges[n] if t in inside and t != n}) for n in inside}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in succ[node]:
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(inside):
        if node not in state:
            visit(node)
    return cycles


def test_no_layer_imports_upward():
    assert upward_imports(ROOT) == []


def test_registry_modules_form_a_dag():
    assert registry_cycles(ROOT) == []


def test_the_cli_imports_only_public_names():
    _, edges = graph(ROOT)
    private = [
        f"{name}: {target}"
        for name, found in edges.items()
        if layer(name) == "cli"
        for _, target in found
        if layer(target) != "cli" and any(part.startswith("_") for part in target.split(".")[1:])
    ]
    assert private == []


@pytest.mark.parametrize("folder", ["core", "registry", "plugins", "cli"])
def test_modules_stay_under_400_lines(folder):
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / folder).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
        and str(path.relative_to(ROOT)) not in OVERSIZED_ALLOWED
    }
    assert long == {}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for folder in PACKAGES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    for name, source in files.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"core/_m.py": "def f():\n    from quatrain.registry import get_registry\n"},
            "core imports quatrain.registry",
        ),
        ({"core/_m.py": "import importlib\nimportlib.import_module('quatrain.cli')\n"}, "core imports quatrain.cli"),
        ({"core/_m.py": "from . import plugins\n"}, "core imports quatrain.plugins"),
        (
            {"registry/_x.py": "from ..plugins import naive\n", "plugins/naive.py": ""},
            "registry imports quatrain.plugins",
        ),
        ({"plugins/p.py": "if True:\n    import quatrain.registry._x as x\n"}, "plugins imports quatrain.registry._x"),
        ({"registry/_x.py": "from quatrain.cli import cli\n"}, "registry imports quatrain.cli"),
    ],
    ids=["lazy-in-a-function", "importlib-string", "relative-from-core", "registry-to-plugins", "plugins-up", "to-cli"],
)
def test_the_walker_finds_hidden_upward_imports(tmp_path, files, expected):
    found = upward_imports(_tree(tmp_path, files))
    assert len(found) == 1 and expected in found[0], found


def test_the_walker_finds_a_cycle_through_a_lazy_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "registry/_a.py": "from ._b import x\n",
            "registry/_b.py": "def f():\n    from . import _a\n",
            "registry/_c.py": "",
        },
    )
    assert registry_cycles(root) == [["quatrain.registry._a", "quatrain.registry._b", "quatrain.registry._a"]]
    assert upward_imports(root) == []


@pytest.mark.parametrize("package", ["quatrain", "quatrain.registry", "quatrain.data", "quatrain.cli"])
def test_every_public_name_resolves_and_all_is_sorted(package):
    """A front door lists its names sorted, and each one imports (core's are lazy, so a moved name shows here)."""
    import importlib

    module = importlib.import_module(package)
    names = list(module.__all__)
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n))
    missing = [name for name in names if getattr(module, name, None) is None]
    assert missing == []
