"""The CPU emulator's store keeps a CUDA store's lifetime rules (device: CPU): what a GPU run retires
and releases, an emulated run retires and releases alike, so that a test of graph lifetimes on the
emulator (recordings invalidated by a release, a generation bumped) shows what a GPU shows."""

from __future__ import annotations

import pytest
import torch

from lebm.recording.recorders import RETIRED_LIMIT
from lebm.testing.capture import EmulatedStore


def failing_body() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    raise RuntimeError("operation not permitted when stream is capturing")


@pytest.mark.parametrize("strict", [True, False])
def test_a_failed_recording_retires_its_graph_as_a_cuda_store_does(strict: bool) -> None:
    """``GraphStore.record`` retires the graph a failed capture began (it is destroyed with every
    other at the next release); the emulated store counts it too, and a release comes due as on CUDA."""
    store = EmulatedStore(strict)
    for failures in range(1, RETIRED_LIMIT + 1):
        with pytest.raises(RuntimeError, match="not permitted"):
            store.record(failing_body, [])
        assert store.retired == failures
    assert store.release_due()
    store.release_all()
    assert store.generation == 1 and store.retired == 0
