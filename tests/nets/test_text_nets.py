"""Text nets: the LSTM generator's teacher forcing, the categorical likelihood, decoding, the
bidirectional encoder, and gradients through the LSTM in eval mode (chains in validation)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lebm.nets import BiLSTMEncoder, CategoricalDecoder, LSTMTextGenerator
from lebm.nets.text import rnn_backward_allowed, token_nll

PAD, BOS, EOS = 0, 1, 2


def sentences() -> torch.Tensor:
    """Three sentences ``[bos, w.., eos, pad..]`` over a vocabulary of 9 (ids 4..8 are words)."""
    return torch.tensor(
        [
            [BOS, 4, 5, 6, EOS, PAD],
            [BOS, 7, EOS, PAD, PAD, PAD],
            [BOS, 8, 8, 5, 4, EOS],
        ]
    )


def decoder(latent_dim: int = 3, **net: object) -> CategoricalDecoder:
    torch.manual_seed(0)
    options = dict(embed_dim=8, hidden_dim=16) | net
    return CategoricalDecoder(LSTMTextGenerator(9, latent_dim, **options), max_length=6)


def stepwise_nll(model: CategoricalDecoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``-log p(x|z)`` by feeding one token at a time through ``step`` (a second code path)."""
    net = model.net
    totals = []
    for row, latent in zip(x, z, strict=True):
        state = net.initial_state(latent[None], 1, x.device)
        total = 0.0
        for position in range(len(row) - 1):
            target = int(row[position + 1])
            if target == PAD:
                break
            logits, state = net.step(row[position : position + 1], state, latent[None])
            total -= float(torch.log_softmax(logits[0].detach(), 0)[target])
        totals.append(total)
    return torch.tensor(totals)


@pytest.mark.parametrize(
    "where", [dict(), dict(latent_to_state=False), dict(latent_to_input=False), dict(word_inputs=False)]
)
def test_teacher_forced_nll_equals_the_token_by_token_likelihood(where: dict) -> None:
    model = decoder(**where).eval()
    z = torch.randn(3, 3)
    x = sentences()
    assert torch.allclose(model.nll(x, z), stepwise_nll(model, x, z), atol=1e-4)


def test_padding_does_not_change_a_sentence_likelihood() -> None:
    model = decoder().eval()
    z = torch.randn(1, 3)
    short = torch.tensor([[BOS, 7, EOS]])
    padded = torch.tensor([[BOS, 7, EOS, PAD, PAD, PAD, PAD]])
    assert torch.allclose(model.nll(short, z), model.nll(padded, z), atol=1e-5)


def test_the_latent_changes_the_likelihood_through_either_path() -> None:
    x = sentences()
    for where in (dict(latent_to_state=False), dict(latent_to_input=False)):
        model = decoder(**where).eval()
        assert not torch.allclose(model.nll(x, torch.zeros(3, 3)), model.nll(x, torch.ones(3, 3)))


def test_without_word_inputs_the_next_word_depends_on_the_latent_and_position_only() -> None:
    z = torch.randn(1, 3).expand(2, 3)
    prefixes = torch.tensor([[BOS, 4, 5, 6, EOS], [BOS, 7, 8, 4, EOS]])
    blind = decoder(word_inputs=False).eval()
    assert torch.allclose(blind.net(prefixes, z)[0], blind.net(prefixes, z)[1], atol=1e-6)
    reading = decoder().eval()
    assert not torch.allclose(reading.net(prefixes, z)[0, 1:], reading.net(prefixes, z)[1, 1:])


def test_word_dropout_acts_in_training_only_and_spares_bos_and_padding() -> None:
    model = decoder(word_dropout=0.999)
    x, z = sentences(), torch.randn(3, 3)
    dropped = model.net.train()._drop_words(x)
    assert bool((dropped[:, 0] == BOS).all()) and torch.equal(dropped == PAD, x == PAD)
    assert bool((dropped[(x != PAD) & (x != BOS)] == 3).all())
    model.eval()
    plain = decoder().eval()  # same seed: same weights, no word dropout
    assert torch.allclose(model.nll(x, z), plain.nll(x, z))


def test_held_masks_fix_the_likelihood_for_the_batch_and_come_from_the_generator() -> None:
    model = decoder(word_dropout=0.5, dropout=0.3).train()
    x, z = sentences(), torch.randn(3, 3)
    with torch.no_grad():
        unheld = [model.nll(x, z) for _ in range(4)]
        assert any(not torch.equal(unheld[0], other) for other in unheld[1:])  # fresh masks per call
        model.hold_noise(x, torch.Generator().manual_seed(5))
        held = model.nll(x, z)
        torch.manual_seed(123)  # the global RNG plays no part while masks are held
        assert torch.equal(model.nll(x, z), held)
        assert torch.equal(model.nll(x[:, :4], z), model.nll(x[:, :4], z))  # a prefix uses the held masks too
        model.hold_noise(x, torch.Generator().manual_seed(5))
        assert torch.equal(model.nll(x, z), held)
        model.hold_noise(x, torch.Generator().manual_seed(6))
        assert not torch.equal(model.nll(x, z), held)
        model.release_noise()
        released = [model.nll(x, z) for _ in range(4)]
        assert any(not torch.equal(released[0], other) for other in released[1:])


def test_held_word_dropout_replaces_words_at_its_rate() -> None:
    model = decoder(word_dropout=0.3).train()
    x = torch.randint(4, 9, (400, 30))
    x[:, 0] = BOS
    model.hold_noise(x, torch.Generator().manual_seed(0))
    dropped = model.net._drop_words(x[:, :-1])
    assert bool((dropped[:, 0] == BOS).all())
    rate = float((dropped[:, 1:] == 3).float().mean())
    assert abs(rate - 0.3) < 0.01, rate
    assert torch.equal(model.net._drop_words(x[:, :-1]), dropped)
    model.eval().hold_noise(x, torch.Generator().manual_seed(0))  # nothing is held in eval mode
    assert torch.equal(model.net._drop_words(x), x)


def test_token_nll_counts_eos_and_not_bos_or_padding() -> None:
    uniform = torch.zeros(2, 4, 9)  # every next-token distribution uniform over 9 tokens
    targets = torch.tensor([[5, 6, EOS, PAD], [EOS, PAD, PAD, PAD]])
    assert torch.allclose(token_nll(uniform, targets, PAD), torch.tensor([3 * math.log(9), math.log(9)]))


def test_metrics_count_predicted_words_and_accuracy() -> None:
    model = decoder().eval()
    metrics = model.metrics(sentences(), torch.randn(3, 3))
    assert metrics["words"].tolist() == [4.0, 2.0, 5.0]
    assert bool(((metrics["token_accuracy"] >= 0) & (metrics["token_accuracy"] <= 1)).all())


def test_greedy_decoding_is_well_formed_and_follows_the_argmax() -> None:
    model = decoder().eval()
    z = torch.randn(5, 3)
    x = model.decode(z)
    assert x.dtype == torch.long and bool((x[:, 0] == BOS).all()) and x.shape[1] <= model.max_length + 2
    for row in x:
        eos = (row == EOS).nonzero().flatten()
        assert len(eos) == 1 and bool((row[eos[0] + 1 :] == PAD).all()) and bool((row[1 : eos[0]] != PAD).all())
    # greedy means: every emitted token is the argmax given the prefix
    logits = model.net(x[:, :-1], z)
    emitted = x[:, 1:] != PAD
    emitted[:, model.max_length :] = False  # an eos appended after max_length words is forced, not chosen
    assert bool((logits.argmax(2)[emitted] == x[:, 1:][emitted]).all())


def test_sampled_decoding_draws_from_the_generator_and_low_temperature_is_greedy() -> None:
    model = decoder().eval()
    z = torch.randn(6, 3)
    first = model.decode(z, strategy="sample", generator=torch.Generator().manual_seed(3))
    again = model.decode(z, strategy="sample", generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)
    cold = model.decode(z, strategy="sample", temperature=1e-4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(cold, model.decode(z))


def test_decoding_stops_at_max_length_with_an_eos() -> None:
    model = decoder()
    with torch.no_grad():  # make eos impossible: every row runs to max_length, then gets one
        model.net.output.bias[EOS] = -1e4
    x = model.eval().decode(torch.randn(2, 3))
    assert x.shape == (2, model.max_length + 2) and bool((x[:, -1] == EOS).all())


def test_gradients_reach_the_latent_in_eval_mode() -> None:
    model = decoder().eval()
    z = torch.randn(3, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(model.nll(sentences(), z).sum(), z)
    assert grad.abs().sum() > 0


def test_cudnn_is_switched_off_for_eval_mode_backward_on_cuda_only() -> None:
    net = LSTMTextGenerator(9, 2, embed_dim=4, hidden_dim=4).eval()
    cuda_input = SimpleNamespace(is_cuda=True)
    before = torch.backends.cudnn.enabled
    with torch.enable_grad(), rnn_backward_allowed(net, cuda_input):
        assert torch.backends.cudnn.enabled is False
    assert torch.backends.cudnn.enabled == before
    with torch.no_grad(), rnn_backward_allowed(net, cuda_input):  # no backward: cuDNN may stay
        assert torch.backends.cudnn.enabled == before
    with torch.enable_grad(), rnn_backward_allowed(net.train(), cuda_input):  # training mode has a backward
        assert torch.backends.cudnn.enabled == before


@pytest.mark.gpu
def test_eval_mode_backward_through_the_lstm_on_gpu() -> None:
    model = decoder().cuda().eval()
    z = torch.randn(3, 3, device="cuda", requires_grad=True)
    (grad,) = torch.autograd.grad(model.nll(sentences().cuda(), z).sum(), z)
    assert torch.isfinite(grad).all()


def test_bidirectional_encoder_ignores_padding() -> None:
    torch.manual_seed(0)
    encoder = BiLSTMEncoder(9, latent_dim=3, embed_dim=8, hidden_dim=8).eval()
    short = torch.tensor([[BOS, 7, 5, EOS]])
    padded = torch.tensor([[BOS, 7, 5, EOS, PAD, PAD, PAD]])
    a, b = encoder(short), encoder(padded)
    assert a.mean.shape == (1, 3)
    assert torch.allclose(a.mean, b.mean, atol=1e-6) and torch.allclose(a.logvar, b.logvar, atol=1e-6)
    other = encoder(torch.tensor([[BOS, 5, 7, EOS]]))  # word order matters
    assert not torch.allclose(a.mean, other.mean)


def test_bad_text_configuration_fails_with_the_fix() -> None:
    with pytest.raises(ValueError, match="latent_dim >= 1"):
        CategoricalDecoder(LSTMTextGenerator(9, 0))
    with pytest.raises(ValueError, match="latent must enter"):
        LSTMTextGenerator(9, 2, latent_to_state=False, latent_to_input=False)
    with pytest.raises(ValueError, match="token ids"):
        decoder().nll(torch.randn(2, 5), torch.randn(2, 3))
    too_big = SimpleNamespace(vocabulary=list(range(20)))
    with pytest.raises(ValueError, match="vocab_size to at least 20"):
        decoder().bind_data(too_big)
