"""Perplexity under an LSTM language model, and training one: the parts of the text metrics.

Sentences are LongTensors ``(N, T)`` laid out ``[bos, w_1 .. w_n, eos, pad ..]`` (the layout of
:class:`lebm.data.Vocabulary`). A language model :class:`~lebm.nets.text.LSTMTextGenerator`
with ``latent_dim = 0`` reads ``x[:, :-1]`` and predicts ``x[:, 1:]``; the **predicted tokens** of
a sentence are ``w_1 .. w_n`` and ``eos`` (``bos`` is given, padding is masked). Over a corpus::

    perplexity = exp( sum_sentences NLL / sum_sentences #predicted tokens )

with the NLL in nats (:func:`canonical_sentences` puts generated sentences with stray special
tokens in this layout first). The two sums (:func:`nll_totals`) add over batches and over processes, so a
corpus split over DDP ranks has the perplexity of the whole corpus.

The text metrics of Pang et al., NeurIPS 2020, Table 2
(:class:`lebm.callbacks.TextGenerationMetrics`) train two such models with
:func:`train_language_model`: one on the real training sentences (FPPL: perplexity of generated
text under it) and one on generated sentences (RPPL: perplexity of real text under it). Training
draws every random number (initial weights, batch order, dropout) from the given
``torch.Generator``; torch's global RNG is left as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lebm.nets.text import LSTMTextGenerator, token_nll

#: Defaults of :func:`train_language_model` (the sizes a 10k-word corpus such as PTB needs).
LANGUAGE_MODEL_DEFAULTS = {
    "embed_dim": 128,
    "hidden_dim": 256,
    "num_layers": 1,
    "dropout": 0.3,
    "epochs": 10,
    "batch_size": 64,
    "lr": 1e-3,
    "clip": 5.0,
}


def check_sentences(x: Tensor, what: str = "sentences") -> None:
    """Fail unless ``x`` is a LongTensor ``(N, T)`` with ``T >= 2`` (room for bos and eos)."""
    if not isinstance(x, Tensor) or x.dtype != torch.long or x.ndim != 2 or x.shape[1] < 2:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(
            f"{what} must be token ids (N, T) int64 laid out [bos, w.., eos, pad..] with T >= 2, got {got}: "
            "encode word lists with lebm.data.Vocabulary.to_tensor"
        )


def trim_padding(x: Tensor, pad_id: int) -> Tensor:
    """``x`` ``(N, T)`` without its trailing columns that are padding in every row: ``(N, T')``, ``T' >= 2``."""
    used = (x != pad_id).any(0).nonzero()
    width = int(used.max()) + 1 if used.numel() else 0
    return x[:, : max(width, 2)]


def canonical_sentences(x: Tensor, pad_id: int = 0, bos_id: int = 1, eos_id: int = 2, unk_id: int = 3) -> Tensor:
    """Generated sentences in the layout ``[bos, w_1 .. w_n, eos, pad ..]``: ``(N, T) -> (N, T')``.

    A sentence ends at its first eos (what follows becomes padding), or, without one, after its
    last non-padding token (an eos is appended). Padding or bos among the words becomes unk, and
    the first column is bos. A decoder that samples a special token inside a sentence thus gets
    an unknown word there, which a language model scores like any other token (padding inside a
    sentence would otherwise drop out of the perplexity).
    """
    check_sentences(x, "generated sentences")
    x = nn.functional.pad(x, (0, 1), value=pad_id)  # room for an appended eos
    body = x[:, 1:]
    positions = torch.arange(body.shape[1], device=x.device).expand_as(body)
    beyond = body.shape[1]
    first_eos = torch.where(body == eos_id, positions, beyond).min(1, keepdim=True).values
    after_last_word = torch.where(body != pad_id, positions, -1).max(1, keepdim=True).values + 1
    end = torch.where(first_eos < beyond, first_eos, after_last_word)
    special = (body == pad_id) | (body == bos_id)
    body = torch.where((positions < end) & special, unk_id, body)
    body = torch.where(positions == end, eos_id, body)
    body = torch.where(positions > end, pad_id, body)
    bos = torch.full_like(x[:, :1], bos_id)
    return trim_padding(torch.cat([bos, body], dim=1), pad_id)


def predicted_tokens(x: Tensor, pad_id: int) -> Tensor:
    """The number of predicted tokens (``w_1 .. w_n`` and eos) per sentence: ``(N, T) -> (N,)`` int64."""
    return (x[:, 1:] != pad_id).sum(1)


def sentence_nll(model: LSTMTextGenerator, x: Tensor) -> Tensor:
    """``-log p(x) = -sum_{t>=1} log p(x_t | x_<t)`` per sentence, in nats: ``(N, T) -> (N,)`` float.

    The sum runs over the predicted tokens (``bos`` given, padding masked). The model is used in
    whatever mode it is in (call ``model.eval()`` for dropout-free values); no gradients are kept.
    """
    check_sentences(x)
    x = x.to(model.output.weight.device)
    with torch.no_grad():
        return token_nll(model(x[:, :-1]), x[:, 1:], model.pad_id)


def _batches(sentences: Tensor | Iterable[Tensor], batch_size: int) -> Iterable[Tensor]:
    if isinstance(sentences, Tensor):
        check_sentences(sentences)
        return sentences.split(batch_size)
    return sentences


def nll_totals(
    model: LSTMTextGenerator, sentences: Tensor | Iterable[Tensor], batch_size: int = 256
) -> tuple[Tensor, Tensor]:
    """``(total NLL, total predicted tokens)`` of a corpus, both float64 scalars on the model's device.

    ``sentences``: one LongTensor ``(N, T)`` (read in batches of ``batch_size``) or an iterable of
    such batches (e.g. a DataLoader). Sums of several corpora or processes add up:
    ``perplexity = exp(sum NLL / sum tokens)`` (:func:`perplexity_from_totals`). The model is put in
    eval mode and left there.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    device = model.output.weight.device
    total_nll = torch.zeros((), dtype=torch.float64, device=device)
    total_tokens = torch.zeros((), dtype=torch.float64, device=device)
    for batch in _batches(sentences, batch_size):
        check_sentences(batch, "each batch of sentences")
        batch = trim_padding(batch.to(device), model.pad_id)
        total_nll += sentence_nll(model, batch).double().sum()
        total_tokens += predicted_tokens(batch, model.pad_id).sum().double()
    return total_nll, total_tokens


def perplexity_from_totals(total_nll: Tensor | float, total_tokens: Tensor | float) -> float:
    """``exp(total_nll / total_tokens)``; fails when no token was predicted."""
    tokens = float(total_tokens)
    if tokens <= 0:
        raise ValueError("perplexity needs at least one predicted token: the corpus is empty")
    return math.exp(float(total_nll) / tokens)


def perplexity(model: LSTMTextGenerator, sentences: Tensor | Iterable[Tensor], batch_size: int = 256) -> float:
    """Corpus perplexity ``exp(sum NLL / sum predicted tokens)`` of ``sentences`` under ``model``
    (see :func:`nll_totals` for the accepted inputs)."""
    return perplexity_from_totals(*nll_totals(model, sentences, batch_size))


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))


def train_language_model(
    sentences: Tensor,
    vocab_size: int,
    *,
    embed_dim: int = LANGUAGE_MODEL_DEFAULTS["embed_dim"],
    hidden_dim: int = LANGUAGE_MODEL_DEFAULTS["hidden_dim"],
    num_layers: int = LANGUAGE_MODEL_DEFAULTS["num_layers"],
    dropout: float = LANGUAGE_MODEL_DEFAULTS["dropout"],
    epochs: int = LANGUAGE_MODEL_DEFAULTS["epochs"],
    batch_size: int = LANGUAGE_MODEL_DEFAULTS["batch_size"],
    lr: float = LANGUAGE_MODEL_DEFAULTS["lr"],
    clip: float | None = LANGUAGE_MODEL_DEFAULTS["clip"],
    pad_id: int = 0,
    generator: torch.Generator,
    device: torch.device | str = "cpu",
) -> LSTMTextGenerator:
    """An LSTM language model fitted to ``sentences`` ``(N, T)`` long; returned in eval mode.

    Each of ``epochs`` passes visits the sentences in a fresh random order, in batches of
    ``batch_size`` (the last one smaller), and takes one Adam step on the mean NLL per predicted
    token of the batch, ``sum_b NLL_b / sum_b #predicted_b`` (gradient norm clipped to ``clip``;
    None: no clipping). No early stopping: the model after the last epoch is returned.

    Randomness: the batch orders come from ``generator``; the initial weights and dropout masks
    from torch's global RNG reseeded from ``generator`` inside ``torch.random.fork_rng``, so the
    global RNG is unchanged afterwards and one seed gives one model (on one device type).

    Args:
        sentences: training sentences ``[bos, w.., eos, pad..]``; ids must be ``< vocab_size``.
        vocab_size: the size of the model's token table.
        embed_dim: size of the word embeddings (:class:`LSTMTextGenerator`).
        hidden_dim: size of the LSTM's hidden state.
        num_layers: number of stacked LSTM layers.
        dropout: dropout of the model in training.
        epochs: passes over ``sentences``.
        batch_size: sentences per optimisation step.
        lr: Adam's learning rate.
        clip: max norm of the gradients (None: no clipping).
        pad_id: the padding id.
        generator: the random stream (required: the metric must not depend on torch's global RNG).
        device: where to train.
    """
    check_sentences(sentences, "the language model's training sentences")
    if not isinstance(generator, torch.Generator):
        raise TypeError("train_language_model needs generator=torch.Generator(...) (its only source of randomness)")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"train_language_model needs epochs >= 1, batch_size >= 1, lr > 0; got {epochs, batch_size, lr}"
        )
    if len(sentences) == 0:
        raise ValueError("train_language_model needs at least one sentence")
    if int(sentences.max()) >= vocab_size or int(sentences.min()) < 0:
        raise ValueError(
            f"token ids must lie in [0, {vocab_size}) for a language model with vocab_size={vocab_size}, got ids in "
            f"[{int(sentences.min())}, {int(sentences.max())}]: map unknown ids to <unk> or raise vocab_size"
        )
    device = torch.device(device)
    sentences = sentences.to(device)
    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices), torch.inference_mode(False), torch.enable_grad():
        torch.manual_seed(_draw_seed(generator))
        model = LSTMTextGenerator(
            vocab_size,
            latent_dim=0,
            embed_dim=embed_dim,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            dropout=dropout,
            pad_id=pad_id,
        ).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(sentences), generator=generator, device=generator.device).to(device)
            for index in order.split(batch_size):
                batch = trim_padding(sentences[index], pad_id).clone()  # clone: no inference tensors in autograd
                nll = token_nll(model(batch[:, :-1]), batch[:, 1:], pad_id).sum()
                loss = nll / predicted_tokens(batch, pad_id).sum().clamp(min=1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
    return model.eval()
