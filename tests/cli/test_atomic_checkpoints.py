"""Checkpoints and run-folder files written whole or not at all, wherever the run folder is (device:
CPU; the lebm command in this process; the tmpfs cases mount one, as root, and are skipped saying why
where mounting is not permitted).

- a disk that fills up at a checkpoint stops the run with one lebm line (the folder, the space
  needed, how to resume), no traceback, no partial or temporary file, and the run resumes;
- with the system temporary folder on another file system, every checkpoint (and every other file
  lebm writes into the run folder) is written beside its name and renamed into place there;
- a write that fails halfway leaves the previous checkpoint as it was and no temporary file;
- ``lebm fit``, ``lebm.from_recipe`` and a Trainer built by hand all save through lebm's writer;
- the writer syncs the new bytes before the rename, and Ctrl-C half way leaves the old file and no
  temporary one;
- a checkpoint folder that cannot be made (a file in the way) stops the run before its first batch.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

import lebm.checkpoint_io
from lebm.checkpoint_io import AtomicCheckpointIO, CheckpointNotSaved, with_atomic_checkpoints
from tests.helpers.cli_runner import QUIET, run_cli

RUN = ["fit", "-c", "recipes/quickstart.yaml", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0"]
RUN += QUIET


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder`` for the block (the test is skipped, saying why, where
    this process may not mount one)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command here: the full-disk case needs a small tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.decode().strip()}): run as root")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def temporary_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_disk_that_fills_up_at_a_checkpoint_stops_with_one_line_and_the_run_resumes(capsys, tmp_path: Path) -> None:
    """The quickstart's checkpoints are 1.6 MB: on a 4 MB tmpfs the first epoch's two fit, the second
    epoch's does not. The run stops with exit code 1 and one line; the first epoch's checkpoints are
    intact, no temporary file is left; with room again, ``--ckpt_path auto`` finishes the run."""
    with tmpfs(tmp_path / "disk", "4m") as disk:
        run = disk / "run"
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli(*RUN, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run))
        assert stop.value.code == 1
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("lebm: could not save")]
        assert len(lines) == 1 and "Traceback" not in err, err
        line = lines[0]
        folder = run / "checkpoints"
        assert f"could not save the checkpoint {folder / 'epoch=1-step=4.ckpt'}: no space left on device" in line
        needs = (folder / "last.ckpt").stat().st_size / 1e6  # the next checkpoint is as large as this one
        assert f"it needs {needs:.1f} MB; {folder} has " in line, line
        resume = "resume with --ckpt_path auto (it takes the intact checkpoint holding the most training, now"
        assert f"{resume} {folder / 'last.ckpt'})" in line
        assert sorted(path.name for path in folder.iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]
        assert not temporary_files(run)
        for path in folder.iterdir():  # whole, loadable, the first epoch's
            assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 2
        subprocess.run(["mount", "-o", "remount,size=32m", str(disk)], check=True)
        run_cli(*RUN, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run), "--ckpt_path", "auto")
        assert torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 4
        assert not temporary_files(run)


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every ``os.replace(source, target)`` of the test, as absolute paths."""
    seen: list[tuple[str, str]] = []
    original = os.replace

    def traced(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        seen.append((os.path.abspath(source), os.path.abspath(target)))
        original(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", traced)
    return seen


def test_with_the_temporary_folder_on_another_file_system_files_are_renamed_into_place_in_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renames: list[tuple[str, str]]
) -> None:
    """TMPDIR on a tmpfs (Lightning's own writer puts its temporary file there and moves it: a copy
    across file systems). Every checkpoint, and every other file lebm writes into the run folder
    (config.yaml, the grids), is the target of a rename from a temporary file in its own folder, and
    nothing is left in the temporary folder."""
    pytest.importorskip("wandb")  # its import makes temporary folders of its own: before TMPDIR moves
    with tmpfs(tmp_path / "system_tmp", "16m") as system_tmp:
        monkeypatch.setenv("TMPDIR", str(system_tmp))
        monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
        run = tmp_path / "run"
        run_cli(*RUN, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run))
        assert not list(system_tmp.iterdir())
    targets = {target: source for source, target in renames}
    # the run-folder lock is not a file of the run: written in place, emptied when the fit ends
    written = [str(path) for path in run.rglob("*") if path.is_file() and path.name != "fit.lock"]
    checkpoints = [path for path in written if path.endswith(".ckpt")]
    assert len(checkpoints) == 2 and any(path.endswith("config.yaml") for path in written)
    assert any(path.endswith(".png") for path in written)
    for path in written:
        assert path in targets, f"{path} was not renamed into place"
        source = targets[path]
        assert os.path.dirname(source) == os.path.dirname(path) and source.endswith(".tmp"), source
    assert not temporary_files(run)


class HalfWrite:
    """A file whose ``write`` writes half of what it is given, then fails as a full disk does."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def write(self, data: Any) -> int:
        data = memoryview(data).cast("B")
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_fails_halfway_leaves_the_previous_checkpoint_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault is injected into the writer after half the bytes reached the temporary file."""
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.arange(1000.0)}, path)
    before = path.read_bytes()
    original = lebm.checkpoint_io.replaced_atomically

    @contextmanager
    def half_written(*args: Any, **kwargs: Any) -> Iterator[HalfWrite]:
        with original(*args, **kwargs) as file:
            yield HalfWrite(file)

    monkeypatch.setattr(lebm.checkpoint_io, "replaced_atomically", half_written)
    with pytest.raises(CheckpointNotSaved) as failed:
        io.save_checkpoint({"step": 2, "weights": torch.arange(5000.0)}, path)
    message = str(failed.value)
    assert message.startswith(f"could not save the checkpoint {path}: no space left on device (it needs")
    assert "the checkpoints saved before are intact" in message and f"now {path})" in message
    assert isinstance(failed.value, OSError) and "\n" not in message
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["step"] == 1


def test_another_error_of_the_writer_is_its_own_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """An object torch cannot save fails before anything is written; a folder that cannot be written
    gets the one line with the fix."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    with pytest.raises(Exception) as failed:
        io.save_checkpoint({"step": 1, "function": lambda: None}, path)
    assert not isinstance(failed.value, CheckpointNotSaved) and not list(tmp_path.iterdir())
    (tmp_path / "taken").write_text("a file where the checkpoint folder should be")
    expected = r"taken/last.ckpt \(1.3 kB\): file exists; no partial file was left. Make .* writable, then run the same"
    with pytest.raises(CheckpointNotSaved, match=expected):
        io.save_checkpoint({"step": 1}, tmp_path / "taken" / "last.ckpt")


def test_every_way_of_building_a_trainer_saves_through_lebms_writer(tmp_path: Path) -> None:
    """``lebm.from_recipe``'s settings carry the plugin (a plain ``TorchCheckpointIO`` given is put in
    its place, a user's own kept); a Trainer built by hand gets it when the method is set up."""
    import lightning as L

    import lebm

    recipe = lebm.from_recipe("quickstart", {"trainer.default_root_dir": str(tmp_path / "run")})
    assert [type(plugin) for plugin in recipe.trainer_settings["plugins"]] == [AtomicCheckpointIO]
    trainer = recipe.trainer(logger=False)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO

    class Own(TorchCheckpointIO):
        pass

    own = Own()
    assert with_atomic_checkpoints([own]) == [own]
    assert [type(plugin) for plugin in with_atomic_checkpoints(TorchCheckpointIO())] == [AtomicCheckpointIO]

    by_hand = L.Trainer(
        max_steps=1, limit_val_batches=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(tmp_path / "by_hand"), inference_mode=False,
    )  # fmt: skip
    assert type(by_hand.strategy.checkpoint_io) is TorchCheckpointIO
    by_hand.fit(recipe.model, datamodule=recipe.datamodule)
    assert type(by_hand.strategy.checkpoint_io) is AtomicCheckpointIO


def test_the_new_content_reaches_the_disk_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order that makes a crash leave the old file or the whole new one: the temporary file
    flushed and synced with all its bytes, then renamed, then its folder synced."""
    import lebm.atomic

    events: list[tuple[str, str, int]] = []
    fsync, replace = os.fsync, os.replace

    def traced_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))
        fsync(fd)

    def traced_replace(source: Any, target: Any) -> None:
        events.append(("replace", os.fspath(source), os.stat(source).st_size))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    path = tmp_path / "metrics.csv"
    with lebm.atomic.replaced_atomically(path) as file:
        file.write("step,epoch\n0,0\n")
    (synced, temporary, synced_size), (renamed, source, _), (folder_synced, folder, _) = events
    assert (synced, renamed, folder_synced) == ("fsync", "replace", "fsync"), events
    assert temporary == source and os.path.dirname(source) == str(tmp_path) and source.endswith(".tmp")
    assert synced_size == len("step,epoch\n0,0\n")  # flushed before the sync: every byte on the disk
    assert folder == str(tmp_path) and path.read_text() == "step,epoch\n0,0\n"


class InterruptedWrite(HalfWrite):
    """Writes half of what it is given, then the user presses Ctrl-C."""

    def write(self, data: Any) -> int:
        data = data if isinstance(data, str) else memoryview(data).cast("B")
        self.file.write(data[: len(data) // 2])
        self.file.flush()
        raise KeyboardInterrupt


def test_ctrl_c_in_the_middle_of_a_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A KeyboardInterrupt (not an ``Exception``) half way through a plain file's write and through a
    checkpoint's: it goes on up unchanged, the old file is whole, the temporary file is gone."""
    from lebm.atomic import replaced_atomically

    table = tmp_path / "metrics.csv"
    table.write_text("step\n0\n")
    with pytest.raises(KeyboardInterrupt), replaced_atomically(table) as file:
        InterruptedWrite(file).write("step\n0\n1\n")
    assert table.read_text() == "step\n0\n" and os.listdir(tmp_path) == ["metrics.csv"]

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    before = path.read_bytes()
    original = lebm.checkpoint_io.replaced_atomically

    @contextmanager
    def interrupted(*args: Any, **kwargs: Any) -> Iterator[InterruptedWrite]:
        with original(*args, **kwargs) as file:
            yield InterruptedWrite(file)

    monkeypatch.setattr(lebm.checkpoint_io, "replaced_atomically", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "weights": torch.arange(1000.0)}, path)
    assert path.read_bytes() == before and os.listdir(path.parent) == ["last.ckpt"]


def test_a_checkpoint_folder_that_cannot_be_made_stops_the_run_before_its_first_batch(tmp_path: Path) -> None:
    """A file named ``checkpoints`` where the folder belongs: a Trainer built by hand stops in its
    set-up, with the one line, before any batch is trained (not after the first epoch)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from tests.models.cases import latent_ebm, toy_loader

    (tmp_path / "checkpoints").write_text("a file where the checkpoint folder belongs")
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        limit_val_batches=0, default_root_dir=str(tmp_path),
        callbacks=[ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"))],
    )  # fmt: skip
    with pytest.raises(CheckpointNotSaved) as stopped:
        trainer.fit(latent_ebm(), toy_loader(n_batches=1))
    folder = tmp_path / "checkpoints"
    assert str(stopped.value) == (
        f"cannot save checkpoints in {folder}: a file is in the way; nothing was trained. Move the file {folder} away "
        "(or give the run another folder: --trainer.default_root_dir), then run the same command again"
    )
    assert trainer.global_step == 0


@pytest.mark.slow
def test_lebm_fit_with_a_file_named_checkpoints_stops_with_one_line_before_training(capsys, tmp_path: Path) -> None:
    """The command's side of the test above: exit code 1, the line, no traceback, the file untouched."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoint folder belongs")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(*RUN, "--trainer.max_epochs", "1", "--trainer.default_root_dir", str(run))
    err = capsys.readouterr().err
    assert stop.value.code == 1 and "Traceback" not in err
    assert f"lebm: cannot save checkpoints in {run / 'checkpoints'}: a file is in the way; nothing was trained" in err
    assert (run / "checkpoints").read_text() == "a file where the checkpoint folder belongs"


def test_a_folder_that_cannot_be_written_is_named_as_such_not_as_a_file_in_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. An existing checkpoint folder that refuses writes (permissions, a read-only mount; faked
    here: root writes anywhere) is said with the system's reason and "make it writable"; only a
    file where the folder belongs is "a file is in the way"."""
    import errno

    import lebm.checkpoint_io as checkpoint_io

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    denied = PermissionError(errno.EACCES, "Permission denied", str(folder))
    monkeypatch.setattr(checkpoint_io, "folder_write_error", lambda path: denied)
    line = checkpoint_io.unwritable(str(folder))
    assert line is not None and "a file is in the way" not in line
    assert line.startswith(f"cannot save checkpoints in {folder}: ") and f"Make {folder} writable" in line


def test_a_users_own_checkpoint_io_is_kept_and_lightnings_plain_one_replaced() -> None:
    """CPU. C05: on a hand-built Trainer, a subclass of ``TorchCheckpointIO`` of the user's own stays
    in place; only Lightning's plain default gets lebm's atomic writer (and a plugins list likewise)."""
    from types import SimpleNamespace

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lebm.checkpoint_io import AtomicCheckpointIO, use_atomic_checkpoints, with_atomic_checkpoints

    class Mine(TorchCheckpointIO):
        pass

    mine = Mine()
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=mine))
    use_atomic_checkpoints(trainer)
    assert trainer.strategy.checkpoint_io is mine
    trainer.strategy.checkpoint_io = TorchCheckpointIO()
    use_atomic_checkpoints(trainer)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert with_atomic_checkpoints([mine]) == [mine]
    (atomic,) = with_atomic_checkpoints([TorchCheckpointIO()])
    assert type(atomic) is AtomicCheckpointIO


def test_a_file_url_checkpoint_is_written_at_its_path_not_in_a_literal_file_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU. C02: ``file:///<run>/checkpoints/last.ckpt`` is the file at that path, written atomically
    there; no folder named ``file:`` appears in the working folder."""
    from lebm.checkpoint_io import AtomicCheckpointIO

    target = tmp_path / "checkpoints" / "last.ckpt"
    target.parent.mkdir()
    (tmp_path / "working").mkdir()
    monkeypatch.chdir(tmp_path / "working")  # where a literal "file:" folder would appear
    before = set(Path.cwd().iterdir())
    AtomicCheckpointIO().save_checkpoint({"global_step": 7}, f"file://{target}")
    assert torch.load(target, weights_only=True)["global_step"] == 7
    assert set(Path.cwd().iterdir()) == before and not (Path.cwd() / "file:").exists()
