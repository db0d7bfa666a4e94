"""The no-model anomaly scores (device: CPU): squared distances to fixed images, the baseline's
choice, the mean training image and the untrained generator's output level."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from torch.utils.data import TensorDataset

from lebm.metrics.no_model import mean_image, no_model_baseline, no_model_scores, output_level, squared_distance


def test_the_scores_are_squared_distances_to_the_level_the_background_and_the_mean_image() -> None:
    x = torch.tensor([[[[0.5, -1.0], [1.0, 0.0]]]])  # (1, 1, 2, 2)
    mean = torch.full((1, 2, 2), 0.5)
    scores = no_model_scores(x, mean, untrained_level=0.25)
    assert scores["untrained_level"].item() == pytest.approx(0.0625 + 1.5625 + 0.5625 + 0.0625)
    assert scores["background"].item() == pytest.approx(2.25 + 0 + 4 + 1)
    assert scores["mean_training_image"].item() == pytest.approx(0 + 2.25 + 0.25 + 0.25)
    assert set(no_model_scores(x, None)) == {"untrained_level", "background"}  # no training images: two scores
    assert squared_distance(x, 0.0).dtype == torch.float64


def test_the_baseline_is_the_score_of_highest_auprc_and_a_one_class_split_never_wins() -> None:
    targets = np.array([0, 0, 1, 1, 0, 1], dtype=float)
    good, poor = np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.7]), np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.3])
    baseline = no_model_baseline({"poor": poor, "good": good}, targets)
    assert baseline.name == "good" and baseline.auprc == pytest.approx(average_precision_score(targets, good))
    assert baseline.readings["poor"][0] == pytest.approx(average_precision_score(targets, poor))
    single = no_model_baseline({"a": good}, np.zeros(6))
    assert single.name == "a" and np.isnan(single.auprc)


def test_the_mean_image_is_the_pixelwise_mean_of_the_training_images() -> None:
    images = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2)
    assert torch.allclose(mean_image(TensorDataset(images, torch.zeros(5)), batch_size=2), images.mean(0))
    assert mean_image(TensorDataset(torch.zeros(0, 1, 2, 2), torch.zeros(0))) is None
    assert mean_image(TensorDataset(torch.zeros(3, 2), torch.zeros(3))) is None  # not images


class Decoder(torch.nn.Module):
    """``decode`` maps latents to images near ``level``; dropout makes its train mode visible."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = torch.nn.Parameter(torch.tensor(level))
        self.seen_training: list[bool] = []

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        return self.level + 0.01 * z[:, :16].reshape(-1, 1, 4, 4)


class Prior(torch.nn.Module):
    latent_dim = 16


class ConstantGenerator(torch.nn.Module):
    """A latent-variable model whose untrained decoder draws ``level`` plus a little noise."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.decoder, self.prior = Decoder(level), Prior()


def test_the_output_level_is_the_mean_pixel_decoded_in_eval_mode_from_a_stream_of_its_own() -> None:
    model = ConstantGenerator(0.2).train()
    torch.manual_seed(5)
    before = torch.get_rng_state()
    level = output_level(model)
    assert level == pytest.approx(0.2, abs=0.005) and output_level(model) == level  # its own seeded stream
    assert torch.equal(torch.get_rng_state(), before)  # the global stream untouched
    assert model.decoder.seen_training == [False, False] and model.training  # eval mode, train mode restored
    assert output_level(torch.nn.Linear(2, 2)) is None  # no decoder: no level
