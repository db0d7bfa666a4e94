"""``scripts/results_staleness.py`` (device: CPU, a git repository under tmp_path): a pure import
move is no change; a change to a ``lebm`` module the method's module imports, or to the experiment
script a record's command runs, is seen; a record that named no commit is compared with the commit
that added it, not with the last commit of its day."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.scripts import load_script


def git_in(repo: Path, *arguments: str, when: str = "2026-11-20T10:00:00") -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments],
        cwd=repo, check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return done.stdout.strip()


def commit_all(repo: Path, when: str) -> str:
    git_in(repo, "add", ".", when=when)
    git_in(repo, "commit", "-qm", when, when=when)
    return git_in(repo, "rev-parse", "--short", "HEAD")


def test_a_pure_import_move_changes_no_meaning() -> None:
    staleness = load_script("scripts/results_staleness.py")
    before = "from lebm.a import f\nimport numpy as np\n\ndef g(x):\n    return f(np.sum(x))\n"
    moved = "import numpy as np\nfrom lebm.b import f\n\ndef g(x):\n    return f(np.sum(x))\n"
    assert staleness.meaning("m.py", before) == staleness.meaning("m.py", moved)
    renamed = "from lebm.a import f as h\nimport numpy as np\n\ndef g(x):\n    return h(np.sum(x))\n"
    assert staleness.meaning("m.py", before) != staleness.meaning("m.py", renamed)
    inner = "def g(x):\n    from lebm.a import f\n    return f(x)\n"
    assert staleness.meaning("m.py", inner) == staleness.meaning("m.py", inner.replace("lebm.a", "lebm.c"))


def test_the_code_a_records_numbers_depend_on_is_seen_from_the_commit_that_added_it(tmp_path: Path) -> None:
    staleness = load_script("scripts/results_staleness.py")
    (tmp_path / "lebm" / "models").mkdir(parents=True)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "r.yaml").write_text("steps: 1\n")
    (tmp_path / "lebm" / "__init__.py").write_text("")
    (tmp_path / "lebm" / "models" / "__init__.py").write_text("")
    (tmp_path / "lebm" / "models" / "m.py").write_text("from lebm.helper import step\n\nclass M:\n    pass\n")
    (tmp_path / "lebm" / "helper.py").write_text("def step(x):\n    return x + 1\n")
    (tmp_path / "experiments" / "run.py").write_text("from lebm import helper\n")
    git_in(tmp_path, "init", "-q")
    added = commit_all(tmp_path, "2026-11-20T10:00:00")
    assert staleness.code_files(["lebm/models/m.py"], tmp_path) == ["lebm/models/m.py", "lebm/helper.py"]
    assert staleness.code_files(["experiments/run.py"], tmp_path) == [
        "experiments/run.py", "lebm/__init__.py", "lebm/helper.py"
    ]  # fmt: skip
    record = {"experiment": "e", "date": "2026-11-20", "commit": None, "added_in": added,
              "command": "python experiments/run.py -c r"}  # fmt: skip
    assert staleness.record_scripts(record) == ["experiments/run.py"]
    row = {"recipes": ["r"], "ours": [{"where": {"experiment": "e"}}]}
    assert staleness.stale_reason(row, [record], tmp_path) is None
    # the same day, after the record was added: the last commit of its date would not see this
    (tmp_path / "lebm" / "helper.py").write_text("def step(x):\n    return x + 2\n")
    commit_all(tmp_path, "2026-11-20T18:00:00")
    assert staleness.record_commit(record, tmp_path) == added
    reason = staleness.stale_reason(row, [record], tmp_path)
    assert reason is not None and reason.startswith("lebm/helper.py changed after the record")
