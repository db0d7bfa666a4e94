"""The W&B logger: offline without a login, and each step logged once per run across resumes."""

from __future__ import annotations

import pytest
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from lebm.loggers import WandbLogger

pytest.importorskip("wandb", reason="wandb (a dependency of lebm) is not installed here")


def test_a_resumed_run_sends_each_step_once(tmp_path, monkeypatch) -> None:
    """A run killed after step 3 and resumed from a checkpoint of step 1 recomputes steps 2 and 3:
    they are not sent again; step 4 is."""
    sent: list[int | None] = []
    monkeypatch.setattr(LightningWandbLogger, "log_metrics", lambda self, metrics, step=None: sent.append(step))
    first = WandbLogger(save_dir=str(tmp_path), offline=True, id="run1")
    for step in (0, 1, 2, 3, 3):  # training then validation metrics at step 3: both sent
        first.log_metrics({"loss": 1.0}, step)
    resumed = WandbLogger(save_dir=str(tmp_path), offline=True, id="run1", resume="allow")
    for step in (2, 3, 4):
        resumed.log_metrics({"loss": 1.0}, step)
    assert sent == [0, 1, 2, 3, 3, 4]
    fresh = WandbLogger(save_dir=str(tmp_path / "other"), offline=True, id="run2")  # a new run starts at 0
    fresh.log_metrics({"loss": 1.0}, 0)
    assert sent[-1] == 0


def test_wandb_goes_offline_without_credentials(tmp_path, monkeypatch) -> None:
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    logger = WandbLogger(save_dir=str(tmp_path))
    assert logger._offline  # noqa: SLF001  (Lightning's flag; no public accessor)
    assert "anonymous" not in logger._wandb_init  # noqa: SLF001  (wandb warns whenever it is passed)


def test_a_step_file_that_cannot_be_written_warns_once_and_logging_goes_on(tmp_path, monkeypatch) -> None:
    """A file named ``wandb`` where the logger's folder belongs: each step is still sent, one warning."""
    sent: list[int | None] = []
    monkeypatch.setattr(LightningWandbLogger, "log_metrics", lambda self, metrics, step=None: sent.append(step))
    (tmp_path / "wandb").write_text("a file where the folder should be")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, id="run1")
    with pytest.warns(UserWarning, match=r"could not record its last logged step in .*training goes on") as caught:
        for step in (0, 1, 2):
            logger.log_metrics({"loss": 1.0}, step)
    assert sent == [0, 1, 2] and len([w for w in caught if "WandbLogger" in str(w.message)]) == 1
