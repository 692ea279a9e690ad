"""Plot data (``audit_core.findings.Plot``) as inline SVG; sample images as PNG data URIs.

matplotlib draws through its SVG backend on a bare ``Figure`` (no pyplot, no
global backend switch). The SVG is made fit to inline in an offline HTML page:
no XML prolog, DOCTYPE, metadata, comments or namespace URLs; text stays text
(``svg.fonttype`` ``none``) and is escaped by matplotlib; a ``$`` in a label is
just a dollar, never mathtext; ids are prefixed so that several SVGs can
share a page; output is deterministic (fixed ``svg.hashsalt``, no date).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import struct
import zlib
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from audit_core.findings import Plot, Series

_RC = {
    "svg.fonttype": "none",
    "svg.hashsalt": "robustness-audit",
    "svg.image_inline": True,
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.autolayout": False,
    "figure.constrained_layout.use": False,
}
_SAVE_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}
_FIGSIZE = (6.4, 3.6)
_LAYOUT_PAD = 0.6
"""Padding around the axes, in font sizes (``Figure.tight_layout``)."""
_MAX_BINS = 60
_ANNOTATE_MAX_CELLS = 144
_STRIP = (
    re.compile(r"<\?xml.*?\?>", re.S),
    re.compile(r"<!DOCTYPE.*?>", re.S),
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"<metadata>.*?</metadata>", re.S),
    re.compile(r'\s+xmlns(:\w+)?="[^"]*"'),
)
_ID_USE = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def plot_svg(plot: Plot, id_prefix: str | None = None) -> str:
    """``plot`` as an ``<svg>`` element to inline in HTML.

    ``id_prefix`` (default: derived from ``plot.id``) is prepended to every id in
    the SVG; give each SVG on one page its own prefix.
    """
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=_FIGSIZE)
        _DRAW[plot.kind](figure, plot)
        # laid out once, then no layout engine: with one (even the placeholder tight_layout
        # leaves), savefig draws every figure twice, half of a report's rendering time
        figure.tight_layout(pad=_LAYOUT_PAD)
        figure.set_layout_engine(None)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata=_SAVE_METADATA)
    prefix = id_prefix if id_prefix is not None else f"plot-{safe_id(plot.id)}-"
    label = html.escape(plot.title or plot.id, quote=True)
    return _clean_svg(buffer.getvalue(), prefix, label)


def safe_id(text: str) -> str:
    """``text`` reduced to characters that are safe in an HTML id and a URL fragment."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text) or "_"


def _clean_svg(svg: str, prefix: str, label: str) -> str:
    for pattern in _STRIP:
        svg = pattern.sub("", svg)
    svg = _prefix_ids(svg, safe_id(prefix) if prefix else "")
    svg = svg.replace("<svg ", f'<svg role="img" aria-label="{label}" ', 1)
    return svg.strip() + "\n"


def _prefix_ids(svg: str, prefix: str) -> str:
    return _ID_USE.sub(lambda match: match[1] + prefix + match[2], svg)


def _values(values: Sequence[float | None]) -> np.ndarray:
    """Floats with ``None`` (and anything non-finite) as NaN: a gap in a line."""
    array = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = math.nan
    return array


def _axes(figure: Figure, plot: Plot) -> Axes:
    axes = figure.add_subplot()
    axes.set_title(_text(plot.title))
    axes.set_xlabel(_text(plot.x_label))
    axes.set_ylabel(_text(plot.y_label))
    return axes


def _text(text: object) -> str:
    """Plain text for matplotlib: a ``$`` is a dollar, never the start of mathtext."""
    return str(text).replace("$", r"\$")


def _label(series: Series) -> str | None:
    return _text(series.name) if series.name else None


def _legend(axes: Axes, series: Sequence[Series]) -> None:
    if len(series) > 1 or any(s.name for s in series):
        axes.legend(loc="best", frameon=False)


def _no_data(axes: Axes) -> None:
    axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _draw_xy(figure: Figure, plot: Plot) -> None:
    axes = _axes(figure, plot)
    for series in plot.series:
        _draw_series(axes, series)
    if plot.log_x and _any_positive_x(plot.series):
        axes.set_xscale("log", nonpositive="mask")
    if not plot.series:
        _no_data(axes)
    _legend(axes, plot.series)


def _any_positive_x(series: Sequence[Series]) -> bool:
    xs = [_values(s.x) if s.x else np.arange(len(s.y), dtype=np.float64) for s in series]
    return any(bool(np.any(x > 0)) for x in xs)


def _draw_series(axes: Axes, series: Series) -> None:
    y = _values(series.y)
    x = _values(series.x) if series.x else np.arange(len(y), dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"series {series.name!r}: {len(x)} x values but {len(y)} y values")
    label = _label(series)
    if series.style == "scatter":
        axes.scatter(x, y, s=12, label=label)
    elif series.style == "step":
        axes.step(x, y, where="post", label=label)
    else:
        axes.plot(x, y, label=label)


def _draw_histogram(figure: Figure, plot: Plot) -> None:
    axes = _axes(figure, plot)
    samples = [_finite(series.y) for series in plot.series]
    pooled = np.concatenate(samples) if samples else np.empty(0)
    if pooled.size == 0:
        _no_data(axes)
        return
    edges = _bin_edges(pooled, plot.log_x)
    alpha = 1.0 if len(samples) == 1 else 0.55
    for series, values in zip(plot.series, samples, strict=True):
        axes.hist(values, bins=edges, alpha=alpha, label=_label(series))
    if plot.log_x and edges[0] > 0:
        axes.set_xscale("log")
    _legend(axes, plot.series)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    array = _values(values)
    return array[np.isfinite(array)]


def _bin_edges(values: np.ndarray, log_x: bool) -> np.ndarray:
    positive = values[values > 0]
    if log_x and positive.size == values.size and positive.min() < positive.max():
        count = min(_MAX_BINS, max(5, int(math.sqrt(values.size))))
        return np.geomspace(positive.min(), positive.max(), count + 1)
    edges = np.histogram_bin_edges(values, bins="auto")
    if len(edges) > _MAX_BINS + 1:
        edges = np.histogram_bin_edges(values, bins=_MAX_BINS)
    return edges


def _draw_heatmap(figure: Figure, plot: Plot) -> None:
    axes = _axes(figure, plot)
    matrix = _matrix(plot.matrix)
    if matrix.size == 0:
        _no_data(axes)
        return
    masked = np.ma.masked_invalid(matrix)
    mesh = axes.pcolormesh(masked, cmap="viridis", edgecolors="white", linewidth=0.5)
    figure.colorbar(mesh, ax=axes)
    axes.grid(False)
    axes.invert_yaxis()
    _tick_labels(axes, plot, matrix.shape)
    if matrix.size <= _ANNOTATE_MAX_CELLS:
        _annotate(axes, matrix, mesh)


def _matrix(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
    widths = {len(row) for row in rows}
    if len(widths) > 1:
        raise ValueError(f"heatmap rows have different lengths: {sorted(widths)}")
    if not rows or not widths.pop():
        return np.empty((0, 0))
    return np.vstack([_values(row) for row in rows])


def _tick_labels(axes: Axes, plot: Plot, shape: tuple[int, ...]) -> None:
    rows, cols = shape
    axes.set_yticks(np.arange(rows) + 0.5)
    axes.set_xticks(np.arange(cols) + 0.5)
    labels_y = plot.row_labels if len(plot.row_labels) == rows else range(rows)
    labels_x = plot.col_labels if len(plot.col_labels) == cols else range(cols)
    axes.set_yticklabels([_text(label) for label in labels_y])
    axes.set_xticklabels([_text(label) for label in labels_x], rotation=30, ha="right")


def _annotate(axes: Axes, matrix: np.ndarray, mesh: QuadMesh) -> None:
    for (row, col), value in np.ndenumerate(matrix):
        if not math.isfinite(value):
            continue
        red, green, blue, _ = mesh.cmap(mesh.norm(value))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        axes.text(
            col + 0.5,
            row + 0.5,
            f"{value:.3g}",
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
        )


_DRAW = {"xy": _draw_xy, "histogram": _draw_histogram, "heatmap": _draw_heatmap}


def image_svg(rows: Sequence[Sequence[float | None]], alt: str = "", scale: int = 0) -> str:
    """A small 2-D grayscale image as an ``<img>`` with a PNG data URI (pixelated).

    Values in [0, 1] are shown as they are; an image with negative values (a
    perturbation) is shown symmetrically around mid-grey; any other range is
    stretched to its min..max. NaN/None pixels are transparent. ``scale`` is the
    display size of a pixel (default: about 84 px across).
    """
    pixels = _matrix(rows)
    if pixels.size == 0:
        raise ValueError("empty image")
    height, width = pixels.shape
    scale = scale or max(1, 84 // max(width, height))
    uri = "data:image/png;base64," + base64.b64encode(_png(_gray(pixels))).decode("ascii")
    return (
        f'<img class="sample" src="{uri}" width="{width * scale}" '
        f'height="{height * scale}" alt="{html.escape(alt, quote=True)}">'
    )


def _gray(pixels: np.ndarray) -> np.ndarray:
    """Pixels as (gray, alpha) bytes, shape (H, W, 2)."""
    finite = np.isfinite(pixels)
    values = pixels[finite]
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if low < 0:
        low, high = -max(-low, high), max(-low, high)
    elif high <= 1:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    scaled = np.clip((np.where(finite, pixels, low) - low) / span, 0.0, 1.0)
    gray = np.rint(scaled * 255).astype(np.uint8)
    alpha = np.where(finite, 255, 0).astype(np.uint8)
    return np.stack([gray, alpha], axis=-1)


def _png(pixels: np.ndarray) -> bytes:
    """A minimal deterministic PNG (8-bit gray + alpha) of ``pixels`` (H, W, 2)."""
    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 8, 4, 0, 0, 0)
    raw = b"".join(b"\x00" + row.tobytes() for row in pixels)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
