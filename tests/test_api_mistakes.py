"""The Python API's mistakes, one row each (device: CPU): what a user hands ``generate``, ``infer``,
``reconstruct``, ``score`` and a sampler gets a message that names the problem and the fix, not a
torch error from inside a chain; inputs of other kinds that mean the same are accepted; results
that are not finite warn."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lebm
from lebm.cli.resolve import resolve_recipe
from lebm.config import build
from lebm.samplers import Langevin

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def toy() -> Any:
    """LatentEBM on 2-D data (lebm 0.1.0's fixture checkpoint)."""
    return lebm.load(str(REPO / "tests" / "fixtures" / "checkpoints" / "latent_ebm.ckpt"))


@pytest.fixture(scope="module")
def images() -> Any:
    """The quickstart's LatentEBM on 8x8 images in [-1, 1]."""
    torch.manual_seed(0)
    return build(resolve_recipe(REPO / "recipes" / "quickstart.yaml")["model"])


def square(z: torch.Tensor) -> torch.Tensor:
    return z.square().sum(1)


MISTAKES: dict[str, tuple[str, Callable[[Any, Any], Any], type[Exception], str]] = {
    "generate(-1)": ("toy", lambda m, _: m.generate(-1), ValueError, "takes a whole number of samples n >= 1, got -1"),
    "generate(2.5)": ("toy", lambda m, _: m.generate(2.5), ValueError, "n >= 1, got 2.5"),
    "a sampler by name": (
        "toy",
        lambda m, _: m.generate(3, sampler="langevin"),
        TypeError,
        "sampler must be a lebm.samplers.Sampler, e.g. lebm.samplers.Langevin(",
    ),
    "NaN observations": (
        "toy",
        lambda m, _: m.score(torch.tensor([[float("nan"), 0.0]])),
        ValueError,
        "observations hold NaN or infinite values",
    ),
    "uint8 images": (
        "images",
        lambda m, _: m.reconstruct(torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)),
        ValueError,
        "for 0..255 images pass x.float() / 127.5 - 1",
    ),
    "0..255 float images": (
        "images",
        lambda m, _: m.score(torch.rand(2, 1, 8, 8) * 255),
        ValueError,
        "images are expected in [-1, 1] (lebm's convention), got values in [",
    ),
    "a numpy start for a chain": (
        "toy",
        lambda m, _: Langevin(5, 0.1)(square, np.zeros((3, 2))),
        TypeError,
        "takes the chains' start z0 as a torch.Tensor (B, *shape), got ndarray",
    ),
    "an integer start for a chain": (
        "toy",
        lambda m, _: Langevin(5, 0.1)(square, torch.zeros(3, 2, dtype=torch.long)),
        TypeError,
        "must be floating point",
    ),
    "joint_energy with fewer latents than observations": (
        "images",
        lambda m, _: m.joint_energy(torch.zeros(4, 1, 8, 8), torch.zeros(3, 16)),
        ValueError,
        "joint_energy(x, z): z must have shape (4, 16) for 4 observations, got (3, 16): pass one latent per",
    ),
    "joint_energy with latents of another size": (
        "images",
        lambda m, _: m.joint_energy(torch.zeros(4, 1, 8, 8), torch.zeros(4, 15)),
        ValueError,
        "got (4, 15): pass latents of the model's prior, 16 numbers each",
    ),
    "joint_energy with NaN latents": (
        "images",
        lambda m, _: m.joint_energy(torch.zeros(2, 1, 8, 8), torch.full((2, 16), float("nan"))),
        ValueError,
        "z holds NaN or infinite values",
    ),
    "joint_energy with images of another size": (
        "images",
        lambda m, _: m.joint_energy(torch.zeros(2, 1, 9, 9), torch.zeros(2, 16)),
        ValueError,
        "joint_energy(x, z): the model reads observations of shape (B, 1, 8, 8)",
    ),
    "a text instead of an energy": (
        "toy",
        lambda m, _: Langevin(5, 0.1)("energy", torch.zeros(3, 2)),
        TypeError,
        "takes an energy function",
    ),
}


@pytest.mark.parametrize("case", MISTAKES)
def test_a_mistake_gets_a_message_with_the_fix(case: str, request: pytest.FixtureRequest) -> None:
    model_name, call, error, message = MISTAKES[case]
    model = request.getfixturevalue(model_name)
    with pytest.raises(error) as raised:
        call(model, None)
    assert message in str(raised.value)


def test_joint_energy_of_right_inputs_is_one_value_per_example(images: Any) -> None:
    x, z = torch.zeros(3, 1, 8, 8), torch.randn(3, 16)
    energy = images.joint_energy(x.numpy(), z.double())  # arrays and float64 latents are taken as the model's
    assert energy.shape == (3,) and energy.dtype == torch.float32 and bool(torch.isfinite(energy).all())


def test_generate_refuses_more_samples_than_memory_holds_before_drawing_any(
    images: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine of 1 MB: 1,000 samples of 8x8 float32 (256 KB) fit, but what their generation holds
    does not (the prior chain's 897 values a sample, the generator's widest layer's 256 and the
    sample's 64: 4.9 MB): refused in one line naming the size, its parts and the batches to draw;
    100 (487 KB) are drawn."""
    monkeypatch.setattr("lebm.training.inputs.device_memory_bytes", lambda device: 1_000_000)
    drawn = []
    monkeypatch.setattr(images.prior, "sample", lambda n, **kwargs: drawn.append(n) or torch.zeros(n, 16))
    with pytest.raises(
        ValueError,
        match=r"generate\(n=1000\): their generation holds about 4.9 MB \(1000 x 1217 float32 values: the prior's "
        r"chain \(its energy net's layers and latents\) 897, the widest layer of the generator, net.net.0 \(Linear\) "
        r"256, the sample 64\), more than half of the 1.0 MB of cpu memory: draw them in batches",
    ):
        images.generate(1_000)
    assert drawn == []  # refused before any chain ran
    assert images.generate(100).shape == (100, 1, 8, 8)


@pytest.mark.parametrize(
    "given",
    [np.zeros((3, 2), dtype=np.float32), np.zeros((3, 2)), [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]], torch.zeros(3, 2)],
    ids=["numpy float32", "numpy float64", "nested lists", "tensor"],
)
def test_arrays_and_lists_are_observations_too(toy: Any, given: Any) -> None:
    generator = torch.Generator().manual_seed(0)
    assert toy.infer(given, generator=generator).shape == (3, 3)
    assert toy.score(given).shape == (3,) and toy.reconstruct(given).shape == (3, 2)


@pytest.mark.parametrize(
    "energy,step_size",
    [(lambda z: z.sum(1) * float("nan"), 0.1), (lambda z: z.square().sum(1) ** 2, 1e6)],
    ids=["an energy that returns NaN", "a step size of 1e6"],
)
def test_a_chain_that_ends_not_finite_warns(energy: Callable, step_size: float) -> None:
    with pytest.warns(RuntimeWarning, match="ended with states that are not finite"):
        Langevin(50, step_size)(energy, torch.ones(3, 2))


def test_a_model_whose_results_are_not_finite_warns(toy: Any) -> None:
    broken = type(toy).load_from_checkpoint(REPO / "tests" / "fixtures" / "checkpoints" / "latent_ebm.ckpt")
    with torch.no_grad():
        next(broken.decoder.parameters()).fill_(float("nan"))
    with pytest.warns(RuntimeWarning, match=r"generate\(n\) holds NaN or infinite values"):
        broken.generate(3)


def test_a_vocabulary_that_maps_most_words_to_unk_warns() -> None:
    from lebm.data import TextDataModule

    with pytest.warns(
        UserWarning, match=r"maps \d+% of the training words to <unk>.*raise data.init_args.max_vocab_size"
    ):
        TextDataModule("templates", max_vocab_size=5, batch_size=8).setup("fit")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        TextDataModule("templates", batch_size=8).setup("fit")  # the default keeps every word: no warning


def test_a_text_model_refuses_more_sentences_than_memory_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU. Sentences have no fixed size, yet their generation holds the prior chain's layers and
    the generator's: checked too (``generate(10**9)`` asked the allocator for 16 GB); a few are drawn."""
    from tests.models.cases import text_model

    model = text_model()
    monkeypatch.setattr("lebm.training.inputs.device_memory_bytes", lambda device: 1_000_000)
    with pytest.raises(ValueError, match=r"^generate\(n=100000\): their generation holds about .* the prior's chain"):
        model.generate(100_000)
    assert len(model.generate(2)) == 2
