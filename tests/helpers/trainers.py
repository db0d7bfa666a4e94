"""A quiet Lightning Trainer for tests: no logger, checkpoints, progress bar or model summary."""

from __future__ import annotations

from typing import Any

import lightning as L


def quiet_trainer(**settings: Any) -> L.Trainer:
    """``L.Trainer`` with the test defaults above; ``settings`` add to or override them."""
    defaults: dict[str, Any] = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **settings})
