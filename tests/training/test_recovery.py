"""Recovery from a divergence (``lebm.callbacks.DivergenceRecovery``, ``recipes/_recovery.yaml``). Device: CPU.

- A chain that blows up at a known step recovers: the state rolls back to the last snapshot
  (parameters, optimiser moments, random streams, bit for bit), the step size and the learning rates
  are halved, and the run finishes with finite parameters and the event recorded.
- A divergence that recovery cannot fix stops after ``max_recoveries`` with the guard's message.
- A run resumed from a checkpoint written after a recovery, or before it, ends bitwise where the
  uninterrupted run ends; the lowered step size survives ``load_from_checkpoint``.
- An adaptive sampler (MALA with dual averaging) is lowered with its adapted step sizes, and a run
  resumed from before its recovery ends with the same parameters and buffers (adaptation included).
- Through the CLI, the fragment turns the quickstart with an exploding prior chain into a finished run.
- Under 2-process DDP, a divergence on one rank makes both ranks roll back together (slow).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lebm.callbacks import DivergenceRecovery
from lebm.models import LatentEBM, TiltedGaussianPrior, TrainingDiverged
from lebm.nets import EnergyMLP
from lebm.samplers import MALA, ChainTarget, Langevin
from lebm.training.guard import way_back as way_back_after
from lebm.training.recovery import CHECKPOINT_KEY, RecoveryPolicy, find_samplers
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.ddp import forked_ranks
from tests.helpers.trainers import quiet_trainer
from tests.models.cases import LATENT, PoisonAt, toy_decoder, toy_loader
from tests.models.cases import dual_mcmc as recorded_dual_mcmc
from tests.models.cases import latent_ebm as recorded_latent_ebm
from tests.models.cases import multistage_nce as recorded_multistage_nce

BATCHES = 4  # training batches an epoch (toy_loader)


class Tripwire(Langevin):
    """Langevin whose chains overflow (every state becomes inf) while ``armed`` and ``step_size > limit``:
    a step size that is too large from a known step on."""

    def __init__(self, n_steps: int = 5, step_size: float = 0.4, limit: float = 0.3) -> None:
        super().__init__(n_steps, step_size)
        self.limit = limit
        self.armed = False

    def run(self, target: ChainTarget, z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        z = super().run(target, z, generator=generator)
        return z * float("inf") if self.armed and self.step_size > self.limit else z


class ArmAt(L.Callback):
    """Arms the prior's tripwire from global batch ``batch`` on (on ``rank`` only, if given)."""

    def __init__(self, batch: int, rank: int | None = None) -> None:
        self.batch, self.rank = batch, rank

    def on_train_batch_start(self, trainer: L.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        index = trainer.current_epoch * trainer.num_training_batches + batch_idx
        mine = self.rank is None or module.global_rank == self.rank
        module.prior.sampler.armed = mine and index >= self.batch


class States(L.Callback):
    """Keeps, after every batch, the parameters, the optimisers' per-parameter states and the streams."""

    def __init__(self) -> None:
        self.after: list[dict[str, Any]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: Any, *args: Any) -> None:
        self.after.append(
            {
                "params": [p.detach().clone() for p in module.parameters()],
                "moments": [
                    {k: v.clone() for k, v in state.items()} for o in trainer.optimizers for state in o.state.values()
                ],
                "train": module.random_streams.train.get_state(),
                "global": torch.get_rng_state(),
            }
        )


def model(limit: float = 0.3, lr_decay: float = 0.9) -> LatentEBM:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=Tripwire(5, 0.4, limit))
    return LatentEBM(
        toy_decoder(),
        prior,
        posterior_sampler=Langevin(5, 0.1),
        decoder_lr=1e-3,
        prior_lr=1e-3,
        lr_decay=lr_decay,
    )


def trainer(root: Path, *callbacks: L.Callback, epochs: int = 3, **kwargs: Any) -> L.Trainer:
    settings: dict[str, Any] = dict(
        max_epochs=epochs,
        default_root_dir=str(root),
        accelerator="cpu",
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )
    settings.update(kwargs)
    return quiet_trainer(**settings)


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------ the policy's parts
def test_the_samplers_a_recovery_lowers_are_those_training_uses() -> None:
    assert set(find_samplers(recorded_latent_ebm())) == {"posterior_sampler", "prior.sampler"}
    assert set(find_samplers(recorded_dual_mcmc())) == {"posterior_sampler", "data_sampler"}  # not test_data_sampler
    assert set(find_samplers(recorded_multistage_nce())) == {"posterior_sampler", "prior.sampler"}  # not its inner
    with pytest.raises(ValueError, match=r"'prior\.chain'.*the model's samplers are: posterior_sampler, prior"):
        RecoveryPolicy(samplers=["prior.chain"]).chosen_samplers(model())
    with pytest.raises(ValueError, match="step_size_factor must be in"):
        DivergenceRecovery(step_size_factor=2.0)


# -------------------------------------------------------------------------------- a recovery
def test_a_forced_divergence_rolls_back_lowers_the_step_size_and_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    net = model()
    states = States()
    recovery = DivergenceRecovery(max_recoveries=3, snapshot_every_n_steps=2)
    t = trainer(tmp_path, ArmAt(batch=7), recovery, states, log_every_n_steps=1)
    t.fit(net, toy_loader(n_batches=BATCHES))

    assert t.state.finished and t.current_epoch == 3 and len(states.after) == 3 * BATCHES
    record = net.recovery_record
    assert record.count == 1 and net.divergence_recovery is None  # detached after the fit
    event = record.events[0]
    # batch 7 (epoch 1, batch 3) tripped; snapshots at the start and every 2 good steps: after batches 1, 3 and 5
    assert (event["epoch"], event["step"]) == (1, 3) and event["rolled_back_to"] == 6  # one step a batch
    assert "train/prior_chain_states = non-finite entries" in event["cause"]
    assert event["step_sizes"] == {"prior.sampler": 0.2, "posterior_sampler": 0.05}
    assert net.prior.sampler.step_size == 0.2 and net.posterior_sampler.step_size == 0.05
    assert event["learning_rates"] == [[pytest.approx(1e-3 * 0.9 * 0.5)]] * 2  # epoch 1's rate, halved
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert float(t.callback_metrics["recovery/count"]) == 1.0

    # the state after the recovered batch is the snapshot's (after batch 5), bit for bit
    recovered, snapshot = states.after[7], states.after[5]
    assert same(recovered["params"], snapshot["params"])
    assert all(
        same(list(a.values()), list(b.values())) for a, b in zip(recovered["moments"], snapshot["moments"], strict=True)
    )
    assert torch.equal(recovered["train"], snapshot["train"]) and torch.equal(recovered["global"], snapshot["global"])
    assert not same(states.after[8]["params"], snapshot["params"])  # and training went on

    line = [text for text in capsys.readouterr().err.splitlines() if "Recovered" in text]
    assert line == [
        "Recovered from a divergence (1 of 3) at epoch 1, step 3 (global step 8): "
        f"{event['cause']}. Rolled back to global step 6; step sizes now: posterior_sampler 0.05, "
        "prior.sampler 0.2; learning rates now: 0.00045; 0.00045."
    ]


def test_a_divergence_recovery_cannot_fix_stops_after_max_recoveries_with_the_guards_message(tmp_path: Path) -> None:
    net = model()
    recovery = DivergenceRecovery(max_recoveries=2, snapshot_every_n_steps=1, step_size_factor=None, lr_factor=None)
    with pytest.raises(TrainingDiverged) as stopped:
        trainer(tmp_path, ArmAt(batch=2), recovery).fit(net, toy_loader(n_batches=BATCHES))
    assert net.recovery_record.count == 2 and [e["step"] for e in net.recovery_record.events] == [2, 3]
    assert net.prior.sampler.step_size == 0.4  # nothing was lowered
    way_back = way_back_after(False, f" {LatentEBM.divergence_hint}")  # a trainer without checkpoints
    assert str(stopped.value) == (
        f"training diverged at epoch 1, step 0: {stopped.value.cause}. {way_back} It diverged again "
        "after 2 recoveries from a divergence (max_recoveries: 2)."
    )

    without = model()  # the same run without recovery: today's message, at the first trip
    with pytest.raises(TrainingDiverged) as today:
        trainer(tmp_path, ArmAt(batch=2)).fit(without, toy_loader(n_batches=BATCHES))
    assert str(today.value).startswith("training diverged at epoch 0, step 2: ")
    assert str(today.value).endswith(way_back)


# ---------------------------------------------------------------------------------- resuming
@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # a resumed run writes elsewhere
def test_resume_after_or_before_a_recovery_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "3")

    def fit(root: Path, epochs: int, ckpt_path: Path | None = None) -> tuple[LatentEBM, L.Trainer]:
        torch.manual_seed(0)
        net = model()
        checkpoints = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        recovery = DivergenceRecovery(max_recoveries=3, snapshot_every_n_steps=2)
        t = trainer(root, ArmAt(batch=7), recovery, checkpoints, epochs=epochs, enable_checkpointing=True)
        t.fit(net, toy_loader(n_batches=BATCHES), ckpt_path=ckpt_path)
        return net, t

    straight, t = fit(tmp_path / "straight", 3)
    assert straight.recovery_record.count == 1  # at epoch 1, batch 3: rolled back to the snapshot after batch 5
    after = tmp_path / "straight" / "epoch=1.ckpt"  # written after the recovery
    before = tmp_path / "straight" / "epoch=0.ckpt"  # written before it
    assert torch.load(after, weights_only=True)[CHECKPOINT_KEY]["count"] == 1
    assert CHECKPOINT_KEY not in torch.load(before, weights_only=True)

    for start in (after, before):
        resumed, r = fit(tmp_path / f"from-{start.stem}", 3, ckpt_path=start)
        assert same(list(resumed.parameters()), list(straight.parameters())), start.name
        assert resumed.recovery_record == straight.recovery_record, start.name
        assert resumed.prior.sampler.step_size == straight.prior.sampler.step_size == 0.2
        for a, b in zip(r.optimizers, t.optimizers, strict=True):
            assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"]  # lowered and decayed alike

    loaded = LatentEBM.load_from_checkpoint(after)  # rebuilt from its hyperparameters, then lowered
    assert loaded.prior.sampler.step_size == 0.2 and loaded.posterior_sampler.step_size == 0.05
    t.validate(straight, toy_loader(n_batches=1), ckpt_path=str(after))  # the same model again: not lowered twice
    assert straight.prior.sampler.step_size == 0.2


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # a resumed run writes elsewhere
def test_an_adaptive_sampler_recovers_and_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "1")

    def fit(root: Path, ckpt_path: Path | None = None) -> LatentEBM:
        torch.manual_seed(0)
        prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=16), sampler=MALA(5, 0.4, adapt_steps=100))
        net = LatentEBM(toy_decoder(), prior, posterior_sampler=Langevin(5, 0.1), decoder_lr=1e-3, prior_lr=1e-3)
        checkpoints = ModelCheckpoint(dirpath=root, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
        recovery = DivergenceRecovery(snapshot_every_n_steps=3)
        t = trainer(root, PoisonAt(epoch=1), recovery, checkpoints, epochs=2, enable_checkpointing=True)
        t.fit(net, toy_loader(n_batches=BATCHES), ckpt_path=ckpt_path)
        return net

    straight = fit(tmp_path / "straight")
    assert straight.recovery_record.count == 1 and straight.prior.sampler.step_size == 0.2
    resumed = fit(tmp_path / "resumed", ckpt_path=tmp_path / "straight" / "epoch=0.ckpt")
    assert resumed.recovery_record == straight.recovery_record and resumed.prior.sampler.step_size == 0.2
    assert same(list(resumed.parameters()), list(straight.parameters()))
    assert same(list(resumed.buffers()), list(straight.buffers()))  # the adaptation's state too


# ---------------------------------------------------------------------------- the recipe line
def test_the_fragment_turns_an_exploding_prior_chain_into_a_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The quickstart with the prior chain's step size at 3 (the Gaussian reference alone makes each
    step multiply the state by 1 - 3^2/2 = -3.5): the chain overflows at the first step; halved to 1.5
    it is stable, and the run finishes with no manual step."""
    run = tmp_path / "run"
    run_cli(
        "fit",
        "-c",
        "recipes/quickstart.yaml",
        "-c",
        "recipes/_recovery.yaml",
        *SHORT_RUN,
        "--trainer.logger",
        "false",
        "--trainer.max_epochs",
        "2",
        "--trainer.default_root_dir",
        str(run),
        "--model.init_args.prior.init_args.sampler.init_args.step_size",
        "3.0",
    )
    err = capsys.readouterr().err
    assert "Recovered from a divergence (1 of 3) at epoch 0, step 0" in err and "prior.sampler 1.5" in err
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last[CHECKPOINT_KEY]["count"] == 1
    assert last[CHECKPOINT_KEY]["events"][0]["step_sizes"]["prior.sampler"] == 1.5
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())


# ------------------------------------------------------------------------------------- DDP
class CheckRanksAgree(L.Callback):
    """Runs on both ranks: one recovery each, and the same parameters everywhere."""

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        assert module.recovery_record.count == 1, f"rank {module.global_rank} made {module.recovery_record.count}"
        assert module.prior.sampler.step_size == 0.2
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        gathered = module.all_gather(flat)
        assert torch.equal(gathered[0], gathered[1]), "parameters differ across ranks"
        assert torch.isfinite(flat).all()


@pytest.mark.slow
def test_a_divergence_on_one_rank_makes_both_ranks_roll_back_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "5")
    net = model()
    recovery = DivergenceRecovery(max_recoveries=1, snapshot_every_n_steps=2)
    t = trainer(
        tmp_path,
        ArmAt(batch=3, rank=1),
        recovery,
        CheckRanksAgree(),
        epochs=2,
        strategy=forked_ranks(),
        devices=2,
    )
    t.fit(net, toy_loader(n_batches=2 * BATCHES, batch_size=8))
    assert all(torch.isfinite(p).all() for p in net.parameters())  # rank 0's weights come back here
