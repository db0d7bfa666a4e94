"""Small plots drawn with PIL and NumPy (no plotting library): line traces, a coloured scatter and a
grid of panels, each an ``(H, W, 3)`` uint8 array ready for :func:`lebm.callbacks.images.log_image`."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Panel size ``(width, height)`` in pixels.
PANEL_SIZE = (480, 320)
#: Margins around the plotting area: left (tick labels and the y label), right, top (title), bottom.
MARGINS = (66, 14, 26, 44)
BACKGROUND, INK, GRID = (255, 255, 255), (30, 30, 30), (225, 225, 225)


def font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font at ``size`` pixels (its fixed bitmap font on a Pillow without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinguishable RGB colours: hues spread around the circle, alternating lightness."""
    out = []
    for i in range(n):
        lightness = 0.42 if i % 2 == 0 else 0.55
        r, g, b = colorsys.hls_to_rgb((i / max(n, 1)) % 1.0, lightness, 0.75)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 times a power of ten) within ``[low, high]``."""
    if not high > low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _limits(values: np.ndarray) -> tuple[float, float]:
    """The finite range of ``values``, widened by 5% (a constant gets a unit-wide range)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high - low < 1e-12 * max(1.0, abs(high)):
        return low - 0.5, high + 0.5
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def _label(value: float) -> str:
    return f"{value:.4g}"


class Axes:
    """A blank panel with a title, axis labels and ticks for the data ranges ``x`` and ``y``;
    :meth:`pixels` maps data coordinates to the panel's pixels."""

    def __init__(
        self,
        x: tuple[float, float],
        y: tuple[float, float],
        *,
        title: str,
        xlabel: str,
        ylabel: str,
        size: tuple[int, int] = PANEL_SIZE,
    ) -> None:
        self.image = Image.new("RGB", size, BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.x, self.y = x, y
        left, right, top, bottom = MARGINS
        self.box = (left, top, size[0] - right, size[1] - bottom)
        small, large = font(11), font(13)
        x0, y0, x1, y1 = self.box
        for value in nice_ticks(*x):
            px = self.pixels(np.array([value]), np.array([y[0]]))[0][0]
            self.draw.line([(px, y0), (px, y1)], fill=GRID)
            self.draw.line([(px, y1), (px, y1 + 4)], fill=INK)
            self.draw.text((px, y1 + 6), _label(value), fill=INK, font=small, anchor="mt")
        for value in nice_ticks(*y):
            py = self.pixels(np.array([x[0]]), np.array([value]))[1][0]
            self.draw.line([(x0, py), (x1, py)], fill=GRID)
            self.draw.line([(x0 - 4, py), (x0, py)], fill=INK)
            self.draw.text((x0 - 6, py), _label(value), fill=INK, font=small, anchor="rm")
        self.draw.rectangle(self.box, outline=INK)
        self.draw.text(((x0 + x1) / 2, 6), title, fill=INK, font=large, anchor="mt")
        self.draw.text(((x0 + x1) / 2, size[1] - 4), xlabel, fill=INK, font=small, anchor="md")
        label = Image.new("RGB", (y1 - y0, 16), BACKGROUND)
        ImageDraw.Draw(label).text(((y1 - y0) / 2, 8), ylabel, fill=INK, font=small, anchor="mm")
        self.image.paste(label.rotate(90, expand=True), (2, y0))

    def pixels(self, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel columns and rows of the data points ``(xs, ys)``."""
        x0, y0, x1, y1 = self.box
        px = x0 + (xs - self.x[0]) / (self.x[1] - self.x[0]) * (x1 - x0)
        py = y1 - (ys - self.y[0]) / (self.y[1] - self.y[0]) * (y1 - y0)
        return px, py

    def array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()


def line_plot(
    series: np.ndarray,
    *,
    title: str,
    xlabel: str = "draw",
    ylabel: str = "",
    x: np.ndarray | None = None,
    size: tuple[int, int] = PANEL_SIZE,
) -> np.ndarray:
    """One line per row of ``series`` ``(M, T)`` (e.g. the energy traces of ``M`` chains), each in
    its own colour, against ``x`` ``(T,)`` (default ``1..T``). Non-finite points are left out.
    Returns the ``(H, W, 3)`` uint8 panel."""
    series = np.atleast_2d(np.asarray(series, dtype=np.float64))
    xs = np.arange(1, series.shape[1] + 1, dtype=np.float64) if x is None else np.asarray(x, dtype=np.float64)
    axes = Axes(_limits(xs), _limits(series), title=title, xlabel=xlabel, ylabel=ylabel, size=size)
    for row, colour in zip(series, colours(len(series)), strict=True):
        keep = np.isfinite(row)
        px, py = axes.pixels(xs[keep], row[keep])
        points = list(zip(px.tolist(), py.tolist(), strict=True))
        if len(points) > 1:
            axes.draw.line(points, fill=colour, width=1)
        elif points:
            axes.draw.point(points, fill=colour)
    return axes.array()


def scatter_plot(
    points: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    title: str,
    xlabel: str = "",
    ylabel: str = "",
    size: tuple[int, int] = PANEL_SIZE,
    radius: float = 1.5,
) -> np.ndarray:
    """Points ``(N, 2)`` as dots coloured by their integer ``groups`` ``(N,)`` (e.g. the chain each
    came from). Non-finite points are left out. Returns the ``(H, W, 3)`` uint8 panel."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    groups = np.zeros(len(points), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    keep = np.isfinite(points).all(axis=1)
    points, groups = points[keep], groups[keep]
    axes = Axes(_limits(points[:, 0]), _limits(points[:, 1]), title=title, xlabel=xlabel, ylabel=ylabel, size=size)
    palette = colours(int(groups.max()) + 1 if len(groups) else 1)
    px, py = axes.pixels(points[:, 0], points[:, 1])
    for cx, cy, group in zip(px.tolist(), py.tolist(), groups.tolist(), strict=True):
        axes.draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=palette[group])
    return axes.array()


def panel_grid(panels: Sequence[np.ndarray], columns: int = 2) -> np.ndarray:
    """Panels ``(H, W, 3)`` of one size laid out row by row, ``columns`` per row (white where a row
    is short)."""
    if not panels:
        raise ValueError("panel_grid needs at least one panel")
    height, width = panels[0].shape[:2]
    columns = max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        r, c = divmod(i, columns)
        grid[r * height : (r + 1) * height, c * width : (c + 1) * width] = panel
    return grid


def principal_components(states: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(projection (N, k), explained variance share (k,))`` of states ``(N, D)`` onto their first
    ``k`` principal components (centred; SVD). A state of fewer than ``k`` dimensions is padded
    with zeros."""
    states = np.asarray(states, dtype=np.float64)
    centred = states - states.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[:k].T
    total = float((singular**2).sum())
    share = (singular[:k] ** 2) / total if total > 0 else np.zeros(min(k, len(singular)))
    if projection.shape[1] < k:
        projection = np.pad(projection, ((0, 0), (0, k - projection.shape[1])))
        share = np.pad(share, (0, k - len(share)))
    return projection, share
