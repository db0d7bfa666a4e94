"""``ChainDiagnostics``: long-run chains of a tiny LatentEBM's prior and posterior, their scalars,
plot and JSON lines; training unchanged by them; the group split and gather that make two DDP
processes report what one does (a fake two-rank world here, two real forked DDP ranks in
the slow tier).

Device: CPU.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import ChainDiagnostics
from lebm.callbacks.chain_diagnostics import JSONL_NAME, diagnostics_plot
from lebm.callbacks.long_chains import ChainPart, gather_groups, groups_of_rank, run_local_groups, unpack_traces
from lebm.callbacks.plots import line_plot, scatter_plot
from lebm.metrics.mixing import bulk_ess, split_rhat
from lebm.models import GaussianPrior, LatentEBM, TiltedGaussianPrior
from lebm.nets import EnergyMLP, GaussianDecoder, MLPGenerator
from lebm.samplers import MALA, ChainTarget, Langevin, PersistentChains, Sampler
from tests.helpers.ddp import forked_ranks
from tests.helpers.scripts import load_script, run_json
from tests.helpers.trainers import quiet_trainer

LATENT, DATA = 3, 2
SMALL = dict(n_chains=8, n_draws=8, n_groups=2, posterior_examples=2, n_coordinates=2)


def tiny_model(seed: int = 0, prior_sampler: Sampler | None = None) -> LatentEBM:
    torch.manual_seed(seed)
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8), sampler=prior_sampler or Langevin(4, 0.4))
    decoder = GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=8, out_activation=None), sigma=0.3)
    return LatentEBM(decoder, prior, posterior_sampler=Langevin(4, 0.1), decoder_lr=1e-3, prior_lr=1e-3)


def loader(n: int = 32, batch_size: int = 8, shuffle: bool = False) -> DataLoader:
    """Fixed data; ``shuffle`` draws each epoch's order from torch's global RNG."""
    generator = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(n, DATA, generator=generator))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle)


def trainer(tmp_path: Path, callbacks: list, **settings) -> L.Trainer:
    """A quiet CPU Trainer, chains allowed in evaluation, one validation batch, two epochs."""
    defaults = dict(accelerator="cpu", max_epochs=2, inference_mode=False, limit_val_batches=1)
    return quiet_trainer(**{**defaults, **settings, "callbacks": callbacks, "default_root_dir": str(tmp_path)})


STATISTICS = ("rhat_energy", "ess_energy", "rhat_coordinates", "ess_coordinates", "energy_drift")


def test_a_fit_logs_the_scalars_saves_the_plot_and_writes_a_json_line_per_evaluation(tmp_path, one_thread) -> None:
    callback = ChainDiagnostics(every_n_epochs=1, **SMALL)
    fit = trainer(tmp_path, [callback])
    fit.fit(tiny_model(), loader(), loader())
    for part in ("prior", "posterior"):
        for name in STATISTICS:
            assert math.isfinite(float(fit.callback_metrics[f"diagnostics/{part}_{name}"])), (part, name)
    assert (
        "diagnostics/energy_gap" in fit.callback_metrics and "diagnostics/prior_acceptance" not in fit.callback_metrics
    )
    lines = [json.loads(line) for line in (tmp_path / JSONL_NAME).read_text().splitlines()]
    assert [(line["stage"], line["epoch"]) for line in lines] == [("fit", 0), ("fit", 1)]  # end of fit: epoch 1 done
    assert lines == callback.history == callback.state_dict()["history"]
    assert lines[1]["prior_rhat_energy"] == pytest.approx(float(fit.callback_metrics["diagnostics/prior_rhat_energy"]))
    images = sorted(path.name for path in (tmp_path / "images").iterdir())
    assert images == ["diagnostics_chains_epoch0000.png", "diagnostics_chains_epoch0001.png"]
    # the history travels in checkpoints, so a resumed run keeps it
    fit.save_checkpoint(tmp_path / "last.ckpt")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)["callbacks"]
    restored = ChainDiagnostics(every_n_epochs=1, **SMALL)
    restored.load_state_dict(next(iter(saved.values())))
    assert restored.history == callback.history

    tested = fit.test(fit.lightning_module, loader(), verbose=False)[0]
    assert math.isfinite(tested["diagnostics/posterior_rhat_energy"])
    assert (tmp_path / "images" / "diagnostics_chains_test_epoch0002.png").is_file()
    assert json.loads((tmp_path / JSONL_NAME).read_text().splitlines()[-1])["stage"] == "test"


def test_at_the_end_of_training_the_scalars_go_to_the_loggers(tmp_path, one_thread) -> None:
    """Lightning refuses ``self.log`` in ``on_train_end``: the loggers receive the scalars directly."""
    callback = ChainDiagnostics(every_n_epochs=None, plot=False, **SMALL)
    logger = CSVLogger(str(tmp_path), name="csv")
    fit = trainer(tmp_path, [callback], logger=logger, max_epochs=1)
    fit.fit(tiny_model(), loader(), loader())
    logger.finalize("success")
    with open(Path(logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("diagnostics/prior_rhat_energy")]
    assert len(rows) == 1 and float(rows[0]["diagnostics/prior_rhat_energy"]) == pytest.approx(
        callback.history[0]["prior_rhat_energy"]
    )
    assert not (tmp_path / "images").exists()


def test_diagnostics_leave_training_exactly_as_it_would_be_without_them(tmp_path, one_thread) -> None:
    """The chains draw from their own generators, neither from the training stream nor from torch's
    global RNG (which shuffles the data here), and the model gets its modes back: the weights after
    three epochs with diagnostics at every epoch equal those without."""
    with_diagnostics, without = tiny_model(), tiny_model()
    callback = ChainDiagnostics(every_n_epochs=1, plot=False, **SMALL)
    torch.manual_seed(5)
    trainer(tmp_path / "a", [callback], max_epochs=3).fit(with_diagnostics, loader(shuffle=True), loader())
    torch.manual_seed(5)
    trainer(tmp_path / "b", [], max_epochs=3).fit(without, loader(shuffle=True), loader())
    assert len(callback.history) == 3
    for (name, a), (_, b) in zip(with_diagnostics.state_dict().items(), without.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


class AcceptAll(Sampler):
    """A Metropolis-style sampler for the test: Langevin steps, reporting an acceptance rate of 0.75."""

    def __init__(self, n_steps: int = 3) -> None:
        self.n_steps = n_steps

    def run(self, target: ChainTarget, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        for _ in range(self.n_steps):
            noise = torch.randn(z.shape, generator=generator, device=z.device)
            z = z - 0.05 * target.grad(z) + math.sqrt(0.1) * noise
            target.note("acceptance", torch.tensor(0.75))
        return z


def part_traces(model: LatentEBM, callback: ChainDiagnostics, groups: list[int], epoch: int = 3) -> dict:
    """Packed rows of ``groups`` for each part, ``{part: (len(groups), L)}``."""
    callback._observations = loader().dataset.tensors[0][: callback.posterior_examples]
    out = {}
    for part in callback.parts(None, model):  # the observations are set: no trainer needed
        out[part.name] = (run_local_groups(part, callback.shape(part), groups, callback.seed, epoch), part)
    return out


def test_the_groups_split_over_two_ranks_and_gathered_equal_one_process(one_thread) -> None:
    """Three groups over a fake two-rank world (rank 0 runs groups 0 and 2, rank 1 runs group 1 and
    pads): the gathered traces are the single process's, in group order."""
    model = tiny_model()
    callback = ChainDiagnostics(n_chains=6, n_draws=6, n_groups=3, posterior_examples=2)
    assert groups_of_rank(0, 2, 3) == [0, 2] and groups_of_rank(1, 2, 3) == [1] and groups_of_rank(3, 4, 3) == []
    single = part_traces(model, callback, [0, 1, 2])
    rank0 = part_traces(model, callback, groups_of_rank(0, 2, 3))
    rank1 = part_traces(model, callback, groups_of_rank(1, 2, 3))
    for name, (rows, part) in single.items():
        other = torch.zeros(2, rows.shape[1], dtype=rows.dtype)
        other[:1] = rank1[name][0]

        def all_gather(tensor: torch.Tensor, other: torch.Tensor = other) -> torch.Tensor:
            return torch.stack([tensor, other])  # (W, slots, L): this rank's rows, then rank 1's

        gathered = gather_groups(rank0[name][0], 3, 2, all_gather)
        assert torch.equal(gathered, rows), name
        traces = unpack_traces(gathered, callback.shape(part))
        assert traces["energy"].shape == (6, 6) and traces["states"].shape == (6, 2, LATENT)
        # each group's chains differ from the others' (their own seeds): a mixed-up order would show
        assert not np.allclose(traces["energy"][:2], traces["energy"][2:4])


def test_the_transition_runs_on_copies_persistent_buffers_stay_untouched_and_acceptance_is_reported(
    one_thread,
) -> None:
    chains = PersistentChains(AcceptAll(), [LATENT], buffer_size=16)
    model = tiny_model(prior_sampler=chains)
    buffer = chains.chains.clone()
    callback = ChainDiagnostics(n_chains=4, n_draws=4, n_groups=1, posterior_examples=1)
    rows, part = part_traces(model, callback, [0])["prior"]
    assert torch.equal(chains.chains, buffer)
    traces = unpack_traces(rows, callback.shape(part))
    assert traces["acceptance"].tolist() == [0.75 * 3 * 4, 3 * 4]  # 3 steps per draw, 4 draws


def test_the_prior_and_posterior_transitions_can_be_chosen_apart(one_thread) -> None:
    """``sampler`` replaces the prior's chain only, ``posterior_sampler`` the posterior's: each part
    reports the acceptance of its own transition (MALA's on the prior, the test sampler's 0.75 on
    the posterior)."""
    model = tiny_model()
    callback = ChainDiagnostics(
        n_chains=4, n_draws=4, n_groups=1, posterior_examples=1, sampler=MALA(3, 0.3), posterior_sampler=AcceptAll()
    )
    traces = {
        name: unpack_traces(rows, callback.shape(part))
        for name, (rows, part) in part_traces(model, callback, [0]).items()
    }
    assert traces["posterior"]["acceptance"].tolist() == [0.75 * 3 * 4, 3 * 4]  # the posterior's own sampler
    prior_acceptance = traces["prior"]["acceptance"][0] / traces["prior"]["acceptance"][1]
    assert 0.3 < prior_acceptance < 1.0  # MALA's acceptance, not AcceptAll's 0.75 exactly
    assert prior_acceptance != 0.75
    with pytest.raises(TypeError, match="posterior_sampler must be a lebm.samplers.Sampler"):
        ChainDiagnostics(posterior_sampler="langevin")


def test_a_gaussian_prior_has_no_prior_chains_and_bad_settings_are_refused() -> None:
    decoder = GaussianDecoder(MLPGenerator(LATENT, [DATA], hidden=8, out_activation=None))
    assert ChainDiagnostics().prior_part(LatentEBM(decoder, GaussianPrior(LATENT))) is None
    with pytest.raises(ValueError, match="divisible by n_groups=4"):
        ChainDiagnostics(n_chains=10, n_groups=4)
    with pytest.raises(ValueError, match="n_draws must be an integer >= 4"):
        ChainDiagnostics(n_draws=2)


def test_a_diverged_chain_is_left_out_of_the_projection_instead_of_failing_the_plot() -> None:
    """The diagnostics exist to show a blow-up: non-finite states must not crash the plot's PCA."""
    rng = np.random.default_rng(0)
    traces = {"energy": rng.normal(size=(4, 10)), "states": rng.normal(size=(4, 3, 5))}
    traces["states"][1, 2] = np.nan
    traces["energy"][1, 5:] = np.inf
    stats = {"prior_rhat_energy": float("nan"), "prior_ess_energy": float("nan")}
    image = diagnostics_plot({"prior": (traces, stats, 1)})
    traces["states"][:] = np.nan  # every chain diverged: an empty projection
    assert diagnostics_plot({"prior": (traces, stats, 1)}).shape == image.shape


def test_the_plots_are_rgb_arrays_with_the_traces_drawn() -> None:
    traces = np.stack([np.linspace(0, 1, 30), np.linspace(1, 0, 30)])
    image = line_plot(traces, title="energy", ylabel="U(z)")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert (np.abs(image.astype(int) - 255).sum(2) > 200).sum() > 100  # coloured pixels: the lines
    dots = scatter_plot(np.random.default_rng(0).normal(size=(50, 2)), np.arange(50) % 5, title="chains")
    assert dots.shape == image.shape and len(np.unique(dots.reshape(-1, 3), axis=0)) > 5


# ------------------------------------------------------------------ the worst of several targets
TARGETS, STUCK = 4, 3  # chain i samples target i % 4; the last target's chains cannot mix


def target_energy(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targets 0-2: a narrow Gaussian (sd 0.1: Langevin at step 0.1 forgets its start in a few
    steps). Target 3: a double well in the first coordinate, modes at -2 and +2 with energies about
    -2 and +2, behind a barrier of 64 nats that no chain crosses: chains started on both sides stay
    there, so their coordinates and energies disagree (rank-normalised split R-hat 1.5 and 1.7,
    against 1.00-1.03 for the other targets)."""
    gaussian = z.square().sum(1) / (2 * 0.1**2)
    well = 4 * (z[:, 0].square() - 4).square() + z[:, 0] + z[:, 1].square() / (2 * 0.1**2)
    return torch.where(target == STUCK, well, gaussian)


def stuck_target_part() -> ChainPart:
    """A posterior-like part with four targets, chains started at ``z0 = +-2`` (the sign alternating
    every four chains, so that the stuck target's chains sit in both wells)."""
    chain_target = torch.arange(64) % TARGETS

    def start(n: int, generator: torch.Generator) -> torch.Tensor:
        side = 2.0 * (1 - 2 * ((torch.arange(n) // TARGETS) % 2))
        return torch.randn(n, 2, generator=generator) * 0.1 + torch.stack([side, torch.zeros(n)], 1)

    return ChainPart(
        name="posterior",
        latent_dim=2,
        device=torch.device("cpu"),
        transition=Langevin(4, 0.1),
        energy_fn=target_energy,
        total_energy=lambda z, inputs: target_energy(z, *inputs),
        prior_energy=lambda z: z.square().sum(1) / 2,
        start=start,
        inputs=lambda first, stop: (chain_target[first:stop],),
        reference_precision=0.0,
        freeze=[],
        module_mode=None,
        examples=TARGETS,
    )


class OnePart(ChainDiagnostics):
    """The callback with its chains replaced by ``stuck_target_part``'s."""

    def parts(self, trainer, pl_module) -> list[ChainPart]:  # noqa: ANN001
        return [stuck_target_part()]


def test_one_stuck_target_among_several_sets_the_reported_rhat_and_ess(one_thread) -> None:
    """Three targets mix, one cannot (its chains stay in two wells): the callback reports the worst
    target's R-hat (the largest, for the energy and over the coordinates) and ESS (the smallest),
    so one stuck target shows whatever the others do."""
    callback = OnePart(n_chains=32, n_draws=40, n_groups=2, n_coordinates=2, plot=False)
    world = SimpleNamespace(global_rank=0, world_size=1, strategy=None)
    results = callback.evaluate(world, torch.nn.Linear(1, 1), epoch=0)
    statistics, (traces, _, examples) = results["statistics"], results["results"]["posterior"]
    assert examples == TARGETS and traces["energy"].shape == (32, 40)
    per_target = {
        name: [split_rhat(values[t::TARGETS]) for t in range(TARGETS)]
        for name, values in (("energy", traces["energy"]), *((f"z{c}", traces["coordinates"][..., c]) for c in (0, 1)))
    }
    assert max(per_target["energy"][:STUCK]) < 1.1 and per_target["energy"][STUCK] > 1.4  # the setting holds
    assert statistics["posterior_rhat_energy"] == pytest.approx(per_target["energy"][STUCK])
    worst_coordinate = max(per_target["z0"][STUCK], per_target["z1"][STUCK])
    assert worst_coordinate > 1.4
    assert statistics["posterior_rhat_coordinates"] == pytest.approx(worst_coordinate)
    ess = [bulk_ess(traces["energy"][t::TARGETS]) for t in range(TARGETS)]
    assert statistics["posterior_ess_energy"] == pytest.approx(ess[STUCK]) and ess[STUCK] < 0.5 * min(ess[:STUCK])


class RecordHistory(L.Callback):
    """Each rank writes the diagnostics' history to ``<folder>/rank<r>.json`` at the end of testing."""

    def __init__(self, folder: Path, diagnostics: ChainDiagnostics) -> None:
        self.folder, self.diagnostics = folder, diagnostics

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self.folder / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.diagnostics.history))


def without_seconds(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


@pytest.mark.slow
def test_two_ddp_processes_report_what_one_process_reports(tmp_path, one_thread) -> None:
    """Two forked ranks share four groups (and shard the test loader, whose first
    examples are still the fixed batch): both ranks' numbers equal the single process's exactly
    (the ranks compute on one thread, as this process does)."""
    settings = dict(n_chains=8, n_draws=6, n_groups=4, posterior_examples=2, plot=False)
    reports = {}
    for devices in (1, 2):
        folder = tmp_path / f"devices{devices}"
        folder.mkdir()
        callback = ChainDiagnostics(**settings)
        extra = dict(devices=2, strategy=forked_ranks()) if devices == 2 else {}
        test = trainer(folder, [callback, RecordHistory(folder, callback)], **extra)
        test.test(tiny_model(), loader(), verbose=False)
        reports[devices] = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(devices)]
    (one,) = reports[1]
    assert one[0]["prior_rhat_energy"] > 0 and one[0]["posterior_ess_energy"] > 0
    for rank in range(2):
        assert without_seconds(reports[2][rank]) == without_seconds(one), rank


@pytest.mark.slow
def test_the_cost_benchmark_times_training_and_evaluations_and_projects_the_default_schedule() -> None:
    """``benchmarks/chain_diagnostics_cost.py`` on the quickstart, cut small (two batches an epoch, the
    callback's 64 chains with 4 draws each): one JSON line whose share at the default schedule follows
    from its own timings."""
    out = run_json(
        *("benchmarks/chain_diagnostics_cost.py", "--epochs", "2", "--evaluations", "1"),
        *("--batches", "2", "--n-draws", "4"),
    )
    assert out["benchmark"] == "chain_diagnostics_cost" and len(out["evaluation_seconds"]) == 1
    assert out["settings"]["n_draws"] == 4 and out["settings"]["n_chains"] == ChainDiagnostics().n_chains
    assert out["settings"]["prior_steps_per_draw"] == 60 and out["settings"]["posterior_steps_per_draw"] == 20
    assert out["default_every_n_epochs"] == ChainDiagnostics().every_n_epochs and out["max_epochs"] == 100
    runs = out["evaluations_per_run"]
    expected = runs * out["sec_per_evaluation"] / (out["max_epochs"] * out["sec_per_epoch_training"])
    assert out["cost_share_at_default_schedule"] == pytest.approx(expected, rel=0.01, abs=1e-4)


def test_the_benchmark_counts_the_evaluations_of_a_run() -> None:
    evaluations_per_run = load_script("benchmarks/chain_diagnostics_cost.py").evaluations_per_run

    assert evaluations_per_run(100, 100) == 1  # epoch 100 is also the end of training: once
    assert evaluations_per_run(100, 30) == 4  # epochs 30, 60, 90 and the end
    assert evaluations_per_run(100, None) == 1
    assert evaluations_per_run(100, None, at_train_end=False) == 0
