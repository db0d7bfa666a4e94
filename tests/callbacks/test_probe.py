"""The hierarchical representation probe: a layer that encodes the label is classified, a noise
layer is not; latents are split per layer in the model's order; the callback probes after fit and
test, logs and writes probe.json."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lebm.callbacks import LatentProbe
from lebm.data.loaders import evaluation_loader
from lebm.metrics import LayerProbe, collect_latents, fit_probe, probe_layers
from lebm.models import LatentGroups
from tests.helpers.trainers import quiet_trainer

N_CLASSES = 10


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: one intra-op thread is many times faster


def class_means(dim: int, seed: int = 0) -> torch.Tensor:
    return 3.0 * torch.randn(N_CLASSES, dim, generator=torch.Generator().manual_seed(seed))


def labelled_features(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(signal, noise, labels)``: class means + small noise, pure noise, balanced labels."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=gen) % N_CLASSES
    signal = class_means(dim)[labels] + 0.1 * torch.randn(n, dim, generator=gen)
    noise = torch.randn(n, dim, generator=gen)
    return signal, noise, labels


# ------------------------------------------------------------------------------ fit_probe
def test_layer_probe_is_the_papers_classifier():
    probe = LayerProbe(7, 10)
    assert [type(m) for m in probe.net] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (probe.net[0].in_features, probe.net[0].out_features) == (7, 256)
    assert (probe.net[2].in_features, probe.net[2].out_features) == (256, 10)
    assert probe(torch.randn(4, 7)).shape == (4, 10)


def test_fit_probe_reads_the_label_from_an_informative_layer_only():
    train_signal, train_noise, train_y = labelled_features(1000, 8, seed=1)
    test_signal, test_noise, test_y = labelled_features(500, 8, seed=2)
    assert fit_probe(train_signal, train_y, test_signal, test_y) > 0.95
    assert fit_probe(train_noise, train_y, test_noise, test_y) < 0.2
    # without standardisation, on raw features far from the origin, the signal still gets through
    assert fit_probe(train_signal + 5.0, train_y, test_signal + 5.0, test_y, standardize=False) > 0.95


def test_fit_probe_is_reproducible_and_leaves_the_global_rng_alone():
    train_signal, train_noise, train_y = labelled_features(400, 4, seed=3)
    test_signal, test_noise, test_y = labelled_features(400, 4, seed=4)
    mixed_train, mixed_test = 0.3 * train_signal + train_noise, 0.3 * test_signal + test_noise  # partly separable
    state = torch.get_rng_state()
    first = fit_probe(mixed_train, train_y, mixed_test, test_y, epochs=5, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # a different global state does not change the result
    assert fit_probe(mixed_train, train_y, mixed_test, test_y, epochs=5, seed=7) == first
    others = {fit_probe(mixed_train, train_y, mixed_test, test_y, epochs=5, seed=s) for s in range(4)}
    assert len(others) > 1  # the seed does matter


def test_fit_probe_trains_inside_inference_mode():
    train_signal, _, train_y = labelled_features(300, 4, seed=5)
    test_signal, _, test_y = labelled_features(300, 4, seed=6)
    with torch.inference_mode():  # as in Lightning's on_test_end, with inference tensors as features
        train_signal, test_signal = train_signal.clone(), test_signal.clone()
        assert fit_probe(train_signal, train_y, test_signal, test_y) > 0.95


def test_fit_probe_rejects_bad_inputs():
    x, y = torch.randn(10, 3), torch.arange(10) % 2
    with pytest.raises(ValueError, match="differ in size"):
        fit_probe(x, y, torch.randn(10, 4), y)
    with pytest.raises(ValueError, match="integer labels"):
        fit_probe(x, y.float(), x, y)
    with pytest.raises(ValueError, match="out of range"):
        fit_probe(x, y, x, y, n_classes=1)


# ------------------------------------------------------------------- collect / probe_layers
def probe_data(n: int, seed: int) -> TensorDataset:
    """Images ``x`` (n, 6) = [label, 2 noise values, 3 noise values]; labels (n,)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randperm(n, generator=gen) % N_CLASSES
    x = torch.cat([labels[:, None].float(), torch.randn(n, 5, generator=gen)], dim=1)
    return TensorDataset(x, labels)


class TwoLayerLatents(nn.Module):
    """``infer(x)`` = ``[z1, z2]``: z1 (2 dims) is noise from ``x``, z2 (3 dims) a class mean of
    the label stored in ``x`` plus a little noise. Records its training flag at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.latent_groups = LatentGroups([2, 3])
        self.register_buffer("means", class_means(3, seed=11))
        self.modes: list[bool] = []

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        labels = x[:, 0].long()
        return torch.cat([x[:, 1:3], self.means[labels] + 0.05 * x[:, 3:6]], dim=1)


class FlatLatents(TwoLayerLatents):
    """The same latents without ``latent_groups``: one layer, the whole (informative) vector."""

    def __init__(self) -> None:
        super().__init__()
        del self.latent_groups


def test_collect_latents_splits_per_layer_bottom_first_and_restores_the_mode():
    model = TwoLayerLatents().train()
    data = probe_data(50, seed=0)
    (z1, z2), labels = collect_latents(model, DataLoader(data, batch_size=16))
    x, y = data.tensors
    assert torch.equal(labels, y)
    assert torch.equal(z1, x[:, 1:3])  # the noise group, in the data's order
    assert torch.equal(z2, model.means[y] + 0.05 * x[:, 3:6])
    assert model.modes == [False] * 4 and model.training  # eval while inferring, train mode again after
    (z1, _), labels = collect_latents(model, DataLoader(data, batch_size=16), max_batches=2)
    assert z1.shape == (32, 2) and labels.shape == (32,)


def test_probe_layers_finds_the_label_in_the_second_layer_only():
    model = TwoLayerLatents()
    train = DataLoader(probe_data(1000, seed=1), batch_size=100)
    test = DataLoader(probe_data(500, seed=2), batch_size=100)
    accuracy = probe_layers(model, train, test)
    assert list(accuracy) == ["z1", "z2"]
    assert accuracy["z1"] < 0.2
    assert accuracy["z2"] > 0.95
    assert list(probe_layers(FlatLatents(), train, test, epochs=10)) == ["z"]


# ---------------------------------------------------------------------------- the callback
class ProbeModule(L.LightningModule):
    """A trivial trainable module with :class:`TwoLayerLatents`'s latents."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(6, 1)
        self.latents = TwoLayerLatents()
        self.latent_groups = self.latents.latent_groups

    def infer(self, x: torch.Tensor) -> torch.Tensor:
        return self.latents.infer(x)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).square().mean()

    def test_step(self, batch, batch_idx):
        return None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class ProbeData(L.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.batch_size = 100
        self.train_dataset = probe_data(1050, seed=1)  # not a multiple of the batch: training drops 50
        self.test_dataset = probe_data(500, seed=2)

    def train_dataloader(self):
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def test_dataloader(self):
        return evaluation_loader(self.test_dataset, self.batch_size)


class RecordingLogger(Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[dict, int | None]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((dict(metrics), step))


def trainer(tmp_path, callback: LatentProbe, logger=False) -> L.Trainer:
    return quiet_trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[callback],
        default_root_dir=str(tmp_path),
        log_every_n_steps=1,
    )


def test_latent_probe_callback_after_fit_writes_probe_json(tmp_path):
    callback = LatentProbe(after_test=False, fit_kwargs={"epochs": 30})
    module = ProbeModule()
    trainer(tmp_path, callback).fit(module, datamodule=ProbeData())
    assert list(callback.results) == ["z1", "z2"]
    assert callback.results["z1"] < 0.2 and callback.results["z2"] > 0.95
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["accuracy"] == callback.results
    assert record["layers"] == ["z1", "z2"] and record["sizes"] == [2, 3]
    assert (record["stage"], record["epoch"], record["global_step"]) == ("fit", 1, 10)
    assert (record["n_train"], record["n_test"]) == (1050, 500)  # the whole training set, once (no drop_last)
    assert module.training  # the module's mode is left as it was
    assert not list(tmp_path.glob(".probe-*"))  # no temporary file left behind


def test_latent_probe_callback_after_test_logs_the_accuracies(tmp_path):
    callback = LatentProbe(after_fit=False, max_train_batches=5, fit_kwargs={"epochs": 30})
    logger = RecordingLogger()
    run = trainer(tmp_path, callback, logger=logger)
    module, data = ProbeModule(), ProbeData()
    run.fit(module, datamodule=data)
    assert callback.results == {} and not (tmp_path / "probe.json").exists()  # after_fit=False
    run.test(module, datamodule=data, verbose=False)  # on_test_end runs inside inference_mode
    record = json.loads((tmp_path / "probe.json").read_text())
    assert record["stage"] == "test" and record["n_train"] == 500  # max_train_batches x batch 100
    assert record["accuracy"] == callback.results and callback.results["z2"] > 0.95
    logged = [(metrics, step) for metrics, step in logger.metrics if "probe/acc_z1" in metrics]
    assert logged == [({"probe/acc_z1": callback.results["z1"], "probe/acc_z2": callback.results["z2"]}, 10)]


def test_latent_probe_callback_needs_a_datamodule_with_a_training_set(tmp_path):
    callback = LatentProbe(after_test=False)
    data = ProbeData()
    loader = data.train_dataloader()
    with pytest.raises(ValueError, match="train_dataset"):
        trainer(tmp_path, callback).fit(ProbeModule(), train_dataloaders=loader)
