"""The strict CPU emulation of a CUDA graph, ``record_ops`` (device: CPU, every test).

What these tests pin: a replay runs the logged aten operations without the Python body (forward
and backward), so it reproduces the eager chain exactly, random streams included; a Python number
is baked in at recording (a stale replay, as on a GPU), a tensor is read live but by object (an
in-place change is seen, a replaced tensor is not); operations a CUDA graph cannot capture make
the recording fail. A rerun-the-body emulator fails every test here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from lebm.samplers import ChainTarget, Langevin, chain_context
from lebm.testing.capture import OpReplay, record_ops

LATENT, DATA, BATCH = 3, 5, 4


class Posterior(nn.Module):
    """``U(z; x) = _scale * E(z) + ||W z + offset - x||^2 / 2``: a private Python scalar and a
    tensor attribute a graph bakes in or reads in place."""

    def __init__(self) -> None:
        super().__init__()
        self.energy = nn.Sequential(nn.Linear(LATENT, 16), nn.SiLU(), nn.Linear(16, 1))
        self.generator = nn.Linear(LATENT, DATA)
        self._scale = 2.0
        self.offset = torch.zeros(DATA)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        fit = (self.generator(z) + self.offset - x).square().sum(1) / 2
        return self._scale * self.energy(z).squeeze(1) + fit


class Chain:
    """A Langevin chain over static buffers, as ``Sampler._chain_body`` builds it: recorded once,
    then run eagerly or replayed from any start and seed."""

    def __init__(self, energy: Callable[..., Tensor], private_generator: bool = True, steps: int = 4) -> None:
        torch.manual_seed(0)
        self.energy = energy
        self.modules = [energy] if isinstance(energy, nn.Module) else []
        self.sampler = Langevin(n_steps=steps, step_size=0.3)
        self.x = torch.randn(BATCH, DATA)
        self.static_z = torch.zeros(BATCH, LATENT)
        self.generator = torch.Generator().manual_seed(0) if private_generator else None
        self.body_calls = 0

    def body(self) -> tuple[Tensor, dict[str, Tensor]]:
        self.body_calls += 1
        with chain_context(self.modules):
            target = ChainTarget(self.energy, 0.5, record=True, inputs=(self.x,))
            return self.sampler.run(target, self.static_z, generator=self.generator), target.diagnostics()

    @property
    def stream(self) -> torch.Generator:
        return self.generator if self.generator is not None else torch.default_generator

    def start(self, z0: Tensor, seed: int) -> None:
        with torch.no_grad():
            self.static_z.copy_(z0)
        self.stream.manual_seed(seed)

    def record(self, z0: Tensor, seed: int = 1) -> None:
        self.start(z0, seed)
        self.replay, self.outputs = record_ops(self.body)

    def eager(self, z0: Tensor, seed: int) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        self.start(z0, seed)
        z, diagnostics = self.body()
        return z.clone(), {k: v.clone() for k, v in diagnostics.items()}, self.stream.get_state()

    def replayed(self, z0: Tensor, seed: int) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        self.start(z0, seed)
        calls = self.body_calls
        self.replay()
        assert self.body_calls == calls, "a replay must not run the Python body"
        z, diagnostics = self.outputs
        return z.clone(), {k: v.clone() for k, v in diagnostics.items()}, self.stream.get_state()


def assert_same(replayed: tuple[Tensor, dict[str, Tensor], Tensor], eager: tuple[Tensor, dict[str, Tensor], Tensor]):
    assert torch.equal(replayed[0], eager[0])
    assert replayed[1].keys() == eager[1].keys() == {"energy", "grad_norm"}
    for name in eager[1]:
        assert torch.equal(replayed[1][name], eager[1][name]), name
    assert torch.equal(replayed[2], eager[2]), "the random stream must advance as in the eager chain"


@pytest.mark.parametrize("private_generator", [True, False], ids=["private-generator", "default-generator"])
def test_replay_reproduces_the_eager_langevin_chain(private_generator: bool) -> None:
    """Device: CPU. Forward and backward are logged; replays from two starts and seeds give the
    eager chain bit for bit, the generator advancing the same, outputs written in place."""
    chain = Chain(Posterior(), private_generator)
    first, second = torch.randn(BATCH, LATENT), torch.randn(BATCH, LATENT)
    chain.record(first, seed=1)
    assert isinstance(chain.replay, OpReplay)
    assert "aten.silu_backward.default" in chain.replay.op_names  # autograd.grad's backward was logged
    z_out, diagnostics_out = chain.outputs

    assert_same(chain.replayed(first, seed=3), chain.eager(first, seed=3))
    assert_same(chain.replayed(second, seed=4), chain.eager(second, seed=4))
    assert chain.outputs[0] is z_out and chain.outputs[1]["energy"] is diagnostics_out["energy"]
    assert not torch.equal(chain.replayed(first, seed=3)[0], chain.replayed(first, seed=5)[0])  # fresh noise


def test_a_python_scalar_is_baked_in_and_a_parameter_is_read_in_place() -> None:
    """Device: CPU. A private scalar changed after recording is not seen (stale, as a CUDA graph);
    a parameter changed in place is."""
    model = Posterior()
    chain = Chain(model)
    z0 = torch.randn(BATCH, LATENT)
    chain.record(z0)
    recorded_value = chain.eager(z0, seed=2)

    model._scale = 5.0
    stale, changed = chain.replayed(z0, seed=2), chain.eager(z0, seed=2)
    assert_same(stale, recorded_value)
    assert (stale[0] - changed[0]).abs().max() > 1e-2

    model._scale = 2.0
    with torch.no_grad():
        model.energy[0].weight.add_(0.1)
    seen = chain.replayed(z0, seed=2)
    assert_same(seen, chain.eager(z0, seed=2))
    assert (seen[0] - recorded_value[0]).abs().max() > 1e-3


def test_a_replaced_tensor_is_stale_and_an_in_place_change_is_seen() -> None:
    """Device: CPU. The replay reads the tensor object it recorded: a new object in the attribute
    is not seen, the same change made in place is."""
    model = Posterior()
    chain = Chain(model)
    z0 = torch.randn(BATCH, LATENT)
    chain.record(z0)
    recorded_value = chain.eager(z0, seed=2)

    recorded_offset = model.offset
    model.offset = recorded_offset + 0.5
    changed = chain.eager(z0, seed=2)
    stale = chain.replayed(z0, seed=2)
    assert_same(stale, recorded_value)
    assert (stale[0] - changed[0]).abs().max() > 1e-2

    model.offset = recorded_offset
    recorded_offset.add_(0.5)
    assert_same(chain.replayed(z0, seed=2), changed)


def _with(extra: Callable[[Tensor], object]) -> Callable[[Tensor, Tensor], Tensor]:
    def energy(z: Tensor, x: Tensor) -> Tensor:
        extra(z)
        return (z - x[:, :LATENT]).square().sum(1)

    return energy


@pytest.mark.parametrize(
    ("energy", "op"),
    [
        (_with(lambda z: z.sum().item()), "_local_scalar_dense"),
        (_with(lambda z: float(z.detach().abs().max())), "_local_scalar_dense"),
        (_with(lambda z: bool(z.sum() > 0)), "_local_scalar_dense"),
        (_with(lambda z: z.nonzero()), "nonzero"),
        (_with(lambda z: z[z > 0]), "index"),
        (_with(lambda z: torch.masked_select(z, z > 0)), "masked_select"),
        (_with(lambda z: torch.unique(z)), "unique"),
        (_with(lambda z: torch.equal(z, z)), "equal"),
    ],
    ids=["item", "float", "bool", "nonzero", "mask-index", "masked_select", "unique", "equal"],
)
def test_host_synchronisation_fails_the_recording(energy: Callable[..., Tensor], op: str) -> None:
    """Device: CPU. What a CUDA graph cannot capture makes the recording raise, naming the op."""
    chain = Chain(energy)
    with pytest.raises(RuntimeError, match="not permitted when stream is capturing") as failure:
        chain.record(torch.randn(BATCH, LATENT))
    assert op in str(failure.value)
    chain.eager(torch.randn(BATCH, LATENT), seed=0)  # eager chains still run afterwards


class Shapes(nn.Module):
    """Views, tuple outputs, tensor lists, in-place updates of intermediates and ``out=``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(LATENT, 8)

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        first, second = torch.chunk(self.net(z), 2, dim=1)  # a tuple of views
        h = torch.cat([torch.tanh(first), second * second], dim=1)  # a tensor list
        h.add_(1.0)  # in place, on an intermediate
        peaks, _ = torch.max(h.view(len(z), 2, 4), dim=2)  # a view, a tuple output
        peak = torch.stack([peaks[:, 0], peaks[:, 1].sigmoid()]).sum(0)
        constant = torch.empty(len(z))
        torch.mul(x.sum(1), 0.5, out=constant)  # out=
        return peak + constant + z.square().sum(1)


def test_views_tuple_outputs_tensor_lists_in_place_and_out() -> None:
    """Device: CPU. The replay maps each logged tensor to its replayed value through views,
    tuple outputs, tensor lists, in-place operations and ``out=``."""
    chain = Chain(Shapes())
    chain.record(torch.randn(BATCH, LATENT))
    names = set(chain.replay.op_names)
    assert {"aten.split.Tensor", "aten.cat.default", "aten.max.dim", "aten.stack.default", "aten.mul.out"} <= names
    z0 = torch.randn(BATCH, LATENT)
    assert_same(chain.replayed(z0, seed=6), chain.eager(z0, seed=6))


def test_memory_shared_with_an_unlogged_tensor_object_is_replayed() -> None:
    """Device: CPU. A tensor object no logged op returned but sharing memory an op allocated (here
    through DLPack) replays as that memory of this replay, not as the recorded values."""

    def energy(z: Tensor, x: Tensor) -> Tensor:
        weights = torch.from_dlpack(torch.sigmoid(z).detach())
        return (weights * (z - x[:, :LATENT]).square()).sum(1)

    chain = Chain(energy)
    chain.record(torch.randn(BATCH, LATENT))
    z0 = torch.randn(BATCH, LATENT)
    assert_same(chain.replayed(z0, seed=6), chain.eager(z0, seed=6))
