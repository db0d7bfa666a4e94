"""Which checkpoint a resume reads (``lebm.checkpoints.most_trained_checkpoint``), device: CPU: the
one holding the most training, ``last.ckpt`` of a tie, a truncated file passed over by name, and an
intact file holding objects refused, never passed over for an older one."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import torch

from lebm.checkpoints import CheckpointNotPlain, most_trained_checkpoint


def saved(path: Path, step: int, epoch: int, **extra: object) -> str:
    torch.save({"global_step": step, "epoch": epoch, "state_dict": {"w": torch.zeros(2)}, **extra}, path)
    return str(path)


def test_of_a_tie_of_equal_training_last_ckpt_is_read_whatever_its_place(tmp_path: Path) -> None:
    epoch_end = saved(tmp_path / "epoch=1-step=8.ckpt", 8, 1)
    last = saved(tmp_path / "last.ckpt", 8, 1)
    older = saved(tmp_path / "epoch=0-step=4.ckpt", 4, 0)
    assert most_trained_checkpoint([epoch_end, last, older]) == (last, [])
    assert most_trained_checkpoint([older, last, epoch_end]) == (last, [])
    newer = saved(tmp_path / "step=9.ckpt", 9, 1)
    assert most_trained_checkpoint([last, newer])[0] == newer  # more training wins over the name


def test_a_truncated_file_is_passed_over_by_name_and_one_holding_objects_is_refused(tmp_path: Path) -> None:
    last = saved(tmp_path / "last.ckpt", 8, 1)
    truncated = tmp_path / "step=9.ckpt"
    truncated.write_bytes(Path(saved(truncated, 9, 1)).read_bytes()[:200])
    best, passed_over = most_trained_checkpoint([last, str(truncated)])
    assert best == last and len(passed_over) == 1 and str(truncated) in passed_over[0]
    holding = saved(tmp_path / "step=10.ckpt", 10, 1, callbacks={"score": Decimal("0.5")})
    with pytest.raises(CheckpointNotPlain, match="decimal.Decimal"):
        most_trained_checkpoint([last, holding])  # the user's word is needed, not an older checkpoint
    assert most_trained_checkpoint([last, holding], weights_only=False)[0] == holding
