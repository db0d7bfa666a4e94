"""MALA and HMC chains captured as CUDA graphs against eager ones (device: CUDA; marked ``gpu``,
skipped without CUDA): the same final states, acceptance and adapted step sizes, and the caller's
random stream left where an eager chain leaves it. TF32 is off so both use float32 arithmetic."""

from __future__ import annotations

import pytest
import torch

from lebm.recording.cache import capture_stats
from lebm.samplers import HMC, MALA

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("exact_float32")]  # TF32 off: tests/conftest.py

DEVICE = torch.device("cuda")
TOLERANCE = 1e-4


class Energy(torch.nn.Module):
    """A small MLP energy ``(B, 8) -> (B,)`` read through ``inputs``-free chains."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.SiLU(), torch.nn.Linear(32, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1) + z.square().sum(1) / 2


@pytest.mark.parametrize(
    "make",
    [
        lambda capture: MALA(20, 0.3, adapt_steps=30, cuda_graph=capture),
        lambda capture: HMC(5, 0.2, n_leapfrog=3, adapt_steps=10, adapt="per_chain", cuda_graph=capture),
    ],
    ids=["MALA", "HMC-per-chain"],
)
def test_captured_metropolis_chains_replay_the_eager_chain(make) -> None:
    energy = Energy().to(DEVICE)
    eager, captured = make(False).to(DEVICE), make(True).to(DEVICE)
    streams = [torch.Generator(DEVICE).manual_seed(3) for _ in range(2)]
    for seed in (1, 2, 3):  # records at the first call, replays after: adaptation goes on in the graph
        z0 = torch.randn(64, 8, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(seed))
        outputs = [
            sampler(energy, z0, inputs=(), freeze=[energy], generator=stream, return_diagnostics=True)
            for sampler, stream in zip((eager, captured), streams, strict=True)
        ]
        (z_eager, stats_eager), (z_captured, stats_captured) = outputs
        assert (z_eager - z_captured).abs().max() < TOLERANCE
        assert (stats_eager["acceptance"] - stats_captured["acceptance"]).abs().max() < TOLERANCE
        assert torch.equal(streams[0].get_state(), streams[1].get_state())
        assert torch.equal(eager.adaptation.count, captured.adaptation.count)
        assert (eager.adapted_step_size - captured.adapted_step_size).abs().max() < TOLERANCE
    assert capture_stats([captured]) == {"captures": 1, "replays": 2, "eager_calls": 0}
