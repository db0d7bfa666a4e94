"""Every method trains the same with its chains captured as without (device: CPU, through the replay
emulator): the same parameters, buffers and random streams after training and validation, and the
chains (and DAMC's learned chain starts) really were served by replays. On a GPU the same runs go through CUDA graphs
(``tests/models/test_chain_graphs_cuda.py``)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from lebm.models import Method
from lebm.recording import cache as capture_module
from lebm.recording import iteration_capture
from lebm.recording.cache import capture_stats, chain_graphs, samplers_of
from lebm.samplers import ChainInitializer, Langevin, PersistentChains
from lebm.testing.capture import emulate_on_cpu
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import CASES, Recording, toy_loader


def without_recording(model: Method) -> Method:
    """The case's model with every ``Recording`` wrapper replaced by the sampler it wraps (a
    recording sampler keeps Python-side state at every call, so it rightly runs eagerly)."""
    for owner in [model, getattr(model, "prior", None)]:
        for name, value in list(vars(owner).items()) + list(owner._modules.items()):
            if isinstance(value, Recording):
                setattr(owner, name, value.inner)
            if isinstance(value, PersistentChains) and isinstance(value.sampler, Recording):
                value.sampler = value.sampler.inner
    return model


def fit(model: Method, emulate: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    trainer = quiet_trainer(
        max_epochs=2,
        accelerator="cpu",
        limit_val_batches=1,
        num_sanity_val_steps=0,
    )  # validation under inference mode, as Lightning runs it by default
    # chains called by the method, not replayed inside a recorded iteration (on by default)
    with emulate_on_cpu() if emulate else torch.no_grad(), iteration_capture(False):
        trainer.fit(model, toy_loader(n_batches=3), toy_loader(n_batches=1, seed=1))
    state = {name: value.clone() for name, value in model.state_dict().items()}
    state["training stream"] = model.random_streams.train.get_state()
    state["global stream"] = torch.get_rng_state()
    return state


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_training_with_captured_chains_equals_training_with_eager_ones(case, one_thread) -> None:
    torch.manual_seed(0)
    eager_model = without_recording(case.build())
    if hasattr(eager_model, "stage_schedule"):  # a stage of two iterations: its second replays
        eager_model.stage_schedule = [2] * eager_model.prior.n_stages
    captured_model = copy.deepcopy(eager_model)
    eager, captured = fit(eager_model, False), fit(captured_model, True)
    assert eager.keys() == captured.keys()
    for name in eager:
        assert torch.equal(eager[name], captured[name]), name
    stats = capture_stats(samplers_of(captured_model))
    assert stats["captures"] >= 1 and stats["replays"] >= 1, stats
    assert capture_stats(samplers_of(eager_model))["captures"] == 0
    learned_starts = [s for s in samplers_of(captured_model) if isinstance(s, ChainInitializer) and s.capturable]
    assert len(learned_starts) == (2 if case.name == "DAMC" else 0)  # DAMC's amortizer and its EMA copy's average
    for initializer in learned_starts:  # their ancestral samplers replayed
        assert chain_graphs(initializer).stats()["replays"] >= 1, initializer


def test_hierarchical_sampling_of_one_layer_replays_for_every_base(one_thread) -> None:
    case = next(case for case in CASES if case.name == "JointHierarchicalEBM")
    torch.manual_seed(0)
    model = without_recording(case.build())
    eager = [model.sample_layer(1, 6, conditional=True, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    with emulate_on_cpu():
        captured = [
            model.sample_layer(1, 6, conditional=True, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
        ]
    for left, right in zip(eager, captured, strict=True):
        assert torch.equal(left, right)
    assert not torch.equal(eager[0], eager[1])
    stats = capture_stats([model.prior.sampler])
    assert stats == {"captures": 2, "replays": 2, "eager_calls": 0}  # the prior chain and the layer's chain


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_a_run_resumed_with_captured_chains_equals_an_eager_run_straight_through(tmp_path, monkeypatch) -> None:
    """LatentEBM's quickstart: 4 eager epochs equal 2 + 2 epochs (resumed from ``last``) with the
    chains captured, parameter for parameter, bitwise: the captured chains draw from the restored
    streams exactly what the eager chains draw."""
    common = ["-c", "recipes/quickstart.yaml", *SHORT_RUN, "--trainer.logger", "false"]
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "eager"), "--trainer.max_epochs", "4")
    resumed = ["--trainer.default_root_dir", str(tmp_path / "captured")]
    replays = []
    replay = capture_module.CapturedChain.__call__
    monkeypatch.setattr(capture_module.CapturedChain, "__call__", lambda *a, **k: replays.append(1) or replay(*a, **k))
    with emulate_on_cpu(), iteration_capture(False):  # chains called by the method, not inline in recorded iterations
        run_cli("fit", *common, *resumed, "--trainer.max_epochs", "2")
        run_cli("fit", *common, *resumed, "--trainer.max_epochs", "4", "--ckpt_path", "last")
    eager = torch.load(tmp_path / "eager/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    captured = torch.load(tmp_path / "captured/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert eager["global_step"] == captured["global_step"] > 0
    for key, value in eager["state_dict"].items():
        assert torch.equal(value, captured["state_dict"][key]), key
    assert len(replays) > 2 * 4 * 3  # both chains of every training batch, and the evaluation chains


@pytest.mark.parametrize("case", [case for case in CASES if case.in_library], ids=lambda case: case.name)
def test_a_chain_whose_energy_reads_a_whole_trained_method_is_captured(case, one_thread) -> None:
    """A user's chain on a lebm method (the energy a closure over the model, ``freeze=[model]``)
    after the method has trained with recorded iterations on: the key leaves out the method's host
    bookkeeping (its Trainer, its recorded iterations), so the chain records and replays rather
    than running eagerly with a warning; a changed hyperparameter or attribute still keys a new graph."""
    torch.manual_seed(0)
    model = without_recording(case.build())
    if hasattr(model, "stage_schedule"):
        model.stage_schedule = [20] * model.prior.n_stages
    trainer = quiet_trainer(max_epochs=1, accelerator="cpu", limit_val_batches=0)
    with emulate_on_cpu(), iteration_capture(True):
        trainer.fit(model, toy_loader(n_batches=6))
    assert model.iteration_recorder.stats.replays >= 1 and model.iteration_recorder.entries  # bookkeeping held

    def energy(z: torch.Tensor) -> torch.Tensor:  # a closure over the whole method
        return 0.5 * (z**2).sum(1) + 0.0 * model.current_epoch

    sampler = Langevin(3, 0.1)

    def chain(seed: int) -> dict[str, int]:
        sampler(energy, torch.zeros(4, 3), inputs=(), freeze=[model], generator=torch.Generator().manual_seed(seed))
        return chain_graphs(sampler).stats()

    with emulate_on_cpu(), warnings.catch_warnings():
        warnings.simplefilter("error")  # "runs eagerly because the capture key cannot see ..." fails here
        chain(1)
        assert chain(2) == {"captures": 1, "replays": 1, "eager_calls": 0}
        model.hparams["temperature"] = 0.5  # what an energy may read of the method still keys the graph:
        assert chain(3) == {"captures": 2, "replays": 1, "eager_calls": 0}  # its hyperparameters,
        model.noise_scale = 2.0  # and every attribute but the host bookkeeping
        assert chain(4) == {"captures": 3, "replays": 1, "eager_calls": 0}
