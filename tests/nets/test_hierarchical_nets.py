"""The multi-layer generator and the ladder encoder of the joint hierarchical EBM (Cui, Wu & Han, ICCV
2023: the official ``train_fid.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.config import build, to_config
from lebm.nets import HierarchicalGenerator, LadderEncoder


def shapes(module: nn.Module, kind: type) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, kind)]


def test_the_official_svhn_generator_has_the_train_fid_layout() -> None:
    """z5 -> MLP 10-2048-2048-(1024x2x2); z4..z1 -> Linear to the map, concatenated, ConvT3x3 back,
    ConvT4x4 s2 up, ConvT3x3; maps 2 -> 4 -> 8 -> 16 -> 32 of 1024-512-256-256-128; ConvT3x3 -> 3."""
    net = HierarchicalGenerator([10] * 5, 3, 32, [1024, 512, 256, 256, 128], [2048, 2048], "concat")
    top = [m for m in net.top if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in top] == [(10, 2048), (2048, 2048), (2048, 4096)]
    assert [p[0].out_features for p in net.projections] == [1024 * 4, 512 * 16, 256 * 64, 256 * 256]
    assert shapes(net.blocks[0], nn.ConvTranspose2d) == [(2048, 1024, 3, 3), (1024, 512, 4, 4), (512, 512, 3, 3)]
    assert shapes(net.output, nn.ConvTranspose2d) == [(128, 3, 3, 3)]
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.ConvTranspose2d))
    x = net(torch.randn(2, 50))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1


@pytest.mark.parametrize("injection", ["concat", "add"])
def test_every_layer_reaches_the_image_and_only_through_its_own_map(injection: str) -> None:
    """Each group changes the output; the bottom group z1 enters at the finest injected map, so
    blocks above it do not see it."""
    net = HierarchicalGenerator([2, 3, 4], 1, 8, [16, 8, 4], [8], injection)
    z = torch.randn(4, 9, requires_grad=True)
    net(z).sum().backward()
    for columns in (slice(0, 2), slice(2, 5), slice(5, 9)):
        assert z.grad[:, columns].abs().sum() > 0
    assert net.projections[-1][0].in_features == 2  # z1 -> the 4x4 map (the last injected)
    assert net.projections[0][0].in_features == 3  # z2 -> the 2x2 top map
    assert [m.in_channels for m in net.blocks[0] if isinstance(m, nn.ConvTranspose2d)][0] == (
        32 if injection == "concat" else 16
    )


def test_generator_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="one width per latent group"):
        HierarchicalGenerator([2, 2], 1, 8, [8, 4, 2])
    with pytest.raises(ValueError, match="divisible by 4"):
        HierarchicalGenerator([2, 2, 2], 1, 10, [8, 4, 2])
    with pytest.raises(ValueError, match="injection"):
        HierarchicalGenerator([2], 1, 8, [4], injection="multiply")


def test_ladder_branches_are_separate_nets_as_in_the_official_encoder() -> None:
    """Official VLAE ladder: head k reads its own branch b_k(r_k); the trunk r_{k+1} = t_k(r_k)
    only feeds deeper levels. Changing the trunk's first block leaves q(z1|x) as it was."""
    encoder = LadderEncoder([2, 3, 4], channels=1, image_size=8, widths=[4, 8], top_hidden=[16])
    assert len(encoder.branches) == 2 and len(encoder.trunk) == 2  # the top MLP reads the last trunk output
    x = torch.randn(3, 1, 8, 8)
    before = encoder(x)
    with torch.no_grad():
        for p in encoder.trunk[0].parameters():
            p.add_(1.0)
    after = encoder(x)
    assert torch.equal(after.mean[:, :2], before.mean[:, :2])
    assert not torch.allclose(after.mean[:, 2:], before.mean[:, 2:])
    with torch.no_grad():
        for p in encoder.branches[0].parameters():
            p.add_(1.0)
    assert not torch.allclose(encoder(x).mean[:, :2], after.mean[:, :2])


def test_generator_and_encoder_rebuild_from_their_configs() -> None:
    for net in (HierarchicalGenerator([2, 2], 1, 8, [8, 4], [8], "add"), LadderEncoder([2, 2], 1, 8, [4, 4])):
        rebuilt = build(to_config(net))
        assert type(rebuilt) is type(net)
        assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]
