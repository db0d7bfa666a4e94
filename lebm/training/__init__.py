"""The machinery under :class:`lebm.models.Method`: what every method gets from its base, one job
per module. A method's author rarely reads it; a change to how every method trains goes here.

Stepping and optimisers:

- :mod:`.stepping`: how Lightning's optimisation settings (clipping, accumulation, ...) act on a
  method that steps one optimiser per net;
- :mod:`.optimizers`: one Adam per net with its per-epoch schedule, built in one place;
- :mod:`.settings`: the checks of a method's optimiser settings when it is built;
- :mod:`.cadence`: when a training step hands its values to Lightning;
- :mod:`.double_precision`: ``precision="64-true"`` for the whole run.

Guard and recovery:

- :mod:`.guard`: stop at the first non-finite or runaway quantity (``DivergenceGuard``);
- :mod:`.recovery`: roll back to the last good state, lower step sizes and rates, go on.

Runs and checkpoints:

- :mod:`.resume`: resuming with the recipe's optimiser settings, and only when training is left;
- :mod:`.run_identity`: the run's id, step, folder, W&B run and data fingerprint (settings and content)
  in every checkpoint, and what a checkpoint without one is compared with;
- :mod:`.own_checkpoints`: a fit writes, rotates and deletes only its own run's checkpoints;
- :mod:`.migrations`: checkpoints of earlier versions brought to the current one as they load;
- :mod:`.final_validation` and :mod:`.training_end`: the fit ends on a validated model.

The user's side:

- :mod:`.hooks`: every hook a method overrides, with its default;
- :mod:`.inputs`: the one input check of the Python API (``generate``, ``infer``, ``score``, ...);
- :mod:`.prediction`: what ``predict_step`` and ``forward`` return;
- :mod:`.monitoring`: a callback that monitors a name nothing logs is refused at build;
- :mod:`.choices`: one check for an option that takes one of a few values.

Loading any method's checkpoint (``lebm.load``) stays with the methods (:mod:`lebm.models.loading`):
it asks whether the class a checkpoint names is a :class:`~lebm.models.Method`.
"""
