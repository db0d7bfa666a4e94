"""The VLAE-structured MNIST nets (``VLAEGenerator``, ``VLAELadderEncoder``) and the joint
hierarchical EBM built with them. Device: CPU (every test; no GPU needed).

Most tests use small widths (the layout is the same, the arithmetic cheaper); the full MNIST
setting (``conv_widths=(64, 128)``, ``fc_width=1024``) is built once for its layout.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lebm
from lebm.config import build, to_config
from lebm.models import JointHierarchicalEBM, TiltedGaussianPrior
from lebm.nets import DiagonalGaussian, EnergyMLP, GaussianDecoder, VLAEGenerator, VLAELadderEncoder
from lebm.samplers import Langevin
from tests.helpers.trainers import quiet_trainer

GROUPS = [2, 2, 2]
SMALL = {"conv_widths": (4, 8), "fc_width": 16}


def small_generator(**kwargs: object) -> VLAEGenerator:
    return VLAEGenerator(GROUPS, 1, 28, **{**SMALL, **kwargs})


def small_encoder(**kwargs: object) -> VLAELadderEncoder:
    return VLAELadderEncoder(GROUPS, 1, 28, **{**SMALL, **kwargs})


def hidden_layers(module: nn.Module) -> list[nn.Module]:
    """The hidden Linear / conv layers: all but the generator's output conv and the encoder's heads."""
    skip = {id(module.output)} if isinstance(module, VLAEGenerator) else {id(h) for h in module.heads}
    kinds = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
    return [m for m in module.modules() if isinstance(m, kinds) and id(m) not in skip]


def followed_by_batch_norm(module: nn.Module) -> list[bool]:
    """For every hidden layer, whether the next module in its Sequential is a BatchNorm."""
    answers = []
    for sequential in module.modules():
        if not isinstance(sequential, nn.Sequential):
            continue
        children = list(sequential)
        for i, child in enumerate(children):
            if any(child is layer for layer in hidden_layers(module)):
                answers.append(i + 1 < len(children) and isinstance(children[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)))
    return answers


# ---------------------------------------------------------------------------------- generator
def test_the_mnist_generator_has_the_vlae_layout() -> None:
    """z3 -> FC 1024 -> FC 1024; z2 joins the 1024-wide stage; FC -> 7x7x128; z1 joins the 7x7x128
    map; ConvT 128 -> 64 (14 px) -> 1 (28 px); images (B, 1, 28, 28) in [-1, 1]."""
    net = VLAEGenerator(GROUPS, channels=1, image_size=28)
    assert (net.latent_dim, net.channels, net.image_size, net.groups.sizes) == (6, 1, 28, [2, 2, 2])
    top = [m for m in net.top.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in top] == [(2, 1024), (1024, 1024)]
    assert [s[0].in_features for s in net.injections] == [2, 2]  # z1, z2
    assert [s[0].out_features for s in net.injections] == [128 * 7 * 7, 1024]
    assert [tuple(g.shape) for g in net.gates] == [(128,), (1024,)]  # per channel of the map, per FC unit
    assert net.to_map[0].out_features == 128 * 7 * 7
    deconvs = [m for m in net.deconvs.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in [*deconvs, net.output]] == [(128, 64), (64, 1)]
    net.eval()
    x = net(torch.randn(3, 6))
    assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1


def test_the_output_is_the_sigmoid_mapped_to_minus_one_one() -> None:
    """x = 2 sigmoid(a) - 1 of the output layer's a: sigmoid on [0, 1] pixels is this on [-1, 1]."""
    net = small_generator()
    seen: list[torch.Tensor] = []
    net.output.register_forward_hook(lambda module, args, out: seen.append(out))
    with torch.no_grad():
        x = net(3.0 * torch.randn(8, 6))
    assert torch.allclose(x, 2 * torch.sigmoid(seen[0]) - 1, atol=1e-6)
    assert x.min() > -1 and x.max() < 1 and x.min() < 0 < x.max()


def test_each_latent_group_changes_the_output() -> None:
    net = small_generator().eval()
    z = torch.randn(4, 6)
    with torch.no_grad():
        base = net(z)
        for layer in range(3):
            moved = net(net.groups.replace(z, layer, z[:, net.groups.columns(layer)] + 2.0))
            assert (moved - base).abs().max() > 1e-3, f"group z{layer + 1} has no effect"


@pytest.mark.parametrize("layer", [0, 1])
def test_the_gate_scales_the_injection(layer: int) -> None:
    """Gate 0 cuts its group off (and only that group); the injection is linear in the gate."""
    net = small_generator().eval()
    z = torch.randn(4, 6)
    shifted = net.groups.replace(z, layer, z[:, net.groups.columns(layer)] + 2.0)
    with torch.no_grad():
        net.gates[layer].zero_()
        assert torch.equal(net(z), net(shifted))
        other = 1 - layer  # the other injected group still acts
        assert not torch.allclose(net(z), net(net.groups.replace(z, other, z[:, net.groups.columns(other)] + 2.0)))
        # the injected feature is gate * mapping: doubling the gate doubles what is added
        captured: list[torch.Tensor] = []
        hook = net.injections[layer].register_forward_hook(lambda module, args, out: captured.append(out))
        target = net.fc_blocks[0] if layer == 1 else net.deconvs
        inputs: list[torch.Tensor] = []
        target.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
        for gate in (0.0, 1.0, 2.0):
            net.gates[layer].fill_(gate)
            net(z)
        hook.remove()
        added = [x - inputs[0] for x in inputs[1:]]
        mapped = captured[0].view_as(added[0])
        assert torch.allclose(added[0], mapped, atol=1e-5) and torch.allclose(added[1], 2 * mapped, atol=1e-5)


def test_the_gates_start_active() -> None:
    net = small_generator()
    assert all(torch.equal(g, torch.ones_like(g)) for g in net.gates)
    assert all(g.requires_grad for g in net.gates)
    assert all(torch.equal(g, torch.full_like(g, 0.5)) for g in small_generator(gate_init=0.5).gates)


@pytest.mark.parametrize("make", [small_generator, small_encoder])
def test_batch_norm_follows_every_hidden_layer_and_can_be_switched_off(make: object) -> None:
    net = make()
    after = followed_by_batch_norm(net)
    assert after and all(after) and len(after) == len(hidden_layers(net))
    assert all(m.bias is None for m in hidden_layers(net))  # BatchNorm's shift replaces the bias
    plain = make(batch_norm=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in plain.modules())
    assert all(m.bias is not None for m in hidden_layers(plain))
    # in training mode BatchNorm normalises over the batch: a constant shift of every example's
    # top-group latent is absorbed by the first BatchNorm
    net = small_generator().train()
    z = torch.randn(16, 6)
    with torch.no_grad():
        assert torch.allclose(net(z), net(net.groups.replace(z, 2, z[:, 4:] + 5.0)), atol=1e-4)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 4"):
        VLAEGenerator(GROUPS, 1, 30)
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 4"):
        VLAELadderEncoder(GROUPS, 1, 26)
    with pytest.raises(ValueError, match="at least 2 latent groups"):
        VLAEGenerator([6], 1, 28)
    with pytest.raises(ValueError, match="at least 2 latent groups"):
        VLAELadderEncoder([6], 1, 28)
    with pytest.raises(ValueError, match="conv_widths"):
        VLAEGenerator(GROUPS, 1, 28, conv_widths=[])
    with pytest.raises(ValueError, match="fc_width"):
        VLAELadderEncoder(GROUPS, 1, 28, fc_width=0)
    with pytest.raises(ValueError, match="unknown activation"):
        VLAEGenerator(GROUPS, 1, 28, activation="swish2")


def test_two_and_four_groups_work_too() -> None:
    for groups in ([3, 1], [1, 2, 3, 4]):
        net = VLAEGenerator(groups, 1, 28, **SMALL).eval()
        encoder = VLAELadderEncoder(groups, 1, 28, **SMALL).eval()
        x = net(torch.randn(2, sum(groups)))
        assert x.shape == (2, 1, 28, 28)
        assert encoder(x).mean.shape == (2, sum(groups)) and len(encoder.fc_levels) == len(groups) - 1


# ----------------------------------------------------------------------------------- encoder
def test_the_mnist_encoder_has_the_vlae_ladder_layout() -> None:
    """conv 64 (28 -> 14), conv 128 (14 -> 7), FC 1024 levels; z1's branch reads the 7x7x128
    features, z2's and z3's the FC levels; each branch 1024 wide, then Linear(1024 -> 2 size)."""
    encoder = VLAELadderEncoder(GROUPS, channels=1, image_size=28)
    assert (encoder.latent_dim, encoder.groups.sizes) == (6, [2, 2, 2])
    convs = [m for m in encoder.convs.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (1, 64, (4, 4), (2, 2)),
        (64, 128, (4, 4), (2, 2)),
    ]
    assert [(s[0].in_features, s[0].out_features) for s in encoder.fc_levels] == [(6272, 1024), (1024, 1024)]
    assert [(s[0].in_features, s[0].out_features) for s in encoder.branches] == [
        (6272, 1024),
        (1024, 1024),
        (1024, 1024),
    ]
    assert [(h.in_features, h.out_features) for h in encoder.heads] == [(1024, 4)] * 3


def test_the_encoder_returns_a_diagonal_gaussian_laid_out_as_its_groups() -> None:
    encoder = VLAELadderEncoder([1, 2, 3], 1, 28, **SMALL).eval()
    x = torch.rand(5, 1, 28, 28) * 2 - 1
    q = encoder(x)
    assert isinstance(q, DiagonalGaussian) and q.mean.shape == q.logvar.shape == (5, 6)
    # group k's columns come from head k
    with torch.no_grad():
        for k, head in enumerate(encoder.heads):
            before = q.mean
            head.bias.add_(1.0)
            after = encoder(x).mean
            changed = (after - before).abs().amax(0) > 0
            assert changed.tolist() == [c in range(*encoder.groups.columns(k).indices(6)) for c in range(6)]
            q = encoder(x)


def test_every_head_depends_on_the_input_and_the_ladder_reads_deeper_levels_upwards() -> None:
    encoder = small_encoder().eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    q, moved = encoder(x), encoder(x.flip(0).roll(3, -1))
    for k in range(3):
        columns = encoder.groups.columns(k)
        assert not torch.allclose(q.mean[:, columns], moved.mean[:, columns]), f"z{k + 1} ignores x"
        assert not torch.allclose(q.logvar[:, columns], moved.logvar[:, columns])
    # the bottom group reads the conv features only: changing the FC trunk leaves it as it was
    with torch.no_grad():
        for p in encoder.fc_levels[0].parameters():
            p.add_(0.5)
    changed = encoder(x)
    assert torch.equal(changed.mean[:, :2], q.mean[:, :2])
    assert not torch.allclose(changed.mean[:, 2:4], q.mean[:, 2:4])
    assert not torch.allclose(changed.mean[:, 4:], q.mean[:, 4:])
    with torch.no_grad():  # the second FC level only feeds the top group
        for p in encoder.fc_levels[1].parameters():
            p.add_(0.5)
    again = encoder(x)
    assert torch.equal(again.mean[:, :4], changed.mean[:, :4])
    assert not torch.allclose(again.mean[:, 4:], changed.mean[:, 4:])


def test_nets_rebuild_from_their_configs() -> None:
    for net in (small_generator(gate_init=0.5, batch_norm=False), small_encoder(activation="relu")):
        rebuilt = build(to_config(net))
        assert type(rebuilt) is type(net)
        assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]
        assert to_config(rebuilt) == to_config(net)


# ------------------------------------------------------------------------------------ method
@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_a_joint_hierarchical_ebm_with_the_vlae_nets_trains_and_reloads(tmp_path: Path) -> None:
    """Two training steps on random 28x28 images on the CPU; the checkpoint reloads with lebm.load
    (nets, BatchNorm statistics and gates included), in evaluation mode."""
    prior = TiltedGaussianPrior(6, EnergyMLP(6, hidden=16), sampler=Langevin(5, 0.3), groups=GROUPS)
    model = JointHierarchicalEBM(
        GaussianDecoder(small_generator(), sigma=0.3), prior, small_encoder(), decoder_lr=1e-3, prior_lr=1e-3
    )
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    trainer = quiet_trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=0, default_root_dir=str(tmp_path)
    )
    gate = model.decoder.net.gates[0].detach().clone()
    trainer.fit(model, DataLoader(TensorDataset(x), batch_size=4))
    assert trainer.global_step > 0 and model.decoder.net.groups.sizes == GROUPS
    assert not torch.equal(model.decoder.net.gates[0], gate)  # the gates learn
    bn = next(m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 2
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = lebm.load(str(path))
    assert isinstance(loaded.decoder.net, VLAEGenerator) and isinstance(loaded.encoder, VLAELadderEncoder)
    # loaded for use: evaluation mode, so an example's score does not depend on the rest of its batch
    assert not loaded.training and not any(module.training for module in loaded.modules())
    with torch.no_grad():
        assert torch.allclose(loaded.score(x[:2]), loaded.score(x)[:2], atol=1e-4)
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert state.keys() == reloaded.keys() and all(torch.equal(state[k], reloaded[k]) for k in state)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.infer(x), model.infer(x))
        assert torch.allclose(loaded.reconstruct(x), model.reconstruct(x))
