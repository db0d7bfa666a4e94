"""The README's quickstart pictures: drawn from a run of the README's first command, and checked.

    python scripts/readme_pictures.py draw runs/quickstart     # the run's pictures into docs/images
    python scripts/readme_pictures.py check runs/quickstart    # are docs/images the pictures this run drew?

``RUN`` is a finished ``lebm fit -c quickstart`` run folder (100 epochs). Its last epoch's sample
grids (the training chain's and the 200-step chain's), reconstruction grid and learning curves are
the pictures the README and the documentation's front page show (:data:`PICTURES`).

``draw`` saves them into ``docs/images`` (the same pixels), writes
``docs/images/quickstart_pictures.json`` (the command and each picture's size) and keeps the run's
trained weights (:data:`WEIGHTS`). Two checks follow:

- :func:`redraw` draws the sample, 200-step and reconstruction grids again from those weights with
  the recipe's grid callbacks, as the last epoch drew them; the default tier's
  ``tests/test_readme_pictures.py`` compares them with the pictures, so a change to a chain, a net,
  the grid or its caption fails there until ``draw`` runs again. Drawing from fixed weights is
  stable: another CPU's rounding flips a few pixels by a level or two, where a changed caption,
  chain or net moves pixels by many levels (:data:`MAX_LEVEL_DIFFERENCE`, :data:`MAX_CHANGED_SHARE`).
- ``check`` compares every picture with a new run's, pixel by pixel, and first says so: what it
  compares with what, and that a match is expected only of the run that drew the pictures (exit 1
  and one line naming ``draw`` when one is missing, of another size or past the tolerance; it says
  whether the run trained the pictured weights). CI runs it on the quickstart it trains, reported
  and not gating: 100 epochs of training are chaotic at the pixel level (a 1e-7 change of one
  learning rate moves the sample grids as much as a code change), so any other machine's rounding
  can fail it, one of the drawing machine's own CPU type included (its torch build, thread count
  or instruction set differ: a run on an AMD EPYC like the drawing one failed it too, issue 109).
  The pictures' own check is :func:`redraw`'s, from fixed weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO / "docs" / "images"
MANIFEST = IMAGES / "quickstart_pictures.json"
#: The pictured model's weights (its state_dict, no optimiser): the pictures are drawn again from
#: them by the default tier's test, with the code as it is now.
WEIGHTS = REPO / "tests" / "fixtures" / "readme_quickstart" / "weights.pt"
RECIPE = REPO / "recipes" / "quickstart.yaml"
#: Each picture the README shows: its file under ``docs/images`` and the run's file it is drawn from.
PICTURES = {
    "quickstart_samples.png": "images/samples_epoch0099.png",
    "quickstart_samples_langevin200.png": "images/samples_langevin200_epoch0099.png",
    "quickstart_reconstructions.png": "images/reconstructions_epoch0099.png",
    "quickstart_curves.png": "curves.png",
}
#: The most a picture may differ from the one drawn now: by more than this many levels (of 255) at
#: no pixel, and at no more than this share of its pixels (another CPU's rounding flips a value
#: near a level's edge by one; one character of a caption changes its pixels by up to 255 levels,
#: a twentieth of a percent of them).
MAX_LEVEL_DIFFERENCE = 2
MAX_CHANGED_SHARE = 0.02
DRAW = "python scripts/readme_pictures.py draw runs/quickstart"


@dataclass
class Difference:
    """How one picture differs from the one drawn now: the ``largest`` difference of a value (levels
    of 255), the ``mean`` absolute difference and the ``changed`` share of its pixels; ``problem``
    when they cannot be compared."""

    picture: str
    largest: int = 0
    mean: float = 0.0
    changed: float = 0.0
    problem: str | None = None

    @classmethod
    def between(cls, picture: str, shown: np.ndarray, drawn: np.ndarray) -> Difference:
        """The difference of two pictures ``(H, W, 3)``."""
        if shown.shape != drawn.shape:
            return cls(
                picture,
                problem=f"{shown.shape[1]}x{shown.shape[0]} pixels, now drawn {drawn.shape[1]}x{drawn.shape[0]}",
            )
        delta = np.abs(shown.astype(np.int16) - drawn.astype(np.int16))
        return cls(picture, int(delta.max(initial=0)), float(delta.mean()), float(delta.any(axis=-1).mean()))

    @property
    def too_large(self) -> bool:
        return self.problem is not None or self.largest > MAX_LEVEL_DIFFERENCE or self.changed > MAX_CHANGED_SHARE

    def describe(self) -> str:
        if self.problem is not None:
            return f"{self.picture}: {self.problem}"
        return (
            f"{self.picture}: {self.changed:.2%} of its pixels changed, by {self.largest} levels of 255 at most "
            f"(mean {self.mean:.3f})"
        )


def pixels(path: Path) -> np.ndarray:
    """A picture's RGB values ``(H, W, 3)`` as integers."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def compare(shown: Path, drawn: Path) -> Difference:
    """How the picture ``shown`` differs from ``drawn``."""
    name = shown.name
    for path in (shown, drawn):
        if not path.is_file():
            return Difference(name, problem=f"no file {path}")
    return Difference.between(name, pixels(shown), pixels(drawn))


def check(run: Path, images: Path = IMAGES) -> list[Difference]:
    """Each picture's difference from the run's."""
    return [compare(images / shown, run / drawn) for shown, drawn in PICTURES.items()]


def quickstart_parts() -> tuple[Any, list[Any], Any, int]:
    """The quickstart recipe's model (untrained), its grid callbacks (``SampleGrid``,
    ``ReconstructionGrid``), its data module and its last epoch's index."""
    from lebm.cli.resolve import resolve_recipe
    from lebm.config import build

    config = resolve_recipe(RECIPE)
    wanted = ("SampleGrid", "ReconstructionGrid")
    grids = [build(c) for c in config["trainer"]["callbacks"] if c["class_path"].endswith(wanted)]
    return build(config["model"]), grids, build(config["data"]), int(config["trainer"]["max_epochs"]) - 1


def redraw(weights: Path = WEIGHTS) -> dict[str, np.ndarray]:
    """The pictures :data:`PICTURES` names except the learning curves (which the run's metrics
    draw), drawn again from the pictured ``weights`` with the recipe's grid callbacks as the last
    epoch draws them: ``{file under docs/images: (H, W, 3) uint8}``."""
    from lebm.callbacks import ReconstructionGrid, SampleGrid
    from lebm.callbacks.images import longer_chain

    model, grids, data, epoch = quickstart_parts()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    drawn = {}
    for grid in grids:
        if isinstance(grid, SampleGrid):
            drawn["quickstart_samples.png"] = grid.picture(model, epoch)
            longer = longer_chain(model.generation_sampler, grid.long_chain_steps)
            drawn["quickstart_samples_langevin200.png"] = grid.picture(model, epoch, longer, longer)
        elif isinstance(grid, ReconstructionGrid):
            data.setup("fit")
            images = grid.first_images(data.val_dataloader())
            drawn["quickstart_reconstructions.png"] = grid.picture(model, images, epoch)
    return drawn


def draw(run: Path, images: Path = IMAGES, weights: Path = WEIGHTS) -> None:
    """Save the run's pictures into ``images`` (the same pixels), write the manifest and save the
    run's trained weights to ``weights``."""
    missing = [str(run / drawn) for drawn in PICTURES.values() if not (run / drawn).is_file()]
    if missing:
        raise SystemExit(f"readme_pictures: error: {run} is no finished quickstart run (missing {', '.join(missing)})")
    manifest = {"command": "lebm fit -c quickstart", "cpu": this_cpu(), "pictures": {}}
    for shown, drawn in PICTURES.items():
        with Image.open(run / drawn) as image:
            image.save(images / shown)
            manifest["pictures"][shown] = {"from": drawn, "size": list(image.size)}
    (images / MANIFEST.name).write_text(json.dumps(manifest, indent=1) + "\n")
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(trained_weights(run), weights)


def this_cpu() -> str:
    """This machine's processor, as ``/proc/cpuinfo`` names it (``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def drawing_cpu(images: Path = IMAGES) -> str:
    """The processor that drew the pictures, as the manifest names it (drawings before it did: unnamed)."""
    manifest = images / MANIFEST.name
    named = json.loads(manifest.read_text()).get("cpu") if manifest.is_file() else None
    return named or "not named in docs/images/quickstart_pictures.json"


def what_check_compares(run: Path, images: Path = IMAGES) -> str:
    """The line ``check`` opens with: what it compares, and why only the drawing run is expected to match."""
    return (
        f"readme_pictures: comparing the README's {len(PICTURES)} pictures ({images.name}/, drawn on "
        f"{drawing_cpu(images)}) with the ones {run} drew, pixel by pixel. Only the run that drew them is expected "
        "to match: 100 epochs of training turn another machine's rounding (even on the same CPU type) into other "
        "weights and pictures that differ in detail. What the code draws is checked by tests/test_readme_pictures.py, "
        "from the pictured weights."
    )


def trained_weights(run: Path) -> dict[str, Any]:
    """The model's weights in the run's ``checkpoints/last.ckpt`` (its state_dict)."""
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return checkpoint["state_dict"]


def weight_difference(run: Path, weights: Path = WEIGHTS) -> float:
    """The largest absolute difference between the run's trained weights and the pictured ones
    (infinite when their names or shapes differ)."""
    trained, pictured = trained_weights(run), torch.load(weights, map_location="cpu", weights_only=True)
    if trained.keys() != pictured.keys() or any(trained[k].shape != pictured[k].shape for k in trained):
        return float("inf")
    return max(float((trained[k].float() - pictured[k].float()).abs().max()) for k in trained)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["draw", "check"])
    parser.add_argument("run", type=Path, help="a finished `lebm fit -c quickstart` run folder")
    args = parser.parse_args()
    if args.action == "draw":
        if args.run.resolve().parts[-2:] != ("runs", "quickstart"):
            raise SystemExit(
                f"readme_pictures: error: the learning curves' title names the run's folder, so draw from the "
                f"README's command's folder, runs/quickstart, not {args.run}"
            )
        draw(args.run)
        print(f"readme_pictures: drew {len(PICTURES)} pictures from {args.run} into {IMAGES.relative_to(REPO)}")
        return
    print(what_check_compares(args.run))
    differences = check(args.run)
    for difference in differences:
        print(f"readme_pictures: {difference.describe()}")
    stale = [d for d in differences if d.too_large]
    if not stale:
        return
    gap = None
    if (args.run / "checkpoints" / "last.ckpt").is_file() and WEIGHTS.is_file():
        gap = weight_difference(args.run)
    what = (
        f"readme_pictures: error: {len(stale)} of the README's pictures are not what {shlex.quote(str(args.run))} "
        f"drew (a pixel off by over {MAX_LEVEL_DIFFERENCE} levels, or over {MAX_CHANGED_SHARE:.0%} of them changed)"
    )
    if gap == 0:
        advice = f"it trained the pictured weights, so the drawing changed: draw them again with `{DRAW}`"
    elif gap is not None:
        advice = (
            f"it trained other weights than the pictured ones (largest difference {gap:.3g}). On any machine but "
            "the one that drew them this is expected, one of the same CPU type included: 100 epochs amplify a "
            "rounding difference (another torch build, thread count or instruction set) into other weights, whose "
            "pictures look alike and differ in detail, so docs/images should stay as they are; the default tier's "
            "tests/test_readme_pictures.py checks them by drawing them again from the pictured weights. Only after "
            f"a change to the training draw them again, with `{DRAW}` (they were drawn on {drawing_cpu()})"
        )
    else:
        advice = f"after a change to the training or the drawing, draw them again with `{DRAW}`"
    sys.stderr.write(f"{what}; {advice}\n")
    raise SystemExit(1)


if __name__ == "__main__":
    main()
