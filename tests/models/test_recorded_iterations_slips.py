"""Tests that catch slips the default tier let through (issue 96, item 6): each fails when its
slip is applied alone (device: CPU)."""

from __future__ import annotations

import torch

from lebm.models.host_reads import WatchedIndex
from lebm.models.recorded_iteration import GUARD_READ_EVERY, IterationRecorder


def test_a_truth_test_of_the_batch_index_is_a_read() -> None:
    """``if batch_idx:`` reads the index (``bool`` among the watched unary reads)."""
    reads: set[str] = set()
    assert WatchedIndex(3, reads)
    assert reads == {"batch_idx"}
    assert not WatchedIndex(0, set())


def test_the_guard_is_read_at_exactly_its_cadence() -> None:
    """The flag is read once GUARD_READ_EVERY iterations are unread, not one later."""
    recorder = IterationRecorder()
    recorder.flag = torch.ones((), dtype=torch.bool)
    recorder.unread = GUARD_READ_EVERY - 1
    assert not recorder.read_guard()
    recorder.unread = GUARD_READ_EVERY
    assert recorder.read_guard()
