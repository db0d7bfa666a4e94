"""lebm as a user installs it (CPU, slow): a wheel built from this checkout, installed into a fresh
virtual environment, used from an empty folder with no source tree on the path.

The virtual environment sees this interpreter's packages (``--system-site-packages``: torch and
Lightning are not downloaded again) but its own ``lebm`` comes first; the test checks that the
``lebm`` it runs is the installed wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.subprocesses import HANG_SECONDS

REPO = Path(__file__).resolve().parents[1]
#: What the wheel is built from: the checkout without runs, caches and earlier build output.
NOT_SOURCES = shutil.ignore_patterns(".git", "runs", "wandb", "build", "dist", "site", "*.egg-info", "__pycache__")

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = HANG_SECONDS) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """``(bin folder, environment)`` of a fresh virtual environment holding the wheel of this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", CUDA_VISIBLE_DEVICES="")
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(root)]
    run([*build, str(source)], cwd=root, env=env)
    (wheel,) = root.glob("lebm-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], cwd=root, env=env)
    bin_folder = venv / "bin"
    run(
        [str(bin_folder / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        root,
        env,
    )
    env["PATH"] = f"{bin_folder}{os.pathsep}{env['PATH']}"
    return bin_folder, env


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_the_wheel_carries_every_recipe_and_lists_them(installed, empty_folder: Path) -> None:
    bin_folder, env = installed
    where = run([str(bin_folder / "python"), "-c", "import lebm; print(lebm.__file__)"], empty_folder, env)
    assert where.stdout.strip().startswith(str(bin_folder.parent)), "the test must run the installed lebm"
    listing = run([str(bin_folder / "lebm"), "recipes"], empty_folder, env).stdout
    for recipe in (REPO / "recipes").rglob("*.yaml"):
        name = recipe.relative_to(REPO / "recipes").with_suffix("").as_posix()
        assert f"  {name} " in listing, name
    assert "packaged_recipes" in listing
    version = run([str(bin_folder / "lebm"), "--version"], empty_folder, env).stdout
    assert version.strip().startswith("lebm ")


def test_the_packaged_quickstart_trains_loads_and_generates_from_an_empty_folder(installed, empty_folder: Path) -> None:
    bin_folder, env = installed
    run([str(bin_folder / "lebm"), "fit", "-c", "quickstart", "--trainer.max_epochs", "1"], empty_folder, env)
    run_folder = empty_folder / "runs" / "quickstart"
    assert (run_folder / "checkpoints" / "last.ckpt").is_file() and (run_folder / "config.yaml").is_file()
    samples = sorted(p.name for p in (run_folder / "images").glob("samples_*.png"))
    assert samples == ["samples_epoch0000.png", "samples_langevin200_epoch0000.png"]  # and the long chain's
    assert (run_folder / "metrics.csv").is_file() and (run_folder / "curves.png").is_file()
    code = (
        "import lebm\n"
        "model = lebm.load('runs/quickstart/checkpoints/last.ckpt')\n"
        "images = model.generate(4)\n"
        "assert tuple(images.shape) == (4, 1, 8, 8), images.shape\n"
        "assert float(images.abs().max()) <= 1.0\n"
    )
    run([str(bin_folder / "python"), "-c", code], empty_folder, env)


def test_a_copied_recipe_is_edited_and_trained(installed, empty_folder: Path) -> None:
    bin_folder, env = installed
    copied = run([str(bin_folder / "lebm"), "recipes", "copy", "quickstart", "mine"], empty_folder, env).stdout
    assert "lebm fit -c mine/quickstart.yaml" in copied
    fragment = empty_folder / "mine" / "_quickstart.yaml"
    fragment.write_text(fragment.read_text().replace("max_epochs: 100", "max_epochs: 1"))
    fit = [str(bin_folder / "lebm"), "fit", "-c", "mine/quickstart.yaml", "--trainer.default_root_dir", "runs/mine"]
    run(fit, empty_folder, env)
    assert "max_epochs: 1\n" in (empty_folder / "runs" / "mine" / "config.yaml").read_text()
    assert (empty_folder / "runs" / "mine" / "checkpoints" / "last.ckpt").is_file()
