"""DAMC's amortizer start as a CUDA graph (device: CUDA; marked ``gpu``, skipped without CUDA): the
replayed ancestral sampler gives the eager start's numbers, continues the caller's stream as the
eager start does, reads the EMA copy's updated weights, and replays under bf16 autocast. TF32 is off
(``exact_float32``), so a graph and an eager run use the same float32 arithmetic."""

from __future__ import annotations

import pytest
import torch

from lebm.nets import ConvEmbedding, LatentDiffusionAmortizer
from lebm.recording import chain_capture, chain_graphs
from lebm.samplers import AveragedStart, ChainInitializer

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("exact_float32")]

DEVICE = torch.device("cuda")
#: Captured against eager float32 starts: absolute difference (the sampler divides by alpha ~ 0.08).
TOLERANCE = 1e-3


def amortizer() -> LatentDiffusionAmortizer:
    """SVHN's shapes at small widths: 32x32 images, 100 latents, 100 ancestral steps."""
    torch.manual_seed(0)
    encoder = ConvEmbedding(3, 32, nif=8, embed_dim=64)
    return LatentDiffusionAmortizer(100, encoder, 64, nf=1, time_dim=32, sampling_steps=100).to(DEVICE)


def start(
    initializer: ChainInitializer, x: torch.Tensor, seed: int, capture: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    stream = torch.Generator(DEVICE).manual_seed(seed)
    with chain_capture(capture):
        z0 = initializer.start(x.shape[0], context=x, generator=stream)
    return z0, stream.get_state()


def test_a_replayed_start_matches_the_eager_one_and_continues_the_stream_alike() -> None:
    q = amortizer()
    x = torch.rand(64, 3, 32, 32, device=DEVICE) * 2 - 1
    for seed in (1, 2, 3):
        (eager, eager_stream), (captured, captured_stream) = start(q, x, seed, False), start(q, x, seed, True)
        assert (eager - captured).abs().max() < TOLERANCE
        assert torch.equal(eager_stream, captured_stream)
    assert chain_graphs(q).stats()["captures"] == 1 and chain_graphs(q).stats()["replays"] == 2


def test_the_ema_copy_replays_with_its_updated_weights() -> None:
    online = amortizer()
    ema = AveragedStart(online)
    x = torch.rand(32, 3, 32, 32, device=DEVICE) * 2 - 1
    start(ema, x, 1, True)
    with torch.no_grad():
        for parameter in online.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    ema.update(online, 0.5)
    captured, _ = start(ema, x, 1, True)
    eager, _ = start(ema, x, 1, False)
    assert chain_graphs(ema.average).stats()["replays"] == 1
    assert (eager - captured).abs().max() < TOLERANCE


def test_a_bf16_start_replays_the_eager_bf16_numbers() -> None:
    q = amortizer()
    x = torch.rand(32, 3, 32, 32, device=DEVICE) * 2 - 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager, _ = start(q, x, 1, False)
        start(q, x, 1, True)
        captured, _ = start(q, x, 1, True)
    assert captured.dtype == torch.float32 and chain_graphs(q).stats()["replays"] == 1
    assert (eager - captured).abs().max() < 0.05 * eager.abs().max()
