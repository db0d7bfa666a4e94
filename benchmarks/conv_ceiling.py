"""How fast the posterior chain's generator passes run, against this device's matrix-product rate.

    python benchmarks/conv_ceiling.py --recipe recipes/latent_ebm/svhn.yaml [--batch-size 100] [--repeats 10]

One posterior-chain step of LatentEBM is a generator forward ``g(z)`` and the backward to ``z``
(input gradients only). This script times that pass for the recipe's generator (whole net, and each
convolution alone on its own input), counts its FLOPs with ``torch.utils.flop_counter``'s formulas,
and compares the FLOP rate with a large single-precision matrix product (``sgemm``, ``n x n`` with
``n = --gemm-size``) on the same device and threads: the rate the convolution kernels are built
from. A pass already at the sgemm rate leaves nothing for any chain implementation to win but
fewer FLOPs or fewer bits. Prints one JSON line:

- ``sgemm_gflops``: the matrix product's GFLOP/s;
- ``chain_step``: seconds, GFLOP and GFLOP/s of ``g(z)`` + ``d/dz`` for the whole generator;
- ``layers``: the same for each convolution, and its share of the summed layer time;
- ``conv_share_of_sgemm``: the whole pass's GFLOP/s over the sgemm GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_device, load_recipe, timed  # noqa: E402
from flops import OperatorFlops  # noqa: E402

from lebm.config import build  # noqa: E402


def median_seconds(device: torch.device, work: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``work()`` over ``repeats`` calls, after one warm-up call."""
    timed(device, work)
    return statistics.median(timed(device, work)[1] for _ in range(repeats))


def counted_flops(work: Callable[[], object]) -> int:
    """FLOPs of one ``work()`` call (matrix products and convolutions, forward and backward)."""
    with OperatorFlops() as counter:
        work()
    return counter.total


def forward_and_input_grad(net: nn.Module, inputs: Tensor) -> Callable[[], Tensor]:
    """One chain step's net work: ``y = net(x)``, then ``d sum(y^2) / dx`` (no parameter gradients)."""

    def work() -> Tensor:
        x = inputs.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(x).square().sum(), x)
        return grad

    return work


def sgemm_gflops(size: int, device: torch.device, repeats: int) -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    return 2 * size**3 / median_seconds(device, lambda: a @ b, repeats) / 1e9


def layer_inputs(net: nn.Module, z: Tensor) -> list[tuple[str, nn.Module, Tensor]]:
    """Every convolution of ``net`` with the input it receives when ``net(z)`` runs."""
    found: list[tuple[str, nn.Module, Tensor]] = []
    hooks = [
        module.register_forward_hook(lambda m, args, out, name=name: found.append((name, m, args[0].detach())))
        for name, module in net.named_modules()
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d))
    ]
    with torch.no_grad():
        net(z)
    for hook in hooks:
        hook.remove()
    return found


def measure(net: nn.Module, inputs: Tensor, device: torch.device, repeats: int) -> dict[str, float]:
    work = forward_and_input_grad(net, inputs)
    seconds = median_seconds(device, work, repeats)
    gflop = counted_flops(work) / 1e9
    return {"seconds": round(seconds, 5), "gflop": round(gflop, 3), "gflops": round(gflop / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/latent_ebm/svhn.yaml")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's data batch_size")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    batch_size = args.batch_size or recipe.get("data", {}).get("init_args", {}).get("batch_size", 100)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build(recipe["model"]).to(device)
    net = getattr(model.decoder, "net", model.decoder).eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    z = torch.randn(batch_size, model.prior.latent_dim, device=device)
    whole = measure(net, z, device, args.repeats)
    layers = {name: measure(layer, x, device, args.repeats) for name, layer, x in layer_inputs(net, z)}
    layer_time = sum(entry["seconds"] for entry in layers.values())
    for entry in layers.values():
        entry["share_of_layer_time"] = round(entry["seconds"] / layer_time, 3)
    gemm = sgemm_gflops(args.gemm_size, device, args.repeats)
    print(
        json.dumps(
            {
                "recipe": args.recipe,
                "device": describe_device(device),
                "batch_size": batch_size,
                "sgemm_gflops": round(gemm, 1),
                "chain_step": whole,
                "layers": layers,
                "conv_share_of_sgemm": round(whole["gflops"] / gemm, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
