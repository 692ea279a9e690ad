"""Audit data: reading (.npz, .npy + labels, .csv; never unpickling) and validation.

``RawData`` is what a file holds; ``AuditData`` is that data validated against a
model: samples reshaped to the model's input shape, finite, labels in range,
input bounds known.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit_core.errors import DataError

if TYPE_CHECKING:  # type-only: reading data must not import torch
    from audit_core.graph import LayerGraph


@dataclass(frozen=True)
class RawData:
    """Arrays as read from a file, before validation."""

    x: np.ndarray
    y: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    lower: np.ndarray | None = None
    upper: np.ndarray | None = None
    image_shape: tuple[int, ...] | None = None
    source: str = ""
    labels_source: str = ""
    """The ``--labels`` file the labels came from ("" when they are the data file's)."""


@dataclass(frozen=True)
class AuditData:
    """Validated samples ``x`` ``(N, *input_shape)`` float64, labels ``y`` ``(N,)`` int64.

    ``indices`` are the positions of the samples in the source file (after
    ``--samples`` subsampling). ``labels_from`` says whether ``y`` came from the
    file or from the model's own predictions. ``clipped``: values that lay outside the
    bounds by float noise (``BOUNDS_TOLERANCE``) and were clipped to them.
    """

    x: np.ndarray
    y: np.ndarray
    indices: np.ndarray
    lower: float
    upper: float
    class_names: tuple[str, ...]
    source: str
    labels_from: str = "file"
    bounds_source: str = "data"
    image_shape: tuple[int, ...] | None = None
    clipped: int = 0

    def __len__(self) -> int:
        return len(self.x)

    @property
    def flat(self) -> np.ndarray:
        return self.x.reshape(len(self.x), -1)


# ------------------------------------------------------------------ reading


def read_data(path: str | Path, labels: str | Path | None = None) -> RawData:
    """Read ``path`` (.npz, .npy, .csv) and an optional separate label file."""
    path = Path(path)
    _check_file(path)
    readers = {".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown data format {path.suffix!r} (use .npz, .npy or .csv)")
    raw = reader(path)
    if labels is not None:
        raw = with_label_file(raw, path, Path(labels))
    return replace(raw, source=str(path))


def with_label_file(raw: RawData, path: Path, labels: Path) -> RawData:
    """``raw`` with the labels of ``--labels``; an error if the data holds labels already
    (which of the two should win is not a guess to make for the user)."""
    if raw.y is not None:
        raise DataError(
            f"{path}: already holds labels; --labels {labels} is for samples without them "
            "(.npy, or a .csv without a label column)"
        )
    return replace(raw, y=read_data_labels(labels), labels_source=str(labels))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _check_magic(path: Path, magic: bytes, kind: str) -> None:
    """numpy reads a file that is neither .npy nor .npz as a pickle: say what it is not."""
    with path.open("rb") as handle:
        head = handle.read(len(magic))
    if head != magic:
        pickled = head[:1] == b"\x80"
        raise DataError(
            f"{path}: holds Python objects; refusing to unpickle"
            if pickled
            else f"{path}: not a {kind} file (it does not start like one)"
        )


def _load_npy(path: Path) -> np.ndarray:
    _check_magic(path, NPY_MAGIC, ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(f"{path}: holds Python objects; refusing to unpickle") from error
        raise DataError(f"{path}: not a readable .npy array ({error})") from error
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from error


def _read_npz(path: Path) -> RawData:
    _check_magic(path, ZIP_MAGIC, ".npz (zip)")
    try:
        archive = np.load(path, allow_pickle=False)
        arrays = {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise DataError(f"{path}: holds Python objects; refusing to unpickle") from error
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable .npz archive ({error})") from error
    return raw_from_arrays(arrays, str(path))


BOUNDS_TOLERANCE = 1e-6
"""Samples may exceed the input bounds by this fraction of their range (float noise such as
the -1.9e-9 background pixels of exported MNIST images): such values are clipped to the
bounds, and the report says how many. Anything further out is a usage error (exit 4)."""

DATA_KEYS = ("x", "y", "class_names", "lower", "upper", "image_shape")
"""The arrays an .npz data file (or a mapping given to the Python API) may hold."""


def raw_from_arrays(arrays: Mapping[str, Any], source: str) -> RawData:
    """``RawData`` from named arrays as in an .npz file (``DATA_KEYS``; only ``x`` is
    required). ``source`` names them in errors."""
    if "x" not in arrays:
        raise DataError(f"{source}: no array named 'x' (found: {', '.join(arrays) or 'none'})")
    return RawData(
        x=arrays["x"],
        y=arrays.get("y"),
        class_names=tuple(str(n) for n in arrays.get("class_names", ())),
        lower=arrays.get("lower"),
        upper=arrays.get("upper"),
        image_shape=tuple(int(v) for v in np.ravel(arrays["image_shape"]))
        if arrays.get("image_shape") is not None
        else None,
        source=source,
    )


def _read_npy(path: Path) -> RawData:
    return RawData(x=_load_npy(path))


def _read_csv(path: Path) -> RawData:
    """Numeric CSV, one sample per row. A header naming a ``label`` (or ``y``) column marks it."""
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    header = [h.strip().lower() for h in text[0].split(",")] if text else []
    has_header = bool(header) and not _is_number(header[0])
    try:
        with warnings.catch_warnings():  # numpy warns about an empty table: said below
            warnings.simplefilter("ignore")
            table = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, ndmin=2)
    except ValueError as error:
        raise DataError(f"{path}: not a numeric CSV table ({error})") from error
    if table.size == 0:
        raise DataError(f"{path}: the CSV table has no data rows")
    label_column = next((i for i, h in enumerate(header) if h in ("label", "y")), None)
    if not has_header or label_column is None:
        return RawData(x=table)
    x = np.delete(table, label_column, axis=1)
    return RawData(x=x, y=table[:, label_column])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_data_labels(path: Path) -> np.ndarray:
    """Labels from a ``.npy`` file or a text file with one number per line."""
    _check_file(path)
    if path.suffix.lower() == ".npy":
        return _load_npy(path)
    try:
        return np.loadtxt(path, delimiter=",", ndmin=1)
    except ValueError as error:
        raise DataError(f"{path}: labels must be numbers, one per line ({error})") from error


# --------------------------------------------------------------- validation


def validate(
    raw: RawData,
    graph: LayerGraph,
    *,
    bounds: tuple[float, float] | None = None,
    predicted_labels: np.ndarray | None = None,
) -> AuditData:
    """Check ``raw`` against ``graph`` and return float64 samples in the model's input shape.

    ``bounds`` (from the command line) override the file's; without either they
    default to the data's range. Without labels, ``predicted_labels`` are used (default:
    ``graph``'s predictions on the validated samples).
    """
    x = _samples(raw, graph)
    if raw.y is None and predicted_labels is None:
        predicted_labels = graph.predict(x)
    y = _labels(raw, len(x), graph.num_classes, predicted_labels)
    lower, upper, bounds_source = _bounds(raw, x, bounds)
    x, clipped = _clip_noise(x, lower, upper)
    names = raw.class_names
    if names and len(names) != graph.num_classes:
        raise DataError(
            f"{raw.source}: {len(names)} class names for a model with {graph.num_classes} classes"
        )
    return AuditData(
        x=x,
        y=y,
        indices=np.arange(len(x)),
        lower=lower,
        upper=upper,
        class_names=names,
        source=raw.source,
        labels_from="file" if raw.y is not None else "model predictions",
        bounds_source=bounds_source,
        image_shape=raw.image_shape,
        clipped=clipped,
    )


def _samples(raw: RawData, graph: LayerGraph) -> np.ndarray:
    x = np.asarray(raw.x)
    if x.dtype.kind not in "fiu":
        raise DataError(f"{raw.source}: x has dtype {x.dtype}, expected numbers")
    if x.ndim < 1 or len(x) == 0:
        raise DataError(f"{raw.source}: x holds no samples")
    sample_shape = x.shape[1:] if x.ndim > 1 else (1,)
    expected = graph.input_shape
    if int(np.prod(sample_shape)) != graph.input_size:
        raise DataError(
            f"{raw.source}: samples have shape {list(sample_shape)} ({int(np.prod(sample_shape))} "
            f"values); the model expects {list(expected)} ({graph.input_size} values)"
        )
    x = x.astype(np.float64).reshape(len(x), *expected)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        kind = "NaN" if np.isnan(x[bad]).any() else "Inf"
        raise DataError(f"{raw.source}: x contains {kind} (first at sample {int(np.argmax(bad))})")
    return x


def _labels(raw: RawData, count: int, num_classes: int, predicted: np.ndarray | None) -> np.ndarray:
    if raw.y is None:
        if predicted is None:
            raise DataError(f"{raw.source}: no labels (add 'y' to the file or pass --labels)")
        return np.asarray(predicted, dtype=np.int64)
    where = raw.labels_source or raw.source
    y = np.asarray(raw.y)
    if y.dtype.kind not in "fiub":
        raise DataError(f"{where}: labels have dtype {y.dtype}, expected integers")
    y = y.reshape(-1) if y.ndim > 1 and y.size == count else y
    if y.ndim != 1 or len(y) != count:
        raise DataError(f"{where}: {y.size} labels for {count} samples")
    if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
        raise DataError(f"{where}: labels must be whole numbers")
    y = y.astype(np.int64)
    out_of_range = (y < 0) | (y >= num_classes)
    if out_of_range.any():
        first = int(np.argmax(out_of_range))
        raise DataError(
            f"{where}: label {int(y[first])} at sample {first} is out of range for a model "
            f"with {num_classes} classes"
        )
    return y


def _bounds(
    raw: RawData, x: np.ndarray, override: tuple[float, float] | None
) -> tuple[float, float, str]:
    if override is not None:
        lower, upper, source = float(override[0]), float(override[1]), "option"
    elif raw.lower is not None and raw.upper is not None:
        lower, upper, source = float(np.min(raw.lower)), float(np.max(raw.upper)), "file"
    else:
        lower, upper, source = float(x.min()), float(x.max()), "data"
    if not (np.isfinite(lower) and np.isfinite(upper)) or lower >= upper:
        raise DataError(f"{raw.source}: invalid input bounds [{lower}, {upper}]")
    slack = BOUNDS_TOLERANCE * (upper - lower)
    if source != "data" and (x.min() < lower - slack or x.max() > upper + slack):
        raise DataError(
            f"{raw.source}: samples lie outside the input bounds [{lower:g}, {upper:g}] "
            f"(data range [{x.min():g}, {x.max():g}]; values within {BOUNDS_TOLERANCE:g} of "
            "the range are clipped, these are further out)"
        )
    return lower, upper, source


def _clip_noise(x: np.ndarray, lower: float, upper: float) -> tuple[np.ndarray, int]:
    """``x`` clipped into the bounds (only float noise is left outside them by
    ``_bounds``), and how many values moved."""
    outside = int(np.count_nonzero((x < lower) | (x > upper)))
    return (np.clip(x, lower, upper) if outside else x), outside


def subsample(data: AuditData, count: int | None, rng: np.random.Generator) -> AuditData:
    """A seeded random subset of ``count`` samples, kept in file order."""
    if count is None or count >= len(data):
        return data
    chosen = np.sort(rng.choice(len(data), size=count, replace=False))
    return replace(data, x=data.x[chosen], y=data.y[chosen], indices=data.indices[chosen])
