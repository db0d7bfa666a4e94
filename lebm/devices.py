"""The device settings of a run, checked before anything is built: the mistakes a GPU user meets.

:func:`check_device_settings` reads the Trainer's ``accelerator``, ``devices`` and ``precision``
and raises ``ValueError`` for what cannot work, naming the option and what to set instead:

- ``accelerator: gpu`` (or ``cuda``) where torch sees no CUDA device (a CPU-only torch build, no
  driver, or ``CUDA_VISIBLE_DEVICES`` hiding them);
- more GPUs asked for (``devices``) than the machine has;
- ``precision: bf16-*`` on a GPU without bfloat16 arithmetic (before Ampere): ``16-mixed`` or
  ``32-true`` instead.

and warns (the run works, slowly) for ``bf16-mixed`` on a CPU without bfloat16 instructions, where
it measured 29x slower than float32 (``docs/performance.md``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

CUDA_NAMES = ("gpu", "cuda")


def uses_cuda(accelerator: Any) -> bool:
    """Whether a Trainer with this ``accelerator`` runs on CUDA devices."""
    accelerator = str(accelerator or "auto")
    return accelerator in CUDA_NAMES or (accelerator == "auto" and torch.cuda.is_available())


def requested_gpus(devices: Any) -> int | None:
    """How many GPUs ``devices`` asks for (an int, a list of indices, ``"2"``, ``"0,1"``); None
    for ``"auto"``/``-1`` (all of them) or a value this does not read."""
    if devices in (None, "auto", -1, "-1"):
        return None
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, int):
        return devices
    text = str(devices).strip()
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    return int(text) if text.isdigit() else None


def bf16_on_this_gpu() -> bool:
    """Whether the current GPU has bfloat16 arithmetic (not emulated)."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before the including_emulation argument
        return bool(torch.cuda.is_bf16_supported())


def check_device_settings(accelerator: Any, devices: Any, precision: Any) -> None:
    """Raise ``ValueError`` for device settings that cannot run here, warn for slow ones (module doc)."""
    precision = str(precision or "32-true")
    if devices in (0, "0") or (isinstance(devices, (list, tuple)) and not devices):
        raise ValueError(
            f"--trainer.devices {devices} asks for no device at all: give a number of devices >= 1 (1 for one CPU "
            "process or GPU), a list of GPU ids such as [0, 1], or auto"
        )
    if str(accelerator) in CUDA_NAMES and not torch.cuda.is_available():
        build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"--trainer.accelerator {accelerator} asks for a CUDA GPU, but torch ({torch.__version__}, {build}) sees "
            "none: leave trainer.accelerator at auto (it picks the CPU here), or check nvidia-smi, the driver and "
            "CUDA_VISIBLE_DEVICES"
        )
    if uses_cuda(accelerator):
        asked, present = requested_gpus(devices), torch.cuda.device_count()
        if asked is not None and asked > present:
            raise ValueError(
                f"--trainer.devices {devices} asks for {asked} GPUs, but this machine has {present}: "
                f"use --trainer.devices {present} (or fewer)"
            )
        if precision.startswith("bf16") and not bf16_on_this_gpu():
            raise ValueError(
                f"--trainer.precision {precision} needs bfloat16 arithmetic, which this GPU "
                f"({torch.cuda.get_device_name()}) does not have: use --trainer.precision 16-mixed (float16 with loss "
                "scaling) or 32-true"
            )
    elif precision in ("bf16-mixed", "bf16") and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        warnings.warn(
            f"--trainer.precision {precision} on this CPU ({torch.backends.cpu.get_cpu_capability()}, no bfloat16 "
            "instructions) runs many times slower than 32-true (29x measured: docs/performance.md); use 32-true here",
            stacklevel=2,
        )


def check_map_location(map_location: Any) -> None:
    """Raise ``ValueError`` in one line when ``map_location`` (as ``torch.load`` and
    ``load_from_checkpoint`` take it: a device, its name, or a ``{saved: wanted}`` mapping of names)
    names a device this machine does not have, or is none of the kinds torch takes (a number, a list);
    None and a function are left to torch."""
    if map_location is None or callable(map_location):
        return
    if isinstance(map_location, dict):
        for saved, wanted in map_location.items():
            if not isinstance(saved, str) or not isinstance(wanted, (str, torch.device)):
                raise ValueError(
                    f"map_location={map_location!r}: a mapping must map device names to device names, e.g. "
                    "{'cuda:1': 'cuda:0'}: pass map_location='cpu' to load everything onto the CPU"
                )
            check_map_location(wanted)
        return
    if not isinstance(map_location, (str, torch.device)):
        raise ValueError(
            f"map_location={map_location!r} is not a device: pass a device name such as map_location='cpu' or "
            "'cuda:0', a torch.device, a {saved: wanted} mapping of device names, or a function"
        )
    try:
        device = torch.device(map_location)
    except RuntimeError:
        raise ValueError(
            f"map_location={map_location!r} is not a device: pass map_location='cpu' (or 'cuda', 'cuda:1', ...)"
        ) from None
    given = f"map_location={map_location!r}" if isinstance(map_location, str) else f"map_location={device}"
    if device.type == "meta":
        raise ValueError(
            f"{given} holds no values, so a checkpoint's weights cannot be loaded into it: pass map_location='cpu' "
            "(to build a model without memory, build it from its recipe under torch.device('meta') instead)"
        )
    if device.type == "cpu" and device.index is not None:
        raise ValueError(f"{given}: the CPU takes no index when loading a checkpoint; pass map_location='cpu'")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{given} but this machine has no CUDA device: pass map_location='cpu'")
        if device.index is not None and device.index >= count:
            names = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
            raise ValueError(
                f"{given} but this machine has {count} CUDA device{'s' if count > 1 else ''} ({names}): "
                "pass map_location='cuda:0' (or 'cpu')"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{given} but this machine has no Apple MPS device: pass map_location='cpu'")


def usable_cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity, where the system keeps one: a container
    or ``taskset`` may allow fewer than the machine has), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
