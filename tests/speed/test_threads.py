"""CPUThreads: one thread for small models, the user's OMP_NUM_THREADS respected, explicit counts applied."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.callbacks import CPUThreads
from tests.helpers.trainers import quiet_trainer


@pytest.fixture
def restore_threads() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def set_up(callback: CPUThreads, model: nn.Module) -> None:
    trainer = quiet_trainer(accelerator="cpu")
    callback.setup(trainer, model, "fit")


def test_auto_gives_a_small_model_one_thread(restore_threads, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    set_up(CPUThreads("auto"), nn.Linear(100, 100))
    assert torch.get_num_threads() == 1


def test_auto_leaves_a_large_model_and_a_users_setting_alone(restore_threads, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    set_up(CPUThreads("auto", small_model_parameters=1000), nn.Linear(100, 100))
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    set_up(CPUThreads("auto"), nn.Linear(10, 10))
    assert torch.get_num_threads() == 2


def test_an_explicit_count_is_applied_and_a_wrong_one_refused(restore_threads) -> None:
    set_up(CPUThreads(1), nn.Linear(1000, 1000))
    assert torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="'auto', an int >= 1 or null"):
        CPUThreads("many")
