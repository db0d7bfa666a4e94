"""Whole-chain capture on the CPU (device: CPU): the machinery around the CUDA graph, driven by the
strict emulation of a graph (``lebm.testing.capture.emulate_on_cpu``), which replays the recorded
operations with their Python numbers baked in.

What these tests pin: the body a graph is recorded from is the eager chain, step for step; a call
is served from the cache only when nothing the graph depends on has changed (anything else records
again); the warm-up runs leave no trace; the caller's random stream advances exactly as in an eager
call; chains that cannot or must not be captured run eagerly. The CUDA graph itself is tested in
``tests/models/test_chain_graphs_cuda.py``.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import Tensor, nn

from lebm.models import ProductOfRatiosPrior
from lebm.nets import EnergyMLP
from lebm.recording import cache as capture_module
from lebm.recording import chain_capture, chain_capture_enabled
from lebm.recording.cache import CHURN_LIMIT, WARMUP_RUNS, chain_graphs, samplers_of
from lebm.samplers import ChainTarget, Langevin, PersistentChains, Sampler
from lebm.testing.capture import EmulatedStore, emulate_on_cpu
from tests.helpers.subprocesses import HANG_SECONDS


class Posterior(nn.Module):
    """``U(z; x) = E(z) + scale * ||tanh(W z) + shift - x||^2 / (2 sigma^2)`` with a BatchNorm in
    the energy net, and the scalars and tensors a graph bakes in kept in every kind of attribute:
    a public scalar (``sigma``), a private one (``_scale``), a scalar in a list (``weights``), a
    tensor in a dict (``offsets``)."""

    def __init__(self, latent: int = 3, data: int = 4) -> None:
        super().__init__()
        self.energy = nn.Sequential(nn.Linear(latent, 8), nn.BatchNorm1d(8), nn.SiLU(), nn.Linear(8, 1))
        self.generator = nn.Linear(latent, data)
        self.sigma = 0.5
        self._scale = 1.0
        self.weights = [1.0]
        self.offsets = {"shift": torch.zeros(data)}

    def forward(self, z: Tensor, x: Tensor) -> Tensor:
        predicted = torch.tanh(self.generator(z)) + self.offsets["shift"]
        fit = (predicted - x).square().sum(1) * (self._scale * self.weights[0] / (2 * self.sigma**2))
        return self.energy(z).squeeze(1) + fit


def chains(sampler: Sampler, model: Posterior, batches: list[Tensor], seed: int = 5, **options) -> dict:
    """Run ``sampler`` once per batch from noise drawn from one generator; everything a caller sees."""
    generator = torch.Generator().manual_seed(seed)
    states, energies = [], []
    for x in batches:
        z0 = torch.randn(len(x), 3, generator=generator)
        z, diagnostics = sampler(
            model, z0, inputs=(x,), freeze=[model], generator=generator, return_diagnostics=True, **options
        )
        states.append(z)
        energies.append(diagnostics["energy"])
    return {
        "states": states,
        "energies": energies,
        "stream": generator.get_state(),
        "global": torch.get_rng_state(),
        "buffers": [b.clone() for b in model.buffers()],
    }


def same(a: dict, b: dict) -> None:
    for key in ("states", "energies", "buffers"):
        for left, right in zip(a[key], b[key], strict=True):
            assert torch.equal(left, right), key
    assert torch.equal(a["stream"], b["stream"])
    assert torch.equal(a["global"], b["global"])


def batches(n: int = 3, size: int = 16) -> list[Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(size, 4, generator=generator) for _ in range(n)]


def test_a_captured_chain_is_the_eager_chain_step_for_step() -> None:
    model = Posterior()
    initial = copy.deepcopy(model.state_dict())
    eager = chains(Langevin(8, 0.2), model, batches(), module_mode="train")
    model.load_state_dict(initial)
    sampler = Langevin(8, 0.2)
    with emulate_on_cpu():
        captured = chains(sampler, model, batches(), module_mode="train")
    same(eager, captured)  # states, per-step energies, the caller's stream, BatchNorm statistics
    assert chain_graphs(sampler).stats() == {"captures": 1, "replays": 2, "eager_calls": 0}
    assert not torch.equal(eager["states"][0], eager["states"][1])  # each batch got its own chain


def test_without_a_generator_the_chain_follows_the_global_stream_as_an_eager_one() -> None:
    model = Posterior()
    x = batches(1)[0]
    results = []
    for emulate in (False, True):
        torch.manual_seed(3)
        context = emulate_on_cpu() if emulate else torch.no_grad()
        sampler = Langevin(6, 0.2)
        with context:
            first = sampler(model, torch.zeros(16, 3), inputs=(x,))
            second = sampler(model, torch.zeros(16, 3), inputs=(x,))
        results.append((first, second, torch.rand(3)))
    for eager, captured in zip(*results, strict=True):
        assert torch.equal(eager, captured)
    assert not torch.equal(results[0][0], results[0][1])  # fresh noise at each call


def test_warm_up_runs_leave_the_persistent_buffer_and_batchnorm_statistics_as_an_eager_call_does() -> None:
    def run(emulate: bool) -> tuple[Tensor, Tensor, Tensor]:
        torch.manual_seed(0)
        model = Posterior()
        persistent = PersistentChains(Langevin(4, 0.3), [3], buffer_size=32, reinit_prob=0.2)
        x = batches(1)[0]
        generator = torch.Generator().manual_seed(2)
        with emulate_on_cpu() if emulate else torch.no_grad():
            z = persistent(model, torch.randn(16, 3), inputs=(x,), freeze=[model], generator=generator)
        assert chain_graphs(persistent).captures == int(emulate)
        return z, persistent.chains.clone(), model.energy[1].running_mean.clone()

    for eager, captured in zip(run(False), run(True), strict=True):
        assert torch.equal(eager, captured)


# ------------------------------------------------------------------ what invalidates a graph
def changes() -> dict:
    """Name -> (change to make after the first call, whether it must record a new graph)."""

    def step_size(sampler, model, x):
        sampler.step_size = 0.1

    def n_steps(sampler, model, x):
        sampler.n_steps = 3

    def smaller_last_batch(sampler, model, x):
        return x[:10]

    def moved_to_another_dtype(sampler, model, x):
        model.double()
        return x.double()

    def eval_mode(sampler, model, x):
        model.eval()

    def a_scalar_attribute(sampler, model, x):
        model.sigma = 0.25

    def assigned_parameters(sampler, model, x):
        model.load_state_dict({k: v.clone() for k, v in model.state_dict().items()}, assign=True)

    def loaded_in_place(sampler, model, x):
        model.load_state_dict(
            {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        )

    def an_optimiser_step(sampler, model, x):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)

    def new_data(sampler, model, x):
        return x + 1.0

    def a_private_scalar_attribute(sampler, model, x):
        model._scale = 3.0

    def a_scalar_in_a_list(sampler, model, x):
        model.weights[0] = 3.0

    def a_tensor_in_a_dict_replaced(sampler, model, x):
        model.offsets["shift"] = torch.ones(4)

    def a_tensor_in_a_dict_changed_in_place(sampler, model, x):
        model.offsets["shift"].add_(1.0)

    def channels_of_a_tensor_reordered(sampler, model, x):
        model.offsets["shift"] = torch.ones(8)[::2]  # same values' shape, another stride

    return {
        "step_size": (step_size, True),
        "n_steps": (n_steps, True),
        "smaller_last_batch": (smaller_last_batch, True),
        "moved_to_another_dtype": (moved_to_another_dtype, True),
        "eval_mode": (eval_mode, True),
        "a_scalar_attribute": (a_scalar_attribute, True),
        "assigned_parameters": (assigned_parameters, True),
        "loaded_in_place": (loaded_in_place, False),
        "an_optimiser_step": (an_optimiser_step, False),
        "new_data": (new_data, False),
        "a_private_scalar_attribute": (a_private_scalar_attribute, True),
        "a_scalar_in_a_list": (a_scalar_in_a_list, True),
        "a_tensor_in_a_dict_replaced": (a_tensor_in_a_dict_replaced, True),
        "a_tensor_in_a_dict_changed_in_place": (a_tensor_in_a_dict_changed_in_place, False),
        "channels_of_a_tensor_reordered": (channels_of_a_tensor_reordered, True),
    }


@pytest.mark.parametrize("name", list(changes()))
def test_a_change_records_a_new_graph_exactly_when_the_graph_depends_on_it(name: str) -> None:
    change, records = changes()[name]
    model, sampler = Posterior(), Langevin(5, 0.2)
    x = batches(1)[0]
    generator = torch.Generator().manual_seed(0)
    with emulate_on_cpu():
        sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=generator)
        changed = change(sampler, model, x)
        x = x if changed is None else changed
        z0 = torch.zeros(len(x), 3, dtype=x.dtype)
        state = generator.get_state()
        captured = sampler(model, z0, inputs=(x,), freeze=[model], generator=generator)
    stats = chain_graphs(sampler).stats()
    assert stats["captures"] == (2 if records else 1)
    assert stats["replays"] == (0 if records else 1)
    eager = Langevin(sampler.n_steps, sampler.step_size)(
        model, z0, inputs=(x,), freeze=[model], generator=torch.Generator().set_state(state)
    )
    assert torch.equal(captured, eager)  # whichever way it went, the numbers are the eager chain's


def test_autocast_records_its_own_graph_with_the_eager_numbers() -> None:
    model, sampler = Posterior(), Langevin(4, 0.2)
    x = batches(1)[0]
    options = {"inputs": (x,), "freeze": [model]}
    with emulate_on_cpu():
        sampler(model, torch.zeros(16, 3), generator=torch.Generator().manual_seed(0), **options)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            captured = sampler(model, torch.zeros(16, 3), generator=torch.Generator().manual_seed(0), **options)
            eager = Langevin(4, 0.2)(model, torch.zeros(16, 3), generator=torch.Generator().manual_seed(0), **options)
    assert chain_graphs(sampler).stats() == {"captures": 2, "replays": 0, "eager_calls": 0}
    assert captured.dtype == torch.float32  # chain states stay float32 under autocast
    assert torch.equal(captured, eager)


def test_completing_a_stage_of_a_product_of_ratios_records_the_longer_energy() -> None:
    prior = ProductOfRatiosPrior(3, EnergyMLP(3, hidden=8), n_stages=3, sampler=Langevin(4, 0.3))
    generator = torch.Generator().manual_seed(0)
    with emulate_on_cpu():
        prior.complete_stage()
        prior.sample(8, generator=generator)
        prior.sample(8, generator=generator)
        prior.complete_stage()
        state = generator.get_state()
        z = prior.sample(8, generator=generator)
    assert chain_graphs(prior.sampler).stats() == {"captures": 2, "replays": 1, "eager_calls": 0}
    assert torch.equal(z, prior.sample(8, generator=torch.Generator().set_state(state)))


def test_an_error_in_the_energy_surfaces_unchanged_from_the_warm_up_which_is_undone() -> None:
    model, sampler = Posterior(), Langevin(3, 0.2)
    statistics = model.energy[1].running_mean.clone()
    with emulate_on_cpu(), pytest.raises(ValueError, match="one energy per sample"):
        sampler(lambda z, x: model(z, x).unsqueeze(1), torch.zeros(16, 3), inputs=(batches(1)[0],), freeze=[model])
    assert torch.equal(model.energy[1].running_mean, statistics)


def test_a_prior_chain_for_another_number_of_samples_records_its_own_graph() -> None:
    prior = ProductOfRatiosPrior(3, EnergyMLP(3, hidden=8), n_stages=2, sampler=Langevin(4, 0.3))
    prior.complete_stage()
    with emulate_on_cpu():
        sizes = [prior.sample(n).shape[0] for n in (8, 8, 5)]
    assert sizes == [8, 8, 5]
    assert chain_graphs(prior.sampler).stats() == {"captures": 2, "replays": 1, "eager_calls": 0}


def test_a_new_generator_object_replays_the_same_graph_and_continues_its_own_stream() -> None:
    model, sampler = Posterior(), Langevin(5, 0.2)
    x = batches(1)[0]
    with emulate_on_cpu():
        sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=torch.Generator().manual_seed(1))
        resumed = torch.Generator().manual_seed(9)  # a resumed run builds its stream anew
        z = sampler(model, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=resumed)
    assert chain_graphs(sampler).stats()["replays"] == 1
    reference = torch.Generator().manual_seed(9)
    assert torch.equal(z, Langevin(5, 0.2)(model, torch.zeros(16, 3), inputs=(x,), freeze=[model], generator=reference))
    assert torch.equal(resumed.get_state(), reference.get_state())


def test_the_cache_keeps_the_most_recently_used_chains() -> None:
    model, sampler = Posterior(), Langevin(2, 0.2)
    with emulate_on_cpu():
        for size in [*range(2, 2 + capture_module.CACHE_SIZE), 2, 30]:  # 2 is replayed, then 3 is evicted
            x = torch.zeros(size, 4)
            sampler(model, torch.zeros(size, 3), inputs=(x,), freeze=[model])
        sampler(model, torch.zeros(3, 3), inputs=(torch.zeros(3, 4),), freeze=[model])
        sampler(model, torch.zeros(2, 3), inputs=(torch.zeros(2, 4),), freeze=[model])
    stats = chain_graphs(sampler).stats()
    assert stats["captures"] == capture_module.CACHE_SIZE + 2  # ... and 3 had to be recorded again
    assert stats["replays"] == 2


# ------------------------------------------------------------------------- eager fallbacks
class OwnSampler(Sampler):
    """A user's sampler: plain gradient descent, with a run() of its own and no opt-in."""

    def __init__(self, n_steps: int = 3) -> None:
        self.n_steps = n_steps

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        for _ in range(self.n_steps):
            z = z - 0.1 * target.grad(z)
        return z


class OptedIn(OwnSampler):
    capturable = True


class LangevinWithItsOwnRun(Langevin):
    """A subclass of an opted-in sampler that replaces run(): it does not inherit the opt-in."""

    def run(self, target: ChainTarget, z: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return super().run(target, z, generator=generator)


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)

    def forward(self, z: Tensor) -> Tensor:
        return self.rnn(z.unsqueeze(1))[0].square().sum((1, 2))


class Declared(nn.Module):
    chain_capture = False

    def forward(self, z: Tensor) -> Tensor:
        return z.square().sum(1)


EAGER_CASES = [
    "no inputs declared",
    "cuda_graph off",
    "a user's run without opt-in",
    "a subclass of Langevin with its own run",
    "a persistent chain around such a run",
    "a recurrent net",
    "a module that declares it",
    "no steps",
]


def eager_cases() -> dict:
    posterior = Posterior()
    x = batches(1)[0]
    return {
        "no inputs declared": (Langevin(3, 0.1), lambda z: posterior(z, x), {}),
        "cuda_graph off": (Langevin(3, 0.1, cuda_graph=False), posterior, {"inputs": (x,)}),
        "a user's run without opt-in": (OwnSampler(), posterior, {"inputs": (x,)}),
        "a subclass of Langevin with its own run": (LangevinWithItsOwnRun(3, 0.1), posterior, {"inputs": (x,)}),
        "a persistent chain around such a run": (PersistentChains(OwnSampler(), [3], 8), posterior, {"inputs": (x,)}),
        "a recurrent net": (Langevin(3, 0.1), Recurrent(), {"inputs": ()}),
        "a module that declares it": (Langevin(3, 0.1), Declared(), {"inputs": ()}),
        "no steps": (Langevin(0, 0.1), posterior, {"inputs": (x,)}),
    }


@pytest.mark.filterwarnings("ignore:Langevin with n_steps=0")
@pytest.mark.parametrize("name", EAGER_CASES)
def test_chains_that_must_not_be_captured_run_eagerly(name: str) -> None:
    sampler, energy, options = eager_cases()[name]
    with emulate_on_cpu():
        z = sampler(energy, torch.randn(16, 3), **options)
        sampler(energy, torch.randn(16, 3), **options)
    assert z.shape == (16, 3)
    assert chain_graphs(sampler).captures == 0 and chain_graphs(sampler).replays == 0


def test_a_users_sampler_that_opts_in_is_captured() -> None:
    sampler, model, x = OptedIn(), Posterior(), batches(1)[0]
    with emulate_on_cpu():
        z = [sampler(model, torch.ones(16, 3), inputs=(x,), freeze=[model]) for _ in range(2)]
    assert chain_graphs(sampler).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}
    assert torch.equal(z[1], OwnSampler()(model, torch.ones(16, 3), inputs=(x,), freeze=[model]))


def test_on_the_cpu_chains_run_eagerly_without_touching_the_capture_machinery() -> None:
    model, sampler = Posterior(), Langevin(3, 0.1)
    sampler(model, torch.randn(16, 3), inputs=(batches(1)[0],), freeze=[model])
    assert "_chain_graphs" not in vars(sampler)


def test_a_chain_that_cannot_be_recorded_warns_once_and_runs_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self, body, generators):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(EmulatedStore, "record", refuse)
    torch.manual_seed(0)
    model, reference = Posterior(), Posterior()
    reference.load_state_dict(model.state_dict())
    sampler, x = Langevin(4, 0.2), batches(1)[0]
    options = {"inputs": (x,), "module_mode": "train"}
    generator = torch.Generator().manual_seed(4)
    with emulate_on_cpu(), pytest.warns(UserWarning, match="could not be captured.*operation not permitted"):
        first = sampler(model, torch.zeros(16, 3), freeze=[model], generator=generator, **options)
    statistics = model.energy[1].running_mean.clone()
    with emulate_on_cpu():
        sampler(model, torch.zeros(16, 3), freeze=[model], generator=generator, **options)
    assert chain_graphs(sampler).stats() == {"captures": 0, "replays": 0, "eager_calls": 2}
    eager = Langevin(4, 0.2)(
        reference, torch.zeros(16, 3), freeze=[reference], generator=torch.Generator().manual_seed(4), **options
    )
    assert torch.equal(first, eager)  # the warm-ups and the failed recording left no trace
    assert torch.equal(statistics, reference.energy[1].running_mean)


def test_a_sampler_whose_calls_never_repeat_stops_capturing_with_a_warning() -> None:
    model, sampler, x = Posterior(), Langevin(2, 0.2), batches(1)[0]
    with emulate_on_cpu(), pytest.warns(UserWarning, match="captured .* chains in a row without replaying"):
        for _ in range(CHURN_LIMIT + 2):
            energy = lambda z, x: model(z, x)  # a new function object at every call
            sampler(energy, torch.zeros(16, 3), inputs=(x,), freeze=[model])
    stats = chain_graphs(sampler).stats()
    assert stats["captures"] == CHURN_LIMIT and stats["eager_calls"] == 2


def test_copies_and_pickles_of_a_sampler_leave_its_graphs_behind() -> None:
    model, sampler = Posterior(), Langevin(2, 0.2)
    with emulate_on_cpu():
        sampler(model, torch.zeros(4, 3), inputs=(torch.zeros(4, 4),), freeze=[model])
    for twin in (copy.deepcopy(sampler), pickle.loads(pickle.dumps(sampler))):
        assert chain_graphs(twin).entries == {} and chain_graphs(twin).captures == 0
        assert twin.n_steps == 2


def test_samplers_of_finds_every_sampler_of_a_model_and_of_a_callback() -> None:
    class Owner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.posterior_sampler = Langevin(2, 0.1)
            self.prior = ProductOfRatiosPrior(
                3, EnergyMLP(3, hidden=8), sampler=PersistentChains(Langevin(3, 0.2), [3])
            )

    class Callback:
        def __init__(self) -> None:
            self.sampler = Langevin(5, 0.1)

    owner, callback = Owner(), Callback()
    expected = [owner.posterior_sampler, owner.prior.sampler, owner.prior.sampler.sampler, callback.sampler]
    assert {id(s) for s in samplers_of(owner, callback)} == {id(s) for s in expected}
    assert len(samplers_of(owner)) == 3


def test_the_run_wide_switch_turns_every_chain_eager_and_back() -> None:
    """One setting, read by every sampler: off, a declared chain runs eagerly (no recording);
    a sampler's own cuda_graph=False keeps it eager even with the switch on."""
    model = Posterior()
    x = torch.zeros(4, 4)
    kept_out = Langevin(2, 0.2, cuda_graph=False)
    with emulate_on_cpu():
        for enabled in (False, True):
            sampler = Langevin(2, 0.2)
            with chain_capture(enabled):
                for _ in range(WARMUP_RUNS + 2):
                    sampler(model, torch.zeros(4, 3), inputs=(x,), freeze=[model])
                    kept_out(model, torch.zeros(4, 3), inputs=(x,), freeze=[model])
            stats = chain_graphs(sampler).stats()
            assert (stats["captures"] == 1) is enabled and (stats["eager_calls"] == 0) is enabled
        assert chain_graphs(kept_out).stats()["captures"] == 0
    assert chain_capture_enabled()


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_switch_reaches_processes_started_after_it_is_set() -> None:
    """Spawned ranks (lebm_ddp_spawn) and launched ones read the switch from LEBM_CHAIN_CAPTURE."""
    import subprocess
    import sys

    code = "from lebm.recording import chain_capture_enabled; print(chain_capture_enabled())"
    with chain_capture(False):
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS)
    assert child.stdout.strip() == "False", child.stderr
    after = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS)
    assert after.stdout.strip() == "True", after.stderr


def test_there_is_one_switch_and_it_returns_the_previous_setting() -> None:
    """``set_chain_capture(enabled)`` is the switch's, wherever it is imported from; it takes no
    samplers (turning capture off leaves their graphs to be retired as usual) and returns the old value."""
    from lebm import recording as capture
    from lebm.recording import switch

    assert capture.set_chain_capture is switch.set_chain_capture
    assert not hasattr(capture.cache, "set_chain_capture")
    try:
        assert capture.set_chain_capture(False) is True and not chain_capture_enabled()
        assert capture.set_chain_capture(True) is False
    finally:
        capture.set_chain_capture(True)
