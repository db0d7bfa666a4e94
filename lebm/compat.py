"""The one place lebm names a private name of Lightning (none of jsonargparse's).

Everything else in lebm uses public APIs only (``tests/test_compat.py`` greps the source for
Lightning's and jsonargparse's private names and allows them here alone). Each function below
says which private name it reads and why no public way exists, and the table of Lightning's module
attributes says why each is left out of a recorded iteration's key; ``tests/test_compat.py`` checks
both against the installed Lightning, so a release that moves one fails a fast test, not a run.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L

__all__ = ["LIGHTNING_MODULE_BOOKKEEPING", "attached_trainer", "logging_as_hook", "run_hooks_eagerly"]

#: Every attribute Lightning sets on a ``LightningModule`` instance (beyond ``nn.Module``'s), public
#: and private, with why no training iteration reads it on the device: a recorded iteration's key
#: (:mod:`lebm.recording.iteration_key`) leaves them out. Private names: no public way lists them;
#: ``tests/test_compat.py`` checks this table against the installed Lightning both ways, so a release
#: that renames, adds or drops one fails a fast test instead of changing what the key holds.
LIGHTNING_MODULE_BOOKKEEPING: dict[str, str] = {
    "prepare_data_per_node": "Lightning's data flag",
    "allow_zero_length_dataloader_with_multiple_devices": "Lightning's data flag",
    "_trainer": "the Trainer (its settings the iteration reads are parts of their own)",
    "_fabric": "Lightning Fabric's handle",
    "_fabric_optimizers": "Lightning Fabric's optimisers",
    "_current_fx_name": "the hook Lightning is in",
    "_param_requires_grad_state": "toggle_optimizer's saved flags",
    "_metric_attributes": "torchmetrics attributes found for logging",
    "_automatic_optimization": "False for every lebm method",
    "_compiler_ctx": "torch.compile's context (nets compiled inside are modules)",
    "_hparams": "the key's 'hyperparameters' part",
    "_hparams_initial": "the hyperparameters as first saved",
    "_hparams_name": "how the hyperparameters were saved",
    "_log_hyperparams": "whether loggers get the hyperparameters",
    "_example_input_array": "a summary's example input",
    "_strict_loading": "load_state_dict's strictness",
    "_device_mesh": "a model-parallel mesh (lebm's strategies set none)",
    "_device": "the key's tensors hold their device",
    "_dtype": "the key's tensors hold their dtype",
}


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or None (public: ``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


@contextmanager
def logging_as_hook(module: L.LightningModule, hook: str) -> Iterator[None]:
    """``module.log`` inside the block records its values as if called from ``hook``.

    Private name: ``LightningModule._current_fx_name``, the hook Lightning files a logged value
    under. lebm hands a training step's values over late, from ``on_train_batch_end``, on the
    step after which training stops (:mod:`lebm.training.cadence`); filed under that hook, they would
    be a second, separate value of the same name (Lightning keys its results by hook and name).
    Lightning has no public way to log on behalf of another hook.
    """
    previous = module._current_fx_name
    module._current_fx_name = hook
    try:
        yield
    finally:
        module._current_fx_name = previous


#: The hooks Lightning wraps in ``torch.compile``'s context when it is given a compiled model.
COMPILED_HOOKS = ("forward", "training_step", "validation_step", "test_step", "predict_step")


def run_hooks_eagerly(model: Any) -> list[str]:
    """Undo what ``Trainer.fit(torch.compile(model))`` does to ``model``: Lightning wraps its steps in
    the compiler's context, which would compile every chain of a training step into one graph (many
    minutes of compilation, graph breaks at every sampler step). The wrapped hooks (instance
    attributes whose ``__wrapped__`` is the method's own hook) are removed, so the steps run eagerly,
    and one warning names the supported way. Returns the names of the hooks unwrapped.

    Lightning's behaviour it relies on (2.6; no public way to ask for it): given an
    ``OptimizedModule``, ``Trainer.fit`` assigns the compiled context's wrappers of ``forward`` and the
    ``*_step`` hooks as attributes of the original module (``lightning.pytorch.utilities.compile``);
    ``functools.wraps`` gives each its ``__wrapped__``. ``tests/models/test_lightning_optimisation.py``
    checks it (a fit of a compiled model).
    """
    unwrapped = []
    for name in COMPILED_HOOKS:
        attribute = vars(model).get(name)
        original = getattr(attribute, "__wrapped__", None)
        if original is not None and getattr(original, "__func__", None) is getattr(type(model), name, None):
            delattr(model, name)
            unwrapped.append(name)
    if unwrapped and not getattr(model, "_warned_compile", False):
        model._warned_compile = True
        warnings.warn(
            f"torch.compile(model) would compile {type(model).__name__}'s whole training step, every MCMC chain "
            "included, into one graph (minutes, with graph breaks at each sampler step): its steps run eagerly. "
            "Compile the nets instead: lebm.speed.FastNets(compile=True) or lebm.speed.apply_fast_paths(model, "
            "compile=True) (docs/performance.md)",
            UserWarning,
            stacklevel=2,
        )
    return unwrapped
