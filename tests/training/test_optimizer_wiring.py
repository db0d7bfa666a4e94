"""The optimiser wiring every method shares: its settings found among the hyperparameters by name
and checked when they are saved (so no method can forget one), and one Adam per net with a
per-epoch ExponentialLR, read from those settings (``lebm.training.optimizers.adam_with_decay``). Device: CPU."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import Logger

from lebm.models import (
    DualMCMC,
    JointHierarchicalEBM,
    LatentEBM,
    Method,
    MultiStageNCE,
    ProductOfRatiosPrior,
    TiltedGaussianPrior,
)
from lebm.nets import EnergyMLP, MLPEncoder
from lebm.samplers import Langevin
from lebm.training.optimizers import adam_with_decay
from tests.helpers.page_parts import page_parts
from tests.models.cases import DATA, LATENT, toy_decoder, toy_loader


def latent_ebm(**kwargs: Any) -> Method:
    return LatentEBM(toy_decoder(), TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8)), **kwargs)


def multistage_nce(**kwargs: Any) -> Method:
    prior = ProductOfRatiosPrior(LATENT, EnergyMLP(LATENT, hidden=8), n_stages=2)
    return MultiStageNCE(toy_decoder(), prior, **kwargs)


def dual_mcmc(**kwargs: Any) -> Method:
    return DualMCMC(toy_decoder(), EnergyMLP(DATA, hidden=8), MLPEncoder([DATA], LATENT, hidden=8), **kwargs)


def hierarchical(**kwargs: Any) -> Method:
    prior = TiltedGaussianPrior(LATENT, EnergyMLP(LATENT, hidden=8))
    return JointHierarchicalEBM(toy_decoder(), prior, MLPEncoder([DATA], LATENT, hidden=8), **kwargs)


def docs_method(**kwargs: Any) -> Method:
    """The user's method of docs/extending.md, which checks nothing itself."""
    parts = page_parts()
    settings = {"decoder_lr": 1e-3, "prior_lr": 1e-3, **kwargs}
    prior = parts.GaussianMixturePrior(LATENT, components=2)
    return parts.MixturePriorModel(toy_decoder(), prior, posterior_sampler=Langevin(2, 0.1), **settings)


BUILDERS: dict[str, Callable[..., Method]] = {
    "LatentEBM": latent_ebm,
    "MultiStageNCE": multistage_nce,
    "DualMCMC": dual_mcmc,
    "JointHierarchicalEBM": hierarchical,
    "MixturePriorModel-docs": docs_method,
}


def arguments(build: Callable[..., Method], pattern: str) -> list[str]:
    """The ``__init__`` arguments of the method ``build`` makes whose names match ``pattern``."""
    signature = inspect.signature(type(build()).__init__)
    return [name for name in signature.parameters if re.fullmatch(pattern, name)]


RATES = [(method, name) for method, build in BUILDERS.items() for name in arguments(build, r".+_lr")]
SETTINGS = [
    (method, name)
    for method, build in BUILDERS.items()
    for name in arguments(build, r".+_lr|.+_weight_decay|.+_grad_clip|lr_decay")
]


def test_every_method_has_rates_to_check() -> None:
    assert {method for method, _ in RATES} == set(BUILDERS)
    assert ("DualMCMC", "encoder_lr") in RATES and ("MultiStageNCE", "ratio_lr") in RATES


@pytest.mark.parametrize(("method", "name"), RATES, ids=[f"{m}.{n}" for m, n in RATES])
@pytest.mark.parametrize("value", [None, float("nan")], ids=["missing", "nan"])
def test_a_missing_rate_is_refused_for_every_method(method: str, name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"^model\.init_args\.{name} must be a finite learning rate >= 0, got "):
        BUILDERS[method](**{name: value})


@pytest.mark.parametrize(("method", "name"), SETTINGS, ids=[f"{m}.{n}" for m, n in SETTINGS])
def test_a_negative_setting_is_refused_for_every_method(method: str, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^model\.init_args\.{name} "):
        BUILDERS[method](**{name: -1.0})


@pytest.mark.parametrize("method", [m for m in BUILDERS if arguments(BUILDERS[m], "betas")])
def test_bad_betas_are_refused(method: str) -> None:
    with pytest.raises(ValueError, match=r"model\.init_args\.betas must be two numbers in \[0, 1\)"):
        BUILDERS[method](betas=(0.5,))


def test_a_rate_far_above_the_papers_warns_at_the_users_line() -> None:
    with pytest.warns(UserWarning, match=r"model.init_args.prior_lr=5.0 is far above") as caught:
        latent_ebm(prior_lr=5.0)
    (warning,) = [w for w in caught if "far above" in str(w.message)]
    assert warning.filename == __file__  # the line that built the method


def test_adam_with_decay_reads_each_nets_settings_by_its_name() -> None:
    nets = {name: torch.nn.Linear(2, 2) for name in ("decoder", "ratio", "ratio_again")}
    settings = {"betas": [0.1, 0.8], "lr_decay": 0.5, "decoder_lr": 1e-3, "decoder_weight_decay": 0.0}
    settings.update(ratio_lr=2e-3, ratio_weight_decay=1e-4)
    optimizers, schedulers = adam_with_decay(
        settings,
        [
            ("decoder", nets["decoder"].parameters()),
            ("ratio", nets["ratio"].parameters()),
            ("ratio", nets["ratio_again"].parameters()),
        ],
    )
    assert [type(o) for o in optimizers] == [torch.optim.Adam] * 3
    assert [o.param_groups[0]["lr"] for o in optimizers] == [1e-3, 2e-3, 2e-3]
    assert [o.param_groups[0]["weight_decay"] for o in optimizers] == [0.0, 1e-4, 1e-4]
    assert all(o.param_groups[0]["betas"] == (0.1, 0.8) for o in optimizers)
    assert all(o.param_groups[0]["params"][0] is nets[n].weight for o, n in zip(optimizers, nets, strict=True))
    assert [s["scheduler"].optimizer for s in schedulers] == optimizers
    assert [s["name"] for s in schedulers] == ["lr-decoder", "lr-ratio-0", "lr-ratio-1"]  # LearningRateMonitor's
    for scheduler in schedulers:
        scheduler["scheduler"].step()
    assert [o.param_groups[0]["lr"] for o in optimizers] == [5e-4, 1e-3, 1e-3]  # lr * lr_decay per epoch


@pytest.mark.parametrize(
    ("build", "rates", "expected"),
    [
        (latent_ebm, {"decoder_lr": 1e-3, "prior_lr": 2e-3}, [1e-3, 2e-3]),
        (multistage_nce, {"decoder_lr": 1e-3, "ratio_lr": 2e-3}, [1e-3, 2e-3, 2e-3]),  # one per stage
        (dual_mcmc, {"energy_lr": 3e-3, "decoder_lr": 1e-3, "encoder_lr": 2e-3}, [1e-3, 2e-3, 3e-3]),
        (hierarchical, {"decoder_lr": 1e-3, "prior_lr": 2e-3}, [1e-3, 2e-3]),
    ],
    ids=["LatentEBM", "MultiStageNCE", "DualMCMC", "JointHierarchicalEBM"],
)
def test_each_method_gives_each_net_its_own_rate_in_step_order(
    build: Any, rates: dict[str, float], expected: list[float]
) -> None:
    optimizers, schedulers = build(**rates, lr_decay=0.9).configure_optimizers()
    assert [o.param_groups[0]["lr"] for o in optimizers] == expected
    assert [s["scheduler"].gamma for s in schedulers] == [0.9] * len(optimizers)


@pytest.mark.parametrize(
    ("build", "names"),
    [
        (latent_ebm, ["lr-decoder", "lr-prior"]),
        (multistage_nce, ["lr-decoder", "lr-ratio-0", "lr-ratio-1"]),
        (dual_mcmc, ["lr-decoder", "lr-encoder", "lr-energy"]),
    ],
    ids=["LatentEBM", "MultiStageNCE", "DualMCMC"],
)
def test_the_learning_rate_monitor_names_each_net(build: Any, names: list[str]) -> None:
    """``LearningRateMonitor`` logs ``lr-decoder``, ``lr-prior``, ... not ``lr-Adam``, ``lr-Adam-1``."""
    logged: list[str] = []

    class Names(Logger):
        name, version = "names", 0

        def log_metrics(self, metrics: dict, step: int | None = None) -> None:
            logged.extend(metrics)

        def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
            pass

    trainer = L.Trainer(
        max_steps=4,  # Multi-stage NCE: two stages of two iterations
        logger=Names(),
        callbacks=[LearningRateMonitor()],
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(build(), toy_loader())
    assert sorted(name for name in set(logged) if name.startswith("lr-")) == sorted(names)
