"""Shared pytest fixtures: keep runs offline, quiet and reproducible."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run on a CUDA device: without one they are skipped, saying why."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (the gpu tier: python -m pytest -m gpu on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    # a run's seed (seed_everything sets PL_GLOBAL_SEED) must not leak from one test into the next
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)


@pytest.fixture
def one_thread() -> object:
    """One intra-op thread for the test (tiny nets run several times faster with one than with
    two on a busy 2-core machine); the previous setting is restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
