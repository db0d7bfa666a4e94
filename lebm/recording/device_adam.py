"""Adam and AdamW steps that read nothing on the host: what a recorded training iteration replays.

``torch.optim.Adam`` (without ``capturable``) keeps its step count on the CPU and computes the bias
corrections from it in Python, so a CUDA graph would replay the first recorded step's numbers
forever; its ``capturable=True`` form runs on CUDA devices only, and rounds otherwise. This step
keeps the count on the parameters' device (in the optimiser's own ``state["step"]``, where
``torch.optim.Adam`` reads it too) and the learning rate in a 0-d float64 tensor that the caller
refreshes when a schedule changes it, and computes, for every parameter with a gradient::

    t <- t + 1
    g <- g + wd * p      (Adam: L2 in the gradient)
    p <- p * (1 - lr * wd)      (AdamW, or Adam with decoupled_weight_decay: instead)
    m <- m + (1 - beta1) * (g - m)        v <- beta2 * v + (1 - beta2) * g^2
    p <- p + (-lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

with the bias corrections in float64, as torch computes them in Python: on a CPU the result equals
``torch.optim.Adam.step()`` bit for bit (``tests/recording/test_device_adam.py``); on a GPU, where
torch's eager Adam takes its multi-tensor path, they agree to rounding. The optimiser object, its
``state_dict`` and its schedulers are torch's own: checkpoints and resumes are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.optim import Adam, AdamW, Optimizer

from lebm.recording.torch_internals import optimizer_hooks

#: The options of ``Adam``/``AdamW`` that :func:`device_adam_step` implements at any value
#: (``foreach`` and ``capturable`` choose how torch's own step runs, not what it computes).
RECORDED_OPTIONS = frozenset({"lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "foreach", "capturable"})
#: The options it implements only when off.
OPTIONS_OFF_ONLY = ("amsgrad", "maximize", "fused", "differentiable")


def device_step_refusal(optimizer: Optimizer) -> str | None:
    """Why ``optimizer`` cannot take :func:`device_adam_step` (None: it can): only ``Adam`` and
    ``AdamW`` whose every option (``optimizer.defaults``: what torch's step reads) is one this step
    implements (an allow-list: an option a later torch adds is refused until it is known), with
    amsgrad, maximize, a fused kernel and differentiable steps off, a float learning rate, and no
    step hooks of its own."""
    name = type(optimizer).__name__
    if type(optimizer) not in (Adam, AdamW):
        return f"its optimiser {name} has no recorded step (lebm records Adam and AdamW)"
    unknown = sorted(set(optimizer.defaults) - RECORDED_OPTIONS - set(OPTIONS_OFF_ONLY))
    if unknown:
        return (
            f"its {name} has the option {unknown[0]}, which lebm's recorded step does not know (torch "
            f"{torch.__version__} is newer than lebm's step)"
        )
    for group in optimizer.param_groups:
        for option in OPTIONS_OFF_ONLY:
            if group.get(option):
                return f"its {name} sets {option}=True, which lebm's recorded step does not implement"
        if isinstance(group.get("lr"), Tensor):
            return f"its {name} holds its learning rate as a tensor; lebm keeps a recorded copy of a float rate"
    if any(optimizer_hooks(optimizer).values()):
        return f"its {name} has step hooks, which run on the host"
    return None


class LearningRates:
    """One 0-d float64 tensor per parameter group of an optimiser, on its parameters' device,
    holding the group's ``lr``: what a recorded step reads at its address. :meth:`refresh` refills
    a tensor only when its group's rate changed (compared on the host: no read of the device)."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.values: list[float] = []
        self.tensors: list[Tensor] = []
        self._make()

    def _make(self) -> None:
        """New tensors, one per group (a recording that read the old ones no longer matches its key)."""
        device = self.optimizer.param_groups[0]["params"][0].device
        self.values = [float(group["lr"]) for group in self.optimizer.param_groups]
        self.tensors = [torch.tensor(rate, dtype=torch.float64, device=device) for rate in self.values]

    def refresh(self) -> list[Tensor]:
        """The tensors, each refilled where a schedule (or a resume) changed its group's ``lr``;
        all made anew when a group was added or removed (:meth:`matches` is False then)."""
        if not self.matches():
            self._make()
            return self.tensors
        for index, group in enumerate(self.optimizer.param_groups):
            rate = float(group["lr"])
            if rate != self.values[index]:
                self.tensors[index].fill_(rate)
                self.values[index] = rate
        return self.tensors

    def matches(self) -> bool:
        """Whether there is one tensor per parameter group of the optimiser (none added or removed since)."""
        return len(self.values) == len(self.optimizer.param_groups)


@torch.no_grad()
def device_adam_step(optimizer: Optimizer, rates: list[Tensor], skip: frozenset[int] = frozenset()) -> None:
    """One ``Adam``/``AdamW`` step of ``optimizer`` at the learning rates ``rates`` (one 0-d
    float64 tensor per group, :class:`LearningRates`), reading nothing on the host (the
    update rule is in the module docstring). Parameters without a gradient are skipped, as torch does,
    and so are those whose ``id`` is in ``skip`` (a gradient kept at zero that this update's loss
    did not reach: torch would see None)."""
    for group, lr in zip(optimizer.param_groups, rates, strict=True):
        decoupled = group.get("decoupled_weight_decay", isinstance(optimizer, AdamW))  # AdamW, or Adam's option
        beta1, beta2 = group["betas"]
        eps, weight_decay = group["eps"], group["weight_decay"]
        for parameter in group["params"]:
            if parameter.grad is None or id(parameter) in skip:
                continue
            state = optimizer.state[parameter]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=parameter.device)
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            elif state["step"].device != parameter.device:  # torch keeps it on the CPU: once, on this device
                state["step"] = state["step"].to(device=parameter.device, dtype=torch.float32)
            grad = parameter.grad
            step = state["step"]
            step += 1
            if weight_decay != 0:
                if decoupled:
                    parameter.mul_(1 - lr * weight_decay)
                else:
                    grad = grad.add(parameter, alpha=weight_decay)
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            count = step.double()
            bias_correction1 = 1 - torch.pow(beta1, count)
            bias_correction2 = 1 - torch.pow(beta2, count)
            denominator = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
            parameter.add_(exp_avg * (-lr / bias_correction1) / denominator)
