"""A recorded iteration's key, built once and checked cheaply at every iteration.

Describing a method's whole state (every module's attributes, parameters and buffers, its samplers,
hyperparameters and optimisers: :func:`~lebm.recording.iteration_key.state_parts`) costs
milliseconds of host time on a large model, too much to pay at every iteration. So the recorder
describes it once, and :class:`StateStamp` holds by identity every object that description read:

- the attributes of the method (but :data:`~lebm.recording.iteration_key.LEFT_OUT_OF_THE_KEY`) and
  of every module and plain object described (a sampler), and how many attributes each holds;
- every list, dict and set described item by item (a module's parameters, buffers and children,
  the hyperparameters at any depth);
- every tensor described, by its storage address, shape and strides;
- per optimiser: its groups (each setting but the learning rate, which is read from a device
  tensor), its per-parameter states, and each parameter's gradient and ``requires_grad``;
- torch's count of hooks ever registered (``RemovableHandle.next_id``): a hook added anywhere.

:meth:`StateStamp.unchanged` compares them by identity, which is sound: a value replaced by another
(an attribute set, an item appended, a tensor re-allocated, a gradient freed) fails it, and the
recorder describes the state again and compares the descriptions by value. Only a change that
keeps every object (a tensor's values, which a replay reads live) passes without a new description.
"""

from __future__ import annotations

import operator
from collections.abc import Container, Iterable
from itertools import repeat
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from lebm.recording.keys import NOT_STATE, Description
from lebm.recording.torch_internals import module_stores

__all__ = ["StateStamp"]

_MISSING = object()
_GRAD = operator.attrgetter("grad")
_SHAPE = operator.attrgetter("shape")
_REQUIRES_GRAD = operator.attrgetter("requires_grad")
#: A group's settings that change without a new key: the learning rate (read from a device tensor).
_LIVE_SETTINGS = ("params", "lr", "initial_lr")


def _entries(mapping: Any, skip: Container[str]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    names = tuple(name for name in mapping if name not in skip)
    return names, tuple(mapping[name] for name in names)


def _nested_containers(value: Any, found: dict[int, Any], depth: int = 0) -> None:
    """The lists, dicts and sets ``value`` holds, at any depth up to 8 (the hyperparameters)."""
    if depth > 8 or id(value) in found:
        return
    if isinstance(value, (list, dict, set)):
        found[id(value)] = value
    if isinstance(value, dict):
        items: Iterable[Any] = value.values()
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        return
    for item in items:
        _nested_containers(item, found, depth + 1)


class StateStamp:
    """What a description of ``method``'s state read (``described``), held by identity (the module
    docstring); ``method_skip`` names the method's attributes the description left out; ``rates``:
    the recorder's learning-rate tensors by optimiser (a key holds their addresses). Every mapping
    checked is flattened into one list of ``(mapping, name, value)`` triples, so that
    :meth:`unchanged` runs as a few C-level passes."""

    def __init__(
        self, method: Any, described: Description, method_skip: Container[str], rates: dict[int, Any] | None = None
    ) -> None:
        mappings: list[tuple[Any, Container[str]]] = [(vars(method), method_skip)]
        for module in described.modules.values():
            ignored = module.__dict__.get("chain_capture_ignore", getattr(type(module), "chain_capture_ignore", ()))
            mappings.append((vars(module), _Union(NOT_STATE, ignored)))
        mappings.extend((vars(value), NOT_STATE) for value in described.objects.values())
        containers = dict(described.containers)
        for module in described.modules.values():
            for store in module_stores(module):
                containers[id(store)] = store
        _nested_containers(method.hparams, containers)  # the live mapping (a dict subclass), not a copy
        if rates is not None:
            containers[id(rates)] = rates
            for held in rates.values():
                containers[id(held.tensors)] = held.tensors
        mappings.extend((c, ()) for c in containers.values() if isinstance(c, dict))
        self.lists = [(c, tuple(c)) for c in containers.values() if isinstance(c, list)]
        self.sets = [(c, frozenset(c)) for c in containers.values() if isinstance(c, set)]
        self.tensors = list(described.tensors.values())
        self.parameters: list[torch.Tensor] = []
        for optimizer in method.optimizer_list():
            inner = getattr(optimizer, "optimizer", optimizer)
            self.lists.append((inner.param_groups, tuple(inner.param_groups)))
            mappings.extend((group, _LIVE_SETTINGS) for group in inner.param_groups)
            mappings.append((inner.state, ()))
            parameters = [p for group in inner.param_groups for p in group["params"]]
            mappings.extend((state, ()) for p in parameters if (state := inner.state.get(p)) is not None)
            self.parameters.extend(parameters)
        self.mappings = [mapping for mapping, _ in mappings]
        self.sizes = list(map(len, self.mappings))
        self.flat_mappings, self.names, self.values = [], [], []
        for mapping, skip in mappings:
            for name, value in mapping.items():
                if name not in skip:
                    self.flat_mappings.append(mapping)
                    self.names.append(name)
                    self.values.append(value)
        self.addresses = list(map(torch.Tensor.data_ptr, self.tensors))
        self.shapes = list(map(_SHAPE, self.tensors))
        self.strides = list(map(torch.Tensor.stride, self.tensors))
        self.grads = list(map(_GRAD, self.parameters))
        self.flags = list(map(_REQUIRES_GRAD, self.parameters))
        self.parameter_addresses = list(map(torch.Tensor.data_ptr, self.parameters))
        self.hooks = RemovableHandle.next_id

    def unchanged(self) -> bool:
        """Whether every object the description read is still the one it read (the module docstring)."""
        is_ = operator.is_
        found = map(dict.get, self.flat_mappings, self.names, repeat(_MISSING))
        return (
            RemovableHandle.next_id == self.hooks
            and list(map(len, self.mappings)) == self.sizes
            and all(map(is_, found, self.values))
            and all(len(items) == len(held) and all(map(is_, items, held)) for items, held in self.lists)
            and all(items == held for items, held in self.sets)
            and list(map(torch.Tensor.data_ptr, self.tensors)) == self.addresses
            and list(map(_SHAPE, self.tensors)) == self.shapes
            and list(map(torch.Tensor.stride, self.tensors)) == self.strides
            and all(map(is_, map(_GRAD, self.parameters), self.grads))
            and list(map(_REQUIRES_GRAD, self.parameters)) == self.flags
            and list(map(torch.Tensor.data_ptr, self.parameters)) == self.parameter_addresses
        )


class _Union:
    """Names in either of two containers."""

    def __init__(self, first: Container[str], second: Container[str]) -> None:
        self.first, self.second = first, second

    def __contains__(self, name: object) -> bool:
        return name in self.first or name in self.second
