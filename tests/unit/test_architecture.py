"""The layering the tree claims, checked: no import cycles, `policies/` stands alone, one module per foreign
system, small modules, a unit test file per statement. Imports are read from the source (module level, outside
`if TYPE_CHECKING:`), so a cycle here is one Python would meet while importing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "policies")
#: The expression compiler is one cohesive piece (see policies/expressions/_compiler.py); everything else stays small.
LONG_MODULES_ALLOWED = {"policies/expressions/_compiler.py"}
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    found["function_app"] = ROOT / "function_app.py"
    return found


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(path: Path, name: str, *, module_level_only: bool = True) -> set[str]:
    """Modules `path` imports (absolute names), at module level or everywhere."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and _type_checking(node):
                continue
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(
                    node.body
                    + getattr(node, "orelse", [])
                    + getattr(node, "finalbody", [])
                    + [s for h in getattr(node, "handlers", []) for s in h.body]
                )
            elif not module_level_only and hasattr(node, "body"):
                visit(node.body)  # type: ignore[attr-defined]

    if module_level_only:
        visit(tree.body)
    else:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                visit([node])
    return found


def test_no_import_cycles() -> None:
    known = modules()
    graph = {name: {target for target in imports(path, name) if target in known and target != name} for name, path in known.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                walk(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize("forbidden", ["gateway", "starlette", "httpx", "aiohttp", "azure", "fastapi", "uvicorn"])
def test_policies_stand_alone(forbidden: str) -> None:
    """The policy language imports nothing of the gateway, of a web framework or of a network client."""
    offenders = [
        name
        for name, path in modules().items()
        if name.startswith("policies") and any(i == forbidden or i.startswith(forbidden + ".") for i in imports(path, name, module_level_only=False))
    ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("foreign", "boundary"),
    [
        ("azure.data.tables", "gateway.stores.azure_tables"),
        ("azure.identity", "gateway.backends.credentials"),
        ("tiktoken", "gateway.handling.tokens"),
    ],
)
def test_one_module_per_foreign_system(foreign: str, boundary: str) -> None:
    importers = {
        name
        for name, path in modules().items()
        if any(i == foreign or i.startswith(foreign + ".") for i in imports(path, name, module_level_only=False))
    }
    assert importers == {boundary}


def test_modules_stay_small() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in [*modules().values()]
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES and str(path.relative_to(ROOT)) not in LONG_MODULES_ALLOWED
    }
    assert not long, long


def test_every_statement_has_its_unit_test_file() -> None:
    """policies/statements/<module>.py is tested in tests/unit/statements/test_<module>.py (private helpers aside)."""
    statements = sorted(path.name for path in (ROOT / "policies" / "statements").glob("*.py") if not path.name.startswith("_"))
    assert statements, "no statement modules found"
    missing = [f"tests/unit/statements/test_{name}" for name in statements if not (ROOT / "tests" / "unit" / "statements" / f"test_{name}").is_file()]
    assert not missing, missing
