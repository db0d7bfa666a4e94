"""The key of a recorded training iteration: everything a recording bakes in, part by named part.

A recorded iteration replays its kernels with every Python number baked in and reads tensors at
the addresses it recorded, so it may serve an iteration only when nothing it baked in has changed.
:func:`iteration_key` describes that, by the chain key's rules
(:class:`~lebm.recording.keys.Description`: tensors by address, dtype, shape and strides,
every other value by value, objects attribute by attribute), as named parts:

- ``batch``: the batch's shapes and dtypes (its non-tensor leaves by value);
- ``module NAME``: every child module of the method, its whole tree (parameters and buffers, every
  ``__dict__`` entry: train flags, settings, samplers held by a module);
- ``attribute NAME``: every attribute of the method outside its modules, **public and private**
  (a sampler, ``self._noise_scale``), except those in :data:`LEFT_OUT_OF_THE_KEY`, which no
  iteration reads on the device (each named with its reason);
- ``hyperparameters``: ``self.hparams``;
- ``class``: the method's class (only lebm's own audited classes are recorded, and where their
  functions are bound is checked before every replay: :mod:`lebm.recording.audit`);
- ``iteration_key()``: what the method declares it reads of the host (a warm-up switch, a stage);
- ``updates``: the accumulation settings, whether the batch opens a window and whether it updates,
  and which parameters the window's earlier batches reached;
- ``guard``: whether the divergence guard applies yet, and its limits;
- ``optimiser I``: the optimiser's type and identity, every option of every group but its learning
  rate (read live from a device tensor), and for every parameter it steps: its address, whether
  it requires a gradient, its gradient's address and its state tensors' addresses;
- ``numerics``: autocast, TF32 and determinism settings, and whether autograd is on.

The parts keep their names so that a key that keeps changing can say what changes
(:func:`first_difference`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import Tensor

from lebm.compat import LIGHTNING_MODULE_BOOKKEEPING
from lebm.recording.keys import NOT_STATE, Description, numerics_state, tensor_id, tensor_signature

#: A key: ``((part name, description), ...)``, hashable.
IterationKey = tuple[tuple[str, Hashable], ...]

#: The method's attributes outside its modules that the key leaves out, with why: they are host
#: bookkeeping that no iteration reads on the device. Every other attribute, public or private
#: (a subclass's ``self._noise_scale``), is part of the key. ``nn.Module``'s own bookkeeping
#: (hooks, parameter and child dicts) is left out by the chain key's rules.
LEFT_OUT_OF_THE_KEY: dict[str, str] = {
    # lebm's Method
    "guard": "its limits are the key's 'guard' part",
    "random_streams": "the training stream is handed to each replay",
    "divergence_recovery": "a recovery policy keeps iterations eager",
    "recovery_record": "the recoveries made, read on the host",
    "checkpoint_writer": "the lebm version of a loaded checkpoint",
    "said_checkpoint_writer": "whether that version was named",
    "iteration_recorder": "this recorder",
    "_unrecorded": "parts a checkpoint cannot record, named once",
    "_warned_unrecorded": "whether they were named",
    "_unread_step_values": "a step's values kept for the end of training",
    "_step_settings": "the key's 'updates' part",
    "_counted_iteration": "which iteration Lightning counted last",
    "_pending_clips": "the eager path's clipping, handed to Lightning's hook",
    "_said_clip_note": "whether the overridden clip was named",
    "_direct_steps": "whether the recorder runs the iteration",
    "_collected_step": "where a recording collects the step's values",
    "_host_reads": "where a recording notes what it reads of the host",
    "_fit_started_at": "when the fit started (the guard's way back)",
    "_loaded_step": "the step of the checkpoint loaded (evaluation's seed)",
    "run_id": "the run's identity, kept in its checkpoints",
    "trained_data": "the loaded checkpoint's data fingerprint, checked at set-up",
    "other_data_on_purpose": "whether that check is waived",
    **LIGHTNING_MODULE_BOOKKEEPING,  # Lightning's own, named in its seam (lebm.compat)
}


def declared_reads(method: Any) -> tuple[Hashable, set[str]]:
    """``method.iteration_key()`` and the host values it read doing so (``global_step``,
    ``current_epoch``): reading one there declares it, so a recording may read it too."""
    reads: set[str] = set()
    with method.noting_host_reads(reads):
        declared = method.iteration_key()
    return declared, reads


def iteration_key(
    method: Any,
    leaves: list[Any],
    declared: Hashable,
    window_reached: frozenset[int] | None,
    described: Description | None = None,
) -> IterationKey:
    """What a recorded iteration of ``method`` on a batch of ``leaves`` bakes in (the module
    docstring), ``declared`` being ``method.iteration_key()`` and ``window_reached`` the ids of the
    parameters that the accumulation window's earlier batches reached (None: the batch opens a
    window): :func:`request_parts` and :func:`state_parts`. ``described`` (a new one by default)
    collects the modules, objects, tensors and containers met. Raises
    :class:`~lebm.recording.keys.RunsEagerly` for a module the key cannot vouch for."""
    described = Description() if described is None else described
    return request_parts(method, leaves, declared, window_reached, described) + state_parts(method, described)


def request_parts(
    method: Any, leaves: list[Any], declared: Hashable, window_reached: frozenset[int] | None, described: Description
) -> IterationKey:
    """The parts of the key that each iteration brings (cheap, built at every iteration): the
    method's class, the batch's shapes, ``iteration_key()``, the accumulation window, the guard and the numerics."""
    batch = tuple(
        tensor_signature(leaf) if isinstance(leaf, Tensor) else described.of(leaf, "the batch") for leaf in leaves
    )
    settings = method.step_settings
    _, batch_idx, _ = method._training_position()
    opens = settings.accumulate == 1 or batch_idx % settings.accumulate == 0
    guard = method.guard
    return (
        ("class", type(method)),  # read at every iteration: model.__class__ switched is a new key at once
        ("batch", batch),
        ("iteration_key()", described.of(declared, "iteration_key()")),
        ("updates", (settings, opens, method.updates_this_batch, window_reached)),
        ("guard", (method.current_epoch >= guard.after_epoch, tuple(sorted(guard.limits.items())))),
        ("numerics", (numerics_state(method.device), torch.is_grad_enabled())),
    )


def state_parts(method: Any, described: Description) -> IterationKey:
    """The parts of the key that describe the method's state (dear on a large model: built once
    and checked by :class:`~lebm.recording.key_stamp.StateStamp` at every iteration): every child
    module, every attribute outside the modules, the hyperparameters, every optimiser."""
    parts: list[tuple[str, Hashable]] = []
    parts.extend((f"module {name}", described.of(child, name)) for name, child in method.named_children())
    parts.extend(
        (f"attribute {name}", described.of(value, name))
        for name, value in vars(method).items()
        if name not in LEFT_OUT_OF_THE_KEY and name not in NOT_STATE  # NOT_STATE: nn.Module's own dicts
    )
    parts.append(("hyperparameters", plain(dict(method.hparams))))
    recorder = method.iteration_recorder
    for index, optimizer in enumerate(method.optimizer_list()):
        inner = getattr(optimizer, "optimizer", optimizer)
        parts.append((f"optimiser {index}", optimizer_description(inner, described, recorder)))
    return tuple(parts)


def saved_attributes(method: Any, described: Description) -> Callable[[], None]:
    """Save the attributes of the method and of every module and object a key described
    (``described``), and the contents of the lists, dicts and sets they hold; return what puts them
    back, the containers' contents in place (after a recording that a refusal undoes: a CUDA capture
    runs the iteration's Python once, and what it assigned or appended must not stay)."""
    owners = [method, *described.modules.values(), *described.objects.values()]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    containers = {
        id(value): (value, copy.copy(value))
        for _, attributes in saved
        for value in attributes.values()
        if type(value) in (list, dict, set)
    }

    def restore() -> None:
        for owner, attributes in saved:
            state = vars(owner)
            state.clear()
            state.update(attributes)
        for container, contents in containers.values():
            container.clear()
            if isinstance(container, list):
                container.extend(contents)
            else:
                container.update(contents)

    return restore


def optimizer_description(inner: torch.optim.Optimizer, described: Description, recorder: Any) -> Hashable:
    """An optimiser as a recording bakes it in (see the module docstring)."""
    groups = tuple(
        tuple((k, described.of(v, k)) for k, v in group.items() if k not in ("params", "lr", "initial_lr"))
        for group in inner.param_groups
    )
    tensors = tuple(
        (
            tensor_id(p),
            p.requires_grad,
            None if p.grad is None else tensor_id(p.grad),
            tuple((k, tensor_id(v)) for k, v in inner.state.get(p, {}).items() if isinstance(v, Tensor)),
        )
        for group in inner.param_groups
        for p in group["params"]
    )
    rates = recorder.rates.get(id(inner))
    held = None if rates is None else tuple(map(tensor_id, rates.tensors))
    return (type(inner), id(inner), groups, tensors, held)


def plain(value: Any) -> Hashable:
    """Hyperparameters (plain data: configs, numbers, strings, lists) as one hashable value, at any depth."""
    if isinstance(value, dict):
        return (dict, tuple((str(k), plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(plain(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return (type(value), repr(value))
    return value


def flat(value: Any, path: str = "") -> tuple[tuple[str, Hashable], ...]:
    """Hyperparameters as ``((dotted path, leaf), ...)``, one level deep at any nesting: a leaf that
    is not ``None``, a bool, a number or a string by its ``repr``."""
    if isinstance(value, dict):
        return tuple(pair for key, item in value.items() for pair in flat(item, f"{path}.{key}" if path else str(key)))
    if isinstance(value, (list, tuple)):
        return tuple(pair for index, item in enumerate(value) for pair in flat(item, f"{path}[{index}]"))
    return ((path, value if isinstance(value, (type(None), bool, int, float, str)) else repr(value)),)


def first_difference(old: Hashable, new: Hashable, path: str = "") -> str | None:
    """Where two descriptions first differ, as a dotted path of the names met on the way
    (``"module posterior_sampler.step_size"``), or None when they are equal."""
    if old == new:
        return None
    if isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        for a, b in zip(old, new, strict=True):
            if a == b:
                continue
            named = _named_pair(a) and _named_pair(b) and a[0] == b[0]
            if named:
                deeper = first_difference(a[1], b[1], f"{path}.{a[0]}" if path else str(a[0]))
            else:
                deeper = first_difference(a, b, path)
            return deeper or path or None
    return path or None


def _named_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
