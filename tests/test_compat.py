"""lebm uses Lightning's and jsonargparse's public APIs, except in ``lebm/compat.py`` (CPU).

(torch's own private names, such as ``nn.Module._buffers``, are another matter and not checked.)

The grep test collects every private name (one leading underscore) that the installed Lightning's
Trainer, LightningModule, loops and LightningCLI, and jsonargparse's parser, define, and fails on
any use of one in lebm's source outside the seam. The seam's own tests fail when the installed
Lightning moves the private name it reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonargparse
import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loops import _FitLoop, _TrainingEpochLoop
from torch.utils.data import DataLoader, TensorDataset

from lebm.compat import LIGHTNING_MODULE_BOOKKEEPING, attached_trainer, logging_as_hook
from tests.helpers.trainers import quiet_trainer

LEBM = Path(__file__).resolve().parents[1] / "lebm"
SEAM = LEBM / "compat.py"


def private_names(*classes: type) -> set[str]:
    return {name for cls in classes for name in dir(cls) if re.fullmatch(r"_[a-z]\w*", name)}


def dependency_private_names() -> set[str]:
    """Private attribute names of the Lightning and jsonargparse classes lebm works with."""
    lightning_classes = (L.Trainer, L.LightningModule, L.LightningDataModule, LightningCLI)
    lightning_classes += (_FitLoop, _TrainingEpochLoop)
    names = private_names(*lightning_classes)
    names |= private_names(jsonargparse.ArgumentParser, jsonargparse.Namespace)
    trainer = quiet_trainer(accelerator="cpu")
    names |= {name for name in vars(trainer) if re.fullmatch(r"_[a-z]\w*", name)}
    names |= {name for name in vars(L.LightningModule()) if re.fullmatch(r"_[a-z]\w*", name)}
    torch_module = private_names(torch.nn.Module) | set(vars(torch.nn.Module()))  # torch's, not Lightning's
    return names - torch_module


def test_no_private_name_of_lightning_or_jsonargparse_outside_the_seam() -> None:
    """Attribute uses (``x._name``), overrides (``def _name``), names in quotes (``"_trainer"``, a table
    that names Lightning's attributes) and private module imports."""
    names = dependency_private_names()
    assert {"_current_fx_name", "_trainer", "_logger_connector", "_parse_ckpt_path"} <= names  # the scan sees them
    attribute = re.compile(r"(?:\.|\bdef |[\"'])(_[a-z]\w*)\b")
    private_import = re.compile(r"^\s*(?:from|import)\s+(?:lightning|pytorch_lightning|jsonargparse)\S*\._", re.M)
    found = []
    for path in sorted(LEBM.rglob("*.py")):
        if path == SEAM:
            continue
        text = path.read_text()
        own = set(re.findall(r"(?:self\.|def |^\s*)(_[a-z]\w*)\s*(?:[:=(]|\bin\b)", text, re.M))  # lebm's own
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            used = {name for name in attribute.findall(code) if name in names and name not in own}
            if used:
                found.append(f"{path.relative_to(LEBM.parent)}:{number}: {sorted(used)}")
        found += [f"{path.relative_to(LEBM.parent)}: private import" for _ in private_import.finditer(text)]
    assert not found, "private names of Lightning/jsonargparse outside lebm/compat.py:\n" + "\n".join(found)


def test_the_private_name_the_seam_reads_still_exists() -> None:
    module = L.LightningModule()
    assert hasattr(module, "_current_fx_name"), "Lightning moved LightningModule._current_fx_name: update lebm.compat"


class SavesItsArguments(L.LightningModule):
    def __init__(self, width: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()


def test_the_lightning_bookkeeping_the_iteration_key_leaves_out_is_what_lightning_sets() -> None:
    """CPU. ``LIGHTNING_MODULE_BOOKKEEPING`` names exactly the attributes the installed Lightning sets on
    a module that saved its hyperparameters, beyond ``nn.Module``'s: one renamed, added or dropped by a
    Lightning release fails here, where it would otherwise enter (or leave) every recorded iteration's key."""
    set_by_lightning = set(vars(SavesItsArguments())) - set(vars(torch.nn.Module()))
    assert set(LIGHTNING_MODULE_BOOKKEEPING) == set_by_lightning


class LateLogger(L.LightningModule):
    """Logs ``value`` in ``training_step`` on even batches and hands it over late, from
    ``on_train_batch_end``, on odd ones (what lebm's logging cadence does)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.layer(batch[0]).pow(2).mean()
        if batch_idx % 2 == 0:
            self.log("value", float(batch_idx))
        return loss

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        if batch_idx % 2 == 1:
            with logging_as_hook(self, "training_step"):
                self.log("value", float(batch_idx))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class SeenValues(L.Callback):
    """``trainer.callback_metrics["value"]`` as each batch starts (what the previous step left)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, i: int) -> None:
        self.seen.append(float(trainer.callback_metrics.get("value", -1.0)))


def test_a_value_handed_over_late_is_the_same_metric_as_the_steps_own() -> None:
    """Filed under ``training_step``, the late value and the step's own are one metric: every batch
    sees the newest. (Logged from ``on_train_batch_end`` as itself, Lightning keeps two entries of
    one name, and after batch 2 readers see batch 1's late value instead of batch 2's.)"""
    model, seen = LateLogger(), SeenValues()
    assert attached_trainer(model) is None
    trainer = quiet_trainer(accelerator="cpu", max_steps=6, callbacks=[seen])
    trainer.fit(model, DataLoader(TensorDataset(torch.ones(6, 1)), batch_size=1))
    assert attached_trainer(model) is trainer
    assert seen.seen == [-1.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    assert float(trainer.callback_metrics["value"]) == 5.0
