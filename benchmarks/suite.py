"""The speed suite: every method's paper-recipe shape on each path, as JSON and a Markdown table.

    python benchmarks/suite.py [--out benchmarks/results] [--iters 10] [--warmup 3] [--only latent_ebm,dual_mcmc]

For each recipe of :data:`RECIPES` and each path of :data:`PATHS` it runs ``benchmarks/train_step.py``
in a fresh process (so one path's graphs, compiled code or allocator state cannot help another) and
collects seconds per iteration, ``generate`` samples per second, peak memory (GPU memory from
``torch.cuda`` on a GPU), the device each row ran on, how many chain calls were served by captured
graphs, and the FLOPs of one iteration (with, on a GPU of known bf16 peak, the fraction of that peak
the measured time reaches). Every row of one run uses the same device, so the ratios compare like
with like:

- ``eager / this``: the method's own eager path (``eager`` row) over this row;
- ``plain loop / this`` (LatentEBM): the plain-PyTorch loop (``benchmarks/plain_latent_ebm.py``,
  fp32, eager), timed by the ``eager`` row's process on the same device, over this row;
- ``memory / eager`` (``peak_mem_vs_eager``, every path but ``eager``): this row's peak memory over
  the eager row's;
- ``speedup_vs_captured`` (in the JSON, every path but ``captured``): the ``captured`` row (fp32,
  captured chains) over this row, so ``captured_bf16``'s says what bf16 buys once chains are graphs;
- ``speedup_vs_recorded`` (in the JSON, ``recorded_bf16``): the ``recorded`` row (fp32, recorded
  iterations) over this row, what bf16 buys once whole iterations are graphs.

Paths (``--paths``; the default is every path that applies to the device):

- ``eager``: float32, every chain eagerly (``--chain-capture off``), nets as built;
- ``captured``: float32, chains captured whole as CUDA graphs (lebm's default on a GPU);
- ``captured_bf16``: ``bf16-mixed`` autocast, captured chains, channels-last convolutions;
- ``fast_bf16``: the same with compiled nets (``FastNets(compile, channels_last)``);
- ``fast``: float32, compiled channels-last nets, eager chains (the CPU's fast path);
- ``recorded``, ``recorded_bf16``: as ``captured`` and ``captured_bf16``, with whole training
  iterations recorded as CUDA graphs (``--recorded-iterations on``: off by default on CUDA since issue 106; every
  other path sets the switch off, so that a row names what it times).

On a CPU chains always run eagerly, so only ``eager`` and ``fast`` apply there; the paper shapes take
seconds to minutes per iteration, so ``--cpu-batch-size`` (default the recipe's, except
Dual-MCMC's 512-wide ResNet energy: 2, and DAMC's: 8, whose iteration runs 100 ancestral steps, two
chains and 6 amortizer steps) and few ``--iters`` keep the suite to tens of minutes. Writes
``suite-<date>-<device>.json`` and ``.md`` under ``--out`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, TextIO

import torch
from flops import peak_fraction

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: Each method's paper experiment (the shape timed) and the batch the suite uses on a CPU (None: the recipe's).
RECIPES: dict[str, tuple[str, int | None]] = {
    "latent_ebm": ("recipes/latent_ebm/svhn.yaml", None),
    "multistage_nce": ("recipes/multistage_nce/svhn.yaml", None),
    "dual_mcmc": ("recipes/dual_mcmc/cifar10.yaml", 2),
    "hierarchical": ("recipes/hierarchical/svhn.yaml", None),
    "quickstart": ("recipes/quickstart.yaml", None),
    "damc": ("recipes/damc/svhn.yaml", 8),
}

#: Path name -> (Lightning precision, FastNets switches, chain capture, devices it applies to).
PATHS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "eager": ("32-true", "", "off", ("cpu", "cuda")),
    "captured": ("32-true", "", "on", ("cuda",)),
    "captured_bf16": ("bf16-mixed", "channels_last", "on", ("cuda",)),
    "fast_bf16": ("bf16-mixed", "compile,channels_last", "on", ("cuda",)),
    "fast": ("32-true", "compile,channels_last", "off", ("cpu",)),
    "recorded": ("32-true", "", "recorded", ("cuda",)),
    "recorded_bf16": ("bf16-mixed", "channels_last", "recorded", ("cuda",)),
}


def run_one(
    recipe: str, path: str, args: argparse.Namespace, batch_size: int | None, log: TextIO | None = None
) -> dict[str, Any]:
    """One row: ``train_step.py`` for ``recipe`` on ``path`` in a fresh process (``args``: iters, warmup,
    generate, timeout). A row that fails or runs past ``args.timeout`` seconds holds ``error``. ``log``,
    if given, receives the command and everything the process printed."""
    precision, fast, capture, _ = PATHS[path]
    command = [
        sys.executable,
        str(HERE / "train_step.py"),
        *("--recipe", recipe, "--iters", str(args.iters), "--warmup", str(args.warmup)),
        *("--precision", precision, "--chain-capture", "on" if capture == "recorded" else capture),
        *(("--recorded-iterations", "on") if capture == "recorded" else ()),
        *("--generate", str(args.generate if batch_size is None else min(args.generate, batch_size))),
    ]
    if fast:
        command += ["--fast", fast]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if path == "eager":
        command.append("--flops")  # the same FLOPs on every path: counted once, on the eager path
        if "latent_ebm/" in recipe:
            command.append("--baseline")
    print("+", " ".join(command), file=sys.stderr, flush=True)
    if log is not None:
        log.write(f"+ {' '.join(command)}\n")
        log.flush()
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"recipe": recipe, "path": path, "error": f"cut off: ran past {args.timeout} s", "cut_off": True}
    if log is not None:
        log.write(done.stderr + done.stdout + f"(exit status {done.returncode})\n\n")
        log.flush()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"recipe": recipe, "path": path, "error": done.stderr.strip().splitlines()[-1:]}
    return {"path": path, **json.loads(lines[-1])}


def add_captured_ratios(rows: list[dict[str, Any]]) -> None:
    """Give every timed path of one recipe but the captured one, on the captured row's device, its
    speed-up over the captured fp32 path, ``speedup_vs_captured`` (the captured row's s/iter over
    its own), and the ``recorded_bf16`` row its speed-up over the ``recorded`` one,
    ``speedup_vs_recorded``, whether or not the eager row ran."""
    for against, paths in (("captured", None), ("recorded", ("recorded_bf16",))):
        base = next((row for row in rows if row.get("path") == against and "sec_per_iter" in row), None)
        if base is None:
            continue
        for row in rows:
            if row is base or "sec_per_iter" not in row or row.get("device") != base["device"]:
                continue
            if paths is None or row.get("path") in paths:
                row[f"speedup_vs_{against}"] = round(base["sec_per_iter"] / row["sec_per_iter"], 3)


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Give every path of one recipe the FLOPs counted on its eager path, the fraction of the
    device's bf16 peak its time reaches (known GPUs), its speed-up over the eager path and,
    for LatentEBM, over the plain loop timed on the same device, (every path but the eager one)
    its peak memory over the eager path's, ``peak_mem_vs_eager``, and (every path but the captured
    one) its speed-up over the captured path, :func:`add_captured_ratios`."""
    add_captured_ratios(rows)
    eager = next((row for row in rows if row.get("path") == "eager" and "sec_per_iter" in row), None)
    if eager is None:
        return
    flops = eager.get("flops_per_iter")
    plain_loop = eager.get("baseline_sec_per_iter")
    for row in rows:
        if "sec_per_iter" not in row:
            continue
        if row["device"] != eager["device"]:
            row["error"] = f"ran on {row['device']}, the eager row on {eager['device']}: ratios left out"
            continue
        row["speedup_vs_eager"] = round(eager["sec_per_iter"] / row["sec_per_iter"], 3)
        if row is not eager and row.get("peak_mem_mb") and eager.get("peak_mem_mb"):
            row["peak_mem_vs_eager"] = round(row["peak_mem_mb"] / eager["peak_mem_mb"], 3)
        if plain_loop is not None:
            row["speedup_vs_plain_loop"] = round(plain_loop / row["sec_per_iter"], 3)
        if flops is not None:
            row["flops_per_iter"] = flops
            fraction = peak_fraction(flops, row["sec_per_iter"], row["device"])
            if fraction is not None:
                row["bf16_peak_fraction"] = round(fraction, 5)


def markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    out = [
        f"Device: {header['device']}; torch {header['torch']}; {header['date']}; "
        f"{header['iters']} timed iterations after {header['warmup']} warm-up (median).",
        "",
        "| recipe | path | batch | s/iter | it/s | eager / this | plain loop / this | chain calls replayed "
        "| generate samples/s | peak memory MB | memory / eager | GFLOP/iter | bf16 peak fraction |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "sec_per_iter" not in row:
            outcome = f"skipped: {row['skipped']}" if "skipped" in row else f"failed: {row.get('error')}"
            out.append(f"| `{row['recipe']}` | {row['path']} | | {outcome} |" + " |" * 9)
            continue
        calls = row.get("chain_calls", {})
        served = calls.get("replays", 0)
        total = served + calls.get("captures", 0) + calls.get("eager_calls", 0)
        flops = row.get("flops_per_iter")
        cells = [
            f"`{row['recipe']}`",
            row["path"],
            str(row["batch_size"]),
            f"{row['sec_per_iter']:.4g}",
            f"{1 / row['sec_per_iter']:.3g}",
            str(row.get("speedup_vs_eager", "")),
            str(row.get("speedup_vs_plain_loop", "")),
            f"{served}/{total}" if total else "eager",
            str(row.get("generate_samples_per_sec", "")),
            f"{row['peak_mem_mb']:.0f}",
            str(row.get("peak_mem_vs_eager", "")),
            "" if flops is None else f"{flops / 1e9:.1f}",
            str(row.get("bf16_peak_fraction", "")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="captures and compilation happen during these")
    parser.add_argument("--generate", type=int, default=100, help="samples per timed generate call")
    parser.add_argument("--only", default="", help="comma-separated methods of RECIPES (default: all)")
    parser.add_argument("--paths", default="", help="comma-separated paths (default: those for the device)")
    parser.add_argument("--cpu-batch-size", type=int, default=None, help="one batch size for every recipe on a CPU")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per row")
    args = parser.parse_args()
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    methods = [m for m in args.only.split(",") if m] or list(RECIPES)
    paths = [p for p in args.paths.split(",") if p] or [p for p, spec in PATHS.items() if device_type in spec[3]]
    for name in [*methods, *paths]:
        if name not in RECIPES and name not in PATHS:
            parser.error(f"unknown method or path {name!r}: methods {list(RECIPES)}, paths {list(PATHS)}")
    load_average = os.getloadavg()[0]
    rows = []
    for method in methods:
        recipe, cpu_batch = RECIPES[method]
        batch_size = None if device_type == "cuda" else (args.cpu_batch_size or cpu_batch)
        recipe_rows = []
        for path in paths:
            recipe_rows.append(run_one(recipe, path, args, batch_size))
            print(json.dumps(recipe_rows[-1]), file=sys.stderr, flush=True)
        add_ratios(recipe_rows)
        rows += recipe_rows
    device = next((r["device"] for r in rows if "device" in r), device_type)
    header = {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "torch": torch.__version__,
        "iters": args.iters,
        "warmup": args.warmup,
        "load_average_at_start": load_average,
    }
    table = markdown(rows, header)
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = f"suite-{header['date']}-{re.sub(r'[^A-Za-z0-9]+', '_', device).strip('_').lower()}"
    (out / f"{stem}.json").write_text(json.dumps({**header, "rows": rows}, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
