"""``scripts/readme_pictures.py`` (device: CPU): the check CI runs on the quickstart it trains
passes pictures that are the run's, and fails, naming the command that redraws them, on a picture
that is missing, of another size or of other pixels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.scripts import load_script

REPO = Path(__file__).resolve().parents[1]


def write_run(run: Path, seed: int) -> None:
    """A run folder holding every picture the README shows, drawn from ``seed``."""
    pictures = load_script("scripts/readme_pictures.py").PICTURES
    rng = np.random.default_rng(seed)
    for drawn in pictures.values():
        (run / drawn).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(run / drawn)
    (run / "checkpoints").mkdir(exist_ok=True)
    torch.save({"state_dict": {"net.weight": torch.full((2, 2), float(seed))}}, run / "checkpoints" / "last.ckpt")


def test_pictures_drawn_from_the_run_pass_and_another_runs_fail(tmp_path: Path) -> None:
    pictures = load_script("scripts/readme_pictures.py")
    run, images = tmp_path / "run", tmp_path / "images"
    images.mkdir()
    write_run(run, seed=0)
    weights = tmp_path / "weights.pt"
    pictures.draw(run, images, weights)
    assert not any(d.too_large for d in pictures.check(run, images))
    assert (images / "quickstart_pictures.json").is_file() and pictures.weight_difference(run, weights) == 0
    shown = images / "quickstart_samples.png"
    values = np.asarray(Image.open(shown)).copy()
    values[0, 0] = np.where(values[0, 0] < 255, values[0, 0] + 1, 254)  # another CPU's rounding: passes
    Image.fromarray(values).save(shown)
    (difference, *_) = pictures.check(run, images)
    assert 0 < difference.changed < 0.01 and difference.largest == 1 and not difference.too_large
    values[0, 0] = 255 - values[0, 0]  # one pixel of a changed caption: fails
    Image.fromarray(values).save(shown)
    assert pictures.check(run, images)[0].too_large
    other = tmp_path / "other"
    write_run(other, seed=1)
    assert all(d.too_large for d in pictures.check(other, images))
    assert pictures.weight_difference(other, weights) == 1.0
    Image.fromarray(np.zeros((20, 60, 3), dtype=np.uint8)).save(shown)
    assert "60x20 pixels, now drawn 60x40" in pictures.check(run, images)[0].describe()
    shown.unlink()
    assert pictures.check(run, images)[0].problem == f"no file {shown}"


def test_the_check_fails_in_one_line_naming_the_command_that_redraws(tmp_path: Path) -> None:
    """The script itself, on a run whose pictures are not the repository's: exit 1 and the line."""
    write_run(tmp_path, seed=2)
    finished = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_pictures.py"), "check", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 1, finished.stderr
    assert "python scripts/readme_pictures.py draw runs/quickstart" in finished.stderr
    assert "Traceback" not in finished.stderr and len(finished.stderr.strip().splitlines()) == 1
    # it trained other weights: on any other machine that is expected, and docs/images stay as they are
    assert "On any machine but the one that drew them" in finished.stderr
    assert "one of the same CPU type included" in finished.stderr
    assert "docs/images should stay as they are" in finished.stderr
    # before any figure, it says what it compares and that no other machine's run is expected to match
    first = finished.stdout.splitlines()[0]
    assert first.startswith("readme_pictures: comparing the README's 4 pictures") and str(tmp_path) in first
    assert "Only the run that drew them is expected to match" in first and "same CPU type" in first


def test_draw_refuses_a_folder_that_is_no_finished_quickstart(tmp_path: Path) -> None:
    pictures = load_script("scripts/readme_pictures.py")
    with pytest.raises(SystemExit, match="is no finished quickstart run"):
        pictures.draw(tmp_path, tmp_path)


def test_the_readme_pictures_are_what_the_pictured_weights_draw_now() -> None:
    """CPU. The pictured model's weights (``tests/fixtures/readme_quickstart/weights.pt``), drawn
    again by the quickstart recipe's grid callbacks with the code as it is (chains, decoder, grid
    layout, captions), give the README's sample, 200-step and reconstruction grids: a change to
    what the command draws fails here until ``draw`` redraws them."""
    pictures = load_script("scripts/readme_pictures.py")
    for name, image in pictures.redraw().items():
        difference = pictures.Difference.between(name, pictures.pixels(pictures.IMAGES / name), image)
        assert not difference.too_large, (
            f"{difference.describe()}: not what the pictured weights draw now; {pictures.DRAW} "
            "after lebm fit -c quickstart"
        )


def test_draw_takes_its_pictures_from_runs_quickstart_only(tmp_path: Path) -> None:
    """The learning curves' title names the run's folder: the command refuses another folder."""
    write_run(tmp_path / "elsewhere", seed=3)
    finished = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_pictures.py"), "draw", str(tmp_path / "elsewhere")],
        capture_output=True,
        text=True,
    )
    assert finished.returncode == 1 and "draw from the README's command's folder, runs/quickstart" in finished.stderr
