"""One live fit per run folder (device: CPU): a second ``lebm fit`` into a folder another fit holds is
refused in one line and moves nothing; a lock left by a killed fit is taken over in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli_runner import QUIET, run_cli
from tests.helpers.subprocesses import HANG_SECONDS

HOLD = (
    "import sys, time; from lebm.cli.run_lock import take_lock; "
    "take_lock(sys.argv[1]); print('held', flush=True); time.sleep(600)"
)


def holding(run: Path) -> subprocess.Popen:
    """Another process that holds ``run``'s lock (as a running fit does) until it is killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + HANG_SECONDS
    while process.stdout.readline().strip() != "held":
        assert process.poll() is None and time.monotonic() < deadline, "the holder never took the lock"
    return process


def test_a_second_fit_into_a_held_folder_is_refused_in_one_line_and_moves_nothing(capsys, tmp_path: Path) -> None:
    """The first fit, still in its first epoch, has written its config and W&B id but no checkpoint:
    without the lock the second fit would set them aside as a failed start. With it, the second is
    refused in one line naming the running fit (its pid) and the ways out, and every file stays."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("the first fit's config\n")
    (run / "wandb_run_id.txt").write_text("first1234567")
    first = holding(run)
    try:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *QUIET)
        refused = capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
    assert stop.value.code == 2 and refused.count("\n") == 1, refused
    assert f"{run} is in use by a running fit: pid {first.pid} on host" in refused
    assert "Wait for it to end" in refused and "--trainer.default_root_dir" in refused and "--overwrite" in refused
    assert (run / "config.yaml").read_text() == "the first fit's config\n"
    assert (run / "wandb_run_id.txt").read_text() == "first1234567"
    assert not list(run.glob("failed_start-*"))


def test_a_ddp_rank_beside_the_holder_takes_no_lock_of_its_own(
    capsys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The processes Lightning or torchrun start beside the first (``RANK``/``LOCAL_RANK`` 1, told
    the first's checkpoint decision) build and fit while the first holds the folder's lock: the
    first holds it for the fit; a rank that took it too would be refused by its own run."""
    import functools

    import lightning as L

    from lebm.cli.run_folder import DECIDED_CKPT_PATH

    run = tmp_path / "run"
    run.mkdir()
    fitted: list[L.Trainer] = []

    @functools.wraps(L.Trainer.fit)  # the parser reads fit's signature for the command's options
    def caught(trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        fitted.append(trainer)

    for name, value in (("RANK", "1"), ("LOCAL_RANK", "1"), (DECIDED_CKPT_PATH, "")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(L.Trainer, "fit", caught)
    first = holding(run)
    try:
        run_cli("fit", "-c", "recipes/quickstart.yaml", "--trainer.default_root_dir", str(run), *QUIET)
    finally:
        first.kill()
        first.wait()
    assert len(fitted) == 1 and "in use by a running fit" not in capsys.readouterr().err


def test_a_killed_fits_lock_is_taken_over_in_one_line_and_released_at_the_end(capsys, tmp_path: Path) -> None:
    """A fit killed with its lock file left: the next one takes it over and says whose it was; the
    lock names the holder while held and is gone when the command ends."""
    from lebm.cli.run_lock import HELD, LOCK_FILE, release_locks, take_lock

    run = tmp_path / "run"
    killed = holding(run)
    killed.kill()
    killed.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == killed.pid  # left behind by the kill
    capsys.readouterr()
    take_lock(str(run))
    try:
        said = capsys.readouterr().err
        assert (
            said.count("\n") == 1 and f"took over the lock of a fit that is no longer running (pid {killed.pid}" in said
        )
        holder = json.loads((run / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and str(run) in HELD
    finally:
        release_locks()
    assert not (run / LOCK_FILE).exists() and not HELD  # removed as it is released: a finished run keeps none


def test_a_lock_file_removed_or_replaced_after_it_was_opened_is_not_the_lock(tmp_path: Path) -> None:
    """A fit that opened ``fit.lock`` just before its holder ended (and removed it) holds a file no
    longer at the path: it must see that and open the lock anew."""
    from lebm.cli.run_lock import _still_at

    path = tmp_path / "fit.lock"
    path.write_text("")
    with open(path) as handle:
        assert _still_at(handle, str(path))
        path.unlink()
        assert not _still_at(handle, str(path))
        path.write_text("")  # a new file at the path: another inode
        assert not _still_at(handle, str(path))


def test_a_lock_that_cannot_be_opened_stops_in_one_line(capsys, tmp_path: Path) -> None:
    """A ``fit.lock`` that is a folder (or a file this user cannot write): one line naming it, the
    reason and the ways out, not the ``open()`` traceback."""
    from lebm.cli.run_lock import LOCK_FILE, take_lock

    run = tmp_path / "run"
    (run / LOCK_FILE).mkdir(parents=True)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        take_lock(str(run))
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert f"cannot open the run folder's lock {run / LOCK_FILE} (Is a directory)" in said
    assert "--trainer.default_root_dir" in said


def test_the_lock_messages_quote_the_holders_command_cut_short() -> None:
    """An expanded recipe command runs to pages: the holder's description keeps its first characters."""
    from lebm.cli.run_lock import COMMAND_SHOWN, describe

    holder = {"pid": 7, "host": "n1", "started": "2026-11-27 09:00:00", "command": "lebm fit " + "--a.b 1 " * 400}
    described = describe(holder)
    assert described.startswith("pid 7 on host n1, started 2026-11-27 09:00:00 (lebm fit --a.b 1")
    assert described.endswith("...)") and len(described) < COMMAND_SHOWN + 60


def test_a_holder_command_that_spans_lines_is_quoted_on_the_refusals_one_line(capsys, tmp_path: Path) -> None:
    """CPU. The running fit was given a YAML value of several lines (its command names it quoted, line
    breaks and all): the refusal of a second fit stays one line, the command's words one space apart."""
    import fcntl

    from lebm.cli.run_lock import LOCK_FILE, take_lock

    run = tmp_path / "run"
    run.mkdir()
    command = "lebm fit --trainer.callbacks+='class_path: x.Y\ninit_args:\n    n: 1'"
    with open(run / LOCK_FILE, "w") as held:  # the running fit's lock, held by this open file
        held.write(json.dumps({"pid": 7, "host": "n1", "started": "2026-11-27 09:00:00", "command": command}))
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            take_lock(str(run))
    said = capsys.readouterr().err
    assert stop.value.code == 2 and said.count("\n") == 1, said
    assert "(lebm fit --trainer.callbacks+='class_path: x.Y init_args: n: 1')" in said


FORKS = (
    "import os, sys, time; from lebm.cli.run_lock import take_lock; take_lock(sys.argv[1]); "
    "child = os.fork()\n"
    "if child == 0:\n    os.write(1, b'forked\\n'); time.sleep(600); os._exit(0)\n"
    "os.write(1, b'%d\\n' % child); time.sleep(600)"  # one write a line: the two processes' lines never mix
)


def test_a_killed_fits_forked_workers_do_not_keep_its_folder_locked(capsys, tmp_path: Path) -> None:
    """A holder that forked a child (as DataLoader workers are) is killed while the child lives on:
    the next fit takes the lock over at once, not once the orphan has ended."""
    from lebm.cli.run_lock import release_locks, take_lock

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", FORKS, str(run)], stdout=subprocess.PIPE, text=True)
    lines = {holder.stdout.readline().strip() for _ in range(2)}  # the child's pid, and the child forked
    assert "forked" in lines, lines
    (child,) = (int(line) for line in lines if line != "forked")
    try:
        holder.kill()
        holder.wait()
        capsys.readouterr()
        take_lock(str(run))  # refused (SystemExit) while the orphan holds the flock
        assert "took over the lock of a fit that is no longer running" in capsys.readouterr().err
    finally:
        release_locks()
        os.kill(child, 9)


def test_a_file_system_without_flock_runs_unlocked_and_says_so(capsys, tmp_path: Path, monkeypatch) -> None:
    """Some network mounts refuse ``flock`` (ENOLCK): the fit goes on without the lock, in one line."""
    import errno
    import fcntl

    from lebm.cli.run_lock import HELD, take_lock

    def refused(*args: object) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", refused)
    run = tmp_path / "run"
    capsys.readouterr()
    take_lock(str(run))
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "this fit runs without the one-fit-per-folder lock" in said, said
    assert str(run) not in HELD


def test_a_python_fit_into_a_folder_a_running_fit_holds_raises_one_line(tmp_path: Path) -> None:
    """``recipe.trainer().fit`` into a folder another process's fit holds: a ``ValueError`` naming the
    running fit, not the command's exit (a notebook goes on); nothing trained or written there."""
    import lebm

    run = tmp_path / "run"
    holder = holding(run)
    try:
        settings = {"trainer.default_root_dir": str(run), "trainer.limit_train_batches": 2, "trainer.max_epochs": 1}
        recipe = lebm.from_recipe("quickstart", {**settings, "trainer.logger": False, "trainer.limit_val_batches": 0})
        with pytest.raises(ValueError, match=f"{run} is in use by a running fit: pid {holder.pid}") as refused:
            recipe.trainer().fit(recipe.model, datamodule=recipe.datamodule)
        assert "\n" not in str(refused.value)
        assert sorted(path.name for path in run.iterdir()) == ["fit.lock"]
    finally:
        holder.kill()
        holder.wait()
