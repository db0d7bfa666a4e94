"""The CPU twin of the GPU test that every method trains with its chains captured
(``test_chain_graphs_cuda.py::test_every_method_trains_with_captured_chains_as_with_eager_ones``;
device: CPU, through the replay emulator): the same cases, built and trained by the same function
(``trained_with_chains``, the cases imported by the same path), and the same check of every chain's
counters, so that a setup that leaves the chains eager fails here, not first on a lent GPU.

At 256fb1d that test failed on an H200 for every case (LatentEBM ``{'captures': 0, 'replays': 0,
'eager_calls': 14}``, DAMC ``{'captures': 5, 'replays': 11, 'eager_calls': 12}``): it imported the
cases as ``cases`` and ``without_recording`` as ``test_chain_capture_methods``, which looks for
``tests.models.cases.Recording``, another class; the wrappers stayed, and a ``Recording`` states no
``capturable``, so its chains ran eagerly. DAMC's 12 eager calls were its two wrapped chains (prior
and posterior, 6 training batches each), its 5 captures the unwrapped ones (the amortizer's
ancestral start and its EMA copy's, the generation chain); unwrapped, DAMC runs no chain eagerly.
"""

from __future__ import annotations

import pytest

from lebm.testing.capture import emulate_on_cpu
from tests.models.test_chain_graphs_cuda import CASES, assert_every_chain_captured, chain_roles, trained_with_chains


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_method_trains_with_its_chains_captured_on_the_emulator(case, one_thread) -> None:
    with emulate_on_cpu():
        model, _ = trained_with_chains(case, capture=True, accelerator="cpu")
    assert chain_roles(model)  # the case has chains to capture
    assert_every_chain_captured(model)
