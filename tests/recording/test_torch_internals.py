"""The private torch names lebm's fast paths read, checked against the installed torch (device: CPU).

Captured chains and recorded iterations read torch's hook dictionaries, version counters, pytree
helpers, dispatch mode and allocator call through one module,
``lebm.recording.torch_internals``. These tests fail loudly when a torch upgrade removes or
changes one of them, instead of a check silently reading "no hooks".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.modules.module as module_internals
import torch.optim.optimizer as optimizer_internals

from lebm.recording import torch_internals
from lebm.recording.torch_internals import (
    TorchInternalsChanged,
    global_module_hooks,
    global_optimizer_hooks,
    leaves_of,
    map_leaves,
    missing_internals,
    tensor_has_hooks,
    tensor_version,
    tree_leaves,
    tree_map,
)


def test_every_private_name_is_where_lebm_reads_it() -> None:
    assert missing_internals() == []


def test_a_renamed_dict_of_global_hooks_fails_loudly_instead_of_reading_as_no_hooks(monkeypatch) -> None:
    monkeypatch.delattr(optimizer_internals, "_global_optimizer_post_hooks")
    assert "torch.optim.optimizer._global_optimizer_post_hooks is not a dict of hooks" in missing_internals()
    with pytest.raises(TorchInternalsChanged, match="has no torch.optim.optimizer._global_optimizer_post_hooks"):
        global_optimizer_hooks()


def test_a_module_hook_dict_gone_fails_loudly(monkeypatch) -> None:
    monkeypatch.delattr(module_internals, "_global_forward_hooks")
    assert any("_global_forward_hooks" in problem for problem in missing_internals())
    with pytest.raises(TorchInternalsChanged):
        global_module_hooks()


def test_the_accessors_see_what_torch_registers() -> None:
    """Each accessor reports a hook registered through torch's public call, and its removal."""
    parameter = torch.nn.Parameter(torch.zeros(2))
    assert not tensor_has_hooks(parameter)
    handle = parameter.register_hook(lambda grad: grad)
    assert tensor_has_hooks(parameter)
    handle.remove()
    assert not tensor_has_hooks(parameter)
    version = tensor_version(parameter)
    with torch.no_grad():
        parameter.mul_(2)
    assert tensor_version(parameter) == version + 1
    handle = optimizer_internals.register_optimizer_step_pre_hook(lambda *args: None)
    try:
        assert any(global_optimizer_hooks().values())
    finally:
        handle.remove()
    assert not any(global_optimizer_hooks().values())


def test_no_other_lebm_module_reads_these_private_names() -> None:
    """The seam is the only reader: grep lebm's source for the private names it holds."""
    names = re.compile(
        r"\._version\b|_optimizer_step_(pre|post)_hooks|_global_(optimizer|forward|backward)"
        r"|modules\.module as|modules import module|_pytree|_python_dispatch"
        r"|_cuda_endAllocateToPool|_post_accumulate_grad_hooks|_forward_pre_hooks|_forward_hooks|_SpectralNorm"
    )
    root = Path(torch_internals.__file__).resolve().parents[1]  # lebm/
    readers = {
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "torch_internals.py" and names.search(path.read_text())
    }
    assert readers == set(), readers


def operation_values() -> list[object]:
    """Arguments and results as aten operations pass them: nested lists, tuples and dicts of
    tensors, numbers, ``None``, dtypes and devices, a ``torch.Size``, a named tuple of results
    (``torch.return_types.max``), a dict whose keys are not in sorted order."""
    x = torch.arange(6.0).reshape(2, 3)
    return [
        x,
        ((x, [x, None, 2]), {"alpha": 0.5, "dtype": torch.float64, "device": torch.device("cpu")}),
        [torch.Size([2, 3]), (x, 1.5, True), [], ()],
        torch.max(x, dim=1),
        ({"z": x, "a": [x, x * 2], "m": {"k": (x, None)}},),
        (torch.float32, torch.strided, torch.contiguous_format, "name", 3j),
    ]


@pytest.mark.parametrize("value", operation_values(), ids=lambda value: type(value).__name__)
def test_the_fast_walks_give_pytrees_leaves_and_maps(value) -> None:
    """The dispatch modes' walk over an operation's arguments gives ``tree_leaves``'s leaves in its
    order, and its map ``tree_map``'s result, container types included (same type, same keys in
    the same order)."""
    assert [id(leaf) for leaf in leaves_of(value)] == [id(leaf) for leaf in tree_leaves(value)]
    tag = lambda leaf: ("tensor", leaf.sum().item()) if isinstance(leaf, torch.Tensor) else ("other", leaf)  # noqa: E731
    ours, theirs = map_leaves(tag, value), tree_map(tag, value)
    assert ours == theirs
    assert repr(ours) == repr(theirs)  # container types and key orders too
