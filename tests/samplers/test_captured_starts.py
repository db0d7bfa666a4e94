"""Chain initializers under whole-chain capture (CPU, through the strict replay emulator): DAMC's
amortizer records its ancestral sampler once per key and replays it with the eager start's numbers
and random stream; what changes in place (loaded weights, the EMA copy's update) is read live, and
what the key sees (the step count, a replaced parameter, the shapes) records again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lebm.nets import LatentDiffusionAmortizer, MLPEmbedding
from lebm.recording import chain_capture, chain_graphs
from lebm.samplers import AveragedStart, ChainInitializer, NetworkStart, NoiseStart
from lebm.testing.capture import emulate_on_cpu

LATENT, DATA = 3, 4


def amortizer(**settings: Any) -> LatentDiffusionAmortizer:
    """A small amortizer (5 ancestral steps) on 4-dimensional observations."""
    torch.manual_seed(0)
    sizes: dict[str, Any] = {"nf": 1, "time_dim": 8, "null_hidden": 8, "sampling_steps": 5, **settings}
    return LatentDiffusionAmortizer(LATENT, MLPEmbedding([DATA], hidden=8, embed_dim=6), 6, **sizes)


def starts(initializer: ChainInitializer, x: Tensor | None, seed: int = 3) -> tuple[Tensor, Tensor]:
    """One start of 4 chains (conditional on ``x``, or unconditional) and the stream's state after it."""
    stream = torch.Generator().manual_seed(seed)
    z0 = initializer.start(4, context=x, generator=stream)
    return z0, stream.get_state()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(4, DATA, generator=torch.Generator().manual_seed(11))


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_a_replayed_start_equals_the_eager_start_and_leaves_the_stream_where_it_does(
    x: Tensor, conditional: bool
) -> None:
    q = amortizer()
    context = x if conditional else None
    eager = [starts(q, context, seed) for seed in (3, 4)]
    with emulate_on_cpu():
        captured = [starts(q, context, seed) for seed in (3, 4)]
    for (z_eager, stream_eager), (z_captured, stream_captured) in zip(eager, captured, strict=True):
        assert torch.equal(z_eager, z_captured)
        assert torch.equal(stream_eager, stream_captured)
    assert not torch.equal(eager[0][0], eager[1][0])  # the replay draws its noise from the stream given
    assert chain_graphs(q).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}


def test_sample_draws_what_start_draws(x: Tensor) -> None:
    q = amortizer()
    for context in (x, None):
        z0, _ = starts(q, context)
        assert torch.equal(q.sample(4, context, generator=torch.Generator().manual_seed(3)), z0)


def test_the_ema_copy_replays_with_its_updated_weights(x: Tensor) -> None:
    online = amortizer()
    ema = AveragedStart(online)
    with emulate_on_cpu():
        starts(ema, x)
        with torch.no_grad():
            for parameter in online.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
        ema.update(online, 0.5)  # in place: the recorded graph reads the new average
        replayed, _ = starts(ema, x)
    assert chain_graphs(ema.average).stats()["replays"] == 1
    assert torch.equal(replayed, starts(copy.deepcopy(ema), x)[0])


def test_weights_loaded_in_place_are_read_by_the_replay(x: Tensor) -> None:
    q, other = amortizer(), amortizer()
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.mul_(1.5)
    with emulate_on_cpu():
        starts(q, x)
        q.load_state_dict(other.state_dict())
        replayed, _ = starts(q, x)
    assert chain_graphs(q).stats()["replays"] == 1
    assert torch.equal(replayed, starts(other, x)[0])


@pytest.mark.parametrize(
    "change",
    [
        lambda q: setattr(q, "sampling_steps", 7),
        lambda q: setattr(q, "sampling_noise", False),
        lambda q: setattr(q.denoiser, "fourier", nn.Parameter(q.denoiser.fourier.detach() * 2)),
    ],
    ids=["step count", "sampling noise", "replaced parameter"],
)
def test_what_the_key_sees_records_again_and_replays_nothing_stale(x: Tensor, change: Any) -> None:
    q = amortizer()
    with emulate_on_cpu():
        starts(q, x)
        change(q)
        changed, _ = starts(q, x)
    assert chain_graphs(q).stats() == {"captures": 2, "replays": 0, "eager_calls": 0}
    assert torch.equal(changed, starts(q, x)[0])


def test_a_start_of_another_batch_size_records_its_own_graph(x: Tensor) -> None:
    q = amortizer()
    with emulate_on_cpu():
        for rows in (4, 2, 4, 2):
            q.start(rows, context=x[:rows], generator=torch.Generator().manual_seed(1))
    assert chain_graphs(q).stats() == {"captures": 2, "replays": 2, "eager_calls": 0}


def test_which_initializers_are_captured() -> None:
    assert LatentDiffusionAmortizer.capturable
    assert not any(cls.capturable for cls in (NoiseStart, NetworkStart, AveragedStart))

    class Retuned(LatentDiffusionAmortizer):
        def from_state(self, state: Tensor, context: Tensor | None, generator: Any) -> Tensor:
            return super().from_state(state, context, generator).clamp(-3, 3)

    assert not Retuned.capturable  # a new recorded body opts in itself

    class OtherSampler(LatentDiffusionAmortizer):
        def reverse_diffusion(self, z_T: Tensor, x: Tensor | None, generator: Any, n_steps: int) -> Tensor:
            return z_T

    class Declared(OtherSampler):
        capturable = True

    assert not OtherSampler.capturable and Declared.capturable


@pytest.mark.parametrize("path", ["captured", "hooked encoder", "cuda_graph", "switch", "not detached"])
def test_a_start_builds_no_autograd_graph_unless_asked_and_runs_eagerly_where_kept_out(
    x: Tensor, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Captured or eager, a detached start runs its sampler without autograd (the online amortizer's
    parameters require gradients: a 100-step graph would be built and dropped); kept out of capture
    (a hook the key cannot see into, its own cuda_graph, the run's switch, a start with gradients)
    it records nothing and draws the eager start."""
    grad_modes: list[bool] = []
    sampler = LatentDiffusionAmortizer.reverse_diffusion

    def spy(self: LatentDiffusionAmortizer, *args: Any) -> Tensor:
        grad_modes.append(torch.is_grad_enabled())
        return sampler(self, *args)

    monkeypatch.setattr(LatentDiffusionAmortizer, "reverse_diffusion", spy)
    q = amortizer(cuda_graph=path != "cuda_graph")
    if path == "hooked encoder":
        q.encoder.register_forward_hook(lambda *_: None)
    q.detach = path != "not detached"
    with emulate_on_cpu(), chain_capture(path != "switch"):
        z0 = q.start(4, context=x, generator=torch.Generator().manual_seed(3))
    assert grad_modes and all(mode == (path == "not detached") for mode in grad_modes), grad_modes
    assert chain_graphs(q).stats()["captures"] == (path == "captured")
    q.detach = True
    assert torch.equal(z0.detach(), starts(q, x)[0])


def test_a_start_recorded_in_inference_mode_replays_outside_it_and_back(x: Tensor) -> None:
    """Lightning validates under inference mode; a start of the same shape then replays in training."""
    q = amortizer()
    eager, _ = starts(q, x)
    with emulate_on_cpu():
        with torch.inference_mode():
            first, _ = starts(q, x.clone())
        second, _ = starts(q, x)
        with torch.inference_mode():
            third, _ = starts(q, x.clone())
    assert chain_graphs(q).stats() == {"captures": 1, "replays": 2, "eager_calls": 0}
    for replayed in (first, second, third):
        assert torch.equal(replayed, eager)
    assert not second.is_inference()


class CountingStart(ChainInitializer):
    """A user's own captured start with Python state: each start shifts by how many it has drawn."""

    capturable = True

    def __init__(self) -> None:
        self.calls = 0

    def initial_state(self, n: int, context: Any, generator: Any, device: Any) -> Tensor:
        return torch.zeros(n, LATENT)

    def from_state(self, state: Tensor, context: Any, generator: Any) -> Tensor:
        self.calls += 1
        return state + self.calls


class DecayingStart(CountingStart):
    """Float state: each start is shifted by a value that halves at every call (a float, or in a list)."""

    capturable = True  # overriding from_state revokes the inherited opt-in

    def __init__(self, in_a_list: bool) -> None:
        self.in_a_list = in_a_list
        self.scale: float | list[float] = [1.0] if in_a_list else 1.0

    def from_state(self, state: Tensor, context: Any, generator: Any) -> Tensor:
        if self.in_a_list:
            self.scale = [self.scale[0] * 0.5]
            return state + self.scale[0]
        self.scale *= 0.5
        return state + self.scale


@pytest.mark.parametrize("in_a_list", [False, True], ids=["a float", "a list of floats"])
def test_an_initializer_whose_float_state_changes_runs_eagerly_and_says_so(recwarn, in_a_list: bool) -> None:
    """CPU (strict emulator). As for an integer counter, a float the start changes at every call
    (here halved) is seen: eager starts 0.5, 0.25, 0.125, one line naming ``scale``."""
    decaying = DecayingStart(in_a_list)
    with emulate_on_cpu():
        firsts = [float(decaying.start(2)[0, 0]) for _ in range(3)]
    assert firsts == [0.5, 0.25, 0.125]
    said = [str(w.message) for w in recwarn if "Python state" in str(w.message)]
    assert len(said) == 1 and "DecayingStart: its Python state (scale) changes at every call" in said[0]


def test_an_initializer_whose_python_state_changes_runs_eagerly_and_says_so(recwarn) -> None:
    """CPU (strict emulator). A replay would not run ``calls += 1`` (the starts would read 3, 3, 3
    after the warm-ups where eager calls read 1, 2, 3): the warm-ups see the state change, put it
    back, run the start eagerly with one line naming the attribute, and the starts read 1, 2, 3."""
    counting = CountingStart()
    with emulate_on_cpu():
        firsts = [float(counting.start(2)[0, 0]) for _ in range(3)]
    assert firsts == [1.0, 2.0, 3.0] and counting.calls == 3
    said = [str(w.message) for w in recwarn if "Python state" in str(w.message)]
    assert len(said) == 1 and "CountingStart: its Python state (calls) changes at every call" in said[0]
    assert chain_graphs(counting).stats()["captures"] == 0
