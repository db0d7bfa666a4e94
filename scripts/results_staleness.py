"""Which status figures are stale: records made before their recipe or method last changed.

    python scripts/results_staleness.py        # one line per stale row of docs/results/status/status.json

A status row's figures come from records (``ours``). A record is **stale** when a file that decides
its numbers changed after it was made: the recipes its command names (else the row's), each
``recipes/<name>.yaml`` with the files it includes, the module of the record's method
(``LatentEBM`` -> ``lebm/models/latent_ebm.py``), the experiment scripts its commands run
(``experiments/<name>.py``) and every ``lebm`` module those import, directly or through each other.
A change counts when it changes what the file means, not how it reads: a recipe is compared as the
YAML it parses to (comments, layout and ``paper_targets`` aside), a Python module as its syntax tree
without docstrings and imports, beside the set of names its imports bind (a name imported from
another module, a pure import move, changes nothing). The record's commit is its ``commit``; for a
record written before runners stamped one, the commit that added it (``added_in``: it was made
there or before); else the last commit of the day it was made (``date``).

A row whose figures are stale must say so (``"stale"`` in its status entry, shown in the table):
``tests/test_results_records.py`` fails on a stale row that does not. Needs the repository's full
history (a shallow clone cannot tell).
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
from pathlib import Path

import yaml
from results_records import load_records
from results_status import selected

REPO = Path(__file__).resolve().parents[1]
#: A recipe's keys that decide no number of a run (the paper's values drawn beside the curves).
NOT_TRAINING = frozenset({"paper_targets"})


def git(*arguments: str, repo: Path = REPO) -> str:
    """A git command's output in ``repo`` (stripped); an error raises."""
    return subprocess.run(["git", *arguments], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def history_is_whole(repo: Path = REPO) -> bool:
    """Whether ``repo`` is a git checkout with its whole history (not shallow)."""
    try:
        return git("rev-parse", "--is-shallow-repository", repo=repo) == "false"
    except (subprocess.CalledProcessError, FileNotFoundError):
        return False


def record_commit(record: dict, repo: Path = REPO) -> str | None:
    """The commit a record was made at: its ``commit``; for a record that did not name one, the
    commit that added it (``added_in``, ``scripts/results_provenance.py``: it was made there or
    before); else the last commit of its ``date``."""
    if record.get("commit"):
        return record["commit"]
    if record.get("added_in"):
        return record["added_in"]
    if not record.get("date"):
        return None
    return git("rev-list", "-1", f"--before={record['date']} 23:59:59", "HEAD", repo=repo) or None


def meaning(path: str, text: str | None) -> object:
    """What a file means, for comparing two versions: a YAML file's data, a Python module's syntax
    tree without docstrings, any other file's text (None: the file does not exist)."""
    if text is None:
        return None
    if path.endswith((".yaml", ".yml")):
        data = yaml.safe_load(text)
        return {k: v for k, v in data.items() if k not in NOT_TRAINING} if isinstance(data, dict) else data
    if path.endswith(".py"):
        tree = ast.parse(text)
        bound = sorted(imported_names(tree))
        tree.body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.ImportFrom))]
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list):
                node.body = [n for n in body if not isinstance(n, (ast.Import, ast.ImportFrom))] or [ast.Pass()]
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            first = body[0] if isinstance(body, list) and body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        return ast.dump(tree), bound
    return text


def imported_names(tree: ast.AST) -> set[str]:
    """The names a module's imports bind (``from a import f as g`` binds ``g``), wherever they stand:
    a name imported from another module than before is the same name, so a pure import move
    changes no meaning."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def lebm_imports(path: str, repo: Path = REPO) -> list[str]:
    """The modules of ``lebm`` that the file at ``path`` imports, as paths from the repository's root."""
    found = []
    tree = ast.parse((repo / path).read_text())
    package = Path(path).parent
    for node in ast.walk(tree):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = list(package.parts[: len(package.parts) - node.level + 1])
                base = ".".join([*parts, *([base] if base else [])])
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for module in modules:
            if not module.startswith("lebm"):
                continue
            stem = repo / Path(*module.split("."))
            for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
                if candidate.is_file():
                    found.append(str(candidate.relative_to(repo)))
    return list(dict.fromkeys(found))


def code_files(start: list[str], repo: Path = REPO) -> list[str]:
    """``start`` and every ``lebm`` module they import, directly or through each other."""
    seen: list[str] = []
    pending = list(start)
    while pending:
        path = pending.pop(0)
        if path in seen or not (repo / path).is_file():
            continue
        seen.append(path)
        pending.extend(lebm_imports(path, repo))
    return seen


SCRIPT_IN_COMMAND = re.compile(r"\b(experiments/[\w/]+\.py)")


def record_scripts(record: dict) -> list[str]:
    """The experiment scripts a record's commands run (``experiments/<name>.py``), in order."""
    commands = " ".join(str(record.get(key, "")) for key in ("command", "training_command"))
    return list(dict.fromkeys(SCRIPT_IN_COMMAND.findall(commands)))


def file_at(commit: str, path: str, repo: Path = REPO) -> str | None:
    """The text of ``path`` at ``commit`` (None: it did not exist there)."""
    try:
        return git("show", f"{commit}:{path}", repo=repo)
    except subprocess.CalledProcessError:
        return None


def changed_since(commit: str, path: str, repo: Path = REPO) -> bool:
    """Whether ``path`` means something else now than at ``commit``."""
    now = repo / path
    return meaning(path, file_at(commit, path, repo)) != meaning(path, now.read_text() if now.exists() else None)


def recipe_files(name: str, repo: Path = REPO) -> list[str]:
    """A recipe's file and every file it includes, as paths from the repository's root."""
    found: list[str] = []
    pending = [repo / "recipes" / f"{name}.yaml"]
    while pending:
        path = pending.pop().resolve()
        relative = str(path.relative_to(repo.resolve()))
        if relative in found or not path.exists():
            continue
        found.append(relative)
        data = yaml.safe_load(path.read_text()) or {}
        pending.extend(path.parent / include for include in data.get("include") or [])
    return found


RECIPE_IN_COMMAND = re.compile(r"(?:recipes/([\w./-]+?)\.yaml|-c ([\w/-]+)(?=\s|$))")


def record_recipes(record: dict) -> list[str]:
    """The recipes a record's commands name (``recipes/<name>.yaml`` or ``-c <name>``), in order."""
    commands = " ".join(str(record.get(key, "")) for key in ("command", "training_command"))
    names = [a or b for a, b in RECIPE_IN_COMMAND.findall(commands)]
    return list(dict.fromkeys(name for name in names if not name.startswith("evaluation/")))


def method_file(method: str, repo: Path = REPO) -> str | None:
    """The module of a record's method (its name's first word, ``LatentEBM, Gaussian prior`` ->
    ``LatentEBM``) in ``lebm.models``, from the repository's root; None for another name."""
    import lebm.models

    kind = getattr(lebm.models, method.split(",")[0].split(" ")[0], None)
    if not inspect.isclass(kind):
        return None
    return str(Path(inspect.getsourcefile(kind)).resolve().relative_to(repo.resolve()))


def stale_reason(row: dict, records: list[dict], repo: Path = REPO) -> str | None:
    """Why a status row's figures are stale (the first file changed since a record it shows was
    made, named with that record's date), or None."""
    for selector in row.get("ours") or []:
        for record in selected(selector, records):
            commit = record_commit(record, repo)
            if commit is None:
                continue
            names = record_recipes(record) or row["recipes"]
            files = [f for name in names for f in recipe_files(name, repo)]
            method = method_file(record.get("method", ""), repo)
            code = code_files([*([method] if method else []), *record_scripts(record)], repo)
            for path in [*files, *code]:
                if changed_since(commit, path, repo):
                    return f"{path} changed after the record of {record.get('date')} ({record.get('experiment')})"
    return None


def main() -> None:
    status = json.loads((REPO / "docs" / "results" / "status" / "status.json").read_text())
    records = load_records(REPO / "docs" / "results")
    for row in status["rows"]:
        reason = stale_reason(row, records)
        if reason:
            print(f"{row['recipes'][0]}: stale: {reason}")


if __name__ == "__main__":
    main()
