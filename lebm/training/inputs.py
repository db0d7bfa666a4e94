"""The one input contract of the Python API (``generate``, ``infer``, ``reconstruct``, ``score``,
``revise``, ``sample_layer``, ``prior.sample``, ``predict_step``/``forward``), for every method, the
text model included: each mistake gets one line that names the problem (both shapes, the dtype,
the values) and the fix, instead of a torch error from deep inside a net or a chain, and results
that are not finite get a warning.

:func:`read_observations` is the check of observations: every entry point that takes ``x`` goes
through it (:meth:`lebm.models.latent_generator.LatentGeneratorModel.observations`), once per
call: :func:`api_call` marks the outermost call of the API on a model, so that ``reconstruct``,
which calls ``infer``, checks (and warns) once and names itself in the message.
"""

from __future__ import annotations

import contextlib
import math
import operator
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lebm.checkpoint_io import human_size
from lebm.data.text.datamodule import SUSPICIOUS_UNKNOWN_SHARE
from lebm.randomness import rng_devices
from lebm.samplers import Sampler
from lebm.samplers.chain import modules_in_mode
from lebm.user_warnings import warn_user

__all__ = [
    "GenerationFootprint",
    "generation_footprint",
    "layer_outputs",
    "api_call",
    "check_count",
    "check_generation_memory",
    "check_model_generation_memory",
    "check_sampler",
    "check_whole",
    "read_latents",
    "refuse_unused_sampler",
    "read_observations",
    "warn_about_sentences",
    "warn_if_not_finite",
]


def _whole(value: Any) -> int | None:
    """``value`` as an int when it is a whole number (an int, a numpy or 0-d torch integer; not a
    bool, not a float), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_count(n: Any, what: str = "generate") -> int:
    """``n`` as a number of samples: a whole number >= 1 (an int, or a numpy/torch integer)."""
    count = _whole(n)
    if count is None or count < 1:
        raise ValueError(f"{what}(n) takes a whole number of samples n >= 1, got {n!r}")
    return count


def check_whole(value: Any, option: str, minimum: int = 0) -> int:
    """``value`` as an int when it is a whole number >= ``minimum``; ``option`` names it in the
    message (``"score(x, samples=...)"``)."""
    number = _whole(value)
    if number is None or number < minimum:
        raise ValueError(f"{option} takes a whole number >= {minimum}, got {value!r}")
    return number


#: The share of a device's memory that the samples of one ``generate(n)`` call may take.
GENERATION_MEMORY_SHARE = 0.5


def device_memory_bytes(device: torch.device) -> int | None:
    """The total memory of ``device`` (a CUDA device's, else this machine's RAM); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


#: Latent-sized buffers a generation chain holds per sample besides its energy net's layers: the
#: start, the state, its gradient, the noise, the final latents and one spare.
CHAIN_STATE_BUFFERS = 6


@dataclass(frozen=True)
class GenerationFootprint:
    """What generating one sample holds at its peak, in values (see :func:`generation_footprint`):
    ``chain`` (every layer of the prior's energy net, kept for the chain's gradient, and the chain's
    latent buffers; 0 for a prior sampled exactly), ``widest`` (the generator's widest layer, named
    ``widest_name``) and ``samples`` (one sample; 0 for sentences)."""

    chain: int
    widest: int
    widest_name: str
    samples: int

    @property
    def values(self) -> int:
        return self.chain + self.widest + self.samples

    def parts(self) -> str:
        """The footprint's parts in words, for a message."""
        layer = self.widest_name.removeprefix("the generator's ")
        named = [
            (self.chain, "the prior's chain (its energy net's layers and latents)"),
            (self.widest, f"the widest layer of the generator, {layer}"),
            (self.samples, "the sample"),
        ]
        return ", ".join(f"{what} {count}" for count, what in named if count)


def check_generation_memory(
    n: int, footprint: GenerationFootprint, dtype: torch.dtype, device: torch.device, what: str = "generate"
) -> None:
    """Refuse ``n`` samples when what their generation holds at its peak (``footprint`` values a
    sample) takes more than :data:`GENERATION_MEMORY_SHARE` of ``device``'s memory, naming the size,
    its parts and how to draw them in batches."""
    total = device_memory_bytes(device)
    if total is None or footprint.values == 0:
        return
    needed = n * footprint.values * torch.empty((), dtype=dtype).element_size()
    if needed > GENERATION_MEMORY_SHARE * total:
        per_call = max(1, int(GENERATION_MEMORY_SHARE * total / 10 // (needed / n)))
        raise ValueError(
            f"{what}(n={n}): their generation holds about {human_size(needed)} ({n} x {footprint.values} "
            f"{str(dtype).removeprefix('torch.')} values: {footprint.parts()}), more than half of the "
            f"{human_size(total)} of {device.type} memory: "
            f"draw them in batches, e.g. a loop of {what}({min(per_call, n)}) saving each batch"
        )


def layer_outputs(work: Callable[[], Any], module: nn.Module, label: str) -> list[tuple[int, str]]:
    """Run ``work`` (which calls ``module`` on a batch of 2) and return, for each of its leaf
    submodules that returned a batch of 2, the values per example of its largest output and its
    name (``(256, "the generator's net.0 (Linear)")``)."""
    found: dict[str, int] = {}

    def record(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(sub: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.dim() >= 1 and output.shape[0] == 2:
                key = f"{label}'s {name} ({type(sub).__name__})" if name else f"{label} ({type(sub).__name__})"
                found[key] = max(found.get(key, 0), output[0].numel())

        return hook

    handles = [
        sub.register_forward_hook(record(name)) for name, sub in module.named_modules() if not list(sub.children())
    ]
    try:
        work()
    finally:
        for handle in handles:
            handle.remove()
    return [(count, name) for name, count in found.items()]


def generation_footprint(model: Any) -> GenerationFootprint | None:
    """What ``generate`` holds per sample (:class:`GenerationFootprint`), probed once on two zero
    latents (no gradients for the generator, the prior's energy as its chain evaluates it; eval
    mode, torch's RNG untouched, inside the model's ``evaluation_statistics``) and kept while the
    decoder, the prior, the latent size and whether the prior runs chains stay; None when the probe
    fails (the model's input checks name that)."""
    prior, decoder = model.prior, model.decoder
    key = (id(decoder), id(decoder.generator_net()), id(prior), prior.latent_dim, prior.samples_by_chains)
    cached = model.__dict__.get("_generation_footprint")
    if cached is not None and cached[0] == key:
        return cached[1]
    z = torch.zeros(2, prior.latent_dim, device=model.device, dtype=model.input_dtype)
    modules = [decoder, prior] if prior.samples_by_chains else [decoder]
    footprint = None
    with (
        torch.random.fork_rng(devices=rng_devices(model.device)),
        modules_in_mode(modules, "eval"),
        model.evaluation_statistics(),
    ):
        try:
            with torch.no_grad():
                generator = layer_outputs(lambda: decoder.decode(z), decoder, "the generator")
            chain = 0
            if prior.samples_by_chains:
                held = layer_outputs(lambda: prior.residual_energy(z.clone().requires_grad_()), prior, "the prior")
                chain = sum(count for count, _ in held) + CHAIN_STATE_BUFFERS * prior.latent_dim
            widest, widest_name = max(generator, key=lambda row: row[0], default=(0, "none"))
            shape = model.observation_shape()
            footprint = GenerationFootprint(chain, widest, widest_name, math.prod(shape) if shape else 0)
        except (RuntimeError, ValueError, TypeError):
            footprint = None
    model.__dict__["_generation_footprint"] = (key, footprint)
    return footprint


def check_model_generation_memory(model: Any, n: int, what: str = "generate") -> None:
    """:func:`check_generation_memory` for ``n`` samples of ``model`` (a model with a latent
    generator, images or sentences): its :func:`generation_footprint`, dtype and device (probed
    only when the device's memory is known)."""
    if device_memory_bytes(model.device) is None:
        return
    footprint = generation_footprint(model)
    if footprint is not None:
        check_generation_memory(n, footprint, model.input_dtype, model.device, what)


def check_sampler(sampler: Any) -> Sampler | None:
    """``sampler`` when it is None or a :class:`lebm.samplers.Sampler`."""
    if sampler is not None and not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a lebm.samplers.Sampler, e.g. lebm.samplers.Langevin(n_steps=60, step_size=0.4), "
            f"got {sampler!r}"
        )
    return sampler


def refuse_unused_sampler(sampler: Any, what: str, reason: str, fix: str) -> None:
    """Raise ``ValueError`` when a ``sampler`` was given to a call that runs no chain (``reason``
    says why, ``fix`` what to pass instead): a sampler given is used, or refused, never ignored."""
    if sampler is not None:
        raise ValueError(f"{what}: {reason}, so sampler={sampler!r} would not be used: {fix}")


def warn_if_not_finite(values: Tensor, what: str) -> Tensor:
    """``values``, with a warning when some are NaN or infinite (a chain that diverged)."""
    if isinstance(values, Tensor) and values.is_floating_point() and not bool(torch.isfinite(values).all()):
        warn_user(
            f"{what} holds NaN or infinite values: a chain diverged (lower its step size) or the model's "
            "parameters are not finite",
            RuntimeWarning,
        )
    return values


# --------------------------------------------------------------------------- one check per call
_ACTIVE = threading.local()


@contextlib.contextmanager
def api_call(model: object) -> Iterator[bool]:
    """Mark a call of ``model``'s user API (on this thread) for the block; yields True when it is
    the outermost one, whose input is checked, False inside another (``reconstruct`` calling
    ``infer``, ``predict_step`` calling ``score``), whose input the outer call checked already."""
    active: set[int] = _ACTIVE.__dict__.setdefault("models", set())
    outermost = id(model) not in active
    active.add(id(model))
    try:
        yield outermost
    finally:
        if outermost:
            active.discard(id(model))


# ------------------------------------------------------------------------------- observations
def _shape_text(shape: tuple[int, ...]) -> str:
    return "(B, " + ", ".join(str(size) for size in shape) + ")"


def _check_batch(x: Tensor, shape: tuple[int, ...] | None) -> None:
    """Raise ``ValueError`` when ``x`` holds no examples, complex numbers, or examples of another
    shape than ``shape`` (the per-example shape the model reads; None: any)."""
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(
            f"observations hold no examples (got shape {tuple(x.shape)}): pass a batch (B, *x_shape) with B >= 1"
        )
    if x.is_complex():
        raise ValueError(f"observations must be real numbers, got {x.dtype}: pass x.real or x.abs()")
    if shape is None or tuple(x.shape[1:]) == shape:
        return
    got = tuple(x.shape)
    if got == shape:
        fix = "it looks like one example without its batch dimension: pass x.unsqueeze(0)"
    elif x[0].numel() == math.prod(shape):
        fix = f"if these are the same values laid out otherwise, pass x.reshape(-1, {', '.join(map(str, shape))})"
    else:
        fix = (
            "resize or crop the data to the model's shape (channels, image size), or use a model built for data of "
            "this shape"
        )
    raise ValueError(
        f"the model reads observations of shape {_shape_text(shape)} (what its generator makes), got {got}: {fix}"
    )


def read_latents(
    z: Any,
    *,
    batch: int,
    latent_dim: int,
    device: torch.device,
    dtype: torch.dtype,
    what: str,
    name: str = "z",
    check_finite: bool = True,
) -> Tensor:
    """Latents ``z`` given with observations of ``batch`` examples, as the tensor ``(batch,
    latent_dim)`` of the model's ``dtype`` on ``device``: a real tensor (or array) of that shape,
    finite (unless ``check_finite`` is False: a start made inside a training loop, which a chain's
    end checks). Raises ``TypeError``/``ValueError`` in one line prefixed by ``what``, naming the
    argument ``name``."""
    if not isinstance(z, Tensor):
        try:
            z = torch.as_tensor(z)
        except (TypeError, ValueError, RuntimeError):
            got = type(z).__name__
            raise TypeError(f"{what}: {name} must be a tensor of latents (B, {latent_dim}), got {got}") from None
    if z.is_complex() or not (z.is_floating_point() or z.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{what}: {name} must hold real numbers (latents), got {z.dtype}")
    if tuple(z.shape) != (batch, latent_dim):
        fix = (
            "one latent per observation, in the same order"
            if z.dim() == 2 and z.shape[1] == latent_dim
            else f"latents of the model's prior, {latent_dim} numbers each (infer(x) gives them)"
        )
        raise ValueError(
            f"{what}: {name} must have shape ({batch}, {latent_dim}) for {batch} observations, got "
            f"{tuple(z.shape)}: pass {fix}"
        )
    if check_finite and not bool(torch.isfinite(z).all()):
        raise ValueError(f"{what}: {name} holds NaN or infinite values: pass finite latents")
    return z.to(device=device, dtype=dtype)


def read_observations(
    decoder: Any,
    data: Any,
    *,
    device: torch.device,
    dtype: torch.dtype,
    shape: tuple[int, ...] | None,
    what: str | None = None,
) -> Tensor:
    """The one input contract: ``data`` as the tensor ``(B, *x_shape)`` the decoder reads, checked.

    1. **type**: the decoder's ``prepare`` turns what the user gives into a tensor (arrays and
       nested lists of numbers for images and vectors; strings, a list of strings or of word lists
       for text: a bare string is one sentence); anything else is a ``TypeError`` naming what is taken;
    2. **batch and shape**: at least one example, real numbers, and each example of ``shape`` (the
       model's per-example shape, e.g. ``(1, 8, 8)``; None for sentences, of any length);
    3. **what the decoder reads**: its ``check_observations`` (no NaN or infinite values; images
       floats in ``[-1, 1]``; token ids whole numbers of the vocabulary in rows ``[bos, .., eos, pad..]``);
    4. **dtype**: observations of numbers are cast to ``dtype`` (the model's: float64 numpy arrays,
       integer or boolean vectors become float32), token ids stay int64; all on ``device``;
    5. **sentences that say little**: a warning for empty sentences, sentences whose words are all
       unknown to the vocabulary, or more than :data:`SUSPICIOUS_UNKNOWN_SHARE` of the words unknown
       (:func:`warn_about_sentences`).

    Args:
        decoder: the model's :class:`lebm.nets.Decoder`.
        data: what the user gave.
        device: the model's device.
        dtype: the floating dtype of the model's parameters.
        shape: the per-example shape the model reads (None: not fixed).
        what: the call, as the message names it (``"score(x)"``); None: the message alone.

    Returns:
        ``(B, *x_shape)``: floats of ``dtype`` for arrays, int64 token ids ``(B, T)`` for text.

    Raises:
        TypeError, ValueError: one line, prefixed by ``what``, naming the problem and the fix.
    """
    try:
        x = decoder.prepare(data, device)
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(decoder).__name__}.prepare must return a tensor, got {type(x).__name__}")
        x = x.to(device)
        _check_batch(x, shape)
        decoder.check_observations(x)
    except (TypeError, ValueError) as error:
        if what is None:
            raise
        raise (TypeError if isinstance(error, TypeError) else ValueError)(f"{what}: {error}") from None
    if not decoder.reads_tokens and x.dtype != dtype:
        x = x.to(dtype)
    warn_about_sentences(decoder, x, what)
    return x


def warn_about_sentences(decoder: Any, x: Tensor, what: str | None = None) -> None:
    """Warn (one ``UserWarning``) when sentences ``x`` ``(B, T)`` say little to the model: empty
    ones, ones whose words are all unknown to the vocabulary (read as ``<unk>``), or a share of
    unknown words above :data:`SUSPICIOUS_UNKNOWN_SHARE` (the share at which training warns).
    Reads the decoder's ``word_counts(x)``; nothing for a decoder of arrays (None)."""
    counts = decoder.word_counts(x)
    if counts is None:
        return
    words, unknown = counts
    problems = []
    for label, rows in (
        ("empty", (words == 0).nonzero().flatten().tolist()),
        ("made of unknown words only", ((words > 0) & (unknown == words)).nonzero().flatten().tolist()),
    ):
        if rows:
            listed = ", ".join(map(str, rows[:5])) + (", ..." if len(rows) > 5 else "")
            problems.append(f"{len(rows)} of {len(words)} sentences are {label} (rows {listed})")
    share = float(unknown.sum()) / max(int(words.sum()), 1)
    if share > SUSPICIOUS_UNKNOWN_SHARE:
        problems.append(f"{share:.0%} of the words are not in the vocabulary (read as <unk>)")
    if problems:
        warnings.warn(
            f"{what or 'the input'}: {'; '.join(problems)}: the model sees little of such sentences, so their results "
            "say little; check the spelling and tokenisation (the known words: model.decoder.vocabulary.tokens) "
            "and drop empty sentences",
            UserWarning,
            stacklevel=5,
        )
