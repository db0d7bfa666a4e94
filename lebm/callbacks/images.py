"""Sample and reconstruction grids, logged as uint8 images and saved as PNGs in the run folder.

Each grid carries a caption above it saying what it shows: which rows are data and which their
reconstructions, and the chain that drew the latents (sampler, steps, step size), so that a grid
read later, or beside one drawn with a longer chain, is not mistaken for another."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from PIL import Image, ImageDraw
from torch import Tensor
from torchvision.utils import make_grid

from lebm.atomic import os_reason, replaced_atomically
from lebm.callbacks.plots import font
from lebm.callbacks.schedule import grid_epoch, last_epoch
from lebm.data.batches import batch_observations

#: The caption's text size and line height in pixels, and the narrowest picture a caption gets.
CAPTION_SIZE, CAPTION_LINE, CAPTION_MIN_WIDTH = 11, 14, 240


def to_uint8_grid(images: Tensor, nrow: int = 8, min_size: int = 32) -> np.ndarray:
    """``(N, C, H, W)`` images in [-1, 1] -> one ``(H', W', 3)`` uint8 grid.

    Images smaller than ``min_size`` pixels are enlarged (nearest neighbour) so they stay
    visible. W&B casts float images to uint8 without scaling, hence the explicit conversion.
    """
    images = images.detach().float().cpu().clamp(-1, 1)
    if images.shape[-1] < min_size:
        factor = -(-min_size // images.shape[-1])
        images = torch.nn.functional.interpolate(images, scale_factor=factor, mode="nearest")
    grid = make_grid((images + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def chain_description(sampler: Any) -> str:
    """``"Langevin 60 steps, size 0.4"`` for a sampler with ``n_steps`` and a step size (the one it
    runs with now: lowered by a divergence recovery, or adapted); a wrapper's (``PersistentChains``)
    says so; its class name otherwise; ``"exact"`` for None (a prior sampled without a chain)."""
    if sampler is None:
        return "exact"
    core = stepping_sampler(sampler)
    name = type(core).__name__ if core is sampler else f"{type(sampler).__name__} of {type(core).__name__}"
    steps = getattr(core, "n_steps", None)
    try:
        size: float | None = core.current_step_size()
    except (AttributeError, TypeError):
        size = None
    if isinstance(steps, int) and size is not None:
        return f"{name} {steps} steps, size {size:g}"
    return name


def stepping_sampler(sampler: Any) -> Any:
    """The sampler that runs the steps: a wrapper's (``PersistentChains``) inner one, else ``sampler``."""
    inner = getattr(sampler, "sampler", None)
    return inner if inner is not None and hasattr(inner, "n_steps") else sampler


def longer_chain(sampler: Any, n_steps: int) -> Any | None:
    """A copy of the sampler that runs ``sampler``'s steps, run for ``n_steps`` from fresh starts:
    its step size as it is now (lowered, or adapted, in evaluation mode: no further adaptation);
    None when it has no ``n_steps``."""
    core = stepping_sampler(sampler)
    if not isinstance(getattr(core, "n_steps", None), int):
        return None
    longer = copy.deepcopy(core)
    longer.n_steps = n_steps
    if isinstance(longer, torch.nn.Module):
        longer.eval()
    return longer


def sample_caption(epoch: int, pl_module: Any, shown: Any) -> str:
    """The caption of a sample grid drawn at ``epoch``: the chain ``shown`` (None: the method's own
    ``generation_sampler``, or when it runs none, its ``generation_source``: what ``generate``
    draws instead)."""
    chain = getattr(pl_module, "generation_sampler", None) if shown is None else shown
    source = getattr(pl_module, "generation_source", None) if shown is None and chain is None else None
    return f"epoch {epoch}. Generated samples; chain: {source or chain_description(chain)}"


def inference_chain(pl_module: Any) -> Any:
    """The chain ``reconstruct`` runs: the method's ``evaluation_sampler`` when it has one (DAMC's
    evaluation and user API refine with it), else its ``posterior_sampler`` (None: no chain)."""
    chain = getattr(pl_module, "evaluation_sampler", None)
    return chain if chain is not None else getattr(pl_module, "posterior_sampler", None)


def learned_start(pl_module: Any) -> str | None:
    """What gives ``reconstruct``'s chain its start when a net does: ``"inference network"`` (an
    encoder), ``"amortizer"`` (DAMC's ``default_posterior_start``); None: noise."""
    if getattr(pl_module, "encoder", None) is not None:
        return "inference network"
    if str(getattr(pl_module, "default_posterior_start", "")).startswith("amortizer"):
        return "amortizer"
    return None


def reconstruction_caption(epoch: int, pl_module: Any) -> list[str]:
    """The two caption lines of a reconstruction grid: which rows are the validation images and
    which their reconstructions, and how the latents were inferred (the inference network, the
    posterior chain, or a net's latents refined by the chain)."""
    chain, start = inference_chain(pl_module), learned_start(pl_module)
    if chain is None:
        inference = start or "inference network"
    elif start is not None:
        inference = f"{start}, refined by the posterior chain: {chain_description(chain)}"
    else:
        inference = f"posterior chain: {chain_description(chain)}"
    return [
        f"epoch {epoch}. Rows 1, 3, ...: validation images;",
        f"rows 2, 4, ...: their reconstructions ({inference})",
    ]


def padded(images: Tensor, count: int) -> Tensor:
    """``images`` ``(k, C, H, W)`` followed by white images up to ``count``."""
    missing = count - len(images)
    if missing <= 0:
        return images
    return torch.cat([images, torch.ones(missing, *images.shape[1:], dtype=images.dtype, device=images.device)])


def with_caption(image: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """``image`` ``(H, W, 3)`` uint8 under a white strip holding ``lines`` (wrapped to its width),
    widened with white to :data:`CAPTION_MIN_WIDTH` pixels when narrower (a grid of one or two
    small images)."""
    if image.shape[1] < CAPTION_MIN_WIDTH:
        margin = np.full((image.shape[0], CAPTION_MIN_WIDTH - image.shape[1], 3), 255, dtype=np.uint8)
        image = np.concatenate([image, margin], axis=1)
    width, typeface = image.shape[1], font(CAPTION_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [
        part
        for line in lines
        for part in wrap_to_width(line, width - 6, lambda t: measure.textlength(t, font=typeface))
    ]
    strip = Image.new("RGB", (width, CAPTION_LINE * len(wrapped) + 6), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for row, text in enumerate(wrapped):
        draw.text((3, 3 + row * CAPTION_LINE), text, fill=(20, 20, 20), font=typeface)
    return np.concatenate([np.asarray(strip), image], axis=0)


def wrap_to_width(text: str, width: float, length: Callable[[str], float]) -> list[str]:
    """``text`` cut at spaces into lines no wider than ``width`` as ``length`` measures them (a word
    wider than that gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and length(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


#: The image folders that could not be written, each said once.
_unwritable_folders: set[str] = set()


def log_image(trainer: L.Trainer, key: str, image: np.ndarray) -> str | None:
    """Save ``image`` (H, W, 3) uint8 to ``<run>/images/<key>_epoch<E>.png`` and send it to every
    logger that takes images (W&B, TensorBoard). Returns the PNG path (None: it could not be written,
    :func:`save_png`)."""
    folder = os.path.join(trainer.default_root_dir, "images")
    path = save_png(image, os.path.join(folder, f"{key.replace('/', '_')}_epoch{trainer.current_epoch:04d}.png"))
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # WandbLogger
            logger.log_image(key=key, images=[image])  # W&B keeps its own monotonic step
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image(key, image, trainer.global_step, dataformats="HWC")
    return path


def save_png(image: np.ndarray, path: str) -> str | None:
    """Write ``image`` (H, W, 3) uint8 to ``path`` atomically, its folder made when missing; returns
    ``path``. A folder that cannot be written (a file of its name in the way, a full disk) is a
    warning, said once per folder, and None: a picture must not end the run before its checkpoint."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with replaced_atomically(path, "wb") as file:
            Image.fromarray(image).save(file, format="PNG")
    except OSError as error:
        if folder not in _unwritable_folders:
            _unwritable_folders.add(folder)
            reason = os_reason(error)
            if os.path.exists(folder) and not os.path.isdir(folder):
                reason = "a file of that name is in the way"
            rank_zero_warn(
                f"could not write {os.path.basename(path)} into {folder} ({reason}); "
                f"training goes on without the pictures there (the loggers still get them): make {folder} a "
                "writable folder to keep them"
            )
        return None
    return path


def _is_image_batch(x: Any) -> bool:
    return isinstance(x, Tensor) and x.dim() == 4 and x.is_floating_point()


@contextmanager
def quiet_evaluation(pl_module: L.LightningModule) -> Iterator[None]:
    """Eval mode, a private copy of the global RNG and the model's buffers restored after: drawing a
    grid changes neither the model (BatchNorm statistics, the power-iteration vectors of spectral
    norms, which DualMCMC's sampling advances) nor the random numbers training draws next, so a run
    is the same whichever epochs draw grids (a resumed run draws one at the end of each segment)."""
    was_training = pl_module.training
    devices = [pl_module.device] if pl_module.device.type == "cuda" else []
    buffers = [(buffer, buffer.detach().clone()) for buffer in pl_module.buffers()]
    pl_module.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(0)
            yield
    finally:
        pl_module.train(was_training)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


class SampleGrid(L.Callback):
    """At the end of every ``every_n_epochs`` training epochs, decode ``n`` samples of
    ``generate(n)`` into a grid (``images/samples_epoch*.png`` and the logger's ``samples``), whether
    or not the epoch validates; its caption names the chain that drew them.

    With ``long_chain_steps``, the last epoch's samples are drawn a second time with the same chain
    run for that many steps (``images/samples_<sampler><steps>_epoch*.png``, e.g.
    ``samples_langevin200_epoch0099.png``): the short-run chain that training uses is tuned for
    learning, and a longer one at the end often gives better samples.

    Args:
        n: number of samples.
        nrow: images per grid row.
        every_n_epochs: how often (in epochs).
        seed: seeds the prior chains, so grids of successive epochs are comparable.
        long_chain_steps: the steps of the last epoch's second grid (None: no second grid; a
            method whose ``generate`` runs no chain draws none, and says so in one line).
    """

    def __init__(
        self,
        n: int = 64,
        nrow: int = 8,
        every_n_epochs: int = 1,
        seed: int | None = 0,
        long_chain_steps: int | None = None,
    ) -> None:
        if long_chain_steps is not None and (
            isinstance(long_chain_steps, bool) or not isinstance(long_chain_steps, int) or long_chain_steps < 1
        ):
            raise ValueError(f"SampleGrid long_chain_steps must be None or an int >= 1, got {long_chain_steps!r}")
        self.n, self.nrow, self.every_n_epochs, self.seed = n, nrow, every_n_epochs, seed
        self.long_chain_steps = long_chain_steps

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not grid_epoch(trainer, self.every_n_epochs):
            return
        chain = getattr(pl_module, "generation_sampler", None)
        self._draw(trainer, pl_module, "samples", None, None)
        if self.long_chain_steps is None or not last_epoch(trainer):
            return
        if chain is None:  # the samples are drawn exactly, or by a learned sampler: no chain to lengthen
            source = getattr(pl_module, "generation_source", None) or chain_description(None)
            rank_zero_info(
                f"SampleGrid: no {self.long_chain_steps}-step grid, as {type(pl_module).__name__}'s generate(n) runs "
                f"no chain to lengthen (chain: {source})"
            )
            return
        longer = longer_chain(chain, self.long_chain_steps)
        if longer is None:
            rank_zero_warn(f"SampleGrid: {chain_description(chain)} has no n_steps, so no longer-chain grid is drawn")
            return
        key = f"samples_{type(longer).__name__.lower()}{self.long_chain_steps}"
        try:
            self._draw(trainer, pl_module, key, longer, longer)
        except Exception as error:  # an extra picture must not end the run before its last checkpoint
            rank_zero_warn(f"SampleGrid: the {self.long_chain_steps}-step grid failed ({error}); training goes on")

    def _draw(self, trainer: L.Trainer, pl_module: L.LightningModule, key: str, sampler: Any, shown: Any) -> None:
        """Log :meth:`picture` of the epoch that ends now (nothing for samples that are no images)."""
        image = self.picture(pl_module, trainer.current_epoch, sampler, shown)
        if image is not None:
            log_image(trainer, key, image)

    def picture(
        self, pl_module: L.LightningModule, epoch: int, sampler: Any = None, shown: Any = None
    ) -> np.ndarray | None:
        """The grid ``(H, W, 3)`` uint8 of ``n`` samples ``generate(n)`` draws with ``sampler`` (None:
        the method's own chain) from ``seed``, under its caption for ``epoch`` naming the chain
        ``shown`` (None: the method's own, :func:`sample_caption`); None when the samples are no
        images. The model and the random numbers outside are left as they were (:func:`quiet_evaluation`)."""
        with quiet_evaluation(pl_module):
            if self.seed is not None:
                torch.manual_seed(self.seed)
            samples = pl_module.generate(self.n) if sampler is None else pl_module.generate(self.n, sampler=sampler)
        if not _is_image_batch(samples):
            return None
        return with_caption(to_uint8_grid(samples, self.nrow), [sample_caption(epoch, pl_module, shown)])


class ReconstructionGrid(L.Callback):
    """At the end of every ``every_n_epochs`` training epochs, show ``n`` validation images (odd
    rows) above their reconstructions (even rows) in one grid (``images/reconstructions_epoch*.png``),
    whether or not the epoch validates. The images are the first validation batch, read once."""

    def __init__(self, n: int = 32, nrow: int = 8, every_n_epochs: int = 1) -> None:
        self.n, self.nrow, self.every_n_epochs = n, nrow, every_n_epochs
        self._inputs: Tensor | None = None

    def _validation_images(self, trainer: L.Trainer) -> Tensor | None:
        """The first validation batch's first ``n`` images, read once. Starting a DataLoader's
        iterator draws its base seed from torch's global RNG: the read runs on a private copy, so
        the epoch the grid is first drawn at does not change what training draws next."""
        if self._inputs is None:
            loaders = trainer.datamodule.val_dataloader() if trainer.datamodule is not None else trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is not None:
                self._inputs = self.first_images(loader)
        return self._inputs

    def first_images(self, loader: Any) -> Tensor | None:
        """The first ``n`` images ``(n, C, H, W)`` of ``loader``'s first batch (None when its batches
        hold no images), read on a private copy of torch's global RNG (starting the loader's
        iterator draws its base seed from it)."""
        with torch.random.fork_rng(devices=[]):
            x = batch_observations(next(iter(loader)))
        return x[: self.n].clone() if _is_image_batch(x) else None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not grid_epoch(trainer, self.every_n_epochs):
            return
        images = self._validation_images(trainer)
        if images is None:
            return
        log_image(trainer, "reconstructions", self.picture(pl_module, images, trainer.current_epoch))

    def picture(self, pl_module: L.LightningModule, images: Tensor, epoch: int) -> np.ndarray:
        """The grid ``(H, W, 3)`` uint8 of ``images`` ``(k, C, H, W)`` (odd rows) above
        ``reconstruct(images)`` (even rows), under its caption for ``epoch``; the model and the
        random numbers outside are left as they were (:func:`quiet_evaluation`)."""
        x = images.to(pl_module.device)
        with quiet_evaluation(pl_module):
            x_hat = pl_module.reconstruct(x)
        rows = [
            torch.cat([padded(x[i : i + self.nrow], self.nrow), padded(x_hat[i : i + self.nrow], self.nrow)])
            for i in range(0, len(x), self.nrow)
        ]  # a short last row padded: originals stay on odd rows
        caption = reconstruction_caption(epoch, pl_module)
        return with_caption(to_uint8_grid(torch.cat(rows), self.nrow), caption)


class HierarchicalSampleGrid(L.Callback):
    """Hierarchical sampling grids: one grid per latent layer of samples that vary that layer only.

    At the end of every ``every_n_epochs`` training epochs, ``images/hierarchical_samples_<layer>_epoch*.png``
    holds ``n`` samples that vary one layer, the others fixed (``pl_module.sample_layer(layer, n)``),
    as the hierarchical sampling figures of Cui, Wu & Han (ICCV 2023, arXiv 2310.09604) show.

    Args:
        n: samples per grid.
        nrow: images per grid row.
        every_n_epochs: how often (in epochs).
        conditional: draw the varied layer from the prior's conditional given the others (see
            ``JointHierarchicalEBM.sample_layer``) instead of from independent joint samples.
        seed: seeds the prior chains, so grids of successive epochs are comparable.
    """

    def __init__(
        self, n: int = 64, nrow: int = 8, every_n_epochs: int = 1, conditional: bool = False, seed: int | None = 0
    ) -> None:
        self.n, self.nrow, self.every_n_epochs = n, nrow, every_n_epochs
        self.conditional, self.seed = conditional, seed

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.check_method(pl_module)

    def check_method(self, pl_module: L.LightningModule) -> None:
        """``ValueError`` (one line) unless ``pl_module`` samples layer by layer (the ``lebm`` CLI
        calls it when the run is built, ``Method.check_trainer`` when a run starts)."""
        if not callable(getattr(pl_module, "sample_layer", None)):
            raise ValueError(
                f"HierarchicalSampleGrid needs a method with sample_layer(layer, n) and latent_groups "
                f"(e.g. lebm.models.JointHierarchicalEBM); {type(pl_module).__name__} has none. Remove the callback."
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not grid_epoch(trainer, self.every_n_epochs):
            return
        for name in pl_module.latent_groups.names:
            with quiet_evaluation(pl_module):
                if self.seed is not None:
                    torch.manual_seed(self.seed)
                samples = pl_module.sample_layer(name, self.n, conditional=self.conditional)
            if _is_image_batch(samples):
                how = "its conditional given the others" if self.conditional else "joint samples"
                caption = f"epoch {trainer.current_epoch}. Layer {name} varies ({how}), the other layers fixed"
                log_image(
                    trainer, f"hierarchical_samples_{name}", with_caption(to_uint8_grid(samples, self.nrow), [caption])
                )
