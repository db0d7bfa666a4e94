"""Text networks: an LSTM sentence generator, its categorical observation model, and a
bidirectional LSTM inference network.

Sentences are LongTensors ``(B, T)`` of token ids laid out ``[bos, w_1 .. w_n, eos, pad ..]``
(:class:`lebm.data.Vocabulary`: pad 0, bos 1, eos 2, unk 3). The observation model owns the
likelihood and the vocabulary, so the methods treat a sentence like any other ``x``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lebm import arguments
from lebm.config import Configurable
from lebm.nets.decoders import Decoder
from lebm.nets.encoders import DiagonalGaussian, InferenceNetwork

Decoding = Literal["greedy", "sample"]
DECODINGS = ("greedy", "sample")


@contextlib.contextmanager
def rnn_backward_allowed(module: nn.Module, inputs: Tensor) -> Iterator[None]:
    """Let gradients flow through ``module``'s recurrent layers in eval mode.

    cuDNN implements RNN backward only in training mode, and latent chains differentiate the
    decoder inside validation (modules in eval mode). On CUDA, when ``module`` is in eval mode and
    gradients are being recorded, this disables cuDNN for the block (PyTorch's native LSTM kernels
    then run, and they have a backward in any mode); otherwise it does nothing.
    """
    if inputs.is_cuda and not module.training and torch.is_grad_enabled():
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield


def lengths_from_padding(x: Tensor, pad_id: int) -> Tensor:
    """Tokens per row that are not padding: ``(B, T) -> (B,)`` int64."""
    return (x != pad_id).sum(1)


class LSTMTextGenerator(nn.Module, Configurable):
    """An LSTM language model over token ids, optionally conditioned on a latent ``z``.

    With a latent (``latent_dim > 0``) the latent reaches the LSTM in the two places LEBM-style
    text models use (both switchable):

    - ``latent_to_state``: ``h_0 = tanh(W_h z)`` and ``c_0 = W_c z`` for every layer;
    - ``latent_to_input``: ``z`` concatenated to each step's word embedding.

    ``forward(tokens, z) -> logits``: ``(B, T) [, (B, latent_dim)] -> (B, T, vocab_size)``, the
    logits of the next token after each input position. With ``latent_dim = 0`` it is a plain
    LSTM language model (the text metrics' fluency and coverage models).

    Args:
        vocab_size: size of the token table (the vocabulary's size, specials included, or more).
        latent_dim: size of ``z``; 0 for an unconditional language model.
        embed_dim: size of the word embeddings.
        hidden_dim: size of the LSTM's hidden state.
        num_layers: number of stacked LSTM layers.
        dropout: dropout on the embeddings and on the LSTM's output (training mode only).
        word_dropout: probability that an input word (not ``<bos>``) is replaced by ``unk_id`` in
            training mode (Bowman et al. 2016): it weakens the autoregressive path so that the
            decoder has to read ``z`` instead of ignoring it (posterior collapse).
        latent_to_state: ``z`` sets the initial state of every layer (see above); this or
            ``latent_to_input``, at least one, when ``latent_dim > 0``.
        latent_to_input: ``z`` is concatenated to each step's word embedding (see above).
        pad_id: the padding id (its embedding row is kept at zero).
        unk_id: the id word dropout substitutes.
        bos_id: the id word dropout never replaces.
        word_inputs: feed the previous words at all. False feeds ``unk_id`` at every step, in
            training and evaluation alike, so the sentence depends on the words only through
            ``z`` (and the position): the latent must carry the sentence.

    **Held noise.** Word dropout and dropout are random in training mode. A method's training
    step calls :meth:`hold_noise` with the batch and its training stream before its chains: the
    masks are drawn once, from that per-rank stream, and every teacher-forced ``forward`` of the
    batch (each posterior-chain step and the decoder's update) uses the same masks, so the chain
    samples one fixed ``p(z | x, masks)`` and the run is reproduced by seed and rank alone.
    Without held masks (a user's own training loop) each ``forward`` draws new masks from torch's
    global RNG, as ``nn.Dropout`` does.
    """

    def __init__(
        self,
        vocab_size: int,
        latent_dim: int = 0,
        embed_dim: int = 256,
        hidden_dim: int = 512,
        num_layers: int = 1,
        dropout: float = 0.0,
        latent_to_state: bool = True,
        latent_to_input: bool = True,
        pad_id: int = 0,
        word_dropout: float = 0.0,
        unk_id: int = 3,
        word_inputs: bool = True,
        bos_id: int = 1,
    ) -> None:
        super().__init__()
        for name, value in {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden_dim": hidden_dim}.items():
            if value < 1:
                raise ValueError(f"LSTMTextGenerator {name} must be >= 1, got {value}")
        if num_layers < 1:
            raise ValueError(f"LSTMTextGenerator num_layers must be >= 1, got {num_layers}")
        if latent_dim < 0:
            raise ValueError(f"LSTMTextGenerator latent_dim must be >= 0, got {latent_dim}")
        if not (0.0 <= dropout < 1.0 and 0.0 <= word_dropout < 1.0):
            raise ValueError(
                f"LSTMTextGenerator dropout and word_dropout must be in [0, 1), got {dropout}, {word_dropout}"
            )
        if latent_dim > 0 and not (latent_to_state or latent_to_input):
            raise ValueError("the latent must enter the LSTM somewhere: set latent_to_state or latent_to_input to true")
        self.vocab_size, self.latent_dim = int(vocab_size), int(latent_dim)
        self.hidden_dim, self.num_layers, self.pad_id = int(hidden_dim), int(num_layers), int(pad_id)
        self.word_dropout, self.word_inputs = float(word_dropout), bool(word_inputs)
        self.unk_id, self.bos_id = int(unk_id), int(bos_id)
        self.latent_to_state = bool(latent_to_state) and latent_dim > 0
        self.latent_to_input = bool(latent_to_input) and latent_dim > 0
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        input_dim = embed_dim + (latent_dim if self.latent_to_input else 0)
        self.lstm = nn.LSTM(input_dim, hidden_dim, num_layers=num_layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_dim, vocab_size)
        if self.latent_to_state:
            self.latent_to_hidden = nn.Linear(latent_dim, 2 * num_layers * hidden_dim)
        self.embed_dim = int(embed_dim)
        self._held: dict[str, Tensor] = {}  # this batch's masks (hold_noise), keyed by where they act

    def initial_state(self, z: Tensor | None, batch: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        """``(h_0, c_0)``, each ``(num_layers, B, hidden_dim)``, from ``z`` ``(B, latent_dim)``;
        None (zeros) when the latent does not set the state."""
        if not self.latent_to_state:
            return None
        h, c = self.latent_to_hidden(z).view(batch, 2, self.num_layers, self.hidden_dim).unbind(1)
        return torch.tanh(h).transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()

    # ------------------------------------------------------------------- held noise
    def hold_noise(self, tokens: Tensor, generator: torch.Generator | None = None) -> None:
        """Draw the masks of a batch of sentences ``tokens`` ``(B, T)`` from ``generator`` and hold
        them for every teacher-forced ``forward`` on (a prefix of) that batch until
        :meth:`release_noise`: the word-dropout mask ``(B, T)`` (``u < word_dropout``, ``u ~ U(0, 1)``)
        and the dropout masks of the embeddings ``(B, T, embed_dim)`` and of the LSTM's output
        ``(B, T, hidden_dim)`` (``1[u >= p] / (1 - p)``). Nothing is drawn in eval mode or when
        neither kind of dropout is on."""
        self._held = {}
        if not self.training:
            return
        batch, length = tokens.shape
        device = tokens.device
        if self.word_inputs and self.word_dropout > 0:
            self._held["words"] = torch.rand(batch, length, generator=generator, device=device) < self.word_dropout
        p = self.dropout.p
        if p > 0:
            for where, width in (("embedding", self.embed_dim), ("hidden", self.hidden_dim)):
                keep = torch.rand(batch, length, width, generator=generator, device=device) >= p
                self._held[where] = keep.to(self.output.weight.dtype) / (1.0 - p)

    def release_noise(self) -> None:
        """Forget the held masks: later ``forward`` calls draw their own again."""
        self._held = {}

    def _held_mask(self, where: str, tokens: Tensor) -> Tensor | None:
        """The held mask for ``where`` cut to ``tokens`` ``(B, T)``: None when none is held for
        this batch (another batch size, or longer sentences than the held batch)."""
        mask = self._held.get(where)
        if mask is None or mask.shape[0] != tokens.shape[0] or mask.shape[1] < tokens.shape[1]:
            return None
        return mask[:, : tokens.shape[1]]

    def _dropout(self, values: Tensor, where: str, tokens: Tensor, held: bool) -> Tensor:
        """Dropout of ``values`` ``(B, T, D)`` with this batch's held mask (when ``held`` and one
        is held), else ``nn.Dropout``'s own draw."""
        mask = self._held_mask(where, tokens) if held and self.training else None
        return self.dropout(values) if mask is None else values * mask

    def _drop_words(self, tokens: Tensor, held: bool = True) -> Tensor:
        """Every input word (not ``<bos>``, not padding) becomes ``unk_id`` without ``word_inputs``;
        in training mode, each one does with probability ``word_dropout`` (the held mask when
        ``held`` and one is held for this batch). ``(B, T) -> (B, T)``."""
        if self.word_inputs and (not self.training or self.word_dropout == 0):
            return tokens
        if self.word_inputs:
            drop = self._held_mask("words", tokens) if held else None
            if drop is None:
                drop = torch.rand(tokens.shape, device=tokens.device) < self.word_dropout
        else:
            drop = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
        return tokens.masked_fill(drop & (tokens != self.pad_id) & (tokens != self.bos_id), self.unk_id)

    def _inputs(self, tokens: Tensor, z: Tensor | None, held: bool = True) -> Tensor:
        """Step inputs ``(B, T, embed_dim [+ latent_dim])``; ``held``: use this batch's held masks
        (teacher forcing over whole sentences, not one decoding step)."""
        embedded = self._dropout(self.embedding(self._drop_words(tokens, held)), "embedding", tokens, held)
        if self.latent_to_input:
            embedded = torch.cat([embedded, z.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=2)
        return embedded

    def _check_latent(self, z: Tensor | None, batch: int) -> None:
        if self.latent_dim == 0:
            return
        if z is None or z.shape != (batch, self.latent_dim):
            got = None if z is None else tuple(z.shape)
            raise ValueError(f"LSTMTextGenerator expects latents of shape ({batch}, {self.latent_dim}), got {got}")

    def forward(self, tokens: Tensor, z: Tensor | None = None) -> Tensor:
        """Next-token logits ``(B, T, vocab_size)`` after each of ``tokens`` ``(B, T)``."""
        batch = tokens.shape[0]
        self._check_latent(z, batch)
        z = None if z is None else z.to(self.output.weight.dtype)
        state = self.initial_state(z, batch, tokens.device)
        with rnn_backward_allowed(self, tokens):
            hidden, _ = self.lstm(self._inputs(tokens, z), state)
        return self.output(self._dropout(hidden, "hidden", tokens, held=True))

    def step(
        self, token: Tensor, state: tuple[Tensor, Tensor] | None, z: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One decoding step: ``token`` ``(B,)`` -> next-token logits ``(B, vocab_size)`` and the new state."""
        with rnn_backward_allowed(self, token):
            hidden, state = self.lstm(self._inputs(token.unsqueeze(1), z, held=False), state)
        return self.output(self.dropout(hidden[:, 0])), state


def token_nll(logits: Tensor, targets: Tensor, pad_id: int) -> Tensor:
    """``-sum_t log softmax(logits_t)[target_t]`` over non-padding targets: ``(B, T, V), (B, T) -> (B,)``."""
    per_token = nn.functional.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
    return per_token.masked_fill(targets == pad_id, 0.0).sum(1)


def decode_tokens(
    net: LSTMTextGenerator,
    z: Tensor | None,
    n: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_length: int,
    strategy: Decoding = "greedy",
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    transform: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Sentences ``(n, T)`` ``[bos, w.., eos, pad..]`` from ``net`` (given ``z`` ``(n, latent_dim)``).

    Each step takes the argmax (``greedy``) or a draw from ``softmax(logits / temperature)``
    (``sample``, from ``generator``). A row stops at its first eos; a row with ``max_length`` words
    and no eos gets one appended. ``T <= max_length + 2``. ``transform`` edits each step's logits
    ``(n, V)`` first (e.g. masking ids outside the vocabulary).
    """
    if strategy not in DECODINGS:
        raise ValueError(f"decoding strategy must be one of {DECODINGS}, got {strategy!r}")
    if temperature <= 0:
        raise ValueError(f"decoding temperature must be > 0, got {temperature}")
    device = device if device is not None else net.output.weight.device
    token = torch.full((n,), bos_id, dtype=torch.long, device=device)
    state = net.initial_state(z, n, device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    rows = [token]
    for _ in range(max_length):
        logits, state = net.step(token, state, z)
        if transform is not None:
            logits = transform(logits)
        if strategy == "greedy":
            token = logits.argmax(1)
        else:
            probabilities = torch.softmax(logits.float() / temperature, dim=1)
            token = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
        token = token.masked_fill(finished, pad_id)
        rows.append(token)
        finished = finished | (token == eos_id)
        if bool(finished.all()):  # one host sync per step: decoding is not a chain's hot path
            break
    tokens = torch.stack(rows, dim=1)
    if not bool(finished.all()):
        tail = torch.where(finished, pad_id, eos_id).to(tokens)
        tokens = torch.cat([tokens, tail.unsqueeze(1)], dim=1)
    return tokens


class CategoricalDecoder(Decoder):
    """``p(x|z) = prod_t Cat(x_t | softmax(g(x_<t, z)))``: an autoregressive sentence model.

    ``nll(x, z)`` is the teacher-forced ``-log p(x|z)`` per sentence ``(B,)``, summed over the
    predicted tokens ``x_1 .. eos`` (padding masked; ``<bos>`` is given, not predicted), in nats.
    ``decode(z)`` turns latents into token-id sentences (greedy by default, or sampled with a
    temperature). The vocabulary is bound from the data (:meth:`bind_data`) and saved with the
    model (``get_extra_state``), so ``present`` / ``prepare`` convert between strings and ids after
    ``load_from_checkpoint`` too.

    Args:
        net: an :class:`LSTMTextGenerator` with ``latent_dim > 0``.
        max_length: the most words :meth:`decode` writes per sentence (eos not counted).
        decoding: ``"greedy"`` or ``"sample"``: the default of :meth:`decode`.
        temperature: softmax temperature of sampled decoding.
        pad_id: the padding id (that of :class:`lebm.data.Vocabulary`).
        bos_id: the begin-of-sentence id.
        eos_id: the end-of-sentence id.
    """

    metric_names = ("words", "token_accuracy")
    normalised_likelihood = True
    reads_tokens = True

    def __init__(
        self,
        net: LSTMTextGenerator,
        max_length: int = 40,
        decoding: Decoding = "greedy",
        temperature: float = 1.0,
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
    ) -> None:
        super().__init__()
        if not isinstance(net, LSTMTextGenerator) or net.latent_dim < 1:
            raise ValueError("CategoricalDecoder needs an LSTMTextGenerator with latent_dim >= 1 as its net")
        if decoding not in DECODINGS:
            raise ValueError(f"CategoricalDecoder decoding must be one of {DECODINGS}, got {decoding!r}")
        temperature = arguments.number("CategoricalDecoder", "temperature", temperature, above=0)
        max_length = arguments.whole("CategoricalDecoder", "max_length", max_length, at_least=1)
        pad_id, bos_id, eos_id = (
            arguments.whole("CategoricalDecoder", name, value)
            for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id))
        )
        if net.pad_id != pad_id:
            raise ValueError(f"the net pads with id {net.pad_id} but the decoder with {pad_id}: make them agree")
        self.net = net
        self.max_length, self.decoding, self.temperature = int(max_length), decoding, float(temperature)
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.vocabulary: Any = None  # lebm.data.Vocabulary, bound from the data or a checkpoint

    @property
    def latent_dim(self) -> int:
        return self.net.latent_dim

    # ------------------------------------------------------------------ likelihood
    def _check_tokens(self, x: Tensor) -> None:
        if x.dtype != torch.long or x.ndim != 2:
            raise ValueError(
                f"CategoricalDecoder reads token ids (B, T) int64, got {tuple(x.shape)} {x.dtype}: use a text "
                "datamodule (lebm.data.TextDataModule) or convert sentences with decoder.prepare(...)"
            )
        if x.shape[1] < 2:
            raise ValueError(f"sentences need at least <bos> and <eos>, got length {x.shape[1]}")

    def logits(self, x: Tensor, z: Tensor) -> Tensor:
        """Next-token logits ``(B, T - 1, V)`` after each input position of ``x`` ``(B, T)``,
        ids beyond the bound vocabulary masked out (:meth:`mask_unused`)."""
        return self.mask_unused(self.net(x[:, :-1], z))

    def mask_unused(self, logits: Tensor) -> Tensor:
        """``logits`` ``(..., V)`` cut to the ids of the bound vocabulary (a view, no copy: this
        runs at every chain step), so the categorical distributions live on the vocabulary when
        the net is sized for a larger one."""
        used = len(self.vocabulary) if self.vocabulary is not None else logits.shape[-1]
        return logits if used >= logits.shape[-1] else logits[..., :used]

    def nll(self, x: Tensor, z: Tensor) -> Tensor:
        """``-log p(x|z)`` per sentence: ``(B, T) long, (B, latent_dim) -> (B,)``."""
        self._check_tokens(x)
        return token_nll(self.logits(x, z), x[:, 1:], self.pad_id)

    def metrics(self, x: Tensor, z: Tensor) -> dict[str, Tensor]:
        """Per-sentence ``words`` (predicted tokens, eos included: the perplexity denominator) and
        ``token_accuracy`` (teacher-forced argmax accuracy of those tokens), both ``(B,)``."""
        self._check_tokens(x)
        targets = x[:, 1:]
        predicted = self.logits(x, z).argmax(2)
        real = targets != self.pad_id
        words = real.sum(1)
        hits = ((predicted == targets) & real).sum(1)
        return {"words": words.float(), "token_accuracy": hits.float() / words.clamp(min=1)}

    # -------------------------------------------------------------------- decoding
    def decode(
        self,
        z: Tensor,
        *,
        strategy: Decoding | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sentences ``(B, T)`` long from latents ``(B, latent_dim)`` (:func:`decode_tokens`)."""
        return decode_tokens(
            self.net,
            z.to(self.net.output.weight.dtype),
            z.shape[0],
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            pad_id=self.pad_id,
            max_length=self.max_length,
            strategy=strategy or self.decoding,
            temperature=temperature if temperature is not None else self.temperature,
            generator=generator,
            device=z.device,
            transform=self.mask_unused,
        )

    forward = decode

    # ---------------------------------------------------------------- vocabulary
    def bind_data(self, datamodule: Any) -> None:
        """Take the data's vocabulary (``datamodule.vocabulary``), checking it fits the net."""
        vocabulary = getattr(datamodule, "vocabulary", None)
        if vocabulary is None:
            return
        if len(vocabulary) > self.net.vocab_size:
            raise ValueError(
                f"the data's vocabulary has {len(vocabulary)} tokens but the decoder's net has room for "
                f"{self.net.vocab_size}: set model.init_args.decoder.init_args.net.init_args.vocab_size to at least "
                f"{len(vocabulary)} (or lower data.init_args.max_vocab_size)"
            )
        self.vocabulary = vocabulary

    def get_extra_state(self) -> dict[str, Any]:
        return {"vocabulary": None if self.vocabulary is None else self.vocabulary.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        from lebm.data.text.vocabulary import Vocabulary

        saved = state.get("vocabulary") if isinstance(state, dict) else None
        self.vocabulary = None if saved is None else Vocabulary.from_state_dict(saved)

    def _require_vocabulary(self, what: str) -> Any:
        if self.vocabulary is None:
            raise ValueError(
                f"{what} needs the vocabulary: train or load the model with a text datamodule "
                "(its vocabulary is bound at set-up and saved in checkpoints), or call decoder.bind_data(datamodule)"
            )
        return self.vocabulary

    def present(self, x: Tensor) -> list[str]:
        """Token ids ``(B, T)`` -> ``B`` strings (the user-facing form of generated sentences)."""
        return self._require_vocabulary("turning token ids into text").to_text(x)

    # ----------------------------------------------------------------- held noise
    def hold_noise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Hold the net's dropout masks for the sentences ``x`` ``(B, T)``, drawn from
        ``generator`` (:meth:`LSTMTextGenerator.hold_noise`): called by a method at the start
        of each training batch, so its chains and update see one fixed likelihood."""
        if isinstance(x, Tensor) and x.ndim == 2:
            self.net.hold_noise(x, generator)

    def release_noise(self) -> None:
        """Drop the held masks (at the end of the training batch)."""
        self.net.release_noise()

    def prepare(self, data: Tensor | str | Sequence[str] | Sequence[Sequence[str]], device: torch.device) -> Tensor:
        """User input -> token ids ``(B, T)`` on ``device``: integer tensors (and numpy arrays) of
        token ids pass through as int64; sentences are encoded with the vocabulary (unknown words
        become ``<unk>``): a list of strings (each split on whitespace) or of word lists, and a
        bare string is **one** sentence (a batch of one), never a list of characters. Anything
        else is refused (``TypeError`` naming what is taken); :meth:`check_observations` checks the ids."""
        if not isinstance(data, (Tensor, str)) and hasattr(data, "__array__"):
            data = torch.as_tensor(data)  # a numpy array of token ids
        if isinstance(data, Tensor):
            integer = not data.is_floating_point() and not data.is_complex() and data.dtype != torch.bool
            return data.to(device=device, dtype=torch.long if integer else data.dtype)
        sentences = [data] if isinstance(data, str) else data
        if not isinstance(sentences, Sequence):
            raise TypeError(
                f"sentences must be a string, a list of strings or a list of word lists (or token ids (B, T) as a "
                f"LongTensor), got {type(data).__name__}"
            )
        for index, sentence in enumerate(sentences):
            words = [sentence] if isinstance(sentence, str) else sentence
            if not isinstance(words, Sequence) or not all(isinstance(word, str) for word in words):
                raise TypeError(
                    f"sentence {index} must be a string or a list of words (strings), got {sentence!r:.60}: pass "
                    "sentences as text, or token ids (B, T) as a LongTensor"
                )
        if len(sentences) == 0:
            raise ValueError("no sentences given: pass at least one (a string, or a list of strings)")
        vocabulary = self._require_vocabulary("turning text into token ids")
        return vocabulary.to_tensor(list(sentences), max_length=self.max_length).to(device)

    def check_observations(self, x: Tensor) -> None:
        """Refuse, with the fix, token ids this decoder cannot read: not whole numbers, not
        ``(B, T)`` with ``T >= 2``, ids outside the vocabulary (or the net's table when none is
        bound), rows not laid out ``[bos, w_1 .. w_n, eos, pad ..]`` (:meth:`lebm.data.Vocabulary.to_tensor`)."""
        fix = "pass the sentences as strings, or token ids made by model.decoder.prepare(sentences, device)"
        if x.dtype != torch.long:
            raise ValueError(f"token ids must be whole numbers (int64), got {x.dtype}: {fix}")
        if x.dim() != 2:
            hint = " (one sentence? x.unsqueeze(0))" if x.dim() == 1 else ""
            raise ValueError(f"token ids are (B, T) for B sentences, got shape {tuple(x.shape)}{hint}: {fix}")
        if x.shape[1] < 2:
            raise ValueError(f"token-id rows hold at least <bos> and <eos>, got length {x.shape[1]}: {fix}")
        size = len(self.vocabulary) if self.vocabulary is not None else self.net.vocab_size
        low, high = int(x.min()), int(x.max())
        if low < 0 or high >= size:
            raise ValueError(
                f"token ids must be in 0..{size - 1} (the vocabulary's {size} tokens), got ids in {low}..{high}: {fix}"
            )
        starts = (x[:, 0] != self.bos_id).nonzero().flatten()
        if len(starts):
            raise ValueError(
                f"token-id rows are [<bos>, words.., <eos>, <pad>..], but row {int(starts[0])} does not start with "
                f"<bos> (id {self.bos_id}): {fix}"
            )
        unended = (~(x == self.eos_id).any(1)).nonzero().flatten()
        if len(unended):
            raise ValueError(
                f"token-id rows are [<bos>, words.., <eos>, <pad>..], but row {int(unended[0])} has no <eos> "
                f"(id {self.eos_id}): {fix}"
            )

    def observation_shape(self, z: Tensor) -> tuple[int, ...] | None:
        """None: sentences of any length (:meth:`check_observations` checks their layout)."""
        return None

    def word_counts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Per sentence of token ids ``x`` ``(B, T)``: its words (tokens other than ``<pad>``,
        ``<bos>``, ``<eos>`` before its first ``<eos>``) and how many of them are ``<unk>``, each ``(B,)``."""
        unk_id = self.vocabulary.unk_id if self.vocabulary is not None else self.net.unk_id
        before_end = (x == self.eos_id).long().cumsum(1) == 0
        words = before_end & (x != self.pad_id) & (x != self.bos_id)
        return words.sum(1), (words & (x == unk_id)).sum(1)


class BiLSTMEncoder(InferenceNetwork):
    """``q(z|x) = N(mean, diag exp(logvar))`` from a bidirectional LSTM over the sentence.

    ``embed(x) -> BiLSTM`` (padding packed away) ``-> [h_forward_last, h_backward_first] ->
    Linear(2 hidden -> 2 latent_dim)``: ``(B, T) long -> DiagonalGaussian((B, latent_dim))``.

    Args:
        vocab_size: size of the token table.
        latent_dim: size of ``z``.
        embed_dim: size of the word embeddings.
        hidden_dim: size of each direction's LSTM state.
        pad_id: the padding id.
    """

    def __init__(
        self, vocab_size: int, latent_dim: int, embed_dim: int = 256, hidden_dim: int = 512, pad_id: int = 0
    ) -> None:
        super().__init__()
        if min(vocab_size, latent_dim, embed_dim, hidden_dim) < 1:
            raise ValueError("BiLSTMEncoder sizes (vocab_size, latent_dim, embed_dim, hidden_dim) must be >= 1")
        self.latent_dim, self.pad_id = int(latent_dim), int(pad_id)
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden_dim, 2 * latent_dim)

    def forward(self, x: Tensor) -> DiagonalGaussian:
        """``q(z|x)`` of padded token ids ``(B, T)`` long: a :class:`DiagonalGaussian` over
        ``(B, latent_dim)``; the trailing padding is packed away, so it does not change the result."""
        lengths = lengths_from_padding(x, self.pad_id).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(x), lengths, batch_first=True, enforce_sorted=False)
        with rnn_backward_allowed(self, x):
            _, (hidden, _) = self.lstm(packed)
        summary = torch.cat([hidden[-2], hidden[-1]], dim=1)  # forward's last step, backward's first
        mean, logvar = self.head(summary).chunk(2, dim=1)
        return DiagonalGaussian(mean, logvar)
