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
    missing_internals,
    tensor_has_hooks,
    tensor_version,
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
