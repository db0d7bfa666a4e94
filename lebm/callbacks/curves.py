"""Learning curves drawn from the run's table of logged numbers: ``<run>/curves.png``.

Titled with the run (its folder's last two parts: ``damc/cifar10`` for a recipe's own run folder),
the method and the training iterations drawn. A panel per curve: the method's main training losses
(its ``progress_bar_names``) against the training iteration, and every validation value
(``val/...``) at the iterations it was read. A value the recipe names a paper target for
(``paper_targets: {val/fid: 29.44}``, or ``targets`` given here) gets the published value as a
dashed horizontal line.

An anomaly run (one that logs ``val/auprc``) shows its numbers first: AUPRC, AUROC, the
reconstruction MSE and NLL (:data:`ANOMALY_FIRST`), then the training losses. Its AUPRC panel has
the paper's value (the recipe's target for the run's held-out digit; not drawn, and the legend
says so, where the no-model baseline reaches it) and the AUPRC of a random
score, the split's share of anomalies (``val/auprc_chance``), as dashed lines; its AUROC panel the
random score's 0.5; both the no-model baseline (``val/auprc_no_model``, ``val/auroc_no_model``) as a
dotted line and the untrained regime (the updates before ``AnomalyDetection``'s
``untrained_below``) shaded. The bookkeeping
columns of ``metrics.csv`` (:data:`FOLDED`: the best and last-``k`` summaries, the trapezoid
AUPRC, the score's terms ranked alone, the chance figures and the per-class score statistics) get
no panel of their own in any run: a name holding one of those parts is folded, a user's own
``val/`` value too, unless named in ``first`` or ``training``.

Redrawn with the image grids (every ``every_n_epochs`` epochs and the last) and once more when
``fit`` ends (after the final scores), on global rank 0, from the run's
:class:`~lebm.loggers.MetricsTable`; with no table (``--trainer.logger false``) there is nothing to
draw, and the callback says so once.

Drawn with matplotlib's object API on its Agg canvas (no display, no global figure state), and
written atomically (a temporary file in the run folder, then a rename).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lebm.atomic import replaced_atomically
from lebm.callbacks.schedule import grid_epoch
from lebm.metrics_table import MetricsTable
from lebm.training.monitoring import matches, run_metric_names

#: The plot's file name in the run folder.
CURVES_FILE = "curves.png"
#: Panels per row of the figure, and the size of one panel in inches.
PANELS_PER_ROW, PANEL_INCHES = 3, (4.2, 2.9)
#: The panels an anomaly run (one that logs ``val/auprc``) shows first, when it logs them.
ANOMALY_FIRST = ("val/auprc", "val/auroc", "val/mse", "val/nll")
#: Parts of the names of bookkeeping columns, drawn in no panel of their own (they stay in metrics.csv):
#: summaries of other curves, the score's terms and other forms ranked alone (``auprc_reconstruction_term``,
#: ``auprc_prior_term``, ``auprc_tilt_term``, ``auprc_score_sse``, ...), the chance figures, per-class statistics.
FOLDED = (
    "_best",
    "_last_k_mean",
    "_last_k_std",
    "auprc_trapezoid",
    "_term",
    "_score_",
    "_chance",
    "_no_model",
    "/n_examples",
    "_normal_mean",
    "_normal_std",
    "_anomaly_mean",
    "_anomaly_std",
)
#: The suffix of the column that holds an AUPRC's chance level (``val/auprc`` -> ``val/auprc_chance``).
CHANCE_SUFFIX = "_chance"
#: The suffix of the column that holds a ranking's no-model baseline (``val/auroc`` -> ``val/auroc_no_model``).
NO_MODEL_SUFFIX = "_no_model"


class LearningCurves(L.Callback):
    """Draw the run's learning curves into ``<run>/curves.png`` (see the module docstring).

    Args:
        every_n_epochs: redraw after every ``every_n_epochs``-th training epoch (and the last).
        targets: ``{logged name: published value}`` drawn as lines (the CLI fills it from the
            recipe's ``paper_targets`` when not given).
        training: the training values to draw; None: the method's ``progress_bar_names``.
        max_panels: at most this many panels (``first``, then training values, then validation values).
        first: the values drawn first, when logged; None: :data:`ANOMALY_FIRST` for a run that logs
            ``val/auprc``, none for the others.
        target_labels: ``{logged name: legend label}`` of a target's line (default ``paper``), e.g. how
            the paper selected the value (the CLI fills it from a target's ``label``).
    """

    def __init__(
        self,
        every_n_epochs: int = 10,
        targets: Mapping[str, float] | None = None,
        training: Sequence[str] | None = None,
        max_panels: int = 12,
        first: Sequence[str] | None = None,
        target_labels: Mapping[str, str] | None = None,
    ) -> None:
        for label, value in (("every_n_epochs", every_n_epochs), ("max_panels", max_panels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LearningCurves {label} must be an int >= 1, got {value!r}")
        targets = dict(targets or {})
        for name, value in targets.items():
            if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"LearningCurves targets must map logged names to numbers, got {name!r}: {value!r} (a value per "
                    "held-out digit goes into a recipe's paper_targets, which lebm resolves for the run)"
                )
            if not math.isfinite(value):
                raise ValueError(f"LearningCurves target {name!r} must be a finite number, got {value!r}")
        if isinstance(training, str):
            training = [training]
        if isinstance(first, str):
            first = [first]
        self.every_n_epochs, self.max_panels = every_n_epochs, max_panels
        self.targets = {name: float(value) for name, value in targets.items()}
        self.training = None if training is None else tuple(training)
        self.first = None if first is None else tuple(first)
        labels = dict(target_labels or {})
        if not all(isinstance(name, str) and isinstance(label, str) for name, label in labels.items()):
            raise ValueError(f"LearningCurves target_labels must map logged names to strings, got {labels!r}")
        self.target_labels = labels
        self._said_no_table = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Say once which targets name nothing the run logs (their lines would never be drawn)."""
        if stage != "fit" or not self.targets:
            return
        names = run_metric_names(pl_module, trainer.callbacks)
        unknown = [name for name in self.targets if names is not None and not matches(name, names)]
        if unknown:
            rank_zero_warn(
                f"LearningCurves: the targets {unknown} name no value this run logs, so no line is drawn for them; "
                f"it logs: {', '.join(names or ())}"
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if grid_epoch(trainer, self.every_n_epochs):
            self._draw_or_warn(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._draw_or_warn(trainer, pl_module)

    def _draw_or_warn(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """:meth:`draw`; a failure (a full disk, a plotting error) is a warning: a picture must not
        end the run before the epoch's checkpoint."""
        try:
            self.draw(trainer, pl_module)
        except Exception as error:
            rank_zero_warn(f"LearningCurves could not draw curves.png: {error}; training goes on")

    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str | None:
        """Redraw ``<run>/curves.png`` from the run's table; returns its path (None: no table)."""
        table = next((logger for logger in trainer.loggers if isinstance(logger, MetricsTable)), None)
        if table is None:
            if not self._said_no_table:
                rank_zero_info("LearningCurves: the run has no MetricsTable (no logger), so no curves.png")
                self._said_no_table = True
            return None
        names = self.curve_names(table, pl_module)
        if not names:
            return None
        path = os.path.join(trainer.default_root_dir, CURVES_FILE)
        title = curves_title(trainer.default_root_dir, type(pl_module).__name__, trainer.global_step)
        untrained_below = max((getattr(c, "untrained_below", 0) for c in getattr(trainer, "callbacks", ())), default=0)
        figure = curves_figure(table, names, self.targets, title, untrained_below, self.target_labels)
        save_figure(figure, path)
        return path

    def curve_names(self, table: MetricsTable, pl_module: L.LightningModule) -> list[str]:
        """The names to draw: ``first`` (an anomaly run's AUPRC, AUROC, MSE and NLL), the training
        values, every other ``val/`` value but the bookkeeping ones (:data:`FOLDED`), then the other
        targets; at most ``max_panels``."""
        columns = table.columns()
        first = self.first if self.first is not None else (ANOMALY_FIRST if "val/auprc" in columns else ())
        training = self.training if self.training is not None else getattr(pl_module, "progress_bar_names", ())
        chosen: list[str] = []
        for name in [*first, *training]:
            if name in columns and name not in chosen:
                chosen.append(name)
        chosen += [name for name in columns if name.startswith("val/") and not folded(name) and name not in chosen]
        chosen += [name for name in self.targets if name in columns and name not in chosen]
        return chosen[: self.max_panels]


def folded(name: str) -> bool:
    """Whether ``name`` is a bookkeeping column, drawn in no panel of its own (:data:`FOLDED`)."""
    return any(part in name for part in FOLDED)


def curves_title(run_dir: str, method: str, steps: int) -> str:
    """``"damc/cifar10 (DAMC): 400 training iterations"``: the run folder's last two parts (a recipe's
    own folder, ``runs/<method>/<recipe>``, names the recipe there), the method and the steps."""
    parts = os.path.normpath(os.path.abspath(run_dir)).split(os.sep)
    return f"{'/'.join(part for part in parts[-2:] if part)} ({method}): {steps} training iterations"


def curves_figure(
    table: MetricsTable,
    names: Sequence[str],
    targets: Mapping[str, float],
    title: str,
    untrained_below: int = 0,
    target_labels: Mapping[str, str] | None = None,
) -> Figure:
    """A figure with a panel per name of ``names``: its values against the training iteration, and
    the target of ``targets`` (when there is one) as a dashed line. An AUPRC or AUROC panel also
    gets its chance level, its no-model baseline and, with ``untrained_below`` > 0, the untrained
    regime (updates before it) shaded."""
    rows = math.ceil(len(names) / PANELS_PER_ROW)
    columns = min(len(names), PANELS_PER_ROW)
    figure = Figure(figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    axes = figure.subplots(rows, columns, squeeze=False)
    for panel, name in zip(axes.flat, names, strict=False):
        steps, values = table.series(name)
        finite = [(step, value) for step, value in zip(steps, values, strict=True) if math.isfinite(value)]
        points = [step for step, _ in finite], [value for _, value in finite]
        few = len(finite) <= 20 or not name.startswith("train/")  # single readings stay visible as dots
        panel.plot(*points, marker="o" if few else None, markersize=3, linewidth=1.0, color="C0")
        if name in targets:
            draw_target(panel, targets[name], (target_labels or {}).get(name, "paper"), table, name)
        if name.endswith("/auprc"):
            draw_chance(panel, table, name + CHANCE_SUFFIX)
        if name.endswith("/auroc"):
            panel.axhline(0.5, color="0.45", linestyle="--", linewidth=1.0, label="chance: 0.5")
        if name.endswith(("/auprc", "/auroc")):
            draw_no_model(panel, table, name + NO_MODEL_SUFFIX)
            if untrained_below and points[0]:
                end = min(untrained_below, max(points[0]))
                label = f"untrained regime (< {untrained_below} updates)"
                panel.axvspan(0, max(end, 1), color="0.8", alpha=0.5, label=label)
        if panel.get_legend_handles_labels()[0]:
            panel.legend(loc="best", fontsize=8)
        skipped = len(values) - len(finite)
        panel.set_title(f"{name} ({skipped} not finite)" if skipped else name, fontsize=10)
        panel.set_xlabel("training iteration", fontsize=8)
        panel.tick_params(labelsize=8)
        panel.grid(alpha=0.3)
    for panel in list(axes.flat)[len(names) :]:
        panel.set_visible(False)
    return figure


def draw_target(panel: Any, value: float, label: str, table: MetricsTable, name: str) -> None:
    """The published ``value`` of ``name`` as a dashed line, labelled ``label: value``. On a ranking
    panel (AUPRC, AUROC) whose no-model baseline reaches the value, the line is not drawn: a score
    with no model already matches the paper there (MNIST's held-out 1), so a curve above the line
    would say nothing of the model; the legend says why instead."""
    baseline = last_finite(table, name + NO_MODEL_SUFFIX) if name.endswith(("/auprc", "/auroc")) else None
    if baseline is not None and value <= baseline:
        note = f"{label}: {value:g}, not drawn: the no-model score ({baseline:.3f}) reaches it"
        panel.plot([], [], linestyle="none", label=note)
        return
    panel.axhline(value, color="C3", linestyle="--", linewidth=1.0, label=f"{label}: {value:g}")


def last_finite(table: MetricsTable, column: str) -> float | None:
    """The last finite value of ``column`` in the table (None when it has none)."""
    _, values = table.series(column)
    finite = [value for value in values if math.isfinite(value)]
    return finite[-1] if finite else None


def draw_chance(panel: Any, table: MetricsTable, column: str) -> None:
    """The chance level of an AUPRC panel from ``column`` (the split's share of anomalies), when the
    table has it: one dashed line at its value (a fixed split), or its series dashed if it changed."""
    steps, values = table.series(column)
    finite = [(step, value) for step, value in zip(steps, values, strict=True) if math.isfinite(value)]
    if not finite:
        return
    levels = {value for _, value in finite}
    if len(levels) == 1:
        (level,) = levels
        panel.axhline(level, color="0.45", linestyle="--", linewidth=1.0, label=f"chance: {level:.3f}")
        return
    points = [step for step, _ in finite], [value for _, value in finite]
    panel.plot(*points, color="0.45", linestyle="--", linewidth=1.0, label="chance (share of anomalies)")


def draw_no_model(panel: Any, table: MetricsTable, column: str) -> None:
    """The no-model baseline of an AUPRC or AUROC panel from ``column``, when the table has it: its
    series, dotted (one level for a fixed split)."""
    steps, values = table.series(column)
    finite = [(step, value) for step, value in zip(steps, values, strict=True) if math.isfinite(value)]
    if not finite:
        return
    points = [step for step, _ in finite], [value for _, value in finite]
    label = f"no model: {finite[-1][1]:.3f}"
    if len({value for _, value in finite}) == 1:
        panel.axhline(finite[-1][1], color="C2", linestyle=":", linewidth=1.2, label=label)
    else:
        panel.plot(*points, color="C2", linestyle=":", linewidth=1.2, label=label)


def save_figure(figure: Figure, path: str) -> None:
    """Write ``figure`` as a PNG at ``path`` atomically (a temporary file beside it, then a rename)."""
    with replaced_atomically(path, "wb") as file:
        figure.savefig(file, format="png", dpi=100)
