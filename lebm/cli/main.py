"""The ``lebm`` command: ``lebm fit|validate|test|predict -c recipe.yaml [--key value ...]``.

This module is what the console script imports. It answers ``lebm``, ``lebm --help`` and
``lebm --version`` and catches the commonest mistakes (no recipe, a missing or broken recipe file,
a missing or unreadable ``--ckpt_path``) without importing Lightning (several seconds); then it
hands over to the LightningCLI in :mod:`lebm.cli.app` (the only module that imports Lightning).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lebm.cli.catalog import locate_config_args
from lebm.cli.errors import SUBCOMMANDS, fail
from lebm.cli.known_options import cache_dir, check_known_options, remember_options
from lebm.cli.known_options import cache_file as known_options_file
from lebm.cli.recipes import CONFIG_FLAGS, RecipeError, expand_includes
from lebm.version import __version__

USAGE = f"""usage: lebm {{fit,validate,test,predict}} -c RECIPE [--section.key VALUE ...]
       lebm recipes [show NAME | copy NAME [DIR]]

lebm {__version__}: latent-space energy-based models on PyTorch Lightning.

  lebm fit -c quickstart                               train (here: the quickstart, on a CPU)
  lebm fit -c RECIPE --ckpt_path last                  resume a run from its last checkpoint
  lebm test -c RECIPE --ckpt_path RUN/checkpoints/last.ckpt
  lebm fit -c RECIPE --print_config                    the composed config, every option
  lebm fit --help                                      all options of a command
  lebm recipes                                         the recipes that come with lebm

RECIPE: a YAML file, or the name of a recipe that comes with lebm (quickstart, latent_ebm/svhn,
recipes/latent_ebm/svhn.yaml: a file of that path, when one exists, wins). docs/recipes.md explains
them. Override any value on the command line, e.g. --trainer.max_epochs 10.
"""

#: Warnings from dependencies that say nothing to a user of lebm (matched by message).
DEPENDENCY_NOISE = (
    r".*isinstance\(treespec, LeafSpec\).*",  # torch/Lightning internals
    r".*The anonymous setting has no effect.*",  # wandb about an argument Lightning always passes
    r".*LightningCLI's args parameter is intended to run from within Python.*",
    r"Checkpoint directory .* exists and is not empty.*",  # every resume: lebm manages its run folders
    r".*`weights_only` was not set, defaulting to `False`.*",  # Lightning reading lebm's own checkpoints
    r".*torch.distributed.nn.functional.all_gather is deprecated.*",  # inside Lightning's all_gather, under DDP
    r".*Using ModelCheckpoint with manual optimization and every_n_train_steps.*",  # lebm saves after the update
)


def quiet_dependency_warnings() -> None:
    """Hide the dependencies' warnings that every command printed and no user can act on."""
    for pattern in DEPENDENCY_NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("WANDB_SILENT", "true")  # wandb's banner; runs still say where they are saved


def show_warnings_as_command_lines() -> None:
    """Format a warning whose source line is lebm's or a library's that runs lebm's checks
    (Lightning, jsonargparse, torch, ``contextlib``) or the ``lebm`` script's as ``lebm: warning:
    <message>``: it is about the command the user typed, not about a line of a library they did not
    write. A warning from the user's own code keeps Python's ``file:line: Category: message``.
    Only the text changes (``warnings.formatwarning``): filters and recorders (``catch_warnings``)
    see every warning as before. Installing it twice installs it once."""
    from lebm.user_warnings import in_a_library

    original = warnings.formatwarning
    if getattr(original, "lebm_command_lines", False):
        return
    script = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else None

    def format_warning(message, category, filename, lineno, line=None):  # type: ignore[no-untyped-def]
        if in_a_library(filename) or filename == "sys" or os.path.realpath(filename) == script:
            kind = "" if category is UserWarning else f" ({category.__name__})"
            return f"lebm: warning{kind}: {message}\n"
        return original(message, category, filename, lineno, line)

    format_warning.lebm_command_lines = True  # type: ignore[attr-defined]
    warnings.formatwarning = format_warning


def _value_of(args: list[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def join_negative_values(args: list[str]) -> list[str]:
    """``--key -1e-3`` as ``--key=-1e-3``: argparse takes a value that starts with ``-`` for an option
    and reports "expected one argument" for ``--key``."""
    joined: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("--") and "=" not in arg and following is not None and _is_negative_number(following):
            joined.append(f"{arg}={following}")
            index += 2
            continue
        joined.append(arg)
        index += 1
    return joined


def _is_negative_number(text: str) -> bool:
    if not text.startswith("-"):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def check_arguments(args: list[str]) -> None:
    """The checks that need no Lightning: a subcommand, a recipe, readable files."""
    subcommand = args[0]
    if subcommand not in SUBCOMMANDS:
        import difflib

        close = difflib.get_close_matches(subcommand, SUBCOMMANDS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        fail(f"unknown command {subcommand!r}{hint}; commands are {', '.join(SUBCOMMANDS)}. See lebm --help")
    asking_help = any(arg in ("-h", "--help") for arg in args[1:])
    has_config = any(arg in CONFIG_FLAGS or arg.startswith("--config=") for arg in args)
    if not asking_help and not has_config and not any(arg.startswith("--model") for arg in args):
        fail(
            f"lebm {subcommand} needs a recipe: lebm {subcommand} -c quickstart. lebm comes with one per paper "
            "experiment (<method>/<dataset>): lebm recipes lists them; docs/recipes.md explains them."
        )
    try:
        locate_config_args(args)
    except RecipeError as error:
        fail(str(error))
    ckpt_path = _value_of(args, "--ckpt_path")
    if ckpt_path not in (None, "last", "auto", "hpc", "best", "null"):
        from lebm.checkpoints import CheckpointError, CheckpointNotPlain, check_checkpoint_file

        try:
            check_checkpoint_file(ckpt_path)
        except CheckpointNotPlain:
            pass  # intact: whether to trust it is --weights_only's, read from the parsed config (check_resume)
        except CheckpointError as error:
            fail(str(error))


def help_cache(subcommand: str) -> Path:
    """Where ``lebm <subcommand> --help`` is kept: its text depends only on the installed versions
    of lebm, Lightning, jsonargparse and torch, and, in a working copy, on lebm's source files (the
    newest modification time of any of them is part of the name)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = []
    for package in ("lightning", "jsonargparse", "torch"):
        try:
            versions.append(version(package))
        except PackageNotFoundError:
            versions.append("none")
    package = Path(__file__).resolve().parents[1]
    newest = max(source.stat().st_mtime_ns for source in package.rglob("*.py"))
    stamp = f"{__version__}-{'-'.join(versions)}-{newest}"
    return cache_dir() / f"help-{subcommand}-{stamp}.txt"


def print_command_help(subcommand: str, console: bool) -> None:
    """``lebm <subcommand> --help``: from the cache when it was printed before (Lightning's import and
    the parser take several seconds), else from LightningCLI, then kept."""
    cache = help_cache(subcommand)
    if cache.is_file():
        sys.stdout.write(cache.read_text())
        return
    import contextlib
    import io

    from lebm.cli.app import run  # Lightning is imported here

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            if console:
                sys.argv = [sys.argv[0], subcommand, "--help"]
                run(None)
            else:
                run([subcommand, "--help"])
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    text = printed.getvalue()
    sys.stdout.write(text)
    with contextlib.suppress(OSError):  # a read-only home: no cache, the same help
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, cache)
        for stale in cache.parent.glob(f"help-{subcommand}-*.txt"):  # texts of earlier versions
            if stale != cache:
                stale.unlink(missing_ok=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lebm`` console script (``args``: instead of ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    quiet_dependency_warnings()
    show_warnings_as_command_lines()
    if os.getcwd() not in sys.path:  # class paths of the user's own modules resolve from here, as with python -m
        sys.path.insert(0, os.getcwd())
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return
    if argv[0] == "--version":
        sys.stdout.write(f"lebm {__version__}\n")
        return
    if argv[0] == "recipes":
        from lebm.cli.recipes_command import main as recipes_main

        recipes_main(argv[1:])
        return
    check_arguments(argv)
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print_command_help(argv[0], args is None)
        return
    argv = join_negative_values(argv)
    try:
        expanded = expand_includes(locate_config_args(argv))
    except RecipeError as error:
        fail(str(error))
    misspelt = check_known_options(expanded)
    if misspelt:
        fail(f"{misspelt}\n(all options: lebm {argv[0]} --help; names recorded in {known_options_file()})")
    from lebm.cli.app import run  # Lightning is imported here

    remember_options(expanded)

    if args is None:  # the console script: LightningCLI reads sys.argv itself
        sys.argv = [sys.argv[0], *expanded]
        run(None)
    else:
        run(expanded)


if __name__ == "__main__":
    main()
