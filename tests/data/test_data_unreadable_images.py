"""Unreadable files in an image folder are named with the fix, never left to a raw traceback: a file
that is not an image (or empty) is found by the header check when the data set is built, before
training; a file cut short after its header is named when it is loaded, also from a DataLoader
worker process; ``skip_unreadable`` leaves them out, counted. Device: CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lebm.data import ImageDataModule, ImageFolderDataset
from lebm.data.errors import DataError
from lebm.data.images.folder import UnreadableImageError
from tests.helpers.cli_runner import run_cli

GOOD = 6


def write_pngs(folder: Path, count: int = GOOD, size: int = 8) -> list[Path]:
    """``count`` grey ``size`` x ``size`` PNGs ``img00.png``...: noise (so that the pixel data
    outweigh the header) from ``10 * i`` to ``10 * i + 4``; the smallest value tells them apart."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        path = folder / f"img{index:02d}.png"
        pixels = 10 * index + rng.integers(0, 5, size=(size, size), dtype=np.uint8)
        pixels[0, 0] = 10 * index
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def cut_short(path: Path) -> Path:
    """Cut ``path`` after its header (a download interrupted mid-file): it opens, it does not decode."""
    path.write_bytes(path.read_bytes()[:60])
    with Image.open(path) as image:  # the header still reads: only loading finds the damage
        assert image.size == (8, 8)
    return path


@pytest.fixture
def folder_with_bad_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Six readable PNGs plus a text file and an empty file named as images (sorted among them)."""
    root = tmp_path / "images"
    write_pngs(root)
    not_an_image = root / "img02b.png"
    not_an_image.write_text("<html>404 not found</html>")
    empty = root / "img04b.jpg"
    empty.write_bytes(b"")
    return root, [not_an_image, empty]


def test_files_that_are_not_images_are_named_when_the_data_set_is_built(folder_with_bad_files) -> None:
    root, bad = folder_with_bad_files
    with pytest.raises(UnreadableImageError) as info:
        ImageFolderDataset(root)
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, DataError)  # the lebm command prints it as one line
    assert message.startswith(f"2 of 8 image files under '{root}' cannot be read as images: {bad[0]} (")
    assert str(bad[1]) in message and "Delete or replace them" in message
    assert "--data.init_args.skip_unreadable true" in message
    # a limit checks only the files it keeps: the first two are fine
    assert len(ImageFolderDataset(root, limit=2)) == 2


def test_skip_unreadable_leaves_them_out_counted_and_a_limit_counts_readable_files(folder_with_bad_files) -> None:
    root, bad = folder_with_bad_files
    with pytest.warns(
        UserWarning, match=r"skip_unreadable: 2 unreadable image files .* are left out .* 6 images remain"
    ):
        dataset = ImageFolderDataset(root, skip_unreadable=True)
    assert len(dataset) == GOOD and [path for path, _ in dataset.skipped] == bad
    assert [int(dataset[i][0].min()) for i in range(GOOD)] == [10 * i for i in range(GOOD)]
    with pytest.warns(UserWarning, match="1 unreadable"):
        limited = ImageFolderDataset(root, limit=4, skip_unreadable=True)  # img00, 01, 02, (02b), 03
    assert [path.name for path in limited.files] == ["img00.png", "img01.png", "img02.png", "img03.png"]


def test_a_file_cut_short_is_named_when_loaded_and_skipped_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "images"
    broken = cut_short(write_pngs(root)[2])
    dataset = ImageFolderDataset(root)  # the header check passes it
    assert int(dataset[1][0].min()) == 10
    with pytest.raises(UnreadableImageError, match=rf"^{broken} cannot be read as an image \(.*skip_unreadable"):
        dataset[2]
    skipping = ImageFolderDataset(root, skip_unreadable=True)
    with pytest.warns(
        UserWarning, match=rf"{broken} cannot be decoded and is left out.*\(1 file\(s\) left out while loading"
    ):
        image, label = skipping[2]
    assert int(image.min()) == 30 and label == -1  # the next readable image serves in its place


def test_a_worker_process_error_reaches_the_main_process_as_its_own_one_line_message(tmp_path: Path) -> None:
    """torch re-raises a worker's error with the worker's traceback as the message; lebm's data
    errors put their own message back (what the lebm command prints), naming the worker."""
    root = tmp_path / "images"
    broken = cut_short(write_pngs(root)[3])
    batches = iter(DataLoader(ImageFolderDataset(root), batch_size=GOOD, num_workers=1))
    try:
        with pytest.raises(UnreadableImageError) as info:
            next(batches)
    finally:
        batches._shutdown_workers()  # now: left to garbage collection, torch waits 5 s for the worker
    message = str(info.value)
    assert message.startswith(f"{broken} cannot be read as an image (")
    assert message.endswith("to leave such files out (in DataLoader worker process 0)")
    assert "Traceback" not in message and "\n" not in message
    assert str(DataError("plain message")) == "plain message"


def test_the_data_module_checks_the_headers_in_setup_and_passes_skip_unreadable_on(folder_with_bad_files) -> None:
    root, bad = folder_with_bad_files
    module = ImageDataModule(dataset="folder", root=str(root), image_size=8, channels=1, batch_size=2, test_size=2)
    with pytest.raises(UnreadableImageError, match="2 of 8 image files"):
        module.setup("fit")
    skipping = ImageDataModule(
        dataset="folder", root=str(root), image_size=8, channels=1, batch_size=2, test_size=2, skip_unreadable=True
    )
    with pytest.warns(UserWarning, match="2 unreadable"):
        skipping.setup("fit")
    assert [path for path, _ in skipping.skipped_files] == bad
    assert len(skipping.train_dataset) + len(skipping.test_dataset) == GOOD
    assert torch.isfinite(next(iter(skipping.train_dataloader()))[0]).all()
    common = dict(dataset="folder", root=str(root), image_size=8, channels=1, batch_size=2, skip_unreadable=True)
    with pytest.warns(UserWarning, match="2 unreadable"):
        limited = ImageDataModule(**common, limit=4, test_size=2)
        limited.setup("fit")  # the first 4 readable files train, the next 2 test
    assert len(limited.train_dataset) == 4 and len(limited.test_dataset) == 2
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"only 6 readable \(2 unreadable left out\)"):
        ImageDataModule(**common, limit=5, test_size=2).setup("fit")
    with pytest.raises(ValueError, match="skip_unreadable only applies to the image-folder datasets"):
        ImageDataModule(dataset="digits", skip_unreadable=True)


def test_the_lebm_command_names_an_unreadable_image_in_one_line(capsys, tmp_path: Path) -> None:
    root, run = tmp_path / "images", tmp_path / "run"
    write_pngs(root, count=12)
    (root / "img05b.png").write_text("not an image")
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        run_cli(
            "fit",
            "-c",
            "recipes/quickstart.yaml",
            "--data.init_args.dataset",
            "folder",
            "--data.init_args.root",
            str(root),
            "--data.init_args.batch_size",
            "4",
            "--trainer.max_epochs",
            "1",
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(run),
        )
    assert stop.value.code == 2
    error = capsys.readouterr().err
    (line,) = [line for line in error.splitlines() if line.startswith("lebm: error:")]
    assert f"1 of 13 image files under '{root}' cannot be read as images: {root / 'img05b.png'}" in line
    assert "Traceback" not in error
    assert not (run / "checkpoints").exists()  # stopped before training
