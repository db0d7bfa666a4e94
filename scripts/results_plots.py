"""Plots of the records that keep a value per epoch (``auprc_by_epoch``): one PNG per experiment,
one panel per held-out digit, one curve per record, the paper's value as a dashed line.

Each variant (method and setting) has its colour; the paper's line of a method takes that colour
when the method has one variant in the experiment, and grey when several share it. Drawn with the
object API (a ``Figure`` on an Agg canvas): no pyplot state.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from results_records import order, paper_for
from results_tables import CURVE_KEY, SOLVED_WITHOUT_A_MODEL, no_model_reading

PANEL_COLUMNS = 3
#: Line style of a data split (the offline protocol's default is disjoint).
SPLIT_STYLES = {"cited": ":"}
SHARED_PAPER_COLOUR = "0.35"
#: Inches added to the figure's width for a legend right of the panels.
LEGEND_WIDTH = 2.6


def curve_records(records: list[dict]) -> list[dict]:
    """The records that keep a value per epoch."""
    return [r for r in records if r.get(CURVE_KEY)]


def plot_file(experiment: str) -> str:
    """The plot's file name in the plots folder."""
    return f"{experiment}.png"


def variant(record: dict) -> str:
    """The method, with its setting in parentheses."""
    return f"{record['method']} ({record['setting']})" if record.get("setting") else record["method"]


def curve_label(record: dict, with_method: bool, with_split: bool) -> str:
    """The legend's name of a curve: its method (when the curves have several), setting, and data
    split (when they have several)."""
    split = record.get("data_split") or "disjoint"
    parts = [
        record["method"] if with_method else "",
        record.get("setting") or "",
        f"{split} split" if with_split else "",
    ]
    return ", ".join(part for part in parts if part) or record["method"]


def colours(curves: list[dict]) -> dict[str, str]:
    """One colour of matplotlib's default cycle per variant, in table order."""
    names = list(dict.fromkeys(variant(r) for r in sorted(curves, key=order)))
    return {name: f"C{index % 10}" for index, name in enumerate(names)}


def paper_colour(method: str, curves: list[dict], palette: dict[str, str]) -> str:
    """The method's colour when it has one variant, else the shared grey."""
    variants = {variant(r) for r in curves if r["method"] == method}
    return palette[variants.pop()] if len(variants) == 1 else SHARED_PAPER_COLOUR


def draw_panel(axes, curves: list[dict], everything: list[dict], published: list[dict], palette: dict) -> None:
    """One panel: the curves of one held-out digit and the paper's value of each method."""
    with_method = len({r["method"] for r in everything}) > 1
    with_split = len({r.get("data_split") or "disjoint" for r in everything}) > 1
    for record in sorted(curves, key=order):
        values = record[CURVE_KEY]
        style = SPLIT_STYLES.get(record.get("data_split"), "-")
        label = curve_label(record, with_method, with_split)
        # a run that evaluated every n epochs, or every n updates (then the panel counts updates)
        epochs = record.get("evaluation_updates") or record.get("evaluation_epochs") or range(1, len(values) + 1)
        axes.plot(epochs, values, style, color=palette[variant(record)], marker=".", label=label)
    drawn = set()
    for record in curves:
        paper = paper_for(record, published)
        if paper is None or paper["method"] in drawn:
            continue
        drawn.add(paper["method"])
        colour = paper_colour(record["method"], everything, palette)
        axes.axhline(paper["value"], color=colour, linestyle="--", linewidth=1, label=f"paper: {paper['method']}")
    chances = [r["chance"] for r in curves if r.get("chance") is not None]
    if chances:
        axes.axhline(chances[0], color="0.45", linestyle="--", linewidth=1, label="chance")
    baselines = [b for b in (no_model_reading(r) for r in curves) if b is not None]
    if baselines:
        axes.axhline(baselines[0]["value"], color="C2", linestyle=":", linewidth=1.2, label="no model")


def figure(experiment: str, records: list[dict], published: list[dict]) -> Figure:
    """The figure of one experiment's curves."""
    curves = curve_records(records)
    digits = sorted({r.get("digit", -1) for r in curves})
    rows = math.ceil(len(digits) / PANEL_COLUMNS)
    columns = min(len(digits), PANEL_COLUMNS)
    legend_in_panel = len(digits) < rows * columns
    width = 3.2 * columns + (0 if legend_in_panel else LEGEND_WIDTH)
    fig = Figure(figsize=(width, 2.4 * rows + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(rows, columns, squeeze=False, sharey=True)
    palette = colours(curves)
    for index, axes in enumerate(grid.flat):
        if index >= len(digits):
            axes.axis("off")
            continue
        digit = digits[index]
        draw_panel(axes, [r for r in curves if r.get("digit", -1) == digit], curves, published, palette)
        title = f"held-out {digit}" if digit != -1 else experiment
        if digit == SOLVED_WITHOUT_A_MODEL:
            title += " (solved with no model)"
        axes.set_title(title, fontsize=10)
        counts_updates = any("evaluation_updates" in r for r in curves if r.get("digit", -1) == digit)
        axes.set_xlabel("updates" if counts_updates else "epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
    for axes in grid[:, 0]:
        axes.set_ylabel(CURVE_KEY.removesuffix("_by_epoch").upper())
    handles = {}
    for axes in grid.flat:
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if legend_in_panel:  # the legend takes the last, empty panel
        grid.flat[-1].legend(handles.values(), handles.keys(), loc="center", fontsize=8)
    else:
        fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=8)
    fig.suptitle(experiment, x=0.01, horizontalalignment="left", fontsize=11)
    return fig


def save(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG without the version stamp (fewer byte changes between runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
