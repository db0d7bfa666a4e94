"""A fingerprint of each method's training: the SHA-256 of its state dict after a few iterations.

Refactors that must not change what lebm computes (moving wiring into shared helpers, simplifying
the capture key) are checked by running this before and after on the same machine: every hash must
be equal (bit for bit, CPU, one thread). Each recipe's model is built from the YAML (the paper's
nets), seeded, and trained for ``--iters`` iterations on fixed uniform-noise batches through a
Lightning Trainer, exactly as ``benchmarks/train_step.py`` does. Prints one JSON line::

    python benchmarks/fingerprint.py                       # the four methods' paper recipes
    python benchmarks/fingerprint.py --recipes quickstart  # any recipes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import bare_trainer, load_recipe  # noqa: E402
from train_step import observation_shape  # noqa: E402

from lebm.config import build  # noqa: E402

#: recipe -> (batch size, iterations): DualMCMC's ResNet energy at batch 2 keeps the CPU run short;
#: MultiStageNCE needs an iteration per stage (4).
DEFAULT_RECIPES = {
    "latent_ebm/svhn": (8, 3),
    "multistage_nce/svhn": (8, 4),
    "dual_mcmc/cifar10": (2, 3),
    "hierarchical/svhn": (8, 3),
    "quickstart": (8, 3),
}


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 over every state-dict entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def fingerprint(recipe: str, batch_size: int, iters: int, seed: int) -> str:
    """The state-dict hash of ``recipe``'s model after ``iters`` training iterations."""
    torch.manual_seed(seed)
    model = build(load_recipe(recipe)["model"])
    shape = observation_shape(model)
    data_seed = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size * iters, *shape, generator=data_seed) * 2 - 1
    loader = DataLoader(TensorDataset(images), batch_size=batch_size)
    torch.manual_seed(seed)
    bare_trainer(max_epochs=1, accelerator="cpu", devices=1, deterministic=True).fit(model, loader)
    return state_hash(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=None, help="recipe names or paths (default: the four methods)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 (DualMCMC: 2)")
    parser.add_argument("--iters", type=int, default=None, help="default: 3 (MultiStageNCE: 4)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    recipes = {name: DEFAULT_RECIPES.get(name, (8, 3)) for name in args.recipes} if args.recipes else DEFAULT_RECIPES
    hashes = {
        recipe: fingerprint(recipe, args.batch_size or batch, args.iters or iters, args.seed)
        for recipe, (batch, iters) in recipes.items()
    }
    print(json.dumps({"seed": args.seed, "torch": torch.__version__, "hashes": hashes}))


if __name__ == "__main__":
    main()
