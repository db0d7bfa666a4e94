"""Weights & Biases logging that never stops to ask for a login."""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


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
    """

    def __init__(self, *args: Any, offline: bool | None = None, **kwargs: Any) -> None:
        if offline is None:
            offline = os.environ.get("WANDB_MODE") in ("offline", "dryrun") or not wandb_credentials_available()
        super().__init__(*args, offline=offline, **kwargs)
