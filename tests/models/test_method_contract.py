"""The method contract: every method (``cases.CASES``) passes the same tests.

User-API shapes, checkpoint round trips (``load_from_checkpoint`` and ``lebm test --ckpt_path``),
validation under inference mode, bf16-mixed training, exact resume through the CLI (4 epochs
equal 2 + 2, bitwise) and the 2-rank DDP invariants: chains draw different starts and noise on
each rank, parameters stay identical, rank-local buffers stay rank-local, and rank 0 draws what a
single process draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from cases import CASES, DATA, MethodCase, recorders, toy_loader

import lebm
from lebm.distributed import rank_local_buffer_names
from lebm.models import Method
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.trainers import quiet_trainer

ids = [case.name for case in CASES]


def trainer(tmp_path: Path, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=1,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
        inference_mode=False,
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return quiet_trainer(**defaults)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_user_api_shapes(case: MethodCase, tmp_path: Path) -> None:
    model = case.build()
    trainer(tmp_path).fit(model, toy_loader())
    x = torch.randn(6, DATA)
    assert model.generate(5).shape == (5, DATA)
    assert model.infer(x).shape == (6, case.latent_dim)
    assert model.reconstruct(x).shape == (6, DATA)
    assert model.score(x).shape == (6,)
    assert {"score", "nll"} <= set(model.evaluation_outputs)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_checkpoint_round_trip_with_load_from_checkpoint(case: MethodCase, tmp_path: Path) -> None:
    model = case.build()
    t = trainer(tmp_path, max_epochs=2)
    t.fit(model, toy_loader())
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    loaded = type(model).load_from_checkpoint(path, weights_only=True)  # plain data only
    assert type(lebm.load(path)) is type(model)  # whichever method wrote it
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(6, DATA)
    outputs = []
    for m in (model, loaded):
        torch.manual_seed(3)
        outputs.append((m.generate(5), m.infer(x), m.score(x)))
    for a, b in zip(*outputs, strict=False):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_validation_runs_under_inference_mode(case: MethodCase, tmp_path: Path) -> None:
    model = case.build()
    (metrics,) = trainer(tmp_path, inference_mode=True).validate(model, toy_loader())
    assert torch.isfinite(torch.tensor(metrics["val/nll"]))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_bf16_mixed_precision_trains(case: MethodCase, tmp_path: Path) -> None:
    model = case.build()
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(tmp_path, precision="bf16-mixed", max_epochs=2)
    t.fit(model, toy_loader())
    assert t.global_step > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=False))
    for name, recorder in recorders(model).items():
        start, end = recorder.calls[-1]
        assert end.dtype == torch.float32 and torch.isfinite(end).all(), name


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_exact_resume_through_the_cli(case: MethodCase, tmp_path: Path) -> None:
    """4 epochs equal 2 epochs then ``--ckpt_path last`` to 4, parameter for parameter (bitwise):
    chain streams, torch's global RNG (random flips draw from it) and the data order are restored,
    and validation (every epoch here) draws from its own stream."""
    common = [
        "-c",
        case.recipe,
        *SHORT_RUN,
        "--trainer.logger",
        "false",
        "--data.init_args.random_flip",
        "true",
        *case.cli_args,
    ]
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "straight"), "--trainer.max_epochs", "4")
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--trainer.max_epochs", "2")
    run_cli(
        "fit",
        *common,
        "--trainer.default_root_dir",
        str(tmp_path / "resumed"),
        "--trainer.max_epochs",
        "4",
        "--ckpt_path",
        "last",
    )
    straight = torch.load(tmp_path / "straight/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    resumed = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert straight["global_step"] == resumed["global_step"] > 0
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key

    tested = tmp_path / "tested"
    run_cli(
        "test",
        *common,
        "--trainer.default_root_dir",
        str(tested),
        "--ckpt_path",
        str(tmp_path / "resumed/checkpoints/last.ckpt"),
    )


# ------------------------------------------------------------------------------ two ranks
class CheckRankInvariants(L.Callback):
    """Runs on both ranks of a 2-process run; an assertion error fails the run."""

    def __init__(self, single_process_start: torch.Tensor, chain: str) -> None:
        self.single_process_start, self.chain = single_process_start, chain

    def on_train_batch_end(self, trainer: L.Trainer, module: Method, outputs: Any, batch: Any, batch_idx: int) -> None:
        if module.global_rank == 0 and trainer.current_epoch == 0 and batch_idx == 0:
            start, _ = recorders(module)[self.chain].calls[0]  # the first chain run of the first step
            assert torch.equal(start, self.single_process_start), "rank 0 must draw what a single process draws"

    def on_train_end(self, trainer: L.Trainer, module: Method) -> None:
        for name, recorder in recorders(module).items():
            start, end = recorder.calls[-1]
            starts, ends = module.all_gather(start), module.all_gather(end)
            assert not torch.allclose(starts[0], starts[1]), f"{name} chains started from the same states on both ranks"
            assert not torch.allclose(ends[0], ends[1]), f"{name} chains drew the same noise on both ranks"
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        gathered = module.all_gather(flat)
        assert torch.equal(gathered[0], gathered[1]), "parameters differ across ranks"
        buffers = dict(module.named_buffers())
        for name in rank_local_buffer_names(module):
            rows = module.all_gather(buffers[name])
            assert not torch.allclose(rows[0], rows[1]), f"rank-local buffer {name} is the same on both ranks"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_two_rank_ddp_invariants(case: MethodCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # the run's seed, as seed_everything(7) sets it
    torch.manual_seed(0)  # the same initial weights: a chain may start from a net's output (an encoder's sample)
    single = case.build()
    trainer(tmp_path / "one", max_steps=1).fit(single, toy_loader(n_batches=8, batch_size=8))
    first_start = recorders(single)[case.data_free_chain].calls[0][0]

    torch.manual_seed(0)
    model = case.build()
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(
        tmp_path / "two",
        strategy="lebm_ddp_spawn",
        devices=2,
        max_epochs=2,
        callbacks=[CheckRankInvariants(first_start, case.data_free_chain)],
    )
    t.fit(model, toy_loader(n_batches=8, batch_size=8))
    trained = list(model.parameters())  # rank 0's weights come back to this process
    assert any(not torch.equal(a, b) for a, b in zip(before, trained, strict=True))
