"""Misspelt option names caught before Lightning is imported (``lebm.cli.known_options``).

Device: CPU. The command records the options of the classes its recipe names once Lightning is
imported; a later command refuses a name no recorded class accepts, in the full parser's words,
and leaves everything it cannot decide (a changed file, a class changed on the way, ``**kwargs``)
to the full parser: it must never refuse a valid recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lebm.cli.known_options import check_known_options, remember_options
from lebm.cli.recipes import expand_includes
from tests.helpers.subprocesses import HANG_SECONDS

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "recipes" / "quickstart.yaml")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("LEBM_CACHE_DIR", str(folder))
    return folder


def expanded(*args: str, recipe: str = QUICKSTART) -> list[str]:
    return expand_includes(["fit", "-c", recipe, *args])


def test_nothing_is_refused_before_anything_was_recorded(cache: Path) -> None:
    assert check_known_options(expanded("--model.init_args.prior_lrr", "1")) is None


MISSPELT = [
    (
        ["--model.init_args.prior_lrr", "1"],
        "'prior_lrr' is not an option of lebm.models.LatentEBM (did you mean 'prior_lr'?) "
        "(at model.init_args.prior_lrr)",
    ),
    (  # jsonargparse's short form, without init_args
        ["--model.prior_lrr=1"],
        "'prior_lrr' is not an option of lebm.models.LatentEBM (did you mean 'prior_lr'?)",
    ),
    (
        ["--model.init_args.prior.init_args.sampler.init_args.n_stepz", "3"],
        "'n_stepz' is not an option of lebm.samplers.Langevin (did you mean 'n_steps'?) "
        "(at model.init_args.prior.init_args.sampler.init_args.n_stepz)",
    ),
    (["--trainer.max_epoch", "1"], "'max_epoch' is not an option of the Trainer (did you mean 'max_epochs'?)"),
    (
        ["--data.init_args.batch_sise", "8"],
        "'batch_sise' is not an option of lebm.data.ImageDataModule (did you mean 'batch_size'?)",
    ),
    (  # in a recipe file, inside a list of callbacks
        [
            "-c",
            "trainer:\n  callbacks:\n  - class_path: lebm.callbacks.SampleGrid\n    init_args: {every_n_epoch: 2}\n",
        ],
        "'every_n_epoch' is not an option of lebm.callbacks.SampleGrid (did you mean 'every_n_epochs'?) "
        "(at trainer.callbacks.0.init_args.every_n_epoch)",
    ),
]


@pytest.mark.parametrize(("args", "message"), MISSPELT, ids=[case[1].split("'")[1] for case in MISSPELT])
def test_a_misspelt_name_is_refused_once_its_class_was_recorded(cache: Path, args: list[str], message: str) -> None:
    remember_options(expanded())
    found = check_known_options(expanded(*args))
    assert found is not None and message in found, found


WRONG_VALUES = [
    (["--trainer.max_epochs", "abc"], "trainer.max_epochs expects an int or null, got 'abc'"),
    (["--data.init_args.batch_size", "1.5"], "data.init_args.batch_size expects an int, got '1.5'"),
    (["--model.init_args.prior_lr", "fast"], "model.init_args.prior_lr expects a float, got 'fast'"),
    (
        ["--model.init_args.posterior_sampler.init_args.form", "papr"],
        "model.init_args.posterior_sampler.init_args.form expects one of 'code', 'paper', got 'papr' "
        "(did you mean 'paper'?)",
    ),
    (["--trainer.precision", "17"], "trainer.precision expects one of 64, 32, 16, 'transformer-engine'"),
]


@pytest.mark.parametrize(("args", "message"), WRONG_VALUES, ids=[case[0][0].rsplit(".", 1)[1] for case in WRONG_VALUES])
def test_a_string_no_simple_alternative_reads_is_refused_in_the_parsers_words(
    cache: Path, args: list[str], message: str
) -> None:
    """Device: CPU. The messages are those of ``lebm.cli.errors`` for the full parser (the subprocess
    test below compares the two directly)."""
    remember_options(expanded())
    found = check_known_options(expanded(*args))
    assert found is not None and found.startswith(message), found


def test_values_the_parser_reads_are_not_refused(cache: Path) -> None:
    """Device: CPU. Numbers in every notation YAML 1.1 or Python reads (hexadecimal, underscores,
    sexagesimal, .inf, 1e-3), null for optional options, a Literal's values (also an int one written
    as a string), booleans and interpolations are left to the full parser (a review found the first
    version refusing several of these)."""
    remember_options(expanded())
    for args in (
        ["--trainer.max_epochs", "null"],
        ["--trainer.max_epochs", "+3"],
        ["--model.init_args.prior_lr", "1e-3"],
        ["--model.init_args.prior_lr", "inf"],  # refused later, with its own message (not finite)
        ["--model.init_args.posterior_sampler.init_args.noise_std", "null"],
        ["--model.init_args.posterior_sampler.init_args.noise_std", "~"],
        *[["--trainer.max_epochs", v] for v in ("0x10", "1_000", "1:00", "3 # a comment", " 8")],
        ["--model.init_args.prior_lr", ".inf"],
        ["--trainer.precision", " 32"],
        ["--trainer.precision", "0x20"],
        ["--model.init_args.posterior_sampler.init_args.cuda_graph", "1"],
        ["--trainer.precision", "bf16-mixed"],
        ["--trainer.precision", "32"],
        ["-c", "model:\n  init_args:\n    prior_lr: ${model.init_args.decoder_lr}\n"],
    ):
        assert check_known_options(expanded(*args)) is None, args


@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_no_recipe_and_no_valid_override_is_refused(cache: Path) -> None:
    """Every recipe of recipes/, and the quickstart with valid overrides of every kind."""
    recipes = [p for p in sorted((REPO / "recipes").rglob("*.yaml")) if not p.name.startswith("_")]
    recipes = [p for p in recipes if p.parent.name not in ("data", "evaluation") and p.name != "base.yaml"]
    assert len(recipes) >= 30
    for recipe in recipes:
        remember_options(expanded(recipe=str(recipe)))
    for recipe in recipes:
        assert check_known_options(expanded(recipe=str(recipe))) is None, recipe
    valid = [
        "--model.init_args.prior_lr=1e-4",
        "--model.decoder_lr",
        "2e-4",
        "--model.init_args.prior.init_args.sampler.init_args.n_steps",
        "3",
        "--trainer.max_epochs",
        "1",
        "--trainer.logger.init_args.name",
        "x",
        "--data.init_args.batch_size",
        "8",
        "--ckpt_path",
        "last",
        "--trainer.callbacks+=lebm.callbacks.SampleGrid",
    ]
    assert check_known_options(expanded(*valid)) is None
    remembered = (cache / "options.json").read_text()
    assert "lebm.models.DualMCMC" in remembered and "lightning.pytorch.Trainer" in remembered


def test_an_entry_is_not_used_once_its_source_file_changed(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "lebm_test_thing.py"
    source.write_text("class Thing:\n    def __init__(self, width: int = 1) -> None:\n        self.width = width\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lebm_test_thing", raising=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  class_path: lebm_test_thing.Thing\n  init_args: {depth: 2}\n")
    args = expand_includes(["fit", "-c", str(recipe)])
    remember_options(args)
    assert "'depth' is not an option of lebm_test_thing.Thing" in (check_known_options(args) or "")
    source.write_text(source.read_text().replace("width: int = 1", "width: int = 1, depth: int = 1"))
    assert check_known_options(args) is None  # the file changed: the full parser decides


def test_an_entry_is_not_used_once_another_module_of_its_package_changed(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device: CPU. The accepted values of an option can come from a type defined in another module
    of the class's package (``MALA(adapt: Sharing)``, ``Sharing`` in ``samplers/adaptation.py``):
    a choice added there must not be refused by a warm cache."""
    package = tmp_path / "lebm_test_pkg"
    package.mkdir()
    (package / "kinds.py").write_text("from typing import Literal\nMode = Literal['a', 'b']\n")
    (package / "__init__.py").write_text(
        "from lebm_test_pkg.kinds import Mode\n\n"
        "class Thing:\n    def __init__(self, mode: Mode = 'a') -> None:\n        self.mode = mode\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("lebm_test_pkg", "lebm_test_pkg.kinds"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  class_path: lebm_test_pkg.Thing\n  init_args: {mode: c}\n")
    args = expand_includes(["fit", "-c", str(recipe)])
    remember_options(args)
    assert "expects one of 'a', 'b', got 'c'" in (check_known_options(args) or "")
    kinds = package / "kinds.py"
    kinds.write_text("from typing import Literal\nMode = Literal['a', 'b', 'c']\n")
    later = kinds.stat().st_mtime_ns + 10**9
    os.utime(kinds, ns=(later, later))
    assert check_known_options(args) is None  # the package changed: the full parser decides


def test_parts_the_check_cannot_decide_are_left_to_the_parser(cache: Path) -> None:
    remember_options(expanded())
    # another method named on the command line: jsonargparse decides which of the recipe's settings it keeps
    assert (
        check_known_options(expanded("--model", "lebm.models.MultiStageNCE", "--model.init_args.n_stages", "2")) is None
    )
    # a class given on the command line for a nested part
    assert (
        check_known_options(
            expanded(
                "--model.init_args.posterior_sampler",
                "lebm.samplers.PersistentChains",
                "--model.init_args.posterior_sampler.init_args.buffer_size",
                "64",
            )
        )
        is None
    )
    # a class that takes **kwargs (the W&B logger passes them on to wandb.init)
    assert check_known_options(expanded("--trainer.logger.init_args.anything", "1")) is None


TYPOS = [
    (
        ["--model.init_args.prior_lrr", "1"],
        "'prior_lrr' is not an option of lebm.models.LatentEBM (did you mean 'prior_lr'?)",
    ),
    (["-c", "trainer: {max_epoch: 2}"], "'max_epoch' is not an option of the Trainer (did you mean 'max_epochs'?)"),
    (["--trainer.max_epochs", "abc"], "trainer.max_epochs expects an int or null, got 'abc'"),
    (
        ["-c", "model:\n  init_args:\n    posterior_sampler:\n      init_args: {form: papr}\n"],
        "model.init_args.posterior_sampler.init_args.form expects one of 'code', 'paper', got 'papr' "
        "(did you mean 'paper'?)",
    ),
    (["-c", "data:\n  init_args: {batch_size: abc}\n"], "data.init_args.batch_size expects an int, got 'abc'"),
    (
        ["-c", "trainer:\n  callbacks:\n  - class_path: lebm.callbacks.SampleGrid\n    init_args: {every_n_epochs: x}"],
        "trainer.callbacks.init_args.every_n_epochs expects an int, got 'x'",
    ),
]


#: One command's output per case of :data:`TYPOS`, each ending in ``LIGHTNING <imported?>``.
CASE_SEPARATOR = "\n=== next case ===\n"


def each_command_in_one_process(cases: list[list[str]], caches: list[Path]) -> list[tuple[int, str]]:
    """``lebm fit -c quickstart *args`` for each ``args`` of ``cases``, with the cache folder of the same
    place in ``caches`` (``LEBM_CACHE_DIR``: what it recorded), one after the other in one fresh
    Python process (a process of its own, so that whether Lightning was imported can be seen; one
    for all cases, so that the interpreter and lebm start once): each command's exit code and stderr,
    which ends in ``LIGHTNING True`` or ``LIGHTNING False``."""
    code = (
        "import io, os, sys, contextlib\nfrom lebm.cli.main import main\n"
        f"for args, cache in zip({cases!r}, {[str(c) for c in caches]!r}):\n"
        "    os.environ['LEBM_CACHE_DIR'] = cache\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err):\n"
        "        try:\n"
        f"            main(['fit', '-c', {QUICKSTART!r}, *args]); code = 0\n"
        "        except SystemExit as stop:\n"
        "            code = stop.code\n"
        "    sys.stderr.write(f'{code}\\n' + err.getvalue() + 'LIGHTNING ' + str('lightning' in sys.modules))\n"
        f"    sys.stderr.write({CASE_SEPARATOR!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_SECONDS, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    outputs = done.stderr.split(CASE_SEPARATOR)[: len(cases)]
    assert len(outputs) == len(cases), done.stderr[-2000:]
    return [(int(out.split("\n", 1)[0]), out.split("\n", 1)[1]) for out in outputs]


@pytest.fixture(scope="module")
def typo_commands(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[tuple[int, str], tuple[int, str]]]:
    """For each case of :data:`TYPOS`, with a cache folder of its own: the command run with no
    recorded options (the full parser reports it, and records), then in a second process with them
    recorded."""
    caches = [tmp_path_factory.mktemp("lebm-cache") for _ in TYPOS]
    cases = [args for args, _ in TYPOS]
    first = each_command_in_one_process(cases, caches)
    second = each_command_in_one_process(cases, caches)
    return list(zip(first, second, strict=True))


@pytest.mark.parametrize(
    "case",
    range(len(TYPOS)),
    ids=["model-flag", "trainer-in-a-recipe", "wrong-int", "wrong-choice-in-a-recipe", "plain-int", "callback-value"],
)
@pytest.mark.slow  # over 2 s: the slow tier (the default tier stays under 6 minutes)
def test_the_command_refuses_a_misspelt_name_without_importing_lightning(
    typo_commands: list[tuple[tuple[int, str], tuple[int, str]]], case: int
) -> None:
    """The first command reports the name through the full parser (and records); the second one
    reports it, in the same words, without importing Lightning."""
    message = TYPOS[case][1]
    (first_code, first), (second_code, second) = typo_commands[case]
    assert first_code == second_code == 2, first[-2000:]
    assert first.splitlines()[0] == second.splitlines()[0], (first, second)
    assert message in second, second[-2000:]
    assert first.endswith("LIGHTNING True") and second.endswith("LIGHTNING False")


def test_what_the_full_parser_accepts_is_never_refused(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Device: CPU. Cases from a review: help options, dotted keys in a recipe, a malformed cache,
    and the same class path found in another folder (another checkout, another user module)."""
    remember_options(expanded())
    assert check_known_options(expanded("--model.help", "lebm.models.LatentEBM")) is None
    assert check_known_options(expanded("--model.init_args.prior_lrr", "1", "--help")) is None
    dotted = "model:\n  init_args:\n    prior.init_args.sampler.init_args.n_steps: 5\n"
    assert check_known_options(expanded("-c", dotted)) is None
    assert (
        check_known_options(expanded("-c", "model.class_path: lebm.models.MultiStageNCE\n", "--model.n_stages", "2"))
        is None
    )

    options = cache / "options.json"
    for broken in ('{"lebm.models.LatentEBM": [1, 2]}', '{"lebm.models.LatentEBM": {"files": {}}}', "[1]", "{"):
        options.write_text(broken)
        assert check_known_options(expanded("--model.init_args.prior_lrr", "1")) is None, broken

    first, second = tmp_path / "a", tmp_path / "b"
    for folder, name in ((first, "alpha"), (second, "beta")):
        folder.mkdir()
        (folder / "lebm_test_copy.py").write_text(
            f"class Net:\n    def __init__(self, {name}: int = 1) -> None:\n        pass\n"
        )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  class_path: lebm_test_copy.Net\n  init_args: {beta: 2}\n")
    monkeypatch.delitem(sys.modules, "lebm_test_copy", raising=False)
    monkeypatch.syspath_prepend(str(first))
    remember_options(expand_includes(["fit", "-c", str(recipe)]))  # recorded from a/: alpha only
    assert "'beta' is not an option" in (check_known_options(expand_includes(["fit", "-c", str(recipe)])) or "")
    monkeypatch.setattr(sys, "path", [str(second), *[p for p in sys.path if p != str(first)]])
    monkeypatch.delitem(sys.modules, "lebm_test_copy")  # a new command: nothing of the user's imported yet
    assert check_known_options(expand_includes(["fit", "-c", str(recipe)])) is None  # b/'s Net takes beta


def test_an_entry_recorded_without_value_types_is_recorded_again(cache: Path) -> None:
    """Device: CPU. A cache written before values were checked has no ``simple`` types: its entries
    are not used, and the next command that imports Lightning records them again."""
    remember_options(expanded())
    options = cache / "options.json"
    entries = json.loads(options.read_text())
    for entry in entries.values():
        del entry["simple"]
    options.write_text(json.dumps(entries))
    assert check_known_options(expanded("--model.init_args.prior_lrr", "1")) is None  # not used
    remember_options(expanded())
    assert all("simple" in entry for entry in json.loads(options.read_text()).values())
    assert check_known_options(expanded("--trainer.max_epochs", "abc")) is not None
