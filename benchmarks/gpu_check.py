"""The one command for a lent GPU machine: the environment, the gpu test tier, the quickstart's epoch
speed and the speed suite, scored against issue 23's targets and DAMC's (issue 67), in one JSON record
and a Markdown table.

    python benchmarks/gpu_check.py [--out DIR] [--commit SHA] [--budget 540]
    python benchmarks/gpu_check.py --table RECORD.json     # print the Markdown of an existing record

On the GPU machine, after installing the missing packages (from wheels copied alongside the tree); its
copy of the tree has no .git, so give the SHA of the tree sent, and write under ``$OUT``, which comes back::

    python3 benchmarks/gpu_check.py --out $OUT --commit 1d30dd6...

Stages, in this order, under one deadline (``--budget`` seconds from the start; each stage gets at
most its share of the budget and never more than what is left; a stage skipped or cut off is
recorded as such):

1. ``environment``: device, torch, CUDA, Lightning and Python versions, which optional packages
   import, the commit, the date and the load average;
2. ``gpu_tier``: ``pytest -m gpu`` (``-n 8`` with pytest-xdist, ``--timeout 300`` with
   pytest-timeout), its junit XML read into counts and the failing tests' first message lines;
3. ``quickstart``: ``python -m lebm fit -c recipes/quickstart.yaml`` on the GPU for 10 epochs, timed
   per epoch by ``benchmarks/epoch_clock.py`` (added with ``--trainer.callbacks+=``, the CLI's own
   path); an epoch's it/s is its training batches over the seconds from its start to the end of its
   last training batch (``it_per_sec_whole_epoch`` adds validation and the epoch-end callbacks); the
   median of epochs 2-10 (epoch 1 records the graphs) against 9.6 it/s (eager, H100); run twice,
   10 epochs each, with recorded iterations on (``LEBM_RECORDED_ITERATIONS=1``) and then off
   (``=0``, captured chains: ``iterations_off``), on one machine in one call; the stage gets at
   least :data:`QUICKSTART_STAGE_MIN_S` (an H200 took 33 s and 23 s for the two at 256fb1d);
4. ``suite``: ``benchmarks/suite.py``'s rows (``--paths``: eager, captured chains, recorded
   iterations, captured bf16 and recorded bf16 by default) for every method, 10 timed iterations a
   row (``--suite-iters``; DAMC's too, after at least 2 warm-up ones: its first captured iteration
   records its amortizer's ancestral start as well as its chains), row by row until the deadline,
   in the order :func:`suite_order` gives: first every method's captured and recorded fp32 rows
   side by side, then the bf16 pair, then the rest (eager), DAMC first in each round, so that a
   deadline cuts eager rows before it leaves a method without a same-call captured/recorded
   comparison (``benchmarks/speed_defaults.py`` decides the methods' defaults from those, with 10+
   timed iterations a row); a pair starts only with time left for both of its rows;
5. ``profile`` (only when asked for, ``--stages profile``: a second call, cut at ``--budget``, about
   6 minutes estimated):
   ``benchmarks/profile_step.py`` on LatentEBM (fp32, bf16, bf16 with cuDNN's benchmark, fp32 with
   TF32), the quickstart, DualMCMC (bf16, with cuDNN's benchmark, with compiled nets), DAMC (fp32, bf16)
   and the hierarchical model (fp32, bf16), those of ``--methods`` in the order it names them, and
   ``benchmarks/host_work.py`` on LatentEBM and the quickstart: where an iteration's time goes once
   its chains are graphs; then ``benchmarks/ancestral_start.py`` (DAMC's amortizer start, eager
   and captured) and ``benchmarks/damc_cost.py --pairs svhn`` (DAMC's iteration split: its start,
   chains, amortizer steps and updates) on DAMC's SVHN recipe.

The default plan for 540 s: the gpu tier at most 200 s (it took about 105 s with ``-n 8`` on an
H100 and an H200), the quickstart at least 100 s (both runs took about 60 s on an H200), the suite
what is left, about 370 s. A suite row took about 20 s on an H200 (a process each,
``--suite-iters 10 --suite-warmup 2``), so the default call times the fp32 pairs and some of the
bf16 ones and leaves the eager rows skipped; all 30 rows (six recipes, five paths) need about
600 s. Issue 106's comparison, the five methods' ten pairs and their eager rows with the
quickstart both ways, in one call of about 9.5 minutes::

    python benchmarks/gpu_check.py --stages quickstart,suite --budget 570 \
        --methods damc,latent_ebm,multistage_nce,dual_mcmc,hierarchical

``--stages``, ``--methods`` and ``--paths`` rerun a part (``--methods damc`` DAMC's rows alone).

Writes at most eight files under ``--out``: ``gpu_check-<date>-<device>.json`` (the record, rewritten
after every stage) and ``.md``, ``gpu_tier.log``, ``gpu_junit.xml``, ``quickstart.log``,
``quickstart-iterations_off.log``,
``suite.log`` and ``profile.log``; prints the Markdown. Without a CUDA device it runs nothing and exits with status 2.
The exit status says whether the check ran (0), not whether the targets were met: read ``targets``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lebm.recording.switch import ITERATION_VARIABLE

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: The quickstart's training it/s on an H100 with eager chains, measured before whole-chain capture.
REFERENCE_QUICKSTART_IT_S = 9.6
QUICKSTART_EPOCHS = 10
#: The methods issue 23's targets read (a peak-memory target each).
TARGET_METHODS = ("latent_ebm", "multistage_nce", "dual_mcmc", "hierarchical", "quickstart")
#: The suite's methods, in this order: DAMC first (its targets are issue 67's; its rows would be the
#: ones the deadline cut were they last), then issue 23's, the quickstart's rows last.
SUITE_METHODS = ("damc", *TARGET_METHODS)
#: Timed iterations per suite row by default, every method's (DAMC's too): the fewest with which a
#: record decides a method's default path (``benchmarks/speed_defaults.py``'s ``MIN_ITERS``).
SUITE_ITERS = 10
#: Warm-up iterations at least per suite row of these methods (``--suite-warmup`` if more): DAMC's
#: first captured iteration records its amortizer's ancestral start beside its chains, so no
#: recording falls in a timed iteration.
SUITE_WARMUP_MIN = {"damc": 2}
#: The suite's paths without ``--paths``: eager, then captured chains and recorded iterations in fp32
#: and in bf16 (issue 106: the two compared in one call decide each method's default).
SUITE_PATHS = ("eager", "captured", "recorded", "captured_bf16", "recorded_bf16")
#: The paths timed side by side, each pair in a round of its own across the methods, before the rest.
SUITE_PAIRS = (("captured", "recorded"), ("captured_bf16", "recorded_bf16"))
#: The five methods of the papers (the quickstart aside), each scored recorded against eager.
PAPER_METHODS = ("latent_ebm", "multistage_nce", "dual_mcmc", "hierarchical", "damc")
#: A profile run whose device waits longer than this share of the iteration misses issue 90's target.
IDLE_SHARE_TARGET = 0.2
OPTIONAL_PACKAGES = ("wandb", "torch_fidelity", "omegaconf", "jsonargparse")
#: The most of ``--budget`` each stage may take (the suite takes what is left, up to the deadline).
STAGE_SHARE = {"gpu_tier": 0.37, "quickstart": 0.15}
#: Seconds the quickstart stage may take at least, whatever its share (within what is left): two runs of
#: 10 epochs, recorded iterations on and off (at 256fb1d an H200 took 33 s and 23 s; a 28 s half of
#: a 57 s share cut the first run off after 5 epochs).
QUICKSTART_STAGE_MIN_S = 100.0
#: A stage or suite row given fewer seconds than this is skipped rather than started.
MIN_SECONDS = {"gpu_tier": 30.0, "quickstart": 20.0, "suite_row": 15.0}
#: Seconds at most per profile run (a DualMCMC run with compiled nets compiles first).
PROFILE_RUN_LIMIT_S = 150.0
#: Seconds a process stopped with SIGINT at its limit gets to write its reports before SIGKILL.
GRACE_S = 15.0
STAGES = ("gpu_tier", "quickstart", "suite", "profile")
#: What runs without --stages: the profile is a second call's work (about 6 minutes estimated, cut at --budget).
DEFAULT_STAGES = ("gpu_tier", "quickstart", "suite")
#: The profile stage's runs: (label, script, arguments); each a fresh process, in this order.
ProfileRun = tuple[str, str, tuple[str, ...]]
PROFILE_RUNS: tuple[ProfileRun, ...] = (
    ("latent_ebm captured fp32", "profile_step.py", ("--recipe", "recipes/latent_ebm/svhn.yaml")),
    (
        "latent_ebm captured bf16",
        "profile_step.py",
        ("--recipe", "recipes/latent_ebm/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last"),
    ),
    (
        "latent_ebm captured bf16, cudnn benchmark",
        "profile_step.py",
        ("--recipe", "recipes/latent_ebm/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--cudnn-benchmark",),
    ),
    (
        "latent_ebm captured fp32, tf32",
        "profile_step.py",
        ("--recipe", "recipes/latent_ebm/svhn.yaml", "--tf32", "true"),
    ),
    (
        "latent_ebm recorded fp32",
        "profile_step.py",
        ("--recipe", "recipes/latent_ebm/svhn.yaml", "--recorded-iterations", "on"),
    ),
    ("quickstart captured fp32", "profile_step.py", ("--recipe", "recipes/quickstart.yaml")),
    ("latent_ebm host work", "host_work.py", ("--recipe", "recipes/latent_ebm/svhn.yaml", "--iters", "100")),
    ("quickstart host work", "host_work.py", ("--recipe", "recipes/quickstart.yaml", "--iters", "100")),
    (
        "dual_mcmc captured bf16",
        "profile_step.py",
        ("--recipe", "recipes/dual_mcmc/cifar10.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--iters", "3", "--warmup", "2"),
    ),
    (
        "dual_mcmc captured bf16, cudnn benchmark",
        "profile_step.py",
        ("--recipe", "recipes/dual_mcmc/cifar10.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--iters", "3", "--warmup", "2", "--cudnn-benchmark"),
    ),
    (
        "dual_mcmc captured bf16, compiled nets",
        "profile_step.py",
        ("--recipe", "recipes/dual_mcmc/cifar10.yaml", "--precision", "bf16-mixed")
        + ("--fast", "compile,channels_last", "--iters", "3", "--warmup", "2"),
    ),
    (
        "damc captured fp32",
        "profile_step.py",
        ("--recipe", "recipes/damc/svhn.yaml", "--iters", "3", "--warmup", "2"),
    ),
    (
        "damc captured bf16",
        "profile_step.py",
        ("--recipe", "recipes/damc/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--iters", "3", "--warmup", "2"),
    ),
    ("damc ancestral start", "ancestral_start.py", ("--recipes", "recipes/damc/svhn.yaml", "--iters", "10")),
    (
        "damc iteration split",
        "damc_cost.py",
        ("--pairs", "svhn", "--accelerator", "gpu", "--iters", "5", "--warmup", "2"),
    ),
    (
        "damc recorded fp32",
        "profile_step.py",
        ("--recipe", "recipes/damc/svhn.yaml", "--iters", "3", "--recorded-iterations", "on"),
    ),
    (
        "damc recorded bf16",
        "profile_step.py",
        ("--recipe", "recipes/damc/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--iters", "3", "--recorded-iterations", "on"),
    ),
    ("hierarchical captured fp32", "profile_step.py", ("--recipe", "recipes/hierarchical/svhn.yaml")),
    (
        "hierarchical recorded fp32",
        "profile_step.py",
        ("--recipe", "recipes/hierarchical/svhn.yaml", "--recorded-iterations", "on"),
    ),
    (
        "hierarchical recorded bf16",
        "profile_step.py",
        ("--recipe", "recipes/hierarchical/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last")
        + ("--recorded-iterations", "on"),
    ),
    (
        "hierarchical captured bf16",
        "profile_step.py",
        ("--recipe", "recipes/hierarchical/svhn.yaml", "--precision", "bf16-mixed", "--fast", "channels_last"),
    ),
)


def profile_runs_for(methods: tuple[str, ...]) -> tuple[ProfileRun, ...]:
    """The profile runs of ``methods``, in the order ``methods`` names them (``--methods damc,...``
    profiles DAMC first, so a deadline cuts the methods named last). A run's method is its label's
    first word."""
    return tuple(run for method in methods for run in PROFILE_RUNS if run[0].split()[0] == method)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets read off a suite row: ``key`` of the ``path`` row of ``method``,
    at least ``threshold`` (or at most, with ``at_most``). A ratio's ``key`` is missing when the
    ``against`` row it is taken over failed or did not run."""

    name: str
    what: str
    method: str
    path: str
    key: str
    threshold: float
    at_most: bool = False
    against: str = "eager"


ROW_TARGETS: tuple[Target, ...] = (
    Target(
        "latent_ebm_captured_vs_plain_loop",
        "LatentEBM SVHN, captured fp32: the plain eager loop's s/iter over this",
        *("latent_ebm", "captured", "speedup_vs_plain_loop", 5.0),
    ),
    Target(
        "latent_ebm_captured_bf16_vs_plain_loop",
        "LatentEBM SVHN, captured bf16: the plain eager loop's s/iter over this",
        *("latent_ebm", "captured_bf16", "speedup_vs_plain_loop", 8.0),
    ),
    Target(
        "multistage_nce_captured_vs_eager",
        "MultiStageNCE SVHN (last stage), captured fp32: its eager s/iter over this",
        *("multistage_nce", "captured", "speedup_vs_eager", 4.0),
    ),
    Target(
        "hierarchical_captured_vs_eager",
        "JointHierarchicalEBM SVHN, captured fp32: its eager s/iter over this",
        *("hierarchical", "captured", "speedup_vs_eager", 4.0),
    ),
    Target(
        "dual_mcmc_captured_bf16_sec_per_iter",
        "DualMCMC CIFAR-10, captured bf16: seconds per iteration",
        *("dual_mcmc", "captured_bf16", "sec_per_iter", 0.41),
        at_most=True,
    ),
    Target(
        "damc_captured_vs_eager",
        "DAMC SVHN, captured fp32: its eager s/iter over this",
        *("damc", "captured", "speedup_vs_eager", 4.0),
    ),
    Target(
        "damc_captured_bf16_vs_captured",
        "DAMC SVHN, captured bf16 not slower than captured fp32: the fp32 s/iter over this",
        *("damc", "captured_bf16", "speedup_vs_captured", 1.0),
        against="captured",
    ),
    *(
        Target(
            f"{method}_recorded_vs_eager",
            f"{method}: recorded iterations fp32, its eager s/iter over this",
            *(method, "recorded", "speedup_vs_eager", 5.0),
        )
        for method in PAPER_METHODS
    ),
    *(
        Target(
            f"{method}_recorded_bf16_vs_recorded",
            f"{method}: recorded iterations, the fp32 s/iter over bf16's",
            *(method, "recorded_bf16", "speedup_vs_recorded", 1.3),
            against="recorded",
        )
        for method in PAPER_METHODS
        if method != "dual_mcmc"
    ),
    Target(
        "dual_mcmc_recorded_bf16_sec_per_iter",
        "DualMCMC CIFAR-10, recorded bf16: seconds per iteration",
        *("dual_mcmc", "recorded_bf16", "sec_per_iter", 0.41),
        at_most=True,
    ),
    *(
        Target(
            f"{method}_peak_mem_captured_vs_eager",
            f"{method}: peak GPU memory, captured fp32 over eager fp32",
            *(method, "captured", "peak_mem_vs_eager", 1.5),
            at_most=True,
        )
        for method in TARGET_METHODS
    ),
)


class Deadline:
    """The seconds left of a budget that started when this was made."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return max(0.0, self.budget_s - self.elapsed())

    def limit(self, cap: float) -> float:
        """A stage's time limit: its cap, or what is left of the budget if that is less."""
        return min(cap, self.left())


def say(message: str) -> None:
    """A progress line on stderr (stdout ends with the Markdown)."""
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def slug(text: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia_h100_80gb_hbm3`` (as the suite names its files)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


def first_line(text: str | None, limit: int = 300) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:limit]
    return ""


def tail(path: Path, lines: int = 8) -> list[str]:
    """The last ``lines`` non-empty lines of a log file (none if it is missing)."""
    if not path.is_file():
        return []
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()][-lines:]


# -- 1. environment ----------------------------------------------------------------------------------


def package_status(name: str) -> dict[str, Any]:
    """Whether ``name`` imports here, with its version or the import error's first line."""
    try:
        module = importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - a broken install is "not importable", with its reason
        return {"importable": False, "error": first_line(f"{type(error).__name__}: {error}")}
    return {"importable": True, "version": str(getattr(module, "__version__", "unknown"))}


def find_commit(given: str | None, repo: Path = REPO) -> dict[str, Any]:
    """The commit: ``--commit`` if given, else ``git rev-parse HEAD`` where the tree has a .git
    (with whether tracked files differ from it), else ``unknown``."""
    if given:
        return {"commit": given, "commit_source": "--commit"}
    if (repo / ".git").exists():
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=20)
            changed = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired):
            head = None
        if head is not None and head.returncode == 0:
            return {"commit": head.stdout.strip(), "commit_source": "git", "tree_differs": bool(changed.stdout.strip())}
    return {"commit": "unknown", "commit_source": "unknown"}


def environment(commit: str | None) -> dict[str, Any]:
    """What ran the check: GPU, library versions, optional packages, commit, date and load."""
    import lightning
    import torch

    properties = torch.cuda.get_device_properties(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "compute_capability": f"{properties.major}.{properties.minor}",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "lightning": lightning.__version__,
        "python": platform.python_version(),
        "optional_packages": {name: package_status(name) for name in OPTIONAL_PACKAGES},
        "pytest_plugins": {name: package_status(name)["importable"] for name in ("xdist", "pytest_timeout")},
        **find_commit(commit),
        "date": now.date().isoformat(),
        "started_at": now.isoformat(timespec="seconds"),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "cpu_count": os.cpu_count(),
    }


# -- running a command under a time limit ------------------------------------------------------------


def run_limited(command: list[str], log: Path, limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    """Run ``command`` from the repository root, its output into ``log``, for at most ``limit_s``
    seconds: :data:`GRACE_S` (at most a quarter of the limit) before the end, SIGINT to its process
    group (pytest and lebm write their reports on it), at the end SIGKILL. Returns ``returncode``
    (negative: the signal that ended it), ``wall_s`` and ``cut_off`` (whether it was stopped)."""
    grace = min(GRACE_S, limit_s / 4)
    start = time.monotonic()
    with log.open("w") as out:
        out.write("+ " + " ".join(command) + "\n")
        out.flush()
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        cut_off = False
        try:
            process.wait(timeout=max(limit_s - grace, 1.0))
        except subprocess.TimeoutExpired:
            cut_off = True
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return {"returncode": process.returncode, "wall_s": round(time.monotonic() - start, 1), "cut_off": cut_off}


def child_env(*extra_paths: Path) -> dict[str, str]:
    """This environment for a child process, with the repository (and ``extra_paths``) appended to
    ``PYTHONPATH`` (the caller's entries, carried wheels say, stay first) and W&B offline and quiet."""
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for extra in (REPO, *extra_paths):
        if str(extra) not in paths:
            paths.append(str(extra))
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(paths),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONUNBUFFERED": "1",
    }


def skipped(reason: str, **details: Any) -> dict[str, Any]:
    """The record of a stage that did not run."""
    return {"status": "skipped", "reason": reason, **details}


# -- 2. the gpu test tier ----------------------------------------------------------------------------


def junit_test_id(classname: str, name: str, root: Path = REPO) -> str:
    """pytest's id for a junit ``testcase``: ``tests.models.test_x.TestA`` and ``test_b[p]`` give
    ``tests/models/test_x.py::TestA::test_b[p]`` when that file is under ``root``."""
    parts = [part for part in classname.split(".") if part]
    for cut in range(len(parts), 0, -1):
        if root.joinpath(*parts[:cut]).with_suffix(".py").is_file():
            return "::".join(["/".join(parts[:cut]) + ".py", *parts[cut:], name])
    return f"{classname}::{name}" if classname else name


def parse_junit(path: Path, root: Path = REPO) -> dict[str, Any]:
    """Counts of a junit XML report (``passed``, ``failed``, ``errors``, ``skipped``, ``tests``) and
    ``failing``: each failure or error with the test's id and the first line of its message.
    ``incomplete`` counts the nameless entries pytest writes for tests an interrupt stopped part-way."""
    counts = {"tests": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 0, "incomplete": 0}
    failing = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        if case.get("name") is None:
            counts["incomplete"] += 1
            continue
        counts["tests"] += 1
        test_id = junit_test_id(case.get("classname", ""), case.get("name", ""), root)
        outcomes = {child.tag for child in case}
        for child in case:
            if child.tag in ("failure", "error"):
                message = first_line(child.get("message")) or first_line(child.text)
                failing.append({"id": test_id, "kind": child.tag, "message": message})
        counts["failed"] += "failure" in outcomes
        counts["errors"] += "error" in outcomes and "failure" not in outcomes
        counts["skipped"] += "skipped" in outcomes and not outcomes & {"failure", "error"}
        counts["passed"] += not outcomes & {"failure", "error", "skipped"}
    return {**counts, "failing": failing}


def gpu_tier_command(junit: Path, xdist: bool, timeout_plugin: bool, workers: int = 8) -> list[str]:
    """The pytest command of the gpu tier (``-n`` only with pytest-xdist, ``--timeout`` only with
    pytest-timeout; without pytest-xdist the tier runs in one process, as tests/conftest.py says)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    command += ["-n", str(workers)] if xdist else []
    if timeout_plugin:
        command += ["--timeout", "300"]
    return [*command, "--junitxml", str(junit)]


def gpu_tier(out: Path, limit_s: float, plugins: dict[str, bool]) -> dict[str, Any]:
    """Run the gpu tier for at most ``limit_s`` seconds; its log and junit XML go under ``out``."""
    junit = out / "gpu_junit.xml"
    junit.unlink(missing_ok=True)
    log = out / "gpu_tier.log"
    command = gpu_tier_command(junit, plugins.get("xdist", False), plugins.get("pytest_timeout", False))
    say(f"gpu tier: {' '.join(command[1:])} (limit {limit_s:.0f} s)")
    ran = run_limited(command, log, limit_s, child_env())
    result: dict[str, Any] = {
        "status": "cut_off" if ran["cut_off"] else "completed",
        "limit_s": round(limit_s),
        **ran,
        "command": "python " + " ".join(command[1:]),
        "log": log.name,
    }
    if junit.is_file():
        result.update(parse_junit(junit), junit=junit.name)
    else:
        result.update(junit=None, log_tail=tail(log))
        if not ran["cut_off"]:
            result["status"] = "failed"
    return result


# -- 3. the quickstart's epochs ----------------------------------------------------------------------


def quickstart_command(run_dir: Path, clock_file: Path, logger: bool, accelerator: str = "gpu") -> list[str]:
    """``python -m lebm fit`` of the quickstart for :data:`QUICKSTART_EPOCHS` epochs with the epoch
    clock added to its callbacks (``benchmarks/`` must be on ``PYTHONPATH``)."""
    clock = {"class_path": "epoch_clock.EpochClock", "init_args": {"out": str(clock_file)}}
    command = [
        *(sys.executable, "-m", "lebm", "fit", "-c", "recipes/quickstart.yaml"),
        *("--trainer.accelerator", accelerator, "--trainer.devices", "1"),
        *("--trainer.max_epochs", str(QUICKSTART_EPOCHS), "--trainer.default_root_dir", str(run_dir)),
        *("--trainer.enable_progress_bar", "false"),
    ]
    if not logger:
        command += ["--trainer.logger", "false"]
    return [*command, "--trainer.callbacks+=" + json.dumps(clock)]


def epoch_speeds(clock: dict[str, Any]) -> dict[str, Any]:
    """Training it/s of each epoch the clock recorded (batches over ``train_seconds``), their median
    over epochs 2 onwards (the first records the graphs), and that median over the reference."""
    epochs = clock.get("epochs", [])
    speeds = [round(e["batches"] / e["train_seconds"], 2) for e in epochs if e["train_seconds"] > 0]
    whole = [round(e["batches"] / e["epoch_seconds"], 2) for e in epochs if e["epoch_seconds"] > 0]
    summary: dict[str, Any] = {
        "epochs_timed": len(epochs),
        "batches_per_epoch": [e["batches"] for e in epochs],
        "it_per_sec": speeds,
        "it_per_sec_whole_epoch": whole,
        "median_it_per_sec": None,
        "reference_it_per_sec": REFERENCE_QUICKSTART_IT_S,
        "speedup_vs_reference": None,
    }
    if len(speeds) >= 2:
        median = statistics.median(speeds[1:])
        summary["median_it_per_sec"] = round(median, 2)
        summary["median_it_per_sec_whole_epoch"] = round(statistics.median(whole[1:]), 2)
        summary["speedup_vs_reference"] = round(median / REFERENCE_QUICKSTART_IT_S, 3)
    return summary


def quickstart_stage(out: Path, limit_s: float, logger: bool) -> dict[str, Any]:
    """The quickstart timed twice in ``limit_s`` seconds, 10 epochs each: with recorded iterations
    on (``LEBM_RECORDED_ITERATIONS=1``), then off (``=0``: captured chains, eager updates, lebm's
    CUDA default since issue 106), the second under ``iterations_off``; same machine, same call.
    The first run gets half the limit, the second what the first left."""
    start = time.monotonic()
    result = quickstart(out, limit_s / 2, logger, recorded=True)
    left = limit_s - (time.monotonic() - start)
    if left >= MIN_SECONDS["quickstart"] / 2:
        off = quickstart(out, left, logger, recorded=False)
        keep = ("status", "wall_s", "log", "chain_calls", "recorded_iterations", "median_it_per_sec", "it_per_sec")
        result["iterations_off"] = {key: off.get(key) for key in keep}
    return result


def quickstart(out: Path, limit_s: float, logger: bool, recorded: bool = True) -> dict[str, Any]:
    """Train the quickstart on the GPU through the CLI for at most ``limit_s`` seconds and time its
    epochs, with recorded iterations on or off (the switch set either way, whatever the method's
    default); the run folder is temporary, the CLI's output goes to ``out/quickstart.log``
    (``quickstart-iterations_off.log`` when off)."""
    with tempfile.TemporaryDirectory(prefix="gpu_check_quickstart_") as scratch:
        clock_file = Path(scratch) / "epochs.json"
        command = quickstart_command(Path(scratch) / "run", clock_file, logger)
        setting = "on" if recorded else "off"
        say(f"quickstart: {QUICKSTART_EPOCHS} epochs, recorded iterations {setting} (limit {limit_s:.0f} s)")
        log = out / ("quickstart.log" if recorded else "quickstart-iterations_off.log")
        env = {**child_env(HERE), ITERATION_VARIABLE: "1" if recorded else "0"}
        ran = run_limited(command, log, limit_s, env)
        clock = json.loads(clock_file.read_text()) if clock_file.is_file() else {}
    if ran["cut_off"]:
        status = "cut_off"
    elif ran["returncode"] != 0 or not clock:
        status = "failed"
    else:
        status = "completed"
    result: dict[str, Any] = {
        "status": status,
        "limit_s": round(limit_s),
        **ran,
        "command": "python " + " ".join(command[1:]),
        "log": log.name,
        "device": clock.get("device"),
        "recorded_iterations_switch": setting,
        "chain_calls": clock.get("chain_calls"),
        "recorded_iterations": clock.get("recorded_iterations"),
        "peak_mem_mb": clock.get("peak_mem_mb"),
        "epochs": clock.get("epochs", []),
        **epoch_speeds(clock),
    }
    if status == "failed":
        result["log_tail"] = tail(log)
    return result


# -- 4. the suite ------------------------------------------------------------------------------------


def suite_order(methods: tuple[str, ...], paths: tuple[str, ...]) -> list[list[tuple[str, str]]]:
    """The suite's rows as the groups they run in, in order: for each pair of :data:`SUITE_PAIRS`
    whose two paths are both asked for, a round of every method's two rows side by side; then the
    rest of ``paths`` (eager, and a pair's path asked for alone), a row a group, method by method.
    ``methods`` keeps its order in every round (DAMC first by default)."""
    pairs = [pair for pair in SUITE_PAIRS if all(path in paths for path in pair)]
    paired = {path for pair in pairs for path in pair}
    groups = [[(method, path) for path in pair] for pair in pairs for method in methods]
    rest = [path for path in paths if path not in paired]
    return groups + [[(method, path)] for method in methods for path in rest]


def suite_stage(
    out: Path,
    deadline: Deadline,
    iters: int,
    warmup: int,
    generate: int,
    row_cap_s: float,
    methods: tuple[str, ...] = SUITE_METHODS,
    paths: tuple[str, ...] = SUITE_PATHS,
) -> dict[str, Any]:
    """``suite.py``'s rows for ``methods`` x ``paths``, one fresh process each, in
    :func:`suite_order`'s groups while the deadline leaves time: a group starts only with
    :data:`MIN_SECONDS` ``suite_row`` left for each of its rows (else its rows are kept as
    ``skipped``), a row gets at most ``row_cap_s`` seconds, ``iters`` timed iterations and ``warmup``
    warm-up ones (at least :data:`SUITE_WARMUP_MIN`). The rows come back method by method, in the
    order of ``paths``; every row carries ``suite_method``; ratios as ``suite.add_ratios`` gives
    them."""
    import suite
    import torch

    start = time.monotonic()
    header = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "iters": iters,
        "warmup": warmup,
        "load_average_at_start": os.getloadavg()[0],
    }
    done: dict[tuple[str, str], dict[str, Any]] = {}
    log = out / "suite.log"
    with log.open("w") as log_file:
        for group in suite_order(methods, paths):
            left = deadline.left()
            start_group = left >= MIN_SECONDS["suite_row"] * len(group)
            for method, path in group:
                recipe = suite.RECIPES[method][0]
                left = deadline.left()
                if not start_group or left < MIN_SECONDS["suite_row"]:
                    row: dict[str, Any] = {"recipe": recipe, "path": path, "skipped": f"deadline: {left:.0f} s left"}
                else:
                    limit = int(min(row_cap_s, left))
                    say(f"suite: {method} {path} (limit {limit} s, {left:.0f} s left)")
                    row_warmup = max(warmup, SUITE_WARMUP_MIN.get(method, warmup))
                    settings = argparse.Namespace(iters=iters, warmup=row_warmup, generate=generate, timeout=limit)
                    row = suite.run_one(recipe, path, settings, None, log_file)
                done[method, path] = {"suite_method": method, **row}
    rows: list[dict[str, Any]] = []
    for method in methods:
        method_rows = [done[method, path] for path in paths if (method, path) in done]
        suite.add_ratios(method_rows)
        rows += method_rows
    ran = [row for row in rows if "skipped" not in row]
    cut_off = sum(bool(row.get("cut_off")) for row in ran)
    return {
        "status": "completed" if len(ran) == len(rows) and not cut_off else ("cut_off" if ran else "skipped"),
        "wall_s": round(time.monotonic() - start, 1),
        "row_limit_s": row_cap_s,
        "generate": generate,
        "log": log.name,
        "rows_run": len(ran),
        "rows_failed": sum("error" in row for row in ran),
        "rows_cut_off": cut_off,
        "rows_skipped": len(rows) - len(ran),
        "header": header,
        "rows": rows,
    }


# -- 5. the profile (asked for with --stages profile) ------------------------------------------------


def profile_stage(out: Path, deadline: Deadline, runs: tuple[ProfileRun, ...] = PROFILE_RUNS) -> dict[str, Any]:
    """Each of ``runs`` in a fresh process while the deadline leaves time (at most
    :data:`PROFILE_RUN_LIMIT_S` seconds each): ``profile_step.py`` (where an iteration's time goes:
    the device's busy and idle time, the host's ranges and calls) and ``host_work.py`` (the host work
    around the chains). Each run's JSON, or why it has none; the output goes to ``profile.log``."""
    start = time.monotonic()
    results: list[dict[str, Any]] = []
    log = out / "profile.log"
    with log.open("w") as log_file:
        for label, script, arguments in runs:
            left = deadline.left()
            if left < MIN_SECONDS["suite_row"]:
                results.append({"label": label, "skipped": f"deadline: {left:.0f} s left"})
                continue
            limit = min(PROFILE_RUN_LIMIT_S, left)
            say(f"profile: {label} (limit {limit:.0f} s, {left:.0f} s left)")
            command = [sys.executable, str(HERE / script), *arguments]
            part = out / "profile_run.log"
            ran = run_limited(command, part, limit, child_env(HERE))
            text = part.read_text(errors="replace")
            log_file.write(f"== {label}\n{text}\n")
            part.unlink()
            entry: dict[str, Any] = {"label": label, **ran}
            records = [line for line in text.splitlines() if line.startswith("{")]  # warnings may follow it
            try:
                entry["result"] = json.loads(records[-1])
            except (IndexError, json.JSONDecodeError):
                entry["error"] = " / ".join(line for line in text.strip().splitlines()[-3:])[-600:]
            results.append(entry)
    failed = sum("error" in entry for entry in results)
    return {
        "status": "completed" if not failed else "completed with failures",
        "wall_s": round(time.monotonic() - start, 1),
        "log": log.name,
        "runs": results,
    }


def profile_markdown(stage: dict[str, Any]) -> list[str]:
    """The profile stage as a table: per iteration, wall and device-busy time, the share the device
    waited, the host's training step, and its graph launches, kernel launches and synchronisations."""
    lines = [
        "",
        "| profile run | wall ms | device busy ms | device idle | host training_step ms | host iteration key ms | "
        "graph launches | kernel launches | syncs | host work around the chains |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in stage.get("runs", []):
        result = entry.get("result")
        if result is None:
            reason = entry.get("skipped") or entry.get("error", "")
            lines.append(f"| {entry['label']} | {reason.replace('|', '/')} |  |  |  |  |  |  |  |  |")
            continue
        if "rows" in result or "pairs" in result:  # ancestral_start.py, damc_cost.py
            lines.append(f"| {entry['label']} |  |  |  |  |  |  |  |  | {damc_note(result)} |")
            continue
        if "remainder_ms" in result:  # host_work.py
            note = (
                f"{result['ops_outside_chains']} ops outside the chains; 1-step chains: "
                f"{result['remainder_ms']['cadence']} ms (logging every step: {result['remainder_ms']['every_step']})"
            )
            lines.append(f"| {entry['label']} |  |  |  |  |  |  |  |  | {note} |")
            continue
        calls = result.get("runtime_calls", {})
        cells = [
            entry["label"],
            _cell(result.get("wall_ms")),
            _cell(result.get("device_busy_ms")),
            _cell(result.get("device_idle_share")),
            _cell(result.get("host_ranges_ms", {}).get("training_step")),
            _cell(result.get("host_ranges_ms", {}).get("iteration_key")),
            _cell(calls.get("graph_launches")),
            _cell(calls.get("kernel_launches")),
            _cell(calls.get("synchronisations")),
            "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def damc_note(result: dict[str, Any]) -> str:
    """One cell for DAMC's profile runs: the amortizer's start eager and captured
    (``ancestral_start.py``), or the iteration's split in seconds (``damc_cost.py``)."""
    if "rows" in result:
        return "; ".join(
            f"{row['recipe']}: start eager {row['eager_sec']} s, captured {row['captured_sec']} s "
            f"({row['captured_vs_eager']}x)"
            for row in result["rows"]
        )
    parts = []
    for name, pair in result["pairs"].items():
        damc = pair["damc"]
        split = ", ".join(f"{part} {seconds}" for part, seconds in damc["split_sec_per_iter"].items())
        parts.append(f"{name}: DAMC {damc['sec_per_iter']} s/iter ({split}); {pair['damc_over_latent_ebm']}x LatentEBM")
    return "; ".join(parts)


# -- 6. targets --------------------------------------------------------------------------------------


def find_row(rows: list[dict[str, Any]], method: str, path: str) -> dict[str, Any] | None:
    """The suite row of ``method`` on ``path`` (None if there is none)."""
    return next((r for r in rows if r.get("suite_method") == method and r.get("path") == path), None)


def verdict(value: float | None, threshold: float, at_most: bool, reason: str | None = None) -> dict[str, Any]:
    """A target's entry: its value, threshold, comparison and whether it is met (None: not measured)."""
    met = None if value is None else (value <= threshold if at_most else value >= threshold)
    entry: dict[str, Any] = {"value": value, "threshold": threshold, "compare": "<=" if at_most else ">=", "met": met}
    if value is None:
        entry["reason"] = reason or "not measured"
    return entry


def row_target(rows: list[dict[str, Any]], target: Target) -> dict[str, Any]:
    """A target read off the suite: None when its row is missing, skipped, failed or lacks the value."""
    row = find_row(rows, target.method, target.path)
    reason = None
    value = None
    if row is None:
        reason = f"no {target.path} row of {target.method}"
    elif "skipped" in row:
        reason = f"{target.path} row of {target.method} skipped ({row['skipped']})"
    elif "error" in row:
        reason = f"{target.path} row of {target.method} failed: {row['error']}"
    elif row.get(target.key) is None:
        reason = f"{target.path} row of {target.method} has no {target.key} (did its {target.against} row fail?)"
    else:
        value = row[target.key]
    return {"what": target.what, **verdict(value, target.threshold, target.at_most, reason)}


def quickstart_target(stage: dict[str, Any] | None) -> dict[str, Any]:
    """The quickstart's median epoch it/s over the reference, at least 5x."""
    what = f"quickstart epoch on the GPU: median it/s of epochs 2-10 over {REFERENCE_QUICKSTART_IT_S} it/s"
    value = (stage or {}).get("speedup_vs_reference")
    reason = None if stage is None else f"quickstart stage {stage.get('status')}, {stage.get('epochs_timed', 0)} epochs"
    return {"what": what, **verdict(value, 5.0, False, reason or "quickstart stage not run")}


def tier_target(stage: dict[str, Any] | None) -> dict[str, Any]:
    """The gpu tier's failures and errors, at most 0. Not measured without a junit report, with no test
    passed, or when cut off with nothing failed yet (the tests that did not run may fail)."""
    what = "gpu test tier: failed + errors"
    if stage is None or stage.get("junit") is None:
        reason = "gpu tier not run" if stage is None else f"gpu tier {stage.get('status')}: no junit report"
        return {"what": what, **verdict(None, 0, True, reason)}
    bad = stage["failed"] + stage["errors"]
    if bad == 0 and stage.get("status") == "cut_off":
        return {"what": what, **verdict(None, 0, True, f"cut off after {stage['tests']} tests, none failed")}
    if bad == 0 and stage["passed"] == 0:
        return {"what": what, **verdict(None, 0, True, f"no gpu test passed ({stage['skipped']} skipped)")}
    return {"what": what, **verdict(bad, 0, True)}


def evaluate_targets(
    rows: list[dict[str, Any]], quickstart_stage: dict[str, Any] | None, tier_stage: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Every target of the issue, by name: the suite rows', the quickstart's and the gpu tier's."""
    targets = {target.name: row_target(rows, target) for target in ROW_TARGETS}
    targets["quickstart_epoch_vs_reference"] = quickstart_target(quickstart_stage)
    targets["gpu_tier_all_passing"] = tier_target(tier_stage)
    return targets


def idle_targets(stage: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Issue 90's idle target for each recorded profile run: the device idle at most
    :data:`IDLE_SHARE_TARGET` of the iteration (not measured when the run has no profile)."""
    targets = {}
    for entry in (stage or {}).get("runs", []):
        if "recorded" not in entry["label"]:
            continue
        value = (entry.get("result") or {}).get("device_idle_share")
        reason = entry.get("skipped") or entry.get("error") or "no device timeline"
        name = slug(entry["label"]) + "_device_idle_share"
        what = f"{entry['label']}: share of the iteration the device is idle"
        targets[name] = {"what": what, **verdict(value, IDLE_SHARE_TARGET, True, reason)}
    return targets


def target_summary(targets: dict[str, dict[str, Any]]) -> dict[str, int]:
    """How many targets were met, unmet and not measured."""
    met = [entry["met"] for entry in targets.values()]
    return {"met": met.count(True), "unmet": met.count(False), "not_measured": met.count(None)}


# -- 7. the Markdown ---------------------------------------------------------------------------------


def _stage_note(name: str, stage: dict[str, Any]) -> str:
    """One line on what a stage found."""
    if stage.get("status") == "skipped":
        return stage.get("reason", "")
    if name == "gpu_tier":
        if stage.get("junit") is None:
            return "no junit report: " + " / ".join(stage.get("log_tail", [])[-2:])
        counts = ", ".join(f"{stage[k]} {k}" for k in ("passed", "failed", "errors", "skipped"))
        return counts + (f", {stage['incomplete']} stopped part-way" if stage.get("incomplete") else "")
    if name == "quickstart":
        if stage.get("median_it_per_sec") is None:
            return f"{stage.get('epochs_timed', 0)} epochs timed; " + " / ".join(stage.get("log_tail", [])[-2:])
        off = stage.get("iterations_off") or {}
        return (
            f"median {stage['median_it_per_sec']} it/s over epochs 2-{stage['epochs_timed']} "
            f"({stage['speedup_vs_reference']}x {REFERENCE_QUICKSTART_IT_S}); chain calls {stage.get('chain_calls')}"
            + (f"; recorded iterations {stage['recorded_iterations']}" if stage.get("recorded_iterations") else "")
            + (f"; with them off {off.get('median_it_per_sec')} it/s" if off else "")
        )
    if name == "profile":
        runs = stage.get("runs", [])
        done = sum("result" in run for run in runs)
        return f"{done} of {len(runs)} runs measured (table below)"
    if name == "suite":
        return (
            f"{stage['rows_run']} rows run ({stage['rows_failed']} failed, {stage.get('rows_cut_off', 0)} of them "
            f"cut off), {stage['rows_skipped']} skipped"
        )
    return ""


def _cell(value: Any) -> str:
    return "" if value is None else (f"{value:.4g}" if isinstance(value, float) else str(value))


def markdown(record: dict[str, Any]) -> str:
    """The record as Markdown: environment, stages, targets, failing gpu tests, the suite's table."""
    env = record.get("environment", {})
    packages = env.get("optional_packages", {})
    have = ", ".join(f"{n} {'yes' if p.get('importable') else 'no'}" for n, p in packages.items())
    lines = [
        f"## GPU check: {env.get('device', '?')}, {env.get('date', '?')}",
        "",
        f"Commit `{env.get('commit', 'unknown')}` ({env.get('commit_source', '?')}); torch {env.get('torch')} "
        f"(CUDA {env.get('cuda')}); Lightning {env.get('lightning')}; Python {env.get('python')}; "
        f"optional packages: {have}; load average at start {env.get('load_average')}. "
        f"Budget {record.get('budget_s')} s, used {record.get('wall_s')} s"
        f"{'' if record.get('finished') else ' (the check did not finish)'}.",
        "",
        "| stage | status | limit s | wall s | notes |",
        "|---|---|---|---|---|",
    ]
    for name in STAGES:
        stage = record.get("stages", {}).get(name)
        if stage is not None:
            cells = [name, stage.get("status", ""), _cell(stage.get("limit_s")), _cell(stage.get("wall_s"))]
            lines.append("| " + " | ".join([*cells, _stage_note(name, stage).replace("|", "/")]) + " |")
    lines += ["", "| target | value | threshold | met |", "|---|---|---|---|"]
    for name, entry in record.get("targets", {}).items():
        met = {True: "yes", False: "**no**", None: f"not measured: {entry.get('reason', '')}"}[entry["met"]]
        cells = [f"{entry['what']} (`{name}`)", _cell(entry["value"]), f"{entry['compare']} {entry['threshold']}", met]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    failing = record.get("stages", {}).get("gpu_tier", {}).get("failing", [])
    if failing:
        lines += ["", "Failing gpu tests:", ""]
        lines += [f"- `{f['id']}` ({f['kind']}): {f['message']}" for f in failing]
    suite_stage_record = record.get("stages", {}).get("suite", {})
    if suite_stage_record.get("rows"):
        import suite

        lines += ["", suite.markdown(suite_stage_record["rows"], suite_stage_record["header"]).rstrip()]
    profile_record = record.get("stages", {}).get("profile", {})
    if profile_record.get("runs"):
        lines += profile_markdown(profile_record)
    return "\n".join(lines) + "\n"


# -- the command -------------------------------------------------------------------------------------


def save(record: dict[str, Any], out: Path, stem: str) -> Path:
    """Write the record's JSON and Markdown under ``out`` (again after every stage)."""
    path = out / f"{stem}.json"
    path.write_text(json.dumps(record, indent=1) + "\n")
    path.with_suffix(".md").write_text(markdown(record))
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results", help="folder for the record and logs")
    parser.add_argument("--commit", default=None, help="the commit checked (default: git rev-parse HEAD, if .git)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check")
    parser.add_argument(
        "--suite-iters",
        type=int,
        default=SUITE_ITERS,
        help=f"timed iterations per suite row, every method's (under {SUITE_ITERS}: the record decides no default)",
    )
    parser.add_argument(
        "--suite-warmup", type=int, default=2, help="warm-up iterations (captures) per suite row (DAMC's at least 2)"
    )
    parser.add_argument("--suite-generate", type=int, default=100, help="samples per timed generate call")
    parser.add_argument("--row-limit", type=float, default=100.0, help="seconds at most per suite row")
    parser.add_argument(
        "--stages",
        default=",".join(DEFAULT_STAGES),
        help=f"comma-separated, of {', '.join(STAGES)} (default: {', '.join(DEFAULT_STAGES)})",
    )
    parser.add_argument(
        "--methods", default=",".join(SUITE_METHODS), help=f"the suite's methods, of {', '.join(SUITE_METHODS)}"
    )
    parser.add_argument(
        "--paths",
        default=",".join(SUITE_PATHS),
        help="the suite's paths, of suite.py's GPU paths (checked after the CUDA check: listing them imports lebm)",
    )
    parser.add_argument(
        "--profile-match", default="", help="profile only the runs whose label holds this text (e.g. 'recorded')"
    )
    parser.add_argument("--table", metavar="RECORD.json", help="print the Markdown of an existing record and exit")
    args = parser.parse_args(argv)
    for option, known in (("stages", STAGES), ("methods", SUITE_METHODS)):
        unknown = set(getattr(args, option).split(",")) - set(known) - {""}
        if unknown:
            parser.error(f"unknown {option} {sorted(unknown)}: {option} are {', '.join(known)}")
    return args


def unknown_paths(paths: str) -> str | None:
    """Why ``--paths`` names a path the suite does not time on a GPU, in one line (None: all known).
    Listing the paths imports ``suite.py`` and lebm's methods, so a machine without CUDA is refused
    before it (:func:`main`)."""
    known = suite_path_names()
    unknown = set(paths.split(",")) - set(known) - {""}
    return f"gpu_check: unknown paths {sorted(unknown)}: paths are {', '.join(known)}" if unknown else None


def suite_path_names() -> tuple[str, ...]:
    """The paths ``suite.py`` times on a GPU."""
    import suite

    return tuple(name for name, (*_, devices) in suite.PATHS.items() if "cuda" in devices)


def no_cuda_message() -> str | None:
    """Why this machine cannot run the check (None: it has a CUDA device)."""
    import torch

    if torch.cuda.is_available():
        return None
    return (
        f"gpu_check: no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}, "
        "torch.cuda.is_available() is False). Run it on the lent GPU machine; nothing was run."
    )


def stage_caps(budget: float) -> dict[str, int]:
    """The most seconds each stage but the suite may take of ``budget``: its :data:`STAGE_SHARE`,
    the quickstart's never under :data:`QUICKSTART_STAGE_MIN_S` (the deadline still caps both)."""
    caps = {name: round(share * budget) for name, share in STAGE_SHARE.items()}
    caps["quickstart"] = max(caps["quickstart"], round(QUICKSTART_STAGE_MIN_S))
    return caps


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """The stages asked for under one deadline; the record is saved after each."""
    deadline = Deadline(args.budget)
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    wanted = {s for s in args.stages.split(",") if s}
    env = environment(args.commit)
    caps = stage_caps(args.budget)
    if args.suite_iters < SUITE_ITERS:
        say(f"--suite-iters {args.suite_iters}: rows of fewer than {SUITE_ITERS} iterations decide no default")
    record: dict[str, Any] = {
        "check": "gpu_check",
        "finished": False,
        "budget_s": args.budget,
        "plan": {
            "stage_caps_s": {**caps, "suite": "what is left"},
            "suite_iters": args.suite_iters,
            "suite_warmup": args.suite_warmup,
            "suite_warmup_min": SUITE_WARMUP_MIN,
            "suite_row_limit_s": args.row_limit,
            "suite_methods": [m for m in SUITE_METHODS if m in args.methods.split(",")],
            "suite_paths": [p for p in args.paths.split(",") if p],
            "recorded_iterations_switch": os.environ.get("LEBM_RECORDED_ITERATIONS", "unset"),
            "stages": sorted(wanted, key=STAGES.index),
        },
        "environment": env,
        "stages": {},
    }
    stem = f"gpu_check-{env['date']}-{slug(env['device'])}"
    stages = record["stages"]

    def limited(name: str) -> float | None:
        """The stage's limit, or None after recording it as skipped."""
        if name not in wanted:
            stages[name] = skipped("not asked for (--stages)")
            return None
        limit = deadline.limit(caps.get(name, deadline.left()))
        needed = MIN_SECONDS.get(name, MIN_SECONDS["suite_row"])
        if limit < needed:
            left = deadline.left()
            stages[name] = skipped(f"deadline: {limit:.0f} s allowed ({left:.0f} s left), {needed:.0f} s needed")
            return None
        return limit

    save(record, out, stem)
    if (limit := limited("gpu_tier")) is not None:
        stages["gpu_tier"] = gpu_tier(out, limit, env["pytest_plugins"])
    save(record, out, stem)
    if (limit := limited("quickstart")) is not None:
        stages["quickstart"] = quickstart_stage(out, limit, env["optional_packages"]["wandb"]["importable"])
    save(record, out, stem)
    if (limit := limited("suite")) is not None:
        stages["suite"] = {
            "limit_s": round(limit),
            **suite_stage(
                *(out, deadline, args.suite_iters, args.suite_warmup, args.suite_generate, args.row_limit),
                methods=tuple(m for m in SUITE_METHODS if m in args.methods.split(",")),
                paths=tuple(p for p in args.paths.split(",") if p),
            ),
        }
    save(record, out, stem)
    if "profile" in wanted:
        methods = tuple(m for m in args.methods.split(",") if m)
        runs = tuple(run for run in profile_runs_for(methods) if args.profile_match in run[0])
        stages["profile"] = profile_stage(out, deadline, runs)
    rows = stages.get("suite", {}).get("rows", [])
    record["targets"] = evaluate_targets(rows, stages.get("quickstart"), stages.get("gpu_tier"))
    record["targets"].update(idle_targets(stages.get("profile")))
    record["target_summary"] = target_summary(record["targets"])
    record["wall_s"] = round(deadline.elapsed(), 1)
    record["finished"] = True
    path = save(record, out, stem)
    say(f"record: {path}")
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())), end="")
        return 0
    sys.path.insert(0, str(HERE))  # suite.py and its neighbours import each other by name
    message = no_cuda_message() or unknown_paths(args.paths)
    if message is not None:
        print(message, file=sys.stderr)
        return 2
    record = run_check(args)
    print(markdown(record), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
