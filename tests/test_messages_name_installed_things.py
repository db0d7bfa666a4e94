"""What lebm tells a user (errors, warnings, log lines) names only what an installed lebm has: no
script of the repository's ``benchmarks/``, ``experiments/`` or ``scripts/`` folders, which a wheel
does not install. Device: none (reads the source)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPOSITORY_ONLY = ("benchmarks/", "experiments/", "scripts/")


def docstring_nodes(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (not messages)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def message_strings(path: Path) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant in ``path`` that is not a docstring, with the
    constant parts of f-strings."""
    tree = ast.parse(path.read_text())
    docstrings = docstring_nodes(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_no_message_points_at_a_script_the_wheel_does_not_install() -> None:
    found = [
        f"{path.relative_to(REPO)}:{line}: {text!r}"
        for path in sorted((REPO / "lebm").rglob("*.py"))
        for line, text in message_strings(path)
        if any(folder in text for folder in REPOSITORY_ONLY)
    ]
    assert not found, "messages naming repository-only scripts:\n" + "\n".join(found)
