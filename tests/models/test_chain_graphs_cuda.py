"""Whole-chain CUDA graphs on a GPU (device: CUDA; marked ``gpu``, skipped without CUDA).

A captured chain replays the eager chain's numbers and continues the caller's random stream as the
eager chain does; none of the changes that move, resize or reconfigure what a graph reads replays a
stale graph; every method trains with its chains captured. TF32 is off in this file, so that a
graph and an eager run use the same float32 arithmetic: they agree to ``TOLERANCE`` (the kernels
are the same; cuDNN may still pick another algorithm for a convolution between two runs).
"""

from __future__ import annotations

import gc

import lightning as L
import pytest
import torch

from lebm.models import LatentEBM, Method, TiltedGaussianPrior
from lebm.nets import DCGANGenerator, EnergyMLP, GaussianDecoder
from lebm.recording import iteration_capture
from lebm.recording.cache import CACHE_SIZE, capture_stats, chain_graphs, samplers_of
from lebm.recording.recorders import RETIRED_LIMIT, cuda_store
from lebm.samplers import Langevin

# One import path for the cases and for without_recording, which unwraps them by class: imported as
# `cases` here and as `tests.models.cases` there, the case's Recording wrappers were another class
# than the one it looks for, stayed in place, and every chain of the cases ran eagerly (a Recording
# states no `capturable`). The CPU twin (test_chain_graphs_cpu_twin.py) runs trained_with_chains.
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, MethodCase, toy_loader
from tests.models.test_chain_capture_methods import without_recording

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("exact_float32")]  # TF32 off: tests/conftest.py

DEVICE = torch.device("cuda")
#: Captured against eager float32 chains (TF32 off): absolute difference of the final states.
TOLERANCE = 1e-4


def image_model(capture: bool = True, seed: int = 0) -> LatentEBM:
    torch.manual_seed(seed)
    decoder = GaussianDecoder(DCGANGenerator(16, 3, 32, ngf=16), sigma=0.3)
    prior = TiltedGaussianPrior(16, EnergyMLP(16, hidden=32), sampler=Langevin(30, 0.4, cuda_graph=capture))
    model = LatentEBM(decoder, prior, posterior_sampler=Langevin(10, 0.1, cuda_graph=capture))
    return model.to(DEVICE)


def images(n: int = 32, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator(DEVICE).manual_seed(seed)
    return torch.rand(n, 3, 32, 32, device=DEVICE, generator=generator) * 2 - 1


def posterior(model: LatentEBM, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return model.infer(x, start="noise", generator=generator)


def test_replayed_chains_match_eager_ones_and_continue_the_stream_alike() -> None:
    eager_model, captured_model = image_model(capture=False), image_model(capture=True)
    streams = [torch.Generator(DEVICE).manual_seed(3) for _ in range(2)]
    for seed in (1, 2, 3):  # the first call records, the next two replay on new batches
        x = images(seed=seed)
        eager = posterior(eager_model, x, streams[0])
        captured = posterior(captured_model, x, streams[1])
        assert (eager - captured).abs().max() < TOLERANCE
        prior_eager = eager_model.prior.sample(32, generator=streams[0])
        prior_captured = captured_model.prior.sample(32, generator=streams[1])
        assert (prior_eager - prior_captured).abs().max() < TOLERANCE
        assert torch.equal(streams[0].get_state(), streams[1].get_state())
    stats = capture_stats(samplers_of(captured_model))
    assert stats == {"captures": 2, "replays": 4, "eager_calls": 0}
    assert capture_stats(samplers_of(eager_model))["captures"] == 0


def test_without_a_generator_a_replay_advances_the_default_stream_as_an_eager_chain() -> None:
    eager_model, captured_model = image_model(capture=False), image_model(capture=True)
    results = []
    for model in (eager_model, captured_model):
        torch.cuda.manual_seed(11)
        runs = [model.prior.sample(16) for _ in range(3)]
        results.append((runs, torch.cuda.get_rng_state()))
    for eager, captured in zip(results[0][0], results[1][0], strict=True):
        assert (eager - captured).abs().max() < TOLERANCE
    assert torch.equal(results[0][1], results[1][1])
    assert chain_graphs(captured_model.prior.sampler).replays == 2


STALE_CASES = [
    "weights loaded in place",
    "an optimiser step",
    "moved to the CPU and back",
    "another step size",
    "another step count",
    "a smaller last batch",
    "a resumed stream (a new generator object)",
    "eval mode",
]


@pytest.mark.parametrize("case", STALE_CASES)
def test_no_change_replays_a_stale_graph(case: str) -> None:
    model = image_model()
    sampler = model.posterior_sampler
    x = images()
    generator = torch.Generator(DEVICE).manual_seed(5)
    posterior(model, x, generator)  # records
    posterior(model, x, generator)  # replays
    records = 1
    if case == "weights loaded in place":
        # another initialisation of the same scale: scaled-up weights (1.5x, even 1.1x) made the
        # chain chaotic enough that one element's rounding outgrew TOLERANCE on an H100
        model.load_state_dict(image_model(seed=1).state_dict())
    elif case == "an optimiser step":
        # a small step: a large one makes the posterior chain chaotic, and a different cuDNN
        # algorithm's rounding then grows past the tolerance; the check below shows it still matters
        optimizer = torch.optim.Adam(model.decoder.parameters(), lr=1e-3)
        model.decoder.nll(x, torch.randn(32, 16, device=DEVICE)).mean().backward()
        optimizer.step()
    elif case == "moved to the CPU and back":
        held = list(model.state_dict().values())  # keeps the old storage busy: the move back gets new addresses
        model.cpu().to(DEVICE)
        assert held[0].data_ptr() != next(iter(model.state_dict().values())).data_ptr()
        records = 2
    elif case == "another step size":
        sampler.step_size = 0.05
        records = 2
    elif case == "another step count":
        sampler.n_steps = 4
        records = 2
    elif case == "a smaller last batch":
        x = x[:20]
        records = 2
    elif case == "a resumed stream (a new generator object)":
        generator = torch.Generator(DEVICE).set_state(generator.get_state())
    elif case == "eval mode":
        model.eval()
        records = 2
    reference = torch.Generator(DEVICE).set_state(generator.get_state())
    before = torch.Generator(DEVICE).set_state(generator.get_state())
    captured = posterior(model, x, generator)
    assert chain_graphs(sampler).captures == records
    eager_sampler = Langevin(sampler.n_steps, sampler.step_size, cuda_graph=False)
    eager = model.infer(x, start="noise", sampler=eager_sampler, generator=reference)
    assert (captured - eager).abs().max() < TOLERANCE
    assert torch.equal(generator.get_state(), reference.get_state())  # the stream moved on as the eager one did
    if case in ("weights loaded in place", "an optimiser step"):  # the change moves the chain: stale would show
        unchanged = image_model(capture=False)
        stale = unchanged.infer(x, start="noise", sampler=eager_sampler, generator=before)
        assert (stale - eager).abs().max() > 100 * TOLERANCE


def trained_with_chains(case: MethodCase, capture: bool, accelerator: str = "gpu") -> tuple[Method, list[torch.Tensor]]:
    """``case``'s model without its ``Recording`` wrappers, every sampler's capture on or off, trained
    2 epochs of 3 batches (1 validation batch each) with its chains called by the method (recorded
    iterations off); with its parameters, on the CPU, after. The CPU twin runs it under the emulator."""
    torch.manual_seed(0)
    model = without_recording(case.build())
    if hasattr(model, "stage_schedule"):
        model.stage_schedule = [2] * model.prior.n_stages
    for sampler in samplers_of(model):
        sampler.cuda_graph = capture
    trainer = quiet_trainer(
        max_epochs=2,
        accelerator=accelerator,
        devices=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )
    torch.manual_seed(7)
    with iteration_capture(False):  # chains called by the method, not replayed inside a recorded iteration
        trainer.fit(model, toy_loader(n_batches=3), toy_loader(n_batches=1, seed=1))
    return model, [p.detach().cpu() for p in model.parameters()]


def chain_roles(model: Method) -> dict[str, object]:
    """The chains every method of the cases runs at every training batch, by role: the posterior
    sampler, the prior's sampler, the data sampler (those the method has)."""
    held = {
        "posterior": getattr(model, "posterior_sampler", None),
        "prior": getattr(getattr(model, "prior", None), "sampler", None),
        "data": getattr(model, "data_sampler", None),
    }
    return {role: sampler for role, sampler in held.items() if sampler is not None}


def assert_every_chain_captured(model: Method) -> None:
    """Every chain of ``model``'s roles (:func:`chain_roles`) was recorded and replayed; no sampler or
    chain initializer of it ran a chain eagerly, and each that recorded one also replayed one."""
    for role, sampler in chain_roles(model).items():
        stats = chain_graphs(sampler).stats()
        assert stats["captures"] >= 1 and stats["replays"] >= 1 and stats["eager_calls"] == 0, (role, stats)
    for sampler in samplers_of(model):
        stats = chain_graphs(sampler).stats()
        assert stats["eager_calls"] == 0, (type(sampler).__name__, stats)
        if stats["captures"]:
            assert stats["replays"] >= 1, (type(sampler).__name__, stats)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_method_trains_with_captured_chains_as_with_eager_ones(case) -> None:
    eager_model, eager = trained_with_chains(case, capture=False)
    captured_model, captured = trained_with_chains(case, capture=True)
    assert_every_chain_captured(captured_model)
    for left, right in zip(eager, captured, strict=True):
        assert torch.isfinite(right).all()
        # 6 iterations of chains and updates in float32 on both paths; the bound leaves room for
        # kernels whose result depends on scheduling (a persistent buffer's write-back of repeated rows)
        assert (left - right).abs().max() < 1e-2


def test_bf16_autocast_chains_replay_the_eager_numbers() -> None:
    eager_model, captured_model = image_model(capture=False), image_model(capture=True)
    streams = [torch.Generator(DEVICE).manual_seed(3) for _ in range(2)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for seed in (1, 2):
            x = images(seed=seed)
            eager = posterior(eager_model, x, streams[0])
            captured = posterior(captured_model, x, streams[1])
            assert eager.dtype == captured.dtype == torch.float32  # chain states stay float32
            assert (eager - captured).abs().max() < 1e-2
    assert chain_graphs(captured_model.posterior_sampler).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpu_ranks_draw_different_chains(tmp_path) -> None:
    class CompareRanks(L.Callback):
        def on_train_end(self, trainer: L.Trainer, module) -> None:
            stream = module.train_generator
            z = module.prior.sample(8, generator=stream)
            gathered = module.all_gather(z)
            assert not torch.allclose(gathered[0], gathered[1]), "both ranks drew the same prior chains"
            assert capture_stats(samplers_of(module))["replays"] >= 1

    torch.manual_seed(0)
    model = without_recording(CASES[0].build())
    trainer = quiet_trainer(
        max_epochs=1,
        accelerator="gpu",
        devices=2,
        strategy="lebm_ddp_spawn",
        default_root_dir=tmp_path,
        callbacks=[CompareRanks()],
    )
    trainer.fit(model, toy_loader(n_batches=8, batch_size=8))


# ------------------------------------------------------------------ lifetime and failures
def prior_chains(model: LatentEBM, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's prior chain for ``n`` samples, captured and eager, from the same stream."""
    captured = model.prior.sample(n, generator=torch.Generator(DEVICE).manual_seed(seed))
    eager_sampler = Langevin(model.prior.sampler.n_steps, model.prior.sampler.step_size, cuda_graph=False)
    eager = model.prior.sample(n, sampler=eager_sampler, generator=torch.Generator(DEVICE).manual_seed(seed))
    return captured, eager


def test_the_capture_stream_is_lebms_own_not_a_pooled_one() -> None:
    store = cuda_store(DEVICE)
    assert isinstance(store.stream, torch.cuda.ExternalStream)
    pooled = {torch.cuda.Stream(DEVICE).cuda_stream for _ in range(64)}  # every stream of torch's pool
    assert store.stream.cuda_stream not in pooled


def test_keys_a_b_a_b_of_one_sampler_each_replay_the_eager_chain() -> None:
    model = image_model()
    for n in (32, 20, 32, 20):  # two keys (two batch sizes), each recorded once and replayed once
        captured, eager = prior_chains(model, n, seed=n)
        assert (captured - eager).abs().max() < TOLERANCE
    assert chain_graphs(model.prior.sampler).stats() == {"captures": 2, "replays": 2, "eager_calls": 0}


def test_more_keys_than_the_cache_holds_under_allocator_pressure_never_replay_a_destroyed_graph() -> None:
    store = cuda_store(DEVICE)
    other = image_model()
    prior_chains(other, 24, seed=4)  # another sampler's graph, alive while this one's are evicted
    model = image_model()
    generation = store.generation
    pressure: list[torch.Tensor] = []
    for i, n in enumerate(range(4, 4 + CACHE_SIZE + RETIRED_LIMIT + 2)):
        pressure.append(torch.empty(int(2**20 * (1 + i % 5)), device=DEVICE))  # blocks come and go
        if i % 3 == 0:
            pressure.pop(0)
        for seed in (i, -i):  # recorded, then replayed: a sampler that only ever records stops capturing
            captured, eager = prior_chains(model, n, seed=seed)
            assert (captured - eager).abs().max() < TOLERANCE, n
    assert store.generation > generation  # the retired graphs were destroyed, all at once
    for n in range(4, 4 + CACHE_SIZE + 2):  # every key again: recorded anew or replayed, never stale
        captured, eager = prior_chains(model, n, seed=100 + n)
        assert (captured - eager).abs().max() < TOLERANCE, n
    # the other sampler's graph was destroyed with the rest: it records again (the prior's MLP chain:
    # no convolution, whose cuDNN algorithm may change with the free memory and round otherwise)
    captures = chain_graphs(other.prior.sampler).captures
    again, eager = prior_chains(other, 24, seed=5)
    assert (again - eager).abs().max() < TOLERANCE
    assert chain_graphs(other.prior.sampler).captures == captures + 1


def test_a_chain_that_synchronises_is_refused_before_capture_and_the_gpu_stays_usable() -> None:
    model = image_model()
    x = images()

    def energy(z: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        if z.sum().item() > 1e9:  # a host synchronisation
            raise AssertionError
        return model.posterior_chain_energy(z, data)

    sampler = Langevin(3, 0.1)
    generator = torch.Generator(DEVICE).manual_seed(0)
    with pytest.warns(UserWarning, match="synchronises with the host"):
        z = sampler(energy, torch.zeros(32, 16, device=DEVICE), inputs=(x,), freeze=[model], generator=generator)
    assert torch.isfinite(z).all() and chain_graphs(sampler).stats()["captures"] == 0
    torch.randn(8, device=DEVICE)  # the default generator draws eagerly
    captured, eager = prior_chains(model, 16, seed=1)  # another chain still records (no generator below)
    assert (captured - eager).abs().max() < TOLERANCE
    torch.cuda.manual_seed(3)
    first = model.prior.sample(16)
    torch.cuda.manual_seed(3)
    assert (first - model.prior.sample(16)).abs().max() < TOLERANCE


def test_a_recording_that_breaks_midway_leaves_the_random_generators_working() -> None:
    model = image_model()
    x = images()

    def energy(z: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
        if torch.cuda.is_current_stream_capturing():
            z.sum().cpu()  # invalidates the capture: only while recording, so no warm-up sees it
        return model.posterior_chain_energy(z, data)

    sampler = Langevin(3, 0.1)
    generator = torch.Generator(DEVICE).manual_seed(0)
    with pytest.warns(UserWarning, match="could not be captured"):
        sampler(energy, torch.zeros(32, 16, device=DEVICE), inputs=(x,), freeze=[model], generator=generator)
    torch.randn(8, device=DEVICE)  # on torch 2.11-2.13 this raised "Offset increment outside graph capture"
    torch.randn(8, device=DEVICE, generator=generator)
    no_generator = Langevin(3, 0.1)
    z = no_generator(model.prior.residual_energy, torch.zeros(8, 16, device=DEVICE), inputs=(), freeze=[model.prior])
    assert torch.isfinite(z).all() and chain_graphs(no_generator).captures == 1
    captured, eager = prior_chains(model, 16, seed=2)
    assert (captured - eager).abs().max() < TOLERANCE


def test_a_compiled_net_is_captured_inside_the_chain_with_the_eager_numbers() -> None:
    model = image_model()
    model.decoder.compile()
    eager_model = image_model(capture=False)
    streams = [torch.Generator(DEVICE).manual_seed(3) for _ in range(2)]
    for seed in (1, 2):
        x = images(seed=seed)
        captured = posterior(model, x, streams[0])
        eager = posterior(eager_model, x, streams[1])
        assert (captured - eager).abs().max() < 1e-3  # fused kernels round differently
    assert chain_graphs(model.posterior_sampler).stats() == {"captures": 1, "replays": 1, "eager_calls": 0}


def test_captured_chains_hold_at_most_half_again_the_eager_peak_memory() -> None:
    def peak(capture: bool) -> int:
        model = image_model(capture=capture)
        x = images(100)
        generator = torch.Generator(DEVICE).manual_seed(0)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            posterior(model, x, generator)
            model.prior.sample(100, generator=generator)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()

    gc.collect()  # earlier tests' samplers, and the graph outputs they hold
    cuda_store(DEVICE).release_all()
    eager, captured = peak(False), peak(True)
    assert captured <= 1.5 * eager, (captured, eager)
