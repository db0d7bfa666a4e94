"""DAMC's amortizer and its parts (device: CPU): the denoiser's shapes and topology, the encoders'
layer lists per dataset (the official ``Encoder_*`` nets), the null embedding's fresh noise, and the
amortizer as a chain initializer (shape, detached, no autograd, its generator's draws only) and as a
loss (the estimator's, with per-example conditions)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lebm.config import build, to_config
from lebm.estimators import denoising_loss
from lebm.nets import ConvEmbedding, LatentDiffusionAmortizer, MLPEmbedding
from lebm.nets.diffusion import DiffusionMLP, NullEmbedding
from lebm.samplers.diffusion import ancestral_sample
from lebm.samplers.initializers import AveragedStart, ChainInitializer


def small_amortizer(**kwargs: object) -> LatentDiffusionAmortizer:
    """An amortizer of 3-D latents for 8x8 images (the CPU quickstart's sizes)."""
    settings = {"nf": 1, "time_dim": 16, "null_hidden": 16, "sampling_steps": 5, **kwargs}
    return LatentDiffusionAmortizer(3, MLPEmbedding([1, 8, 8], hidden=32, embed_dim=16), 16, **settings)


def conv_layout(net: nn.Module) -> list[tuple[int, int, int, int, int]]:
    """``(in, out, kernel, stride, padding)`` of every conv, in order."""
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]


@pytest.mark.parametrize("latent_dim", [1, 2, 5, 8])
def test_the_denoiser_maps_latents_times_and_conditions_to_noise(latent_dim: int) -> None:
    net = DiffusionMLP(latent_dim, context_dim=6, nf=1, time_dim=8)
    z, logsnr, context = torch.randn(4, latent_dim), torch.linspace(-5, 9, 4), torch.randn(4, 6)
    assert net(z, logsnr, context).shape == (4, latent_dim)
    assert net.fourier.shape == (latent_dim, (latent_dim + 1) // 2)  # the official D x D/2, rounded up
    plain = DiffusionMLP(latent_dim, context_dim=6, nf=1, time_dim=8, residual=False)
    plain.load_state_dict(net.state_dict())
    assert torch.allclose(net(z, logsnr, context) - plain(z, logsnr, context), z, atol=1e-6), "residual: z_t + MLP"


def test_the_denoiser_widths_follow_nf_and_its_time_input_is_clamped() -> None:
    """``nf = 4``: in 2nz -> 128 -> 256 -> 256, mid 256 -> 256, out 512 -> 256, 512 -> 128, 256 -> nz."""
    net = DiffusionMLP(100, context_dim=1024, nf=4, time_dim=128)
    layers = [*net.down, net.middle, *net.up]
    widths = [(layer.linear.in_features, layer.linear.out_features // 2) for layer in layers]
    assert widths == [(200, 128), (128, 256), (256, 256), (256, 256), (512, 256), (512, 128), (256, 100)]
    assert {layer.context.in_features for layer in layers} == {128 + 1024}
    assert [(layer.linear.in_features, layer.linear.out_features // 2) for layer in DiffusionMLP(8, 4, nf=1).down] == [
        (16, 32),
        (32, 64),
        (64, 64),
    ]
    z, context = torch.randn(2, 100), torch.randn(2, 1024)
    assert torch.equal(net(z, torch.full((2,), 50.0), context), net(z, torch.full((2,), 20.0), context))
    assert not torch.equal(net(z, torch.full((2,), 5.0), context), net(z, torch.full((2,), 6.0), context))


#: The official encoders' stems and stride-2 convs, (in, out, kernel, stride, padding), and the size of
#: the map the last conv (kernel = that size, no padding, to 1024 channels) reduces to 1 x 1.
THIRTY_TWO = [(3, 64, 3, 1, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1), (256, 512, 4, 2, 1)]
ENCODERS = {
    "svhn": (3, 32, 64, THIRTY_TWO, 4),  # Encoder_cifar10, nif 64
    "cifar10": (3, 32, 64, THIRTY_TWO, 4),
    "celeba64": (3, 64, 64, [*THIRTY_TWO, (512, 512, 4, 2, 1)], 4),  # one more, the width held at 8 nif
    "mnist": (1, 28, 128, [(1, 128, 3, 1, 1), (128, 256, 4, 2, 1), (256, 512, 4, 2, 1), (512, 1024, 4, 2, 1)], 3),
}


@pytest.mark.parametrize(("channels", "size", "nif", "layout", "last_map"), ENCODERS.values(), ids=ENCODERS.keys())
def test_the_conv_embedding_has_the_official_layers(
    channels: int, size: int, nif: int, layout: list[tuple[int, ...]], last_map: int
) -> None:
    encoder = ConvEmbedding(channels, size, nif, embed_dim=1024)
    width = layout[-1][1]
    assert conv_layout(encoder) == [*layout, (width, 1024, last_map, 1, 0)]
    norms = [m for m in encoder.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert [m.num_features for m in norms] == [out for _, out, *_ in layout] and all(m.affine for m in norms)
    slopes = [m.negative_slope for m in encoder.modules() if isinstance(m, nn.LeakyReLU)]
    assert slopes == [0.2] * len(layout)
    assert isinstance(encoder.net[-1], nn.Conv2d), "nothing after the last conv"
    assert encoder(torch.randn(2, channels, size, size)).shape == (2, 1024)


def test_the_conv_embedding_refuses_images_of_another_shape_in_one_line() -> None:
    """CPU. The amortizer's start given 28x28 digits by an encoder built for 32x32: one line naming
    both shapes and the fix, not a convolution's error from inside the net."""
    amortizer = LatentDiffusionAmortizer(4, ConvEmbedding(1, 32, nif=4, embed_dim=16), embed_dim=16, nf=1)
    expected = r"ConvEmbedding\(channels=1, image_size=32\) embeds images \(B, 1, 32, 32\), got \(4, 1, 28, 28\)"
    with pytest.raises(ValueError, match=expected):
        amortizer.start(4, context=torch.randn(4, 1, 28, 28))


def test_the_mlp_embedding_flattens_and_the_null_embedding_draws_fresh_noise() -> None:
    assert MLPEmbedding([1, 8, 8], hidden=32, embed_dim=16, depth=2)(torch.randn(5, 1, 8, 8)).shape == (5, 16)
    assert MLPEmbedding(2, depth=0)(torch.randn(5, 2)).shape == (5, 64)
    null = NullEmbedding(latent_dim=3, embed_dim=16)
    state = torch.get_rng_state()
    first = null(4, torch.Generator().manual_seed(0))
    assert torch.equal(first, null(4, torch.Generator().manual_seed(0)))
    assert torch.equal(torch.get_rng_state(), state)
    stream = torch.Generator().manual_seed(0)
    assert not torch.allclose(null(4, stream), null(4, stream)), "fresh xi at every call"
    assert first.shape == (4, 16)


def test_the_amortizer_starts_chains_detached_without_autograd_from_its_generator_only() -> None:
    q = small_amortizer()
    assert isinstance(q, ChainInitializer) and isinstance(q, nn.Module)
    grad_modes: list[bool] = []
    trunk = q.denoiser.trunk
    q.denoiser.trunk = lambda *args: grad_modes.append(torch.is_grad_enabled()) or trunk(*args)
    x = torch.randn(6, 1, 8, 8)
    state = torch.get_rng_state()
    z = q.start(context=x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state), "the global stream is left alone"
    assert z.shape == (6, 3) and z.dtype == torch.float32
    assert not z.requires_grad and z.grad_fn is None
    assert grad_modes == [False] * 5, "one denoiser call per step, none with autograd"
    assert torch.equal(z, q.start(6, x, generator=torch.Generator().manual_seed(1)))
    assert not torch.allclose(z, q.start(context=x, generator=torch.Generator().manual_seed(2)))
    unconditional = q.start(6, generator=torch.Generator().manual_seed(1))
    assert unconditional.shape == (6, 3) and not torch.allclose(unconditional, z)
    assert torch.equal(q(6, generator=torch.Generator().manual_seed(1)), unconditional), "Q(n) samples"
    assert q.sample(x=x, generator=torch.Generator().manual_seed(1), steps=2).shape == (6, 3)
    with pytest.raises(ValueError, match="n=4"):
        q.start(4, x)


@pytest.mark.parametrize("conditional", [True, False], ids=["conditional", "unconditional"])
def test_a_start_is_the_ancestral_sampler_of_the_denoisers_whole_forward(conditional: bool) -> None:
    """The start's loop precomputes the time embeddings and splits every layer's context projection
    (DiffusionMLP.on_grid): the same samples as ancestral_sample calling the denoiser's whole forward
    at every step (the update itself: test_diffusion_schedule.py's step by hand)."""
    torch.manual_seed(0)
    q = small_amortizer(sampling_steps=6, time_dim=8).double()  # in float64: rounding cannot hide a slip
    with torch.no_grad():
        for parameter in q.parameters():  # biases too: PyTorch's init leaves no term negligible
            parameter.add_(0.2 * torch.randn_like(parameter))
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64) if conditional else None
    got = q.start(5, x, generator=torch.Generator().manual_seed(4))

    stream = torch.Generator().manual_seed(4)
    z_T = torch.randn(5, 3, generator=stream, dtype=torch.float64)
    context = q.condition(x, 5, stream)
    with torch.no_grad():
        expected = ancestral_sample(
            lambda z, logsnr: q.denoiser(z, logsnr, context), z_T, q.schedule, 6, generator=stream
        )
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_the_loss_is_the_estimators_with_per_example_conditions() -> None:
    q = small_amortizer()
    x, z = torch.randn(8, 1, 8, 8), torch.randn(8, 3)
    loss = q.loss(x, z, generator=torch.Generator().manual_seed(3))
    context = q.condition(x)
    expected = denoising_loss(
        lambda z_t, logsnr: q.denoise(z_t, logsnr, context), z, q.schedule, generator=torch.Generator().manual_seed(3)
    )
    assert torch.allclose(loss, expected.mean())

    mask = torch.tensor([True, False] * 4)
    mixed = q.condition_mixed(x, mask, torch.Generator().manual_seed(4))
    nulls = q.null(8, torch.Generator().manual_seed(4))
    assert torch.allclose(mixed[mask], context[mask]) and torch.allclose(mixed[~mask], nulls[~mask])

    q.zero_grad()
    q.loss(x, z, mask, generator=torch.Generator().manual_seed(5)).backward()
    for part in (q.encoder, q.null, q.denoiser):
        assert all(p.grad is not None for p in part.parameters()), type(part).__name__
    assert q.loss(None, z, generator=torch.Generator().manual_seed(5)).shape == ()  # the unconditional branch alone
    with pytest.raises(ValueError, match="bool"):
        q.loss(x, z, mask.float())
    with pytest.raises(ValueError, match="rows"):
        q.loss(x[:4], z)


def test_the_ema_copy_and_the_config_reproduce_the_amortizer() -> None:
    q = small_amortizer()
    average = AveragedStart(q)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(
        average.start(context=x, generator=torch.Generator().manual_seed(6)),
        q.start(context=x, generator=torch.Generator().manual_seed(6)),
    )
    rebuilt = build(to_config(q))
    assert isinstance(rebuilt, LatentDiffusionAmortizer) and isinstance(rebuilt.encoder, MLPEmbedding)
    rebuilt.load_state_dict(q.state_dict())
    assert torch.equal(
        rebuilt.start(context=x, generator=torch.Generator().manual_seed(6)),
        q.start(context=x, generator=torch.Generator().manual_seed(6)),
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"sampling_steps": 0}, "sampling_steps"),
        ({"sampling_steps": 1}, "sampling_steps"),
        ({"logsnr_min": 2.0, "logsnr_max": 2.0}, "logsnr_max"),
        ({"logsnr_min": -30.0}, "logsnr_min"),
        ({"variance": "medium"}, "variance"),
        ({"time_dim": 15}, "time_dim"),
        ({"nf": 0}, "nf"),
        ({"sampling_noise": "false"}, "sampling_noise"),
    ],
)
def test_the_constructor_refuses_bad_values_in_one_line(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named) as error:
        small_amortizer(**kwargs)
    assert "\n" not in str(error.value) and "LatentDiffusionAmortizer" in str(error.value)


def test_a_wrong_encoder_is_named() -> None:
    with pytest.raises(TypeError, match="encoder must be an nn.Module"):
        LatentDiffusionAmortizer(3, lambda x: x, 16)  # type: ignore[arg-type]
    q = LatentDiffusionAmortizer(3, MLPEmbedding(4, embed_dim=8), 16, nf=1, time_dim=16, sampling_steps=2)
    with pytest.raises(ValueError, match=r"\(B, embed_dim\) = \(2, 16\), got \(2, 8\)"):
        q.start(context=torch.randn(2, 4))


def test_under_autocast_a_start_casts_the_trunks_weights_once_not_at_every_step() -> None:
    """A CUDA graph records no autocast cast cache: weights cast at every step would add about 40
    kernels a step to a bf16 start (bf16 slower than fp32). Counted on the CPU's bf16 autocast."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class WeightCasts(TorchDispatchMode):
        def __init__(self, parameters: set[int]) -> None:
            super().__init__()
            self.parameters, self.count = parameters, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
            if func is torch.ops.aten._to_copy.default and id(args[0]) in self.parameters:
                self.count += 1
            return func(*args, **(kwargs or {}))

    counts = {}
    for steps in (3, 9):
        q = small_amortizer(sampling_steps=steps)
        casts = WeightCasts({id(p) for p in q.denoiser.parameters()})
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), casts:
            q.start(4, torch.randn(4, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        counts[steps] = casts.count
    assert counts[3] > 0 and counts[9] == counts[3], counts
