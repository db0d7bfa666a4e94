"""Shared pytest fixtures: keep runs offline, quiet, reproducible and on the device each test names.

**Devices.** A test runs on the CPU unless it is marked ``gpu``, on any machine: for every other
test, torch reports no CUDA device (so Lightning's ``accelerator="auto"``, the ``lebm`` command run
in this process and lebm's own checks pick the CPU) and ``CUDA_VISIBLE_DEVICES`` is empty (so the
subprocesses a test starts, a ``lebm`` command or DDP workers, see no GPU either). Tests marked
``gpu`` see the machine's GPUs and are skipped, with the reason, on a machine without one.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import pytest

# Python's bytecode cache on, whatever the environment says (``PYTHONDONTWRITEBYTECODE=1`` on some
# machines): each process of the suite (two pytest-xdist workers, a tier, the ``lebm`` commands the
# tests start) then reuses pytest's rewritten test modules and lebm's compiled modules in
# ``__pycache__`` (a cache, as .gitignore and CI's clean-clone check treat it) instead of compiling
# all of them again: about 9 s of each worker's collection on 2 cores.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# the lebm command's cache (recorded options, help texts) of this test session only, not the user's
os.environ.setdefault("LEBM_CACHE_DIR", tempfile.mkdtemp(prefix="lebm-test-cache-"))

#: The seed torch's global RNG gets before every test. ``LEBM_TEST_SEED=k`` reruns the suite on other
#: draws: a statistical test must pass for any seed, its margin set by the distribution, not one draw.
TEST_SEED = int(os.environ.get("LEBM_TEST_SEED", "0"))

#: Under pytest-xdist (``-n auto``, :func:`pytest_cmdline_main`), each worker process gets an equal share of the
#: machine's cores for torch's intra-op threads: torch's default, every core in every worker,
#: oversubscribes them.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if XDIST_WORKERS:
    import torch

    from lebm.devices import usable_cpu_cores

    torch.set_num_threads(max(1, usable_cpu_cores() // XDIST_WORKERS))  # the cores this process may use


#: The clone's files when the session started (the controlling process's listing).
CLONE_BEFORE = pytest.StashKey[dict[str, tuple[int, int]]]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Every core by default: ``-n auto`` when pytest-xdist is there and the command gives no ``-n``
    (``-n 0``: this one process), scheduled ``worksteal`` unless the command gives a ``--dist``.
    Kept out of setup.cfg's ``addopts``, where ``-n`` would stop a machine without the plugin with
    "unrecognized arguments: -n"."""
    worker = hasattr(config, "workerinput")
    if config.pluginmanager.has_plugin("xdist") and not worker and config.getoption("numprocesses", None) is None:
        config.option.numprocesses = "auto"
        if config.getoption("dist", "no") == "no":  # no --dist given: a worker out of tests takes half of another's
            config.option.dist = "worksteal"


#: The clone this conftest lies in (its tests/ folder's parent).
CLONE = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Without pytest-xdist, one line (also under ``-q``) says the tests run in one process and how
    to run them on every core. The controlling process lists the clone's files
    (:func:`pytest_sessionfinish` compares)."""
    config = session.config
    if not hasattr(config, "workerinput"):
        from tests.helpers.clone_guard import clone_files

        config.stash[CLONE_BEFORE] = clone_files(CLONE)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not config.pluginmanager.has_plugin("xdist"):
        reporter.write_line(
            "pytest-xdist is not installed: the tests run in one process "
            "(pip install -c constraints.txt pytest-xdist runs them on every core)"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session fails, naming each file, when its tests wrote, added or removed a file of the
    clone: every test writes under its own folder (CI checks the same after both tiers)."""
    config = session.config
    before = config.stash.get(CLONE_BEFORE, None)
    if before is None:
        return
    from tests.helpers.clone_guard import changes, clone_files

    found = changes(before, clone_files(CLONE))
    if found:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the tests wrote into the clone (a test writes under its own folder: tmp_path):", *found]
        if reporter is not None:
            reporter.ensure_newline()
            for line in lines:
                reporter.write_line(line, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@functools.cache
def cuda_devices() -> int:
    """The GPUs of this machine, read once, when the tests are collected, before any test hides them
    (torch is imported by the processes that run tests, not by pytest-xdist's controlling one, which
    starts the workers sooner without it)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run on a CUDA device: without one they are skipped, saying why."""
    if cuda_devices():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (the gpu tier: python -m pytest -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _on_the_cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device: CPU for every test not marked ``gpu`` (see the module docstring)."""
    if request.node.get_closest_marker("gpu") is not None:
        return
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    # C callables, no Python function: a recorded iteration's watch (lebm.recording.audit) sees no test code
    monkeypatch.setattr(torch.cuda, "is_available", functools.partial(bool, False))
    monkeypatch.setattr(torch.cuda, "device_count", functools.partial(int, 0))


@pytest.fixture(autouse=True)
def _seed_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    torch.manual_seed(TEST_SEED)
    # a run's seed (seed_everything sets PL_GLOBAL_SEED) must not leak from one test into the next
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


@pytest.fixture(autouse=True)
def _cli_runs_in_the_tests_own_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_cli`` without ``cwd`` runs in a folder of this test's own (made at its first call, the
    same for the test's later calls), never in the clone: a user's ``runs/quickstart`` left by the
    README's first command cannot change what a test meets."""
    from tests.helpers import cli_runner

    folders: list[Path] = []

    def folder() -> Path:
        if not folders:
            folders.append(cli_runner.working_folder(tmp_path_factory.mktemp("cwd")))
        return folders[0]

    monkeypatch.setattr(cli_runner, "tests_own_folder", folder)


@pytest.fixture
def one_thread() -> object:
    """One intra-op thread for the test (tiny nets run several times faster with one than with
    two on a busy 2-core machine); the previous setting is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def exact_float32() -> object:
    """TF32 off for matrix products and convolutions (lebm's policy switch) during the test, so that a
    captured and an eager chain on a GPU use the same float32 arithmetic; restored afterwards."""
    import torch

    from lebm.speed.numerics import apply_tf32, tf32_state

    saved = tf32_state()
    apply_tf32(False)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
