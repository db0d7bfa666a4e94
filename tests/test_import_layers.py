"""lebm's imports (device: none, the source is parsed, not run): no import circle, and no module
imports from a layer above its own, in the order ``docs/design.md`` states. Every ``import`` counts:
at module level, inside functions (lazy) and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "lebm"

#: Layers from the bottom up. A module belongs to the layer of its longest matching prefix; it may
#: import from lower layers and from its own group, never from a higher layer or from another
#: group of the same layer (groups of one layer are siblings that know nothing of each other).
LAYERS: list[list[str]] = [
    ["lebm.version"],
    [
        "lebm.config",
        "lebm.compat",
        "lebm.randomness",
        "lebm.distributed",
        "lebm.devices",
        "lebm.atomic",
        "lebm.arguments",
        "lebm.user_warnings",
    ],
    ["lebm.metrics_table"],
    ["lebm.checkpoints"],  # reading checkpoints (no Lightning): what checkpoint_io's messages name
    ["lebm.loggers", "lebm.checkpoint_io"],
    ["lebm.data"],
    ["lebm.data.images", "lebm.data.text", "lebm.data.toy"],
    ["lebm.data.tasks"],
    ["lebm.recording"],  # everything that records graphs: chains, iterations, their switches
    ["lebm.samplers"],
    ["lebm.nets"],
    ["lebm.estimators"],
    ["lebm.metrics"],
    ["lebm.training"],  # the base's machinery: what every method gets from Method
    ["lebm.models"],
    ["lebm.speed"],
    ["lebm.callbacks"],
    ["lebm.cli"],
    ["lebm", "lebm.__main__"],
]

#: Layers that must not import Lightning: plain torch, usable without a Trainer.
LIGHTNING_FREE = ("lebm.samplers", "lebm.nets", "lebm.estimators", "lebm.metrics", "lebm.config")


def module_files() -> dict[str, Path]:
    files = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        files[name] = path
    return files


MODULES = module_files()


def imported_modules(name: str) -> set[str]:
    """The lebm modules ``name`` imports (``from pkg import submodule`` names the submodule);
    any other top-level package it imports is returned as its bare name (``lightning``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            targets = [
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if not target.startswith("lebm"):
                found.add(target.split(".")[0])
                continue
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: {t for t in imported_modules(name) if t.startswith("lebm")} for name in MODULES}


def layer_of(name: str) -> tuple[int, str]:
    """(layer index, group prefix) of a module: its longest matching prefix in :data:`LAYERS`."""
    best: tuple[int, str] | None = None
    for index, groups in enumerate(LAYERS):
        for prefix in groups:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    assert best is not None, f"{name} is in no layer: add it to LAYERS and to docs/design.md"
    return best


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle() -> None:
    assert cycles() == []


def test_every_module_is_in_a_layer() -> None:
    for name in MODULES:
        layer_of(name)


def upward_imports() -> list[str]:
    wrong = []
    for name, targets in sorted(GRAPH.items()):
        layer, group = layer_of(name)
        is_package = MODULES[name].name == "__init__.py"
        for target in sorted(targets):
            if is_package and target.startswith(name + "."):
                continue  # a package's __init__ gathers its own modules
            target_layer, target_group = layer_of(target)
            if target_layer > layer or (target_layer == layer and target_group != group):
                wrong.append(f"{name} ({group}) imports {target} ({target_group})")
    return wrong


def test_no_import_goes_up_a_layer() -> None:
    assert upward_imports() == []


@pytest.mark.parametrize("prefix", LIGHTNING_FREE)
def test_plain_torch_layers_do_not_import_lightning(prefix: str) -> None:
    for name in MODULES:
        if name == prefix or name.startswith(prefix + "."):
            assert not {"lightning", "pytorch_lightning"} & imported_modules(name), name


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The checks can fail: an edge from the samplers to a method is both."""
    GRAPH["lebm.samplers.base"].add("lebm.models.latent_ebm")
    try:
        assert any("lebm.samplers.base" in component for component in cycles())
        assert "lebm.samplers.base (lebm.samplers) imports lebm.models.latent_ebm (lebm.models)" in upward_imports()
    finally:
        GRAPH["lebm.samplers.base"].discard("lebm.models.latent_ebm")


def test_the_layers_are_the_ones_docs_design_states() -> None:
    """Every layer's folder (``name/``) or module (``name.py``) appears in docs/design.md's tree, and
    its order of layers names them bottom first."""
    design = (ROOT.parent / "docs" / "design.md").read_text()
    for groups in LAYERS:
        for prefix in groups:
            path = ROOT.parent / prefix.replace(".", "/")
            last = prefix.rsplit(".", 1)[-1]
            shown = f"{last}/" if path.is_dir() else f"{last}.py"
            assert shown in design or prefix == "lebm.__main__", f"docs/design.md does not show {prefix} ({shown})"
    order = design[design.index("Layers, bottom first:") :]
    named = [
        "foundations",
        "data",
        "recording",
        "samplers",
        "nets",
        "estimators",
        "metrics",
        "training",
        "models",
        "speed",
        "callbacks",
        "cli",
    ]
    positions = [order.index(f"**{name}**") for name in named]
    assert positions == sorted(positions), "docs/design.md lists the layers in another order than LAYERS"


def test_the_samplers_reach_the_recording_floor_without_loading_lightning() -> None:
    """CPU, a fresh interpreter. The samplers import ``lebm.recording`` (chain capture); its package
    imports the chains' part only, so a sampler used without a Trainer loads no Lightning (the
    recorded iteration and the switch callbacks, which do, load when a method or recipe needs them)."""
    import subprocess
    import sys

    code = "import sys, lebm.samplers, lebm.nets; print(sorted(m for m in sys.modules if m.startswith('lightning')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]", done.stdout
