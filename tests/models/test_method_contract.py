"""The method contract: every method (``cases.CASES``) passes the same tests.

User-API shapes, the input contract (the same one-line error for the same bad input from every
method's ``infer``, ``reconstruct``, ``score``, ``forward`` and ``predict_step``, the text model's
included; warnings for sentences that say little), checkpoint round trips (``load_from_checkpoint``
and ``lebm test --ckpt_path``), validation under inference mode, bf16-mixed training, exact resume
through the CLI (2 epochs equal 1 + 1, bitwise) and the 2-rank DDP invariants: chains draw
different starts and noise on each rank, parameters stay identical, rank-local buffers stay
rank-local, and rank 0 draws what a single process draws. Device: CPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from cases import CASES, DATA, LATENT, MethodCase, recorders, text_model, toy_loader

import lebm
from lebm.cli.resolve import resolve_recipe
from lebm.config import build
from lebm.data.errors import DataError
from lebm.distributed import rank_local_buffer_names
from lebm.models import JointHierarchicalEBM, LatentVariableModel, Method
from tests.helpers.cli_runner import SHORT_RUN, run_cli
from tests.helpers.ddp import assert_received_whole, forked_ranks
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


# ------------------------------------------------------------------------ the input contract
#: The calls of the user API on observations, by the name their messages start with; ``predict_step``
#: wraps the message in the ``DataError`` of its batch, ``forward`` gives it bare.
CALLS: dict[str, Callable[[Method, Any], Any]] = {
    "infer(x)": lambda model, x: model.infer(x),
    "reconstruct(x)": lambda model, x: model.reconstruct(x),
    "score(x)": lambda model, x: model.score(x),
    "forward": lambda model, x: model(x),
    "predict_step": lambda model, x: model.predict_step(x, 0),
}
PREFIXES = {"forward": "", "predict_step": "lebm predict: batch 0 cannot be read: "}

#: ``{mistake: (input, error, what the message says)}`` for the methods on arrays (2-D toy data).
ARRAY_MISTAKES: dict[str, tuple[Any, type[Exception], str]] = {
    "another shape": (
        torch.zeros(3, DATA + 1),
        ValueError,
        f"the model reads observations of shape (B, {DATA}) (what its generator makes), got (3, {DATA + 1}): resize",
    ),
    "one example without its batch dimension": (torch.zeros(DATA), ValueError, "pass x.unsqueeze(0)"),
    "no examples": (torch.zeros(0, DATA), ValueError, "observations hold no examples (got shape (0, 2))"),
    "text": ("1.0 0.5", TypeError, "this model reads arrays (images or vectors), not text"),
    "a loader's batch": ((torch.zeros(3, DATA), torch.zeros(3)), TypeError, "pass its observations x (batch[0])"),
    "NaN": (torch.tensor([[float("nan"), 0.0]]), ValueError, "observations hold NaN or infinite values"),
    "complex numbers": (torch.zeros(3, DATA, dtype=torch.complex64), ValueError, "must be real numbers"),
}
#: The same for the text model (token ids and sentences).
TEXT_MISTAKES: dict[str, tuple[Any, type[Exception], str]] = {
    "another shape": (torch.ones(2, 3, 4, dtype=torch.long), ValueError, "token ids are (B, T) for B sentences"),
    "one sentence of ids without its batch dimension": (torch.tensor([1, 4, 2]), ValueError, "x.unsqueeze(0)"),
    "no sentences": ([], ValueError, "no sentences given: pass at least one"),
    "no rows of ids": (torch.zeros(0, 3, dtype=torch.long), ValueError, "observations hold no examples"),
    "ids that are not whole numbers": (torch.tensor([[1.0, 4.0, 2.0]]), ValueError, "must be whole numbers (int64)"),
    "ids outside the vocabulary": (
        torch.tensor([[1, 99, 2]]),
        ValueError,
        "token ids must be in 0..9 (the vocabulary's 10 tokens), got ids in 1..99",
    ),
    "rows without <bos>": (torch.tensor([[4, 4, 2]]), ValueError, "row 0 does not start with <bos> (id 1)"),
    "token ids as lists": ([[1, 4, 2]], TypeError, "sentence 0 must be a string or a list of words"),
    "a number": (5, TypeError, "sentences must be a string, a list of strings or a list of word lists"),
}


def refusals(model: Method, given: Any, error: type[Exception], message: str) -> set[str]:
    """Each call of :data:`CALLS` on ``given`` raises ``error`` in one line that starts with the
    call's name and says ``message``; returns the messages without that prefix."""
    seen = set()
    for name, call in CALLS.items():
        if name == "predict_step" and isinstance(given, (tuple, list)) and given and not isinstance(given[0], str):
            continue  # a batch (x, y, ...): predict_step reads its first item
        expected = DataError if name == "predict_step" else error
        with pytest.raises(expected) as raised:
            call(model, given)
        text = str(raised.value)
        prefix = PREFIXES.get(name, f"{name}: ")
        assert text.startswith(prefix) and message in text and "\n" not in text, (name, text)
        seen.add(text.removeprefix(prefix))
    return seen


@pytest.mark.parametrize("mistake", ARRAY_MISTAKES)
def test_every_method_refuses_a_bad_input_with_the_same_line(mistake: str) -> None:
    """One input contract: each method's ``infer``, ``reconstruct``, ``score``, ``forward`` and
    ``predict_step`` refuse the same mistake with the same message (no torch error from a net)."""
    given, error, message = ARRAY_MISTAKES[mistake]
    seen = set()
    for case in CASES:
        seen |= refusals(case.build(), given, error, message)
    assert len(seen) == 1, seen


@pytest.mark.parametrize("mistake", TEXT_MISTAKES)
def test_the_text_model_refuses_a_bad_input_in_one_line(mistake: str) -> None:
    given, error, message = TEXT_MISTAKES[mistake]
    assert len(refusals(text_model(), given, error, message)) == 1


def test_every_method_reads_numbers_of_any_dtype_as_its_own() -> None:
    """float64 arrays (numpy's default), integer and boolean vectors become the model's float32,
    for every method alike (they reached some nets as float64 and failed in a Linear)."""
    for case in CASES:
        model = case.build()
        for given in (np.zeros((3, DATA)), torch.zeros(3, DATA, dtype=torch.float64), torch.ones(3, DATA).long()):
            assert model.infer(given).dtype == torch.float32, case.name
            assert model.score(given).dtype == torch.float32 and model.reconstruct(given).shape == (3, DATA)


def test_every_method_takes_whole_numbers_only() -> None:
    for case in [*CASES, MethodCase("text", text_model, "")]:
        model = case.build()
        for n in (0, 2.5, True, "3"):
            with pytest.raises(ValueError, match=r"generate\(n\) takes a whole number of samples n >= 1, got"):
                model.generate(n)
        assert len(model.generate(np.int64(2))) == 2
        if isinstance(model, LatentVariableModel):
            with pytest.raises(ValueError, match=r"score\(x, samples=\.\.\.\) takes a whole number >= 0, got 1.5"):
                model.score(torch.zeros(2, DATA) if case.name != "text" else ["the cat"], samples=1.5)
        if isinstance(model, JointHierarchicalEBM):
            with pytest.raises(ValueError, match=r"sample_layer\(n\) takes a whole number of samples n >= 1, got 2.5"):
                model.sample_layer(0, 2.5)


def test_the_methods_own_entry_points_go_through_the_same_contract() -> None:
    """DualMCMC's ``revise(x)`` (a user's images revised by the data chain) checks its input as
    ``score`` does; its ``generate`` revises the generator's own samples unchecked."""
    model = next(case for case in CASES if case.name == "DualMCMC").build()
    with pytest.raises(ValueError, match=r"^revise\(x\): the model reads observations of shape \(B, 2\)"):
        model.revise(torch.zeros(3, DATA + 1))
    with pytest.raises(ValueError, match=r"^revise\(x\): observations hold NaN"):
        model.revise(torch.full((3, DATA), float("nan")))
    assert model.revise(np.zeros((3, DATA))).dtype == torch.float32 and model.generate(3).shape == (3, DATA)
    with pytest.raises(TypeError, match="unexpected keyword argument 'samples'"):
        model.score(torch.zeros(2, DATA), samples=2)  # the energy reads no samples: not silently ignored


IMAGE_MISTAKES: dict[str, tuple[torch.Tensor, str]] = {
    "28x28 images": (
        torch.zeros(2, 1, 28, 28),
        "the model reads observations of shape (B, 1, 8, 8) (what its generator makes), got (2, 1, 28, 28)",
    ),
    "3-channel images": (
        torch.zeros(2, 3, 8, 8),
        "the model reads observations of shape (B, 1, 8, 8) (what its generator makes), got (2, 3, 8, 8)",
    ),
    "flattened images": (torch.zeros(2, 64), "pass x.reshape(-1, 1, 8, 8)"),
    "uint8 images": (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "for 0..255 images pass x.float() / 127.5 - 1"),
    "0..255 images": (torch.full((2, 1, 8, 8), 255.0), "images are expected in [-1, 1] (lebm's convention)"),
}


@pytest.mark.parametrize("case", [case for case in CASES if case.in_library], ids=lambda case: case.name)
def test_every_quickstart_model_refuses_images_of_another_shape_in_one_line(case: MethodCase) -> None:
    """The report: JointHierarchicalEBM's ``score`` on 28x28 or 3-channel images (built for 8x8
    digits) failed in a Linear or conv layer; every method now names both shapes, for every call."""
    torch.manual_seed(0)
    model = build(resolve_recipe(case.recipe)["model"])
    for mistake, (given, message) in IMAGE_MISTAKES.items():
        assert len(refusals(model, given, ValueError, message)) == 1, mistake
    assert model.score(torch.zeros(2, 1, 8, 8)).shape == (2,)


def test_a_string_is_one_sentence_and_sentences_that_say_little_warn() -> None:
    """``reconstruct("the cat sees")`` reads one sentence (it read 12 one-character sentences);
    empty sentences and sentences of unknown words warn, in every call; known words do not."""
    model = text_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rebuilt = model.reconstruct("the cat sees")
        assert isinstance(rebuilt, list) and len(rebuilt) == 1 and isinstance(rebuilt[0], str)
        assert model.infer("the cat sees").shape == (1, LATENT) and model.score("the cat sees").shape == (1,)
        assert model("the cat sees")["input_text"] == ["the cat sees"]
        assert model.predict_step(["the cat", "a dog"], 0)["input_text"] == ["the cat", "a dog"]  # not (x, y)
        assert model.score(["the cat", ["a", "dog"]]).shape == (2,)
    for given, message in (
        (["zebra lion", "the cat"], r"1 of 2 sentences are made of unknown words only \(rows 0\)"),
        (["the cat", ""], r"1 of 2 sentences are empty \(rows 1\)"),
        (["the zebra lion"], r"67% of the words are not in the vocabulary"),
    ):
        for name, call in CALLS.items():
            if name != "predict_step":
                with pytest.warns(UserWarning, match=message):
                    call(model, given)


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


#: The CLI resume of LatentEBM and DAMC stays in the default tier; the other methods' (each a 1 + 1
#: and a 2 epoch run of its quickstart and a test run, half the training of the earlier 2 + 2 and 4)
#: run in the slow tier, which CI runs too, so that the README's test command stays within its time.
RESUME_CASES = [
    case if case.name in ("LatentEBM", "DAMC") else pytest.param(case, marks=pytest.mark.slow) for case in CASES
]


@pytest.mark.parametrize("case", RESUME_CASES, ids=ids)
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_exact_resume_through_the_cli(case: MethodCase, tmp_path: Path) -> None:
    """2 epochs equal 1 epoch then ``--ckpt_path last`` to 2, parameter for parameter (bitwise):
    chain streams and the data order are restored (random flips are a function of the seed, the
    epoch and the item, not a draw from torch's global RNG), and validation (every epoch here:
    once before the stop) draws from its own stream. Three iterations on each side of the stop
    are enough for a stream that is not restored to show (and MultiStageNCE's 4-iteration stages
    change stage after the resume)."""
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
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "straight"), "--trainer.max_epochs", "2")
    run_cli("fit", *common, "--trainer.default_root_dir", str(tmp_path / "resumed"), "--trainer.max_epochs", "1")
    run_cli(
        "fit",
        *common,
        "--trainer.default_root_dir",
        str(tmp_path / "resumed"),
        "--trainer.max_epochs",
        "2",
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


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_a_spawned_rank_receives_the_method_whole(case: MethodCase) -> None:
    """``lebm_ddp_spawn`` (Lightning's spawn launcher) pickles the model for each rank. The DDP
    tests below fork their ranks (``tests/helpers/ddp.py``), which pickles nothing: this keeps what
    spawning them checked, for every method."""
    assert_received_whole(case.build())


def test_a_spawned_rank_receives_the_text_model_whole() -> None:
    """The same for the text model (an LSTM decoder holding its vocabulary)."""
    assert_received_whole(text_model())


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_two_rank_ddp_invariants(case: MethodCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2 epochs of 2 iterations on each rank (4 batches of 8 split over 2 ranks): the invariants hold
    across an epoch boundary."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # the run's seed, as seed_everything(7) sets it
    torch.manual_seed(0)  # the same initial weights: a chain may start from a net's output (an encoder's sample)
    single = case.build()
    trainer(tmp_path / "one", max_steps=1).fit(single, toy_loader(n_batches=4, batch_size=8))
    first_start = recorders(single)[case.data_free_chain].calls[0][0]

    torch.manual_seed(0)
    model = case.build()
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(
        tmp_path / "two",
        strategy=forked_ranks(),
        devices=2,
        max_epochs=2,
        callbacks=[CheckRankInvariants(first_start, case.data_free_chain)],
    )
    t.fit(model, toy_loader(n_batches=4, batch_size=8))
    trained = list(model.parameters())  # rank 0's weights come back to this process
    assert any(not torch.equal(a, b) for a, b in zip(before, trained, strict=True))
