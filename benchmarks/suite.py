"""The speed suite: every method's paper-recipe shape, plain and fast paths, as JSON and a Markdown table.

    python benchmarks/suite.py [--out benchmarks/results] [--iters 5] [--warmup 2] [--only latent_ebm,dual_mcmc]

For each recipe of :data:`RECIPES` and each path of :data:`PATHS` it runs ``benchmarks/train_step.py``
in a fresh process (so one path's compiled graphs or allocator state cannot help another) and
collects seconds per iteration, ``generate`` samples per second, peak memory and the FLOPs of one
iteration (with, on a GPU of known bf16 peak, the fraction of that peak the measured time reaches),
on whatever device is present. The LatentEBM plain row also times the plain-PyTorch loop (``--baseline``).

Paths:

- ``plain``: float32, nets as built;
- ``fast``: float32 with ``FastNets(compile, channels_last)``, plus ``cuda_graphs`` on a GPU;
- ``bf16``: the fast path under ``bf16-mixed`` autocast (nets in bfloat16, chain states float32).

On a CPU the paper shapes take seconds to minutes per iteration, so ``--cpu-batch-size`` (default
the recipe's, except Dual-MCMC's 512-wide ResNet energy: 2) and few ``--iters`` keep the suite to
tens of minutes (``generate`` then draws at most that batch); the table states the batch each row
used. On a CPU without bf16 instructions (AVX2 only) bf16 autocast is many times slower than fp32,
so leave ``bf16`` out of ``--paths`` there. Writes ``suite-<date>-<device>.json`` and ``.md`` under
``--out`` and prints the Markdown.
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
from typing import Any

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
}

#: Path name -> (Lightning precision, FastNets switches on a CPU, FastNets switches on a GPU).
PATHS: dict[str, tuple[str, str, str]] = {
    "plain": ("32-true", "", ""),
    "fast": ("32-true", "compile,channels_last", "compile,channels_last,cuda_graphs"),
    "bf16": ("bf16-mixed", "compile,channels_last", "compile,channels_last,cuda_graphs"),
}


def run_one(recipe: str, path: str, args: argparse.Namespace, on_gpu: bool, batch_size: int | None) -> dict[str, Any]:
    precision, cpu_fast, gpu_fast = PATHS[path]
    command = [
        sys.executable,
        str(HERE / "train_step.py"),
        "--recipe",
        recipe,
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
        "--precision",
        precision,
        "--generate",
        str(args.generate if batch_size is None else min(args.generate, batch_size)),
    ]
    fast = gpu_fast if on_gpu else cpu_fast
    if fast:
        command += ["--fast", fast]
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    if path == "plain":
        command.append("--flops")  # the same FLOPs on every path: counted once, on the plain nets
        if "latent_ebm/" in recipe:
            command.append("--baseline")
    print("+", " ".join(command), file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"recipe": recipe, "path": path, "error": done.stderr.strip().splitlines()[-1:]}
    return {"path": path, **json.loads(lines[-1])}


def share_flops(rows: list[dict[str, Any]]) -> None:
    """Give every path of one recipe the FLOPs counted on its plain path, and the fraction of
    the device's bf16 peak that its measured time reaches (known GPUs only)."""
    flops = next((row["flops_per_iter"] for row in rows if "flops_per_iter" in row), None)
    if flops is None:
        return
    for row in rows:
        if "sec_per_iter" in row:
            row["flops_per_iter"] = flops
            fraction = peak_fraction(flops, row["sec_per_iter"], row["device"])
            if fraction is not None:
                row["bf16_peak_fraction"] = round(fraction, 4)


def markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    out = [
        f"Device: {header['device']}; torch {header['torch']}; {header['date']}; "
        f"{header['iters']} timed iterations after {header['warmup']} warm-up (median).",
        "",
        "| recipe | path | batch | s/iter | plain loop s/iter | plain loop / this | generate samples/s "
        "| peak memory MB | GFLOP/iter | bf16 peak fraction |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            out.append(f"| `{row['recipe']}` | {row['path']} | | failed: {row['error']} | | | | | | |")
            continue
        baseline = row.get("baseline_sec_per_iter")
        flops = row.get("flops_per_iter")
        cells = [
            f"`{row['recipe']}`",
            row["path"],
            str(row["batch_size"]),
            f"{row['sec_per_iter']:.4g}",
            "" if baseline is None else f"{baseline:.4g}",
            "" if baseline is None else str(row["speedup_vs_baseline"]),
            str(row.get("generate_samples_per_sec", "")),
            f"{row['peak_mem_mb']:.0f}",
            "" if flops is None else f"{flops / 1e9:.1f}",
            str(row.get("bf16_peak_fraction", "")),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="compiled paths compile during these")
    parser.add_argument("--generate", type=int, default=100, help="samples per timed generate call")
    parser.add_argument("--only", default="", help="comma-separated methods of RECIPES (default: all)")
    parser.add_argument("--paths", default="plain,fast,bf16")
    parser.add_argument("--cpu-batch-size", type=int, default=None, help="one batch size for every recipe on a CPU")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per row")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available()
    methods = [m for m in args.only.split(",") if m] or list(RECIPES)
    paths = [p for p in args.paths.split(",") if p]
    for name in [*methods, *paths]:
        if name not in RECIPES and name not in PATHS:
            parser.error(f"unknown method or path {name!r}: methods {list(RECIPES)}, paths {list(PATHS)}")
    rows = []
    for method in methods:
        recipe, cpu_batch = RECIPES[method]
        batch_size = None if on_gpu else (args.cpu_batch_size or cpu_batch)
        recipe_rows = []
        for path in paths:
            recipe_rows.append(run_one(recipe, path, args, on_gpu, batch_size))
            print(json.dumps(recipe_rows[-1]), file=sys.stderr, flush=True)
        share_flops(recipe_rows)
        rows += recipe_rows
    device = torch.cuda.get_device_name(0) if on_gpu else next((r["device"] for r in rows if "device" in r), "cpu")
    header = {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "torch": torch.__version__,
        "iters": args.iters,
        "warmup": args.warmup,
        "load_average_at_start": os.getloadavg()[0],
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
