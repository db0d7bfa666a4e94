"""A warning of lebm's checks points at what the user wrote: in Python at the user's own line
(building a part directly or through ``lebm.from_recipe``), from the ``lebm`` command as one
``lebm: warning: ...`` line instead of a library's ``file:line``. Device: CPU."""

from __future__ import annotations

import inspect
import subprocess
import warnings
from pathlib import Path

import pytest

import lebm
from lebm.cli.main import show_warnings_as_command_lines
from lebm.samplers import Langevin


def caught(build) -> list[warnings.WarningMessage]:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        build()
    return found


def test_a_parts_warning_points_at_the_line_that_built_it() -> None:
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        Langevin(0, 0.1)
    (warning,) = [w for w in found if "n_steps=0" in str(w.message)]
    assert (warning.filename, warning.lineno) == (__file__, line)  # the line that built it


def test_a_recipes_warning_points_at_the_from_recipe_call_not_at_jsonargparse(tmp_path: Path) -> None:
    overrides = {"model.init_args.lr_decay": 1.5, "trainer.default_root_dir": str(tmp_path), "trainer.logger": False}
    found = caught(lambda: lebm.from_recipe("quickstart", overrides))
    (warning,) = [w for w in found if "lr_decay=1.5 makes the learning rates grow" in str(w.message)]
    assert warning.filename == __file__


def test_the_command_prints_a_warning_from_a_librarys_line_as_a_lebm_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    show_warnings_as_command_lines()
    show_warnings_as_command_lines()  # twice is once
    library_file, user_file = lebm.__file__, str(Path(__file__))
    assert warnings.formatwarning("the step is large", UserWarning, library_file, 10) == (
        "lebm: warning: the step is large\n"
    )
    assert warnings.formatwarning("not finite", RuntimeWarning, library_file, 10) == (
        "lebm: warning (RuntimeWarning): not finite\n"
    )
    assert warnings.formatwarning("my own", UserWarning, user_file, 7).startswith(f"{user_file}:7: UserWarning: my own")
    with pytest.warns(UserWarning, match="still recorded"):  # recorders see the warning as before
        warnings.warn("still recorded", UserWarning, stacklevel=1)


@pytest.mark.slow
def test_the_console_script_says_a_recipe_warning_in_one_lebm_line(tmp_path: Path) -> None:
    """Slow (the console script in a subprocess, about 20 s)."""
    command = [
        "lebm",
        "fit",
        "-c",
        "quickstart",
        "--model.init_args.lr_decay",
        "1.5",
        "--trainer.max_steps",
        "1",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if "lr_decay=1.5" in line]
    assert lines == [
        "lebm: warning: model.init_args.lr_decay=1.5 makes the learning rates grow every epoch; the papers use 0.998"
    ]
