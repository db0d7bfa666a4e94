"""lebm: a PyTorch Lightning toolkit for latent-space energy-based models."""

from __future__ import annotations

from typing import Any

from lebm.version import __version__

__all__ = ["__version__", "from_recipe", "load"]


def load(path: str, map_location: Any = None, **kwargs: Any) -> Any:
    """Load any lebm method's checkpoint, whichever method wrote it.

    Reads the method's public class path stored in the checkpoint (e.g. ``lebm.models.LatentEBM``)
    and calls that class's ``load_from_checkpoint(path, map_location=..., **kwargs)``: pass
    modules the checkpoint could not record (named in a warning when it was saved) as keywords, and
    ``weights_only=False`` for a checkpoint of yours that holds objects other than tensors and plain
    data (refused by default, with a message naming the object).
    The model comes back in evaluation mode (``.eval()``: BatchNorm's running statistics, so a
    score does not depend on the rest of its batch); ``model.train()`` switches back::

        model = lebm.load("runs/quickstart/checkpoints/last.ckpt")
        images = model.generate(64)
    """
    from lebm.models.loading import load_method  # imports torch and Lightning only when used

    return load_method(path, map_location=map_location, **kwargs)


def from_recipe(name: str, overrides: Any = None) -> Any:
    """The model, DataModule, Trainer settings and callbacks that ``lebm fit -c NAME`` builds, as a
    :class:`lebm.cli.recipe_api.Recipe` (``overrides``: ``{"trainer.max_epochs": 3}`` or
    command-line arguments)::

        recipe = lebm.from_recipe("quickstart", {"trainer.max_epochs": 3})
        trainer = L.Trainer(**recipe.trainer_settings, callbacks=[*recipe.callbacks, MyCallback()])
        trainer.fit(recipe.model, datamodule=recipe.datamodule)
    """
    from lebm.cli.recipe_api import from_recipe as build  # imports Lightning only when used

    return build(name, overrides)
