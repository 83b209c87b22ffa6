"""Imports go one way: entry points → flows → tasks → workers → the core (docs/architecture.md).

Every module is parsed, not imported, so the check is fast, sees imports inside functions (the
deferred imports a runtime check would miss) and needs none of the heavy libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# (package scanned, folders in it that are exempt, top-level packages it must not import)
RULES = [
    # The core; its entry points (the CLI and the HTTP service) start flows, so they may.
    ("dataflywheel", ("dataflywheel/cli", "dataflywheel/api"), ("flows", "tasks", "workers")),
    ("workers", (), ("flows", "tasks")),
    ("tasks", (), ("flows",)),
]

# Known violations, each with the reason it stands: (module path, imported module) -> why.
# Empty today. An entry must still occur (a test says so), so a fixed one leaves the list.
ALLOWED: dict[tuple[str, str], str] = {}


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, at any depth; relative imports made absolute."""
    parts = path.relative_to(root).with_suffix("").parts
    package = list(parts[:-1])  # the folder: a module's package, or the package of __init__
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join([*base, *([node.module] if node.module else [])]))
    return found


def violations(root: Path, package: str, exempt: tuple[str, ...], forbidden: tuple[str, ...]):
    found = set()
    for path in sorted((root / package).rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if any(relative.startswith(f"{folder}/") for folder in exempt):
            continue
        for name in imported_modules(path, root):
            if name.split(".")[0] in forbidden:
                found.add((relative, name))
    return found


@pytest.mark.parametrize(("package", "exempt", "forbidden"), RULES, ids=[r[0] for r in RULES])
def test_imports_go_one_way(package: str, exempt: tuple[str, ...], forbidden: tuple[str, ...]):
    new = sorted(violations(ROOT, package, exempt, forbidden) - set(ALLOWED))
    assert not new, (
        f"{package}/ must not import {', '.join(forbidden)} (docs/architecture.md, import "
        "rules): move the code down a layer, or pass in what it needs:\n"
        + "\n".join(f"  {path}: imports {name}" for path, name in new)
    )


def test_allowed_exceptions_still_occur():
    found = set().union(*(violations(ROOT, *rule) for rule in RULES))
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"no longer violated, remove from ALLOWED: {stale}"


def test_the_scan_sees_deferred_and_relative_imports(tmp_path: Path):
    core = tmp_path / "dataflywheel" / "sub"
    core.mkdir(parents=True)
    (core / "mod.py").write_text(
        "import json\nfrom . import sibling\nfrom ..db import models\n\n"
        "def later():\n    from tasks.context import session\n    import flows.replay as r\n"
    )
    (tmp_path / "dataflywheel" / "cli").mkdir()
    (tmp_path / "dataflywheel" / "cli" / "main.py").write_text("import flows.replay\n")
    assert imported_modules(core / "mod.py", tmp_path) == {
        "json",
        "dataflywheel.sub",
        "dataflywheel.db",
        "tasks.context",
        "flows.replay",
    }
    assert violations(tmp_path, *RULES[0]) == {
        ("dataflywheel/sub/mod.py", "tasks.context"),
        ("dataflywheel/sub/mod.py", "flows.replay"),
    }
