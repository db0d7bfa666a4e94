"""The ``lebm`` command.

- :mod:`.main`: the console script; answers ``--help``/``--version`` and checks the recipe and
  ``--ckpt_path`` without importing Lightning, then hands over to :mod:`.app`;
- :mod:`.app`: ``LebmCLI`` (LightningCLI in OmegaConf mode), run-folder rules, checks before training;
- :mod:`.recipes`: recipe composition (the ``include`` key);
- :mod:`.resolve`: ``resolve_recipe``, the composed config as plain data;
- :mod:`.errors`: ``fail`` and the one-line messages for parser errors;
- :mod:`.loggers`: loggers without a ``save_dir`` write into the run folder; every logger gets the
  whole resolved config;
- :mod:`.trainer_flags`: ``fast_dev_run``, ``overfit_batches`` and the other Trainer flags the
  command changes, each said in one line.
"""

from lebm.cli.errors import SUBCOMMANDS, fail
from lebm.cli.main import check_arguments, main

__all__ = ["SUBCOMMANDS", "check_arguments", "fail", "main"]
