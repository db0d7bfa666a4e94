"""What made each result record: its commit, command, device and date, and a factor study's one
change; the older records' recovered from git.

    python scripts/results_provenance.py            # what each records file lacks (exit 1 if anything)
    python scripts/results_provenance.py --write    # recover it from git into the older records

A runner stamps every record it writes (``experiments/records.py``: ``stamped``): ``commit`` (the
checkout's HEAD, ``commit_dirty`` when the code differed from it), ``command``, ``device``, ``date``;
a factor study's record names the setting it changed (``changed``, from the run folder's
``fit_arguments.json``). Records written before runners did so hold no commit. ``--write`` gives
each of them ``"commit": null``, ``added_in`` (the first commit whose version of the file holds the
record as it is now, found in the file's history) and a ``commit_note`` saying so; the factor
records their ``changed`` from :data:`FACTOR_CHANGES` (the gap log's commands, which ran each
factor), with a ``changed_note``. Nothing a record measured changes: fields are only added, and
each file keeps its layout. ``scripts/results_staleness.py`` compares a record with its ``commit``,
else with ``added_in``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
#: The fields a record names its making by.
MADE_BY = ("commit", "command", "device", "date")
#: The fields this script adds; a record's measured content is everything else.
ADDED = ("commit", "commit_note", "added_in", "changed", "changed_note")
GAP_LOG = "docs/results/log/2026-11-28-latent-ebm-gap-factors.md"
#: What each factor experiment of the gap study passed to ``lebm fit``, from the gap log's commands.
FACTOR_CHANGES = {
    "mnist_anomaly_factor_posterior40": "--model.init_args.posterior_sampler.init_args.n_steps 40",
    "mnist_anomaly_factor_latent32": "--model.init_args.prior.init_args.latent_dim 32",
    "mnist_anomaly_factor_sigma0p6": "--model.init_args.decoder.init_args.sigma 0.6",
    "mnist_anomaly_factor_lr2x": "--model.init_args.decoder_lr 2.0e-4 --model.init_args.prior_lr 4.0e-5",
    "mnist_anomaly_factor_prior100": "--model.init_args.prior.init_args.sampler.init_args.n_steps 100",
    "mnist_anomaly_factor_ngf64": "--model.init_args.decoder.init_args.net.init_args.ngf 64",
}
FACTOR_PREFIX = "mnist_anomaly_factor_"


def git(*arguments: str) -> str:
    return subprocess.run(["git", *arguments], cwd=REPO, capture_output=True, text=True, check=True).stdout


def measured(record: dict) -> str:
    """A record without the fields this script adds, as canonical text: what identifies it in history."""
    return json.dumps({k: v for k, v in record.items() if k not in ADDED}, sort_keys=True)


def history(path: Path) -> list[tuple[str, str, set[str]]]:
    """``(commit, date, the records it holds)`` of every commit that changed ``path``, oldest first."""
    relative = str(path.relative_to(REPO))
    found = []
    for line in git("log", "--reverse", "--format=%h %cs", "--", relative).splitlines():
        commit, date = line.split()
        try:
            records = json.loads(git("show", f"{commit}:{relative}"))
        except (subprocess.CalledProcessError, json.JSONDecodeError):
            continue
        found.append((commit, date, {measured(r) for r in records if isinstance(r, dict)}))
    return found


def lacks(record: dict) -> list[str]:
    """What a record does not say of its making (a null commit with its note counts as said)."""
    missing = [key for key in MADE_BY if key not in record]
    if "commit" in record and record["commit"] is None and not record.get("commit_note"):
        missing.append("commit_note")
    if str(record.get("experiment", "")).startswith(FACTOR_PREFIX) and not record.get("changed"):
        missing.append("changed")
    return missing


def recovered(record: dict, versions: list[tuple[str, str, set[str]]]) -> dict:
    """``record`` with the fields git history and the gap log give it (none it holds replaced)."""
    out = dict(record)
    if "commit" not in out:
        key = measured(record)
        first = next(((commit, date) for commit, date, held in versions if key in held), None)
        out["commit"] = None
        if first is not None:
            out["added_in"] = first[0]
            out["commit_note"] = (
                f"not recorded when it was made; the record was added to the repository as it is now in {first[0]} "
                f"({first[1]}), so it was made at that commit or an earlier one"
            )
        else:
            out["commit_note"] = "not recorded when it was made, and no committed version of its file holds it as it is"
    experiment = str(out.get("experiment", ""))
    if experiment in FACTOR_CHANGES and not out.get("changed"):
        out["changed"] = FACTOR_CHANGES[experiment]
        out["changed_note"] = f"not recorded when it was made; the fit's change as {GAP_LOG} ran it"
    return out


def indent_of(text: str) -> int:
    """The indent a records file is written with (1 or 2)."""
    return 1 if text.startswith("[\n {") else 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="add what git history recovers to the older records")
    args = parser.parse_args()
    short = False
    for path in sorted(RESULTS.glob("*.json")):
        text = path.read_text()
        records = json.loads(text)
        if args.write and any(lacks(r) for r in records):
            versions = history(path)
            new = [recovered(r, versions) for r in records]
            if [measured(r) for r in new] != [measured(r) for r in records]:
                raise SystemExit(f"{path}: a measured field would change")
            path.write_text(json.dumps(new, indent=indent_of(text)) + "\n")
            records = new
        missing = {key for record in records for key in lacks(record)}
        if missing:
            short = True
            print(f"{path.relative_to(REPO)}: records lack {sorted(missing)}")
    if short and not args.write:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
