"""Running the ``lebm`` command inside the test process (faster than a subprocess: no second
import of torch and Lightning). The tests whose subject is the process (the console script's
entry, launched DDP ranks, signals) run it in a subprocess, as a user does."""

from __future__ import annotations

import faulthandler
import io
import logging
import os
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import lightning as L
import numpy as np

from lebm.cli.main import main as lebm_main
from tests.helpers.scripts import Finished
from tests.helpers.subprocesses import HANG_SECONDS

REPO = Path(__file__).resolve().parents[2]

#: A short CLI run: 3 training batches and 1 validation batch an epoch, validating every epoch, no progress bar.
SHORT_RUN = [
    "--trainer.limit_train_batches",
    "3",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.check_val_every_n_epoch",
    "1",
    "--trainer.enable_progress_bar",
    "false",
]


#: No progress bar, model summary or logger: a CLI run in a test that reads only its files.
QUIET = [
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
    "--trainer.logger",
    "false",
]


#: The loggers whose lines a console shows on stderr: Lightning's and lebm's own.
COMMAND_LOGGERS = ("lightning.pytorch", "lightning.fabric", "lebm")

#: Names in the clone that a test's working folder links to, so that relative paths in a test's
#: arguments (``-c recipes/quickstart.yaml``, ``tests/fixtures/...``) resolve there too.
LINKED_FROM_REPO = ("recipes", "tests")


def working_folder(folder: Path) -> Path:
    """``folder``, made a working folder for ``lebm`` runs: links to the clone's
    :data:`LINKED_FROM_REPO`, and nothing a user's own runs left in the clone (``runs/``, ``wandb/``)."""
    for name in LINKED_FROM_REPO:
        link = folder / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    return folder


def tests_own_folder() -> Path:
    """The working folder of the running test (tests/conftest.py gives each test its own, under its
    temporary folder); outside pytest, refuse rather than write into the clone."""
    raise RuntimeError("run_cli needs cwd= outside a pytest run (tests/conftest.py sets the test's own folder)")


def run_cli(*args: str, cwd: Path | None = None) -> None:
    """``lebm <args>`` in this process, from ``cwd``; by default from the test's own working folder
    (:func:`tests_own_folder`), never the clone, so what a user's runs left there does not matter."""
    previous = os.getcwd()
    os.chdir(cwd if cwd is not None else tests_own_folder())
    try:
        lebm_main(list(args))
    finally:
        os.chdir(previous)


def run_cli_output(*args: str, cwd: Path | None = None, timeout: int = HANG_SECONDS) -> Finished:
    """``lebm <args>`` in this process (:func:`run_cli`), read as the console script's run would be:
    its exit status, what it printed, and on stderr its warnings and the lines Lightning's and
    lebm's loggers write (warnings one line each, as Python prints them to a console: deprecations,
    import and resource warnings left out, as Python's default filters leave them out; every other
    warning each time, where a console shows a line's first). A command still running after
    ``timeout`` seconds is hung: the test process prints every thread's stack and exits, as the
    console runs' ``subprocess`` timeout fails them."""
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    loggers = [logging.getLogger(name) for name in COMMAND_LOGGERS]
    status = 0
    with warnings.catch_warnings(record=True) as said, redirect_stdout(out), redirect_stderr(err):
        warnings.simplefilter("always")
        for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", hidden)
        for logger in loggers:
            logger.addHandler(handler)
        faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__)
        try:
            run_cli(*args, cwd=cwd)
        except SystemExit as done:
            status = 0 if done.code is None else done.code if isinstance(done.code, int) else 1
        finally:
            faulthandler.cancel_dump_traceback_later()
            for logger in loggers:
                logger.removeHandler(handler)
    lines = [f"{warning.category.__name__}: {warning.message}" for warning in said]
    return Finished(returncode=status, stdout=out.getvalue(), stderr=err.getvalue() + "\n".join(lines))


class SigtermAt(L.Callback):
    """A callback (class_path ``tests.helpers.cli_runner.SigtermAt``, with the repository root on
    PYTHONPATH) that sends this process SIGTERM after batch ``batch`` of epoch ``epoch``: a user's
    ``kill`` or SLURM's, on time."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        import signal

        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class SigtermAtSetup(L.Callback):
    """A callback (class_path ``tests.helpers.cli_runner.SigtermAtSetup``) that sends this process
    SIGTERM in its ``setup``: after the run folder got its start-up files, before any training
    (start-up)."""

    def setup(self, trainer, pl_module, stage) -> None:  # noqa: ANN001
        import signal

        os.kill(os.getpid(), signal.SIGTERM)


class NumpyState(L.Callback):
    """A callback (class_path ``tests.helpers.cli_runner.NumpyState``) that keeps a numpy number in its
    checkpoint state, as many users' callbacks do: a checkpoint that ``weights_only`` loading refuses."""

    def __init__(self) -> None:
        self.best = np.float64(1.5)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict["best"]


class WithoutPredictions(L.LightningDataModule):
    """A data module (class_path ``tests.helpers.cli_runner.WithoutPredictions``) with a test split and
    no ``predict_dataloader``, as many users' are: ``lebm predict`` refuses it in one line."""

    def test_dataloader(self):  # noqa: ANN201
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        return DataLoader(TensorDataset(torch.rand(4, 1, 8, 8) * 2 - 1), batch_size=4)


class CroppedImages(L.LightningDataModule):
    """A data module (class_path ``tests.helpers.cli_runner.CroppedImages``) of a user's own whose
    split depends on a pair of numbers, declared in its ``split_settings`` as lebm's anomaly data
    declare theirs: the parser reads ``crop`` as a tuple, its run's ``config.yaml`` holds a list."""

    split_settings = ("crop",)

    def __init__(self, crop: tuple[int, int] = (0, 0), image_size: int = 8, channels: int = 1) -> None:
        super().__init__()
        self.crop, self.image_size, self.channels = crop, image_size, channels
