"""A part of the wrong kind is named (device: CPU; the lebm command in this process, stopped before
anything is built or written): the key, the class given and its kind, and the kind the slot takes
with lebm's classes of that kind, for every pluggable slot (sampler, energy net, decoder, prior,
generator net, encoder, method, data), whether the parser refuses the class (not a subclass of the
slot's type) or accepts it (two ``nn.Module`` kinds); and the table of kinds stays complete and
refuses none of the recipes' own parts."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule
from torch import nn

import lebm.data
import lebm.models
import lebm.nets
import lebm.samplers
from lebm.cli.catalog import catalog
from lebm.cli.kinds import KINDS, check_kinds, load_class, slot_kind
from lebm.cli.recipes import compose_recipe
from tests.helpers.cli_runner import REPO, run_cli

QUICKSTART = REPO / "recipes" / "quickstart.yaml"

CASES = {
    # slot: (command-line arguments, key, class given, what it is, what the slot takes, one class listed)
    "sampler": (
        ["--model.init_args.prior.init_args.sampler.class_path", "lebm.nets.EnergyMLP"],
        "model.init_args.prior.init_args.sampler",
        "lebm.nets.EnergyMLP, an energy net",
        "takes a sampler",
        "lebm.samplers.Langevin",
    ),
    "sampler (short form)": (
        ["--model.init_args.posterior_sampler", "lebm.nets.EnergyMLP"],
        "model.init_args.posterior_sampler",
        "lebm.nets.EnergyMLP, an energy net",
        "takes a sampler",
        "lebm.samplers.HMC",
    ),
    "energy": (
        ["--model.init_args.prior.init_args.energy_net.class_path", "lebm.samplers.Langevin"],
        "model.init_args.prior.init_args.energy_net",
        "lebm.samplers.Langevin, a sampler",
        "takes an energy net",
        "lebm.nets.EnergyMLP",
    ),
    "energy (a module of another kind)": (
        ["--model.init_args.prior.init_args.energy_net.class_path", "lebm.nets.GaussianDecoder"],
        "model.init_args.prior.init_args.energy_net",
        "lebm.nets.GaussianDecoder, a decoder",
        "takes an energy net",
        "lebm.nets.SNResNetEnergy",
    ),
    "decoder": (
        ["--model.init_args.decoder.class_path", "lebm.nets.EnergyMLP"],
        "model.init_args.decoder",
        "lebm.nets.EnergyMLP, an energy net",
        "takes a decoder",
        "lebm.nets.GaussianDecoder",
    ),
    "prior": (
        ["--model.init_args.prior", "lebm.samplers.Langevin"],
        "model.init_args.prior",
        "lebm.samplers.Langevin, a sampler",
        "takes a prior",
        "lebm.models.TiltedGaussianPrior",
    ),
    "net": (
        ["--model.init_args.decoder.init_args.net.class_path", "lebm.nets.MLPEncoder"],
        "model.init_args.decoder.init_args.net",
        "lebm.nets.MLPEncoder, an encoder",
        "takes a generator net",
        "lebm.nets.MLPGenerator",
    ),
    "net (accepted by the parser)": (
        [
            "--model.init_args.decoder.init_args.net.class_path", "lebm.nets.EnergyMLP",
            "--model.init_args.decoder.init_args.net.init_args.in_dim", "16",
        ],
        "model.init_args.decoder.init_args.net",
        "lebm.nets.EnergyMLP, an energy net",
        "takes a generator net",
        "lebm.nets.DCGANGenerator",
    ),
    "model": (
        ["--model", "lebm.nets.EnergyMLP"],
        "model",
        "lebm.nets.EnergyMLP, an energy net",
        "takes a method",
        "lebm.models.LatentEBM",
    ),
    "data": (
        ["--data", "lebm.models.LatentEBM"],
        "data",
        "lebm.models.LatentEBM, a method",
        "takes a data module",
        "lebm.data.ImageDataModule",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_a_part_of_the_wrong_kind_is_named_with_the_kind_its_slot_takes(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. One ``lebm: error:`` line (exit code 2) with the key, the class and its kind, the
    kind the slot takes and lebm's classes of that kind; nothing written into the run folder."""
    args, key, given, takes, listed = CASES[case]
    run = tmp_path / "run"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli("fit", "-c", "recipes/quickstart.yaml", *args, "--trainer.default_root_dir", str(run))
    message = capsys.readouterr().err
    assert stopped.value.code == 2, message
    first = message.splitlines()[0]
    assert first.startswith(f"lebm: error: {key} {takes}, got {given}: use "), message
    assert listed in first and "Does not validate" not in message and "Traceback" not in message
    assert not run.exists()


def test_a_recipe_file_with_a_part_of_the_wrong_kind_is_named_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. The class path written in a recipe (the parser's message then echoes a dict),
    and a narrower slot type (MultiStageNCE's prior is a ProductOfRatiosPrior): its own kind named."""
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        "model:\n  init_args:\n    prior:\n      init_args:\n        sampler:\n"
        "          class_path: lebm.nets.EnergyMLP\n          init_args: {in_dim: 16}\n"
    )
    for recipe, extra, expected in (
        ("recipes/quickstart.yaml", ["-c", str(wrong)], "sampler takes a sampler, got lebm.nets.EnergyMLP"),
        (
            "recipes/multistage_nce/quickstart.yaml",
            ["--model.init_args.prior", "lebm.models.TiltedGaussianPrior"],
            "model.init_args.prior takes a prior of type ProductOfRatiosPrior, got lebm.models.TiltedGaussianPrior, "
            "a prior: use lebm.models.ProductOfRatiosPrior",
        ),
    ):
        capsys.readouterr()
        with pytest.raises(SystemExit):
            run_cli("fit", "-c", recipe, *extra, "--trainer.default_root_dir", str(tmp_path / "run"))
        assert expected in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "what"),
    [("lebm.models.LatentEBM", "a method"), ("lebm.samplers.Langevin", "a sampler")],
)
def test_the_wrong_kind_check_covers_the_data_section(given: str, what: str) -> None:
    """Device: CPU. The check of a parsed config (``check_kinds``, which the CLI runs before anything
    is built) names a class of another kind under ``data`` too, not only under ``model``: the key,
    the class and its kind, and lebm's data modules."""
    config = compose_recipe(QUICKSTART)
    assert check_kinds(config) is None
    config["data"] = {"class_path": given, "init_args": {}}
    message = check_kinds(config)
    assert message is not None, "the data section was not checked"
    assert message.startswith(f"data takes a data module, got {given}, {what}: use "), message
    assert "lebm.data.ImageDataModule" in message


class ScaledEnergy(nn.Module):
    """A user's energy net that wraps another: its argument ``net`` (the name of lebm's decoders'
    generator-net slot) takes any ``nn.Module``, here an energy net."""

    def __init__(self, net: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(z)


def test_a_slot_of_a_users_class_is_judged_by_what_it_takes_not_its_name(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Device: CPU. A user's class whose argument is named like one of lebm's slots (``net``, a
    generator net in lebm's decoders) takes what its type says: an energy net there passes the
    check, and a part its type refuses (a sampler, not an ``nn.Module``) is named with the type the
    slot takes, not as a slot for a generator net. The same name on lebm's own class keeps its kind."""
    user = f"{ScaledEnergy.__module__}.ScaledEnergy"
    assert slot_kind("net", "lebm.nets.GaussianDecoder") is KINDS["generator net"]
    assert slot_kind("net", user) is None and slot_kind("net", user, "Module") is None

    config = compose_recipe(QUICKSTART)
    energy = {"class_path": "lebm.nets.EnergyMLP", "init_args": {"in_dim": 16}}
    config["model"]["init_args"]["prior"]["init_args"]["energy_net"] = {
        "class_path": user,
        "init_args": {"net": energy},
    }
    assert check_kinds(config) is None

    key = "model.init_args.prior.init_args.energy_net"
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        run_cli(
            "fit", "-c", "recipes/quickstart.yaml",
            f"--{key}.class_path", user,
            f"--{key}.init_args.net", "lebm.samplers.Langevin",
            "--trainer.default_root_dir", str(tmp_path / "run"),
        )  # fmt: skip
    message = capsys.readouterr().err
    assert stopped.value.code == 2, message
    first = message.splitlines()[0]
    assert first.startswith(f"lebm: error: {key}.init_args.net takes a Module, got lebm.samplers.Langevin"), message
    assert "generator net" not in message and "Traceback" not in message


def test_no_recipe_has_a_part_of_the_wrong_kind() -> None:
    """Device: CPU. Every runnable recipe, composed, passes the check: the table refuses none of
    the parts lebm's own recipes plug in."""
    root = [entry for entry in catalog() if not entry.fragment]
    assert len(root) > 10
    for entry in root:
        assert check_kinds(compose_recipe(entry.path)) is None, entry.name


def test_every_public_part_of_lebm_has_its_kind() -> None:
    """Device: CPU. Each public class of lebm.nets, lebm.samplers, lebm.models and lebm.data that can
    fill a slot is listed under one kind (or is a base that parts subclass), and every listed class
    exists and subclasses its kind's base."""
    bases = {"Decoder", "InferenceNetwork", "Sampler", "MetropolisSampler", "Method", "Prior"}
    bases |= {"LatentVariableModel", "LatentGeneratorModel", "DualAveraging"}  # DualAveraging: a sampler's state
    listed = {member for kind in KINDS.values() for member in kind.members}
    for module in (lebm.nets, lebm.samplers, lebm.models, lebm.data):
        for name, value in vars(module).items():
            slot_type = (nn.Module, lebm.samplers.Sampler, LightningDataModule)
            if inspect.isclass(value) and issubclass(value, slot_type) and name not in bases:
                assert f"{module.__name__}.{name}" in listed, f"{module.__name__}.{name} has no kind"
    for kind in KINDS.values():
        base = load_class(kind.base) if kind.base else nn.Module
        for member in kind.members:
            cls = load_class(member)
            assert cls is not None and issubclass(cls, base), member


def test_the_amortizers_encoder_slot_takes_an_embedding_net_not_an_inference_network() -> None:
    """Device: CPU. A slot named ``encoder`` is an inference network's, except the amortizer's, which
    embeds observations for its condition: its kind is read from its owner too."""
    amortizer = {
        "class_path": "lebm.nets.LatentDiffusionAmortizer",
        "init_args": {"latent_dim": 8, "embed_dim": 16, "encoder": {"class_path": "lebm.nets.MLPEncoder"}},
    }
    message = check_kinds({"model": {"class_path": "lebm.models.DAMC", "init_args": {"amortizer": amortizer}}})
    assert message is not None and "takes an embedding net" in message and "lebm.nets.MLPEmbedding" in message
    amortizer["init_args"]["encoder"] = {"class_path": "lebm.nets.MLPEmbedding"}
    assert check_kinds({"model": {"class_path": "lebm.models.DAMC", "init_args": {"amortizer": amortizer}}}) is None
