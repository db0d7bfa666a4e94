"""Trainer flags that every method honours or refuses before training, in Python (the ``lebm``
command calls the same ``Method.check_trainer``: ``tests/cli/test_lightning_flags.py``):
``precision`` 16-true/bf16-true refused and 64-true trained, ``check_val_every_n_epoch`` below 1
refused, and a ``gradient_clip_val`` that a net's own ``*_grad_clip`` overrides named in one
warning. Each method is its small 2-D model of ``cases.py``. Device: CPU."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from cases import CASES, MethodCase, damc, latent_ebm, recorders, toy_loader

from lebm.devices import check_device_settings
from lebm.models import Method
from tests.helpers.trainers import quiet_trainer

#: Tiny nets: one intra-op thread is several times faster than two on a busy 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

IDS = [case.name for case in CASES]

#: ``(Trainer setting, what the one line names)`` of the flags refused before training.
REFUSED = {
    "16-true": ({"precision": "16-true"}, r"^trainer\.precision=16-true .*use 16-mixed .*32-true or 64-true$"),
    "bf16-true": ({"precision": "bf16-true"}, r"^trainer\.precision=bf16-true .*use bf16-mixed .*32-true or 64-true$"),
    "no-interval": (
        {"check_val_every_n_epoch": 0},
        r"^trainer\.check_val_every_n_epoch=0 is no interval: .*>= 1.*limit_val_batches 0$",
    ),
    "negative-interval": ({"check_val_every_n_epoch": -1}, r"^trainer\.check_val_every_n_epoch=-1 is no interval"),
}


def weights(model: Method) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in model.parameters()]


@pytest.mark.parametrize("flag", list(REFUSED), ids=list(REFUSED))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flags_no_method_can_honour_are_refused_before_training(case: MethodCase, flag: str) -> None:
    """``Trainer.fit`` stops with one line naming the flag and what to give instead, before any
    training: every weight as it was, float32, and no step taken."""
    settings, message = REFUSED[flag]
    torch.manual_seed(0)
    model = case.build()
    before = weights(model)
    trainer = quiet_trainer(max_steps=1, inference_mode=False, **settings)
    with pytest.raises(ValueError, match=message) as refused:
        trainer.fit(model, train_dataloaders=toy_loader(1), val_dataloaders=toy_loader(1))
    assert "\n" not in str(refused.value)
    assert trainer.global_step == 0
    assert all(p.dtype == torch.float32 and torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("stage", ["validate", "predict"])
def test_16_bit_weights_are_refused_outside_fit_too(stage: str) -> None:
    """Evaluation and prediction run chains too: ``trainer.validate``/``predict`` under bf16-true
    stop with the same line, the weights left float32."""
    model = latent_ebm()
    trainer = quiet_trainer(precision="bf16-true", inference_mode=False)
    with pytest.raises(ValueError, match=r"^trainer\.precision=bf16-true .*use bf16-mixed"):
        getattr(trainer, stage)(model, toy_loader(1))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_true_on_a_slow_cpu_is_refused_without_a_slowness_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's device check warns that bf16-mixed runs slowly on a CPU without bfloat16
    instructions; bf16-true does not run at all, so that check says nothing and the refusal is the
    run's one line."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_device_settings("cpu", 1, "bf16-true")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_64_true_trains_a_step_of_every_method(case: MethodCase) -> None:
    """``precision="64-true"``: one training iteration of every method in float64 (the nets' weights
    float64 after it, every weight finite, the update taken; every chain ran in float64)."""
    torch.manual_seed(0)
    model = case.build()
    before = [p.double() for p in weights(model)]
    trainer = quiet_trainer(precision="64-true", max_steps=1, limit_val_batches=0, inference_mode=False)
    trainer.fit(model, train_dataloaders=toy_loader(1))
    after = list(model.parameters())
    assert trainer.global_step == 1
    assert all(p.dtype == torch.float64 and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(p.detach(), q) for p, q in zip(after, before, strict=True)), "no weight was updated"
    chains = {name: end.dtype for name, chain in recorders(model).items() for _, end in chain.calls}
    assert chains and set(chains.values()) == {torch.float64}, chains


class OutsideTheSteps(L.Callback):
    """Does at the end of a training epoch what the picture and metric callbacks do there, outside
    Lightning's steps: ``generate`` and ``infer``; records the dtypes they returned."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self.dtypes: dict[str, torch.dtype] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Method) -> None:
        self.dtypes["generate"] = pl_module.generate(4).dtype
        self.dtypes["infer"] = pl_module.infer(self.x.to(pl_module.device)).dtype


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_64_true_keeps_float64_outside_the_steps_and_gives_the_default_back(case: MethodCase) -> None:
    """``precision="64-true"``: an epoch-end callback's ``generate`` and ``infer`` run in float64 as
    the steps do (they made float32 starts before, against float64 nets), and torch's default dtype
    is float32 again after the run."""
    torch.manual_seed(0)
    model = case.build()
    loader = toy_loader(1)
    outside = OutsideTheSteps(next(iter(loader))[0])
    trainer = quiet_trainer(precision="64-true", max_epochs=1, limit_val_batches=0, callbacks=[outside])
    trainer.fit(model, train_dataloaders=loader)
    assert outside.dtypes == {"generate": torch.float64, "infer": torch.float64}
    assert torch.get_default_dtype() == torch.float32


def test_a_64_true_fit_that_validates_gives_the_default_dtype_back() -> None:
    """CPU. A ``64-true`` fit that validates (each epoch and at its end) leaves torch's default dtype
    float32: the validation's start inside the fit must not take float64 as the default to restore."""
    torch.manual_seed(0)
    trainer = quiet_trainer(precision="64-true", max_epochs=2, num_sanity_val_steps=1, inference_mode=False)
    trainer.fit(latent_ebm(), train_dataloaders=toy_loader(1), val_dataloaders=toy_loader(1))
    assert trainer.global_step == 2 and "val/nll" in trainer.callback_metrics
    assert torch.get_default_dtype() == torch.float32
    trainer.validate(trainer.lightning_module, dataloaders=toy_loader(1))  # a validation of its own too
    assert torch.get_default_dtype() == torch.float32


def set_own_clips(model: Method, value: float) -> list[str]:
    """Turn on every ``<net>_grad_clip`` option of ``model`` (the method's own per-net max-norms)."""
    options = [name for name in model.hparams if name.endswith("_grad_clip")]
    for name in options:
        model.hparams[name] = value
    return options


def clip_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(warning.message) for warning in record if "gradient_clip_val" in str(warning.message)]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_trainer_clip_that_a_nets_own_clip_overrides_is_named(case: MethodCase) -> None:
    """With ``gradient_clip_val`` in the Trainer and a method's own per-net clips on, the check a
    run starts with warns once, naming each overridden option and its value; a method without
    per-net options (DualMCMC), or a Trainer that does not clip, says nothing."""
    model = case.build()
    options = set_own_clips(model, 7.0)
    for settings, expected in (({}, []), ({"gradient_clip_val": 0.5}, options)):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            model.check_trainer(quiet_trainer(max_steps=1, **settings), "fit")
        said = clip_warnings(record)
        assert len(said) == (1 if expected else 0), said
        for option in expected:
            assert f"model.init_args.{option}=7" in said[0]
        if expected:
            assert said[0].startswith("trainer.gradient_clip_val=0.5 does not clip") and "\n" not in said[0]


def test_the_clip_warning_comes_before_a_refusal() -> None:
    """A run refused at build for another flag (16-bit weights) still names the overridden clips
    first: the user fixes both at once (the ``lebm`` command's build shows the warning, then the error)."""
    model = damc(decoder_grad_clip=100.0, prior_grad_clip=100.0, amortizer_grad_clip=100.0)
    trainer = quiet_trainer(precision="bf16-true", gradient_clip_val=1.0)
    with warnings.catch_warnings(record=True) as record, pytest.raises(ValueError, match="use bf16-mixed"):
        warnings.simplefilter("always")
        model.check_trainer(trainer, "fit")
    said = clip_warnings(record)
    assert len(said) == 1 and said[0].startswith("trainer.gradient_clip_val=1 does not clip DAMC's decoder, prior and")


def test_the_clip_warning_is_said_once_per_model_at_the_users_fit() -> None:
    """``trainer.fit`` checks the Trainer as it starts (the ``lebm`` command also checks it when it
    builds the run, before its fit): one warning, pointing at the user's ``fit`` line (this file),
    and none from a second ``fit`` of the same model."""
    torch.manual_seed(0)
    model = latent_ebm()
    model.hparams.decoder_grad_clip = 5.0
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            trainer = quiet_trainer(max_steps=1, limit_val_batches=0, inference_mode=False, gradient_clip_val=0.5)
            trainer.fit(model, train_dataloaders=toy_loader(1))
    said = [warning for warning in record if "gradient_clip_val" in str(warning.message)]
    assert len(said) == 1, [str(warning.message) for warning in said]
    message = str(said[0].message)
    assert message.startswith("trainer.gradient_clip_val=0.5 does not clip LatentEBM's decoder:"), message
    assert "model.init_args.decoder_grad_clip=5" in message and "prior" not in message
    assert said[0].filename == __file__
