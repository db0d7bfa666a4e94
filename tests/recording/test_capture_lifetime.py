"""Captured chains' lifetime and failures (device: CPU, through the emulator's store, which keeps
the CUDA store's rules: a graph is retired, never destroyed alone; every graph of the device is
destroyed at once; a destroyed graph refuses to replay).

On a GPU, destroying one graph frees the cuBLAS workspace that every other graph recorded on its
stream still uses (torch >= 2.11), so these rules are what keeps a replay from reading freed memory.
The GPU tests in ``tests/models/test_chain_graphs_cuda.py`` run the same situations on CUDA graphs.
"""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from test_chain_capture import Posterior, batches

from lebm.recording.cache import CACHE_SIZE, chain_graphs
from lebm.recording.recorders import RETIRED_LIMIT
from lebm.samplers import Langevin
from lebm.testing.capture import EmulatedStore, emulate_on_cpu


def call(sampler: Langevin, model: Posterior, n: int, seed: int = 0) -> torch.Tensor:
    x = batches(1, size=n)[0]
    return sampler(model, torch.zeros(n, 3), inputs=(x,), freeze=[model], generator=torch.Generator().manual_seed(seed))


def eager(model: Posterior, n: int, seed: int = 0) -> torch.Tensor:
    return call(Langevin(4, 0.2, cuda_graph=False), model, n, seed)


def test_an_evicted_chain_is_retired_not_destroyed() -> None:
    model, sampler = Posterior(), Langevin(4, 0.2)
    with emulate_on_cpu() as store:
        for n in range(2, 2 + CACHE_SIZE + 3):
            call(sampler, model, n)
            call(sampler, model, n)  # a replay: a sampler that only ever records stops capturing
        assert store.retired == 3 and store.destroyed == 0
        assert len(chain_graphs(sampler).entries) == CACHE_SIZE


def test_at_the_retired_limit_every_graph_is_destroyed_at_once_and_records_again() -> None:
    model, sampler, other = Posterior(), Langevin(4, 0.2), Langevin(4, 0.2)
    with emulate_on_cpu() as store:
        call(other, model, 16)  # another sampler's graph, alive throughout
        for n in range(2, 2 + CACHE_SIZE + RETIRED_LIMIT + 1):
            for seed in (n, -n):  # recorded, then replayed
                assert torch.equal(call(sampler, model, n, seed=seed), eager(model, n, seed=seed))
        assert store.generation == 1 and store.destroyed >= RETIRED_LIMIT + 1
        again = call(other, model, 16, seed=5)  # its graph went with the others: recorded anew, not replayed
    assert torch.equal(again, eager(model, 16, seed=5))
    assert chain_graphs(other).stats() == {"captures": 2, "replays": 0, "eager_calls": 0}


def test_a_garbage_collected_sampler_retires_its_graphs() -> None:
    model = Posterior()
    with emulate_on_cpu() as store:
        sampler = Langevin(4, 0.2)
        call(sampler, model, 8)
        call(sampler, model, 9)
        del sampler
        gc.collect()
        assert store.retired == 2 and store.destroyed == 0


def test_a_start_with_autograd_history_leaves_no_history_in_the_static_buffers() -> None:
    model, sampler = Posterior(), Langevin(4, 0.2)
    x = batches(1)[0]
    start = torch.zeros(16, 3, requires_grad=True) * 1.0
    with emulate_on_cpu():
        for _ in range(2):
            z = sampler(model, start, inputs=(x,), freeze=[model])
    entry = next(iter(chain_graphs(sampler).entries.values()))
    assert entry.static_z.grad_fn is None and not entry.static_z.requires_grad
    assert z.grad_fn is None


def test_a_failed_recording_turns_the_samplers_capture_off_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, body, generators):
        raise RuntimeError("operation not permitted when stream is capturing")

    model, sampler, other = Posterior(), Langevin(4, 0.2), Langevin(4, 0.2)
    with emulate_on_cpu():
        with monkeypatch.context() as patch:
            patch.setattr(EmulatedStore, "record", refuse)
            with pytest.warns(UserWarning, match="could not be captured.*run eagerly from now on"):
                call(sampler, model, 16)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no second warning, and no second try
            for n in (16, 12):
                assert torch.equal(call(sampler, model, n, seed=n), eager(model, n, seed=n))
        call(other, model, 16)
        call(other, model, 16)
    assert chain_graphs(sampler).stats() == {"captures": 0, "replays": 0, "eager_calls": 3}
    assert chain_graphs(other).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}


def test_running_out_of_memory_while_recording_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(self, body, generators):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model, sampler, other = Posterior(), Langevin(4, 0.2), Langevin(4, 0.2)
    with emulate_on_cpu() as store:
        call(other, model, 8)
        monkeypatch.setattr(EmulatedStore, "record", out_of_memory)
        with pytest.warns(UserWarning, match=r"ran out of memory while recording a chain of 16 states of shape \(3,\)"):
            z = call(sampler, model, 16)
        assert store.generation == 1  # the graphs' memory was given back
    assert torch.equal(z, eager(model, 16))


def test_a_chain_that_synchronises_is_refused_in_its_warm_up_and_runs_eagerly() -> None:
    model, x = Posterior(), batches(1)[0]

    def energy(z: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        if z.abs().sum() > 1e9:  # `if` on a tensor: a host synchronisation on a GPU
            raise AssertionError
        return model(z, data)

    sampler = Langevin(4, 0.2)
    refusal = r"synchronises with the host \(aten._local_scalar_dense"
    with emulate_on_cpu() as store, pytest.warns(UserWarning, match=refusal):
        z = sampler(energy, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=torch.Generator().manual_seed(0))
        sampler(energy, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=torch.Generator().manual_seed(0))
        assert store.alive == []  # refused before anything was recorded
    eager = Langevin(4, 0.2)(
        energy, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(z, eager)
    assert chain_graphs(sampler).stats() == {"captures": 0, "replays": 0, "eager_calls": 2}


def test_the_loose_emulator_reruns_the_body_and_gives_the_eager_chain() -> None:
    """``emulate_on_cpu(strict=False)`` (device: CPU): the replay reruns the Python body; the
    numbers, the counters and the caller's stream are those of the strict emulator and of eager."""
    model, sampler = Posterior(), Langevin(4, 0.2)
    with emulate_on_cpu(strict=False) as store:
        assert not store.strict
        results = [call(sampler, model, 16, seed=s) for s in (3, 4)]
    assert chain_graphs(sampler).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}
    for seed, result in zip((3, 4), results, strict=True):
        assert torch.equal(result, eager(model, 16, seed=seed))
