"""Which operations a captured chain may not run, found before recording (CPU).

A CUDA graph cannot record a synchronisation with the host or an output sized by the data; the
warm-up runs under a thread-local check that refuses them by name, so these cases hold on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lebm.recording import chain_graphs
from lebm.recording.host_sync import HostSynchronisation, RefuseHostSync
from lebm.samplers import Langevin
from lebm.testing.capture import emulate_on_cpu

A = torch.eye(3) * 2 + 0.1
X = torch.rand(6)

REFUSED: dict[str, Callable[[], object]] = {
    ".item()": lambda: X.sum().item(),
    "if t:": lambda: bool(X.sum() > 0),
    "nonzero": lambda: X.nonzero(),
    "a boolean mask": lambda: X[X > 0.5],
    "unique": lambda: X.unique(),
    "linalg.cholesky (its error check)": lambda: torch.linalg.cholesky(A),
    "linalg.inv": lambda: torch.linalg.inv(A),
    "linalg.solve": lambda: torch.linalg.solve(A, torch.ones(3)),
    "bincount": lambda: torch.bincount(torch.tensor([1, 2, 2])),
    "histc without a range": lambda: torch.histc(X, bins=4),
    "repeat_interleave by a tensor": lambda: torch.arange(3).repeat_interleave(torch.tensor([1, 2, 1])),
}

ALLOWED: dict[str, Callable[[], object]] = {
    "linalg.cholesky_ex": lambda: torch.linalg.cholesky_ex(A),
    "histc with a range": lambda: torch.histc(X, bins=4, min=0, max=1),
    "repeat_interleave with its size": lambda: torch.arange(3).repeat_interleave(
        torch.tensor([1, 2, 1]), output_size=4
    ),
    "torch.where with three arguments": lambda: torch.where(X > 0.5, X, 0.0),
    "an integer index": lambda: X[torch.tensor([0, 2])],
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_synchronisation_is_refused_by_name(name: str) -> None:
    with pytest.raises(HostSynchronisation), RefuseHostSync():
        REFUSED[name]()


@pytest.mark.parametrize("name", sorted(ALLOWED))
def test_what_a_graph_can_record_is_allowed(name: str) -> None:
    with RefuseHostSync():
        ALLOWED[name]()


def test_a_chain_whose_energy_checks_a_cholesky_factor_runs_eagerly_with_one_warning() -> None:
    def energy(z: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
        factor = torch.linalg.cholesky(covariance)
        return torch.cholesky_solve(z.unsqueeze(-1), factor).squeeze(-1).mul(z).sum(1) / 2

    sampler = Langevin(3, 0.1)
    with emulate_on_cpu(), pytest.warns(UserWarning, match="cannot be captured"):
        for _ in range(2):
            z = sampler(energy, torch.randn(4, 3), inputs=(A,))
    assert torch.isfinite(z).all()
    assert chain_graphs(sampler).stats() == {"captures": 0, "replays": 0, "eager_calls": 2}
