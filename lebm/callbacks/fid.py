"""FID (and optionally KID) of generated images against a cached reference.

In a recipe (one callback per evaluated sampler; each needs its own ``name``)::

    trainer:
      callbacks:
        - class_path: lebm.callbacks.FID
          init_args:
            num_samples: 50000
            every_n_epochs: 50
            first_epoch: 51                     # after epochs 51, 101, 151, ... and the last one
            feature_extractor_weights_path: $LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth
        - class_path: lebm.callbacks.FID
          init_args:
            name: fid_long_chain                # logs val/fid_long_chain
            num_samples: 50000
            sampler: {class_path: lebm.samplers.Langevin, init_args: {n_steps: 100, step_size: 0.4}}

The statistics and the distances are torchmetrics' ``FrechetInceptionDistance`` and
``KernelInceptionDistance`` (see :class:`lebm.metrics.FIDMetrics`). What this callback adds: when
to evaluate, rank-sharded generation (each rank generates whole batches of the ``num_samples``,
each batch seeded from ``(seed, its first global index)``, so the samples do not depend on the
number of ranks; torchmetrics combines the ranks' states, so every rank logs the value one process
computes from the same samples), an on-disk reference cache, and, as DAMC's official script reads
its FID, the best value over training (``log_best``: ``val/<name>_best`` beside ``val/<name>``) and
the checkpoint of the model that scored it (``save_best``: ``best-<name>.ckpt`` beside ``last.ckpt``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lebm import arguments
from lebm.callbacks.gathered import log_gathered
from lebm.callbacks.schedule import epoch_ends, training_stops
from lebm.checkpoints import KEPT_FOR_SCORE_PREFIX
from lebm.data.paths import expand_root
from lebm.metrics.fid import (
    FIDMetrics,
    InceptionFeatures,
    ReferenceState,
    extractor_fingerprint,
    inception_weights,
    load_reference_state,
    save_reference_state,
)
from lebm.metrics.references import (  # noqa: F401 (rank_share, aligned_batches, REFERENCE_SUBSET_SEED: re-exports)
    REFERENCE_SUBSET_SEED,
    REFERENCE_SUBSETS,
    aligned_batches,
    batch_seed,
    rank_batches,
    rank_share,
    reference_batches,
    reference_indices,
)
from lebm.randomness import rng_devices
from lebm.samplers import Sampler

REFERENCE_SPLITS = ("train", "val")
#: File name of the best-FID checkpoint, in the folder of the run's ``ModelCheckpoint``.
BEST_CHECKPOINT = KEPT_FOR_SCORE_PREFIX + "{name}.ckpt"
#: Version of the cache files' content (part of the cache key).
CACHE_FORMAT = 2


# -------------------------------------------------------------------------- reference data
def reference_loader(trainer: L.Trainer, split: str) -> DataLoader:
    """The datamodule's ``train``/``val`` loader, or the loader given to ``Trainer.fit``."""
    datamodule = trainer.datamodule
    if datamodule is not None:
        return getattr(datamodule, f"{split}_dataloader")()
    loader = trainer.train_dataloader if split == "train" else trainer.val_dataloaders
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        raise RuntimeError(
            f"FID has no {split} images to compare with: give the Trainer a datamodule, or pass "
            "reference_stats=<.npz with total, outer, n (or mu, sigma)> to the callback"
        )
    return loader


def describe_reference(trainer: L.Trainer, loader: DataLoader, split: str) -> dict[str, Any]:
    """What identifies the reference images: the datamodule's class and hyperparameters (or
    the dataset's class and length when there is no datamodule)."""
    datamodule = trainer.datamodule
    if datamodule is not None:
        kind = type(datamodule)
        return {
            "datamodule": f"{kind.__module__}.{kind.__qualname__}",
            "hparams": dict(getattr(datamodule, "hparams", {}) or {}),
            "split": split,
        }
    rank_zero_warn(
        "FID caches reference statistics keyed by the dataset's class and length only (no "
        "datamodule); delete the cache or pass reference_stats=... if the data changes"
    )
    dataset = loader.dataset
    length = len(dataset) if hasattr(dataset, "__len__") else None
    return {"dataset": type(dataset).__qualname__, "length": length, "split": split}


def check_images(images: Any, where: str, n: int | None = None) -> Tensor:
    """Fail clearly unless ``images`` is a float ``(N, 1 or 3, H, W)`` tensor (with ``N == n``)."""
    is_image = isinstance(images, Tensor) and images.dim() == 4 and images.shape[1] in (1, 3)
    if not (is_image and images.is_floating_point()):
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"FID needs float images (N, 1 or 3, H, W) in [-1, 1] from {where}, got {shape}")
    if n is not None and images.shape[0] != n:
        raise ValueError(f"{where} was asked for {n} images and returned {images.shape[0]}")
    return images


def kid_name(name: str) -> str:
    """The KID's name beside FID ``name``: ``"fid"`` replaced by ``"kid"``, else ``<name>_kid``."""
    return name.replace("fid", "kid") if "fid" in name else f"{name}_kid"


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode inside the block, in its former mode after."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


# -------------------------------------------------------------------------------- callback
class FID(L.Callback):
    """Fréchet Inception Distance of ``pl_module.generate`` samples to reference images.

    Works with any LightningModule whose ``generate(n, **generate_kwargs)`` returns float images
    ``(n, 1 or 3, H, W)`` in [-1, 1]. Logs ``val/<name>`` / ``test/<name>`` (and, with
    ``kid=True``, ``<stage>/<name with "fid" replaced by "kid">``, or ``<stage>/<name>_kid``).

    When (1-based epochs): during ``fit``, after epochs ``first_epoch``, ``first_epoch +
    every_n_epochs``, ... and, with ``score_final``, after the last epoch or when training stops
    early (``trainer.should_stop``); each in the validation that ends the epoch (not the sanity
    check). A final model whose validation does not run (no validation that epoch, a stop in the
    middle of one) is scored in ``on_train_end`` and logged to the trainer's loggers (and
    ``trainer.callback_metrics``). One model state (``global_step``) is never scored twice.
    ``trainer.validate`` and ``trainer.test`` always evaluate.

    The best over training (DAMC's official reading: ``train_gen_recon.py`` keeps the lowest FID
    and the checkpoint that scored it): every FID scored during ``fit`` is compared with the lowest
    so far (kept in the callback's checkpoint state, so a resumed run goes on from it). With
    ``log_best``, ``val/<name>_best`` (the lowest so far) is logged beside each ``val/<name>``; with
    ``save_best``, a new lowest value saves the model to ``best-<name>.ckpt`` in the folder of the
    run's ``ModelCheckpoint`` (beside ``last.ckpt``; written through the Trainer's checkpoint I/O, so
    atomically under lebm's). A ``ModelCheckpoint(monitor="val/fid", mode="min")`` cannot stand in
    for it: the FID is logged only after the scheduled epochs, and the final model's may be scored
    after the last validation (``on_train_end``).

    The reference: ``num_reference`` images of the datamodule's ``reference`` split (None: all of
    them), embedded once and cached in ``cache_dir`` as the metric's real-image state (feature sum,
    sum of outer products, count; and the features for KID), under a name that hashes the data's
    description, ``num_reference`` and the extractor's weights.

    Args:
        name: the logged name (``val/<name>``); two FID callbacks in one Trainer need two names.
        num_samples: generated images per evaluation (the papers use 50000).
        batch_size: images per generation / feature-extraction batch.
        sampler: prior sampler for ``pl_module.generate(n, sampler=...)`` (e.g. a longer
            ``Langevin``); None uses the model's own.
        generate_kwargs: further keyword arguments of ``pl_module.generate``.
        seed: seeds each generated batch from ``(seed, its first global sample index)``, so
            evaluations are repeatable and do not disturb the training RNG; None draws a fresh
            seed each time.
        every_n_epochs: epochs between two evaluations.
        first_epoch: the (1-based) epoch of the first evaluation; None: ``every_n_epochs``.
        score_final: also score the model training ends with.
        feature_extractor: a module mapping float images ``(N, 3, H, W)`` in [-1, 1] to
            ``(N, D)`` (grey images are repeated to 3 channels before; a ``num_features``
            attribute saves a probe). None: torch-fidelity's Inception-v3 (FID's network).
        feature_extractor_weights_path: Inception weights file (``$VARS`` expanded); None: the
            offline copy ``$LEBM_DATA/fid_inception/weights-inception-2015-12-05-fp32.pth`` when
            ``$LEBM_DATA`` holds it, else torch-fidelity's cached copy or its download. Checked when
            the run is set up (one line before training when none of these works).
        reference: ``"train"`` or ``"val"``: the datamodule split the reference images come from.
        num_reference: None: the whole split (the papers); a number: at most that many (a fixed
            random subset when the split is larger).
        reference_subset: which ``num_reference`` images of a larger split: ``"random"`` (a fixed
            random subset) or ``"first"`` (the first ones in the dataset's order, as DAMC's
            official script takes its first 50,000 training images).
        reference_stats: a precomputed ``.npz``/``.pt`` file with ``total``, ``outer``, ``n`` (as
            cached) or ``mu``, ``sigma`` (and ``features`` for KID); replaces ``reference``,
            ``num_reference`` and the cache.
        cache_dir: folder of cached references; None = ``<default_root_dir>/fid_cache``.
        kid: also compute the Kernel Inception Distance (keeps the features of both sets in
            memory: with the whole reference split, cap it with ``num_reference``).
        kid_subset_size: KID subset size (the usual 1000; capped at the sizes of both sets).
        kid_subsets: number of KID subsets (the usual 100).
        log_best: also log ``val/<name>_best``, the lowest FID scored during ``fit`` so far.
        save_best: save the model of each new lowest FID to ``best-<name>.ckpt`` (overwritten: the
            file holds the best model so far); needs the run's checkpointing (a ``ModelCheckpoint``).
    """

    def __init__(
        self,
        name: str = "fid",
        num_samples: int = 10000,
        batch_size: int = 100,
        sampler: Sampler | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        seed: int | None = 0,
        every_n_epochs: int = 1,
        first_epoch: int | None = None,
        score_final: bool = True,
        feature_extractor: nn.Module | None = None,
        feature_extractor_weights_path: str | None = None,
        reference: str = "train",
        num_reference: int | None = None,
        reference_subset: str = "random",
        reference_stats: str | None = None,
        cache_dir: str | None = None,
        kid: bool = False,
        kid_subset_size: int = 1000,
        kid_subsets: int = 100,
        log_best: bool = False,
        save_best: bool = False,
    ) -> None:
        check_arguments(
            name,
            num_samples,
            batch_size,
            every_n_epochs,
            first_epoch,
            num_reference,
            reference,
            sampler,
            generate_kwargs,
            kid_subset_size,
            kid_subsets,
        )
        if reference_subset not in REFERENCE_SUBSETS:
            raise ValueError(f"reference_subset must be one of {REFERENCE_SUBSETS}, got {reference_subset!r}")
        score_final, kid, log_best, save_best = (
            arguments.flag("FID", option, value)
            for option, value in (
                ("score_final", score_final),
                ("kid", kid),
                ("log_best", log_best),
                ("save_best", save_best),
            )
        )
        self.name, self.kid_name = name, kid_name(name)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.sampler, self.generate_kwargs, self.seed = sampler, dict(generate_kwargs or {}), seed
        self.every_n_epochs, self.first_epoch, self.score_final = every_n_epochs, first_epoch, score_final
        self.feature_extractor = feature_extractor
        self.feature_extractor_weights_path = feature_extractor_weights_path
        self.reference, self.num_reference, self.reference_subset = reference, num_reference, reference_subset
        self.reference_stats, self.cache_dir = reference_stats, cache_dir
        self.kid, self.kid_subset_size, self.kid_subsets = kid, kid_subset_size, kid_subsets
        self.log_best, self.save_best = log_best, save_best
        self.last_metrics: dict[str, float] = {}
        #: The lowest FID scored during ``fit``: ``{"fid": value, "step": global_step, "epoch": 1-based epoch,
        #: "path": checkpoint or None}``; empty before the first.
        self.best: dict[str, Any] = {}
        self._scored_step: int | None = None
        self._extractor: nn.Module | None = None
        self._metrics: FIDMetrics | None = None
        self._fingerprint: str | None = None
        self._reference_key: tuple[str, int, int] | None = None

    @property
    def logged_metric_names(self) -> tuple[str, ...]:
        """What it logs (what a callback can ``monitor``): ``val/<name>``, ``test/<name>`` and, with
        ``kid``, the KID's beside them."""
        names = (self.name, self.kid_name) if self.kid else (self.name,)
        logged = tuple(f"{stage}/{name}" for stage in ("val", "test") for name in names)
        return (*logged, f"val/{self.name}_best") if self.log_best else logged

    # ------------------------------------------------------------------------- identity
    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def state_dict(self) -> dict[str, Any]:
        return {"scored_step": self._scored_step, "last_metrics": dict(self.last_metrics), "best": dict(self.best)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._scored_step = state_dict.get("scored_step")
        self.last_metrics = dict(state_dict.get("last_metrics", {}))
        self.best = dict(state_dict.get("best", {}))

    # ------------------------------------------------------------------------- schedule
    def scheduled(self, epoch: int) -> bool:
        """Whether the schedule evaluates after (1-based) ``epoch``."""
        first = self.first_epoch if self.first_epoch is not None else self.every_n_epochs
        return epoch >= first and (epoch - first) % self.every_n_epochs == 0

    def _due_in_validation(self, trainer: L.Trainer) -> bool:
        """Whether this validation scores the model: always outside ``fit``; during ``fit`` at
        the end of a scheduled epoch or of training, unless this model state was scored already."""
        if trainer.state.fn != TrainerFn.FITTING:
            return True
        if self._scored_step == trainer.global_step:
            return False
        stopping = training_stops(trainer)
        if not (stopping or epoch_ends(trainer)):
            return False  # a validation in the middle of an epoch (val_check_interval < 1)
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs
        return self.scheduled(epoch) or (self.score_final and (stopping or last))

    # ------------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Find the Inception weights (:func:`~lebm.metrics.fid.inception_weights`: the path given, the
        offline copy under ``$LEBM_DATA``, torch-fidelity's cache or a reachable download; else one
        line before training), and check that the validation runs when the schedule needs it."""
        if self.feature_extractor is None and self._extractor is None:  # before training, not after an epoch
            self.feature_extractor_weights_path = inception_weights(self.feature_extractor_weights_path)
        if stage == TrainerFn.FITTING:
            self._warn_if_validation_misses_the_schedule(trainer)
            self._warn_if_the_best_cannot_be_saved(trainer)

    def _warn_if_validation_misses_the_schedule(self, trainer: L.Trainer) -> None:
        every = trainer.check_val_every_n_epoch
        first = self.first_epoch if self.first_epoch is not None else self.every_n_epochs
        if every and every > 1 and (first % every or self.every_n_epochs % every):
            rank_zero_warn(
                f"FID {self.name!r} evaluates after epochs {first}, {first + self.every_n_epochs}, ... but the "
                f"validation runs every {every} epochs only: those without one are skipped. Set "
                "trainer.check_val_every_n_epoch to a divisor of first_epoch and every_n_epochs"
            )

    def _warn_if_the_best_cannot_be_saved(self, trainer: L.Trainer) -> None:
        if self.save_best and trainer.checkpoint_callback is None:
            rank_zero_warn(
                f"FID {self.name!r} has save_best=True but this run saves no checkpoints (enable_checkpointing "
                f"false, or no ModelCheckpoint), so {BEST_CHECKPOINT.format(name=self.name)} is not written: add a "
                "ModelCheckpoint, or set save_best=False"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self._due_in_validation(trainer):
            return
        values = self._named(self.evaluate(trainer, pl_module), "val")
        if trainer.state.fn == TrainerFn.FITTING:
            self._scored_step = trainer.global_step
            values.update(self._record_best(trainer))
        for key, value in values.items():
            log_gathered(pl_module, key, value)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for key, value in self._named(self.evaluate(trainer, pl_module), "test").items():
            log_gathered(pl_module, key, value)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Score the final model when no validation did (``self.log`` is not allowed here: the
        values go to the loggers and to ``trainer.callback_metrics``)."""
        if not self.score_final or self._scored_step == trainer.global_step:
            return
        values = self._named(self.evaluate(trainer, pl_module), "val")
        self._scored_step = trainer.global_step
        values.update(self._record_best(trainer))
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in values.items()})
        step = trainer.fit_loop.epoch_loop.batch_progress.total.completed  # the loggers' step: batches trained
        for logger in trainer.loggers:
            logger.log_metrics(values, step=step)

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) for a ``sampler`` that ``pl_module``'s ``generate`` would refuse
        at the first scored epoch: a method whose generation runs no chain (its
        ``generation_sampler`` is None: DAMC's ``"amortizer"`` mode, a Gaussian prior; not a multi-stage
        prior before its first stage, whose chains come later) while ``generate_kwargs`` choose nothing
        else (the ``lebm`` CLI calls it when the run is built, ``Method.check_trainer`` when a run starts)."""
        if self.sampler is None or self.generate_kwargs or not hasattr(pl_module, "generation_sampler"):
            return
        if pl_module.generation_sampler is None and not getattr(pl_module, "generation_chain_pending", False):
            raise ValueError(
                f"FID {self.name}: sampler={self.sampler!r}, but {type(pl_module).__name__}'s generate(n) runs no "
                "chain, so the sampler would not be used: drop the FID's sampler, or give generate_kwargs that run "
                "one (DAMC: generate_kwargs: {mode: ebm})"
            )

    # ------------------------------------------------------------------------------- the best
    def _record_best(self, trainer: L.Trainer) -> dict[str, float]:
        """Compare the FID just scored during ``fit`` with the lowest so far; on a new lowest (NaN never
        is one), keep it and, with ``save_best``, save the model. Returns ``{"val/<name>_best":
        lowest}`` with ``log_best`` (once there is one), else ``{}``. Every rank takes part (the
        values are the same on every rank; saving is collective)."""
        value = float(self.last_metrics["fid"])
        if not math.isnan(value) and (not self.best or value < self.best["fid"]):
            path = self._best_path_to_write(trainer)
            epoch = trainer.current_epoch + 1
            self.best = {"fid": value, "step": trainer.global_step, "epoch": epoch, "path": path}
            if path is not None:
                trainer.save_checkpoint(path, weights_only=False)  # whole, as last.ckpt; atomic under lebm's I/O
        return {f"val/{self.name}_best": self.best["fid"]} if self.log_best and self.best else {}

    def best_checkpoint_path(self, trainer: L.Trainer) -> str | None:
        """``<ModelCheckpoint's folder>/best-<name>.ckpt``; None when the run saves no checkpoints."""
        checkpoint = trainer.checkpoint_callback
        if checkpoint is None:
            return None
        folder = checkpoint.dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        return os.path.join(folder, BEST_CHECKPOINT.format(name=self.name))

    def _best_path_to_write(self, trainer: L.Trainer) -> str | None:
        """Where a new best model goes: :meth:`best_checkpoint_path` with ``save_best``, None without
        it or in a ``fast_dev_run`` (which writes nothing)."""
        return self.best_checkpoint_path(trainer) if self.save_best and not trainer.fast_dev_run else None

    def _named(self, values: dict[str, float], stage: str) -> dict[str, float]:
        """``{"fid": v, "kid": w}`` -> ``{"<stage>/<name>": v, "<stage>/<kid name>": w}``."""
        names = {"fid": self.name, "kid": self.kid_name}
        return {f"{stage}/{names[key]}": value for key, value in values.items()}

    # --------------------------------------------------------------------------- evaluation
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Compute ``{"fid": ...}`` (and ``"kid"``), collectively on every rank."""
        metrics = self.metrics(pl_module.device)
        self._prepare_reference(trainer, pl_module, metrics)
        metrics.reset_generated()
        with evaluation_mode(pl_module):
            self._add_generated(trainer, pl_module, metrics)
        values = metrics.compute(self.num_samples, seed=self.seed if self.seed is not None else 0)
        self.last_metrics = values
        return values

    def extractor(self) -> nn.Module:
        """The feature extractor (built on first use): ``feature_extractor``, else Inception."""
        if self._extractor is None:
            self._extractor = self.feature_extractor
            if self._extractor is None:
                self._extractor = InceptionFeatures(self.feature_extractor_weights_path)
        return self._extractor

    def metrics(self, device: torch.device) -> FIDMetrics:
        """This callback's torchmetrics FID/KID (built on first use) on ``device``, extractor in eval mode."""
        if self._metrics is None:
            self._metrics = FIDMetrics(self.extractor(), self.kid, self.kid_subset_size, self.kid_subsets)
        self.extractor().eval()
        return self._metrics.to(device)

    # ------------------------------------------------------------------------ generated side
    def _add_generated(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: FIDMetrics) -> None:
        """Generate this rank's batches of the ``num_samples`` and add them to ``metrics``."""
        device = pl_module.device
        base = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()))
        batches = rank_batches(self.num_samples, self.batch_size, trainer.global_rank, trainer.world_size)
        with torch.random.fork_rng(devices=rng_devices(device)):
            for lo, hi in batches:
                torch.manual_seed(batch_seed(base, lo))
                metrics.update(self._generate(pl_module, hi - lo), real=False)

    def _generate(self, pl_module: L.LightningModule, n: int) -> Tensor:
        """``n`` samples ``(n, C, H, W)`` from the model (with this callback's sampler, once the
        model's generation runs a chain, and ``generate_kwargs``)."""
        kwargs = dict(self.generate_kwargs)
        pending = not self.generate_kwargs and getattr(pl_module, "generation_chain_pending", False)
        if self.sampler is not None and not pending:
            kwargs["sampler"] = self.sampler
        images = pl_module.generate(n, **kwargs)
        return check_images(images, f"{type(pl_module).__name__}.generate", n).detach()

    # ------------------------------------------------------------------------ reference side
    def _prepare_reference(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: FIDMetrics) -> None:
        """Load the reference into ``metrics`` unless this rank holds it already (a Trainer without
        reference data, e.g. ``test`` on bare dataloaders after ``fit``, keeps the one loaded)."""
        placement = (trainer.global_rank, trainer.world_size)
        try:
            key = (self._reference_source(trainer), *placement)
        except RuntimeError:
            if self._reference_key is not None and self._reference_key[1:] == placement:
                return
            raise
        if key == self._reference_key:
            return
        metrics.load_reference(self.reference_state(trainer, pl_module), trainer.global_rank, trainer.world_size)
        self._reference_key = key

    def _reference_source(self, trainer: L.Trainer) -> str:
        """The file the reference comes from (the given one, or the cache's)."""
        if self.reference_stats is not None:
            return str(expand_root(self.reference_stats))
        return self.cache_path(trainer, reference_loader(trainer, self.reference))

    def reference_state(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ReferenceState:
        """The reference: from ``reference_stats``, the cache, or computed (collective) and cached."""
        if self.reference_stats is not None:
            return self._given_reference()
        return self._cached_or_computed(trainer, pl_module)

    def _given_reference(self) -> ReferenceState:
        state = load_reference_state(self.reference_stats)
        if self.kid and state.features is None:
            raise ValueError(
                f"kid=True needs reference features, but {self.reference_stats} has no `features` array: add "
                "them, or drop reference_stats to compute the reference from the data"
            )
        return state

    def _cached_or_computed(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ReferenceState:
        loader = reference_loader(trainer, self.reference)
        path = self.cache_path(trainer, loader)
        # Collective decision: every rank loads, or every rank takes part in computing.
        if trainer.strategy.reduce_boolean_decision(os.path.isfile(path), all=True):
            return load_reference_state(path)
        state = self.compute_reference(trainer, pl_module, loader)
        if trainer.is_global_zero:
            save_reference_state(path, state)
            rank_zero_info(f"FID: the reference state of {state.n} images is cached in {path}")
        return state

    def cache_path(self, trainer: L.Trainer, loader: DataLoader) -> str:
        """``<cache_dir>/fid_ref_<split>_<n or all>_<hash>.npz``; the hash covers the data
        description, ``num_reference``, the subset (its kind and seed), the extractor's class, name and weights,
        whether features are kept (KID) and the file format."""
        extractor = self.extractor()
        if self._fingerprint is None:
            self._fingerprint = extractor_fingerprint(extractor)
        key = {
            "data": describe_reference(trainer, loader, self.reference),
            "num_reference": self.num_reference,
            **({"subset": self.reference_subset} if self.reference_subset != "random" else {}),
            "subset_seed": REFERENCE_SUBSET_SEED,
            "extractor": getattr(extractor, "name", type(extractor).__qualname__),
            "fingerprint": self._fingerprint,
            "features": self.kid,
            "format": CACHE_FORMAT,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = self.cache_dir if self.cache_dir is not None else os.path.join(trainer.default_root_dir, "fid_cache")
        count = "all" if self.num_reference is None else self.num_reference
        return os.path.join(str(expand_root(folder)), f"fid_ref_{self.reference}_{count}_{digest}.npz")

    def compute_reference(self, trainer: L.Trainer, pl_module: L.LightningModule, loader: DataLoader) -> ReferenceState:
        """Embed this rank's share of the reference images; the state of all ranks together."""
        metrics = self.metrics(pl_module.device)
        metrics.clear()
        self._reference_key = None
        rank, world_size = trainer.global_rank, trainer.world_size
        batches = reference_batches(
            loader, self.num_reference, rank, world_size, self.batch_size, self.reference_subset
        )
        with torch.random.fork_rng(devices=rng_devices(pl_module.device)):
            torch.manual_seed(REFERENCE_SUBSET_SEED)  # datasets with random augmentation
            for images in batches:
                metrics.update(check_images(images, "the reference data"), real=True)
        state = metrics.reference_state()
        if state.n < 2:
            raise ValueError(f"the {self.reference} split gave {state.n} reference images; FID needs at least 2")
        return state


def check_arguments(
    name: str,
    num_samples: int,
    batch_size: int,
    every_n_epochs: int,
    first_epoch: int | None,
    num_reference: int | None,
    reference: str,
    sampler: Sampler | None,
    generate_kwargs: dict[str, Any] | None,
    kid_subset_size: int,
    kid_subsets: int,
) -> None:
    """Fail early, naming the argument, on values the FID callback cannot work with."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string (it is logged as val/<name>), got {name!r}")
    for label, value, minimum in (
        ("num_samples", num_samples, 2),
        ("batch_size", batch_size, 1),
        ("every_n_epochs", every_n_epochs, 1),
        ("first_epoch", first_epoch, 1),
        ("num_reference", num_reference, 2),
        ("kid_subset_size", kid_subset_size, 2),
        ("kid_subsets", kid_subsets, 1),
    ):
        if value is not None and value < minimum:
            raise ValueError(f"{label} must be >= {minimum}, got {value}")
    if reference not in REFERENCE_SPLITS:
        raise ValueError(f"reference must be one of {REFERENCE_SPLITS}, got {reference!r}")
    if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
        raise TypeError(f"generate_kwargs must be a dict of keyword arguments, got {type(generate_kwargs).__name__}")
    if sampler is not None and "sampler" in (generate_kwargs or {}):
        raise ValueError("the sampler is given twice (sampler=... and generate_kwargs['sampler']): keep one")
