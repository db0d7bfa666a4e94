"""The MNIST anomaly recipes validate apart from the test split (device: CPU): ``val/*``, what a
``ModelCheckpoint`` or ``EarlyStopping`` selects on, never reads a test digit."""

from __future__ import annotations

import pytest

from lebm.config import build
from tests.test_recipes import get, one_per_data_kind, resolve, runnable_recipes


def anomaly_recipes() -> list[str]:
    """Every runnable recipe whose data is the MNIST anomaly protocol."""
    return [recipe for recipe in runnable_recipes() if "mnist_anomaly" in recipe]


@pytest.mark.parametrize("recipe", one_per_data_kind(anomaly_recipes()))
def test_an_anomaly_recipe_validates_on_a_split_that_shares_no_digit_with_the_test_split(
    recipe: str, make_mnist_idx, capsys: pytest.CaptureFixture
) -> None:
    """CPU. Each MNIST anomaly recipe, resolved as ``lebm fit`` runs it, builds a datamodule whose
    validation split (what ``val/*`` reads) and test split share no image and both hold held-out
    digits; ``-c evaluation/select_on_test`` is the papers' way (validation reads the test split).
    One recipe of each data section in the default tier, the rest in the slow tier."""
    root, _ = make_mnist_idx(n_train=300, n_test=200)
    config = resolve(recipe, capsys=capsys)
    assert recipe.endswith("mnist_anomaly.yaml") or "offline" in recipe
    data = dict(config["data"], init_args={**config["data"]["init_args"], "root": str(root), "pool": "full"})
    module = build(data)
    module.setup("fit")
    val, test = set(module.val_dataset.indices.tolist()), set(module.test_dataset.indices.tolist())
    held_out = module.anomaly_classes[0]
    assert val and test and not val & test
    assert (module.val_labels == held_out).any() and (module.test_labels == held_out).any()
    papers = resolve(recipe, "-c", "recipes/evaluation/select_on_test.yaml", capsys=capsys)
    assert get(papers, "data.init_args.validate_on") == "test"
