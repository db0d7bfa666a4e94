"""lebm's loggers: Weights & Biases logging that never stops to ask for a login, and the run's table
of logged numbers (:class:`~lebm.metrics_table.MetricsTable`, ``<run>/metrics.csv``)."""

from __future__ import annotations

import netrc
import os
import warnings
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from lebm.atomic import os_reason, replaced_atomically
from lebm.metrics_table import MetricsTable

__all__ = ["MetricsTable", "WandbLogger", "wandb_credentials_available"]

#: Where the logger records the last step it sent, inside the run's ``wandb/`` folder.
LAST_STEP_FILE = "lebm_last_logged_step.txt"


def wandb_credentials_available() -> bool:
    """Whether W&B has an API key: ``WANDB_API_KEY`` or a ``~/.netrc`` entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` whose ``offline`` defaults to "auto".

    ``offline=None`` logs online when W&B credentials are present (``wandb login`` or
    ``WANDB_API_KEY``) and offline otherwise, without prompting; ``WANDB_MODE`` still wins.
    Offline runs are kept under ``<save_dir>/wandb`` and can be uploaded later with
    ``wandb sync``. ``save_dir`` defaults to the trainer's run folder (set by the ``lebm`` CLI).

    Each step is logged once per run: a run resumed (``resume`` set, as ``--ckpt_path last``
    does) from a checkpoint older than its last logged step recomputes those steps (exactly, see
    ``lebm.randomness``) but does not send them again. The last step sent is kept in
    ``<save_dir>/wandb/lebm_last_logged_step.txt``; when it cannot be written, a warning says so once
    and training goes on.
    """

    def __init__(self, *args: Any, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_credentials_available()
        super().__init__(*args, offline=offline, **kwargs)
        if not kwargs.get("anonymous"):  # wandb warns about the setting whenever it is passed, even unset
            self._wandb_init.pop("anonymous", None)
        self._step_file = os.path.join(kwargs.get("save_dir") or ".", "wandb", LAST_STEP_FILE)
        # steps up to this one were sent before the run was resumed: a redo is not sent again
        self._sent_before_resume = self._read_last_step() if kwargs.get("resume") else -1
        self._last_step = self._sent_before_resume
        self._warned_step_file = False

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """Lightning's W&B run, started with its ``save_dir`` made first: W&B looks for the run's git
        repository from that folder, and a folder not made yet (a run from Python, before anything
        is written into its run folder) gets "wandb: WARNING git root ... does not exist"."""
        if not getattr(self, "_save_dir_made", False) and self.save_dir:
            os.makedirs(self.save_dir, exist_ok=True)
            self._save_dir_made = True
        return super().experiment

    def _read_last_step(self) -> int:
        try:
            with open(self._step_file) as handle:
                return int(handle.read().strip() or -1)
        except (OSError, ValueError):
            return -1

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send ``metrics`` unless ``step`` was sent already (a resumed run redoing steps)."""
        if step is not None and step <= self._sent_before_resume:
            return
        super().log_metrics(metrics, step)
        if step is not None and step > self._last_step:
            self._last_step = step
            self._record_last_step(step)

    def _record_last_step(self, step: int) -> None:
        """Write ``step`` to the step file; a failure (a full disk, a file where the folder should be)
        is a warning, said once: training goes on, and only a resume would send redone steps again."""
        try:
            with replaced_atomically(self._step_file, "w") as handle:
                handle.write(str(step))
        except OSError as error:
            if not self._warned_step_file:
                self._warned_step_file = True
                reason = os_reason(error)
                warnings.warn(
                    f"WandbLogger could not record its last logged step in {self._step_file} ({reason}); training "
                    f"goes on, but a run resumed from an earlier checkpoint would send its redone steps to W&B again: "
                    f"make {os.path.dirname(self._step_file)} a writable folder",
                    stacklevel=2,
                )
