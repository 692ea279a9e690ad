"""Datasets of the model zoo: the fixed digits split and the audit-data ``.npz`` format.

The audit-data format (read with ``np.load(path, allow_pickle=False)``):

- ``x``: float32, shape (N, *input shape without batch)
- ``y``: int64, shape (N,), labels in 0..K-1
- ``class_names``: fixed-width unicode, shape (K,)
- ``lower``, ``upper``: float64 0-d arrays, the input bounds
- ``image_shape`` (optional): int64, e.g. [8, 8] for flattened digit images

Files are written with :func:`save_npz`, which fixes the zip timestamps so that the
same arrays always give the same bytes (``np.savez`` stamps the current time).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DIGITS_CLASS_NAMES = tuple(str(k) for k in range(10))
DIGITS_IMAGE_SHAPE = (8, 8)
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Split:
    """A train/test split of flat inputs with integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def digits_split() -> Split:
    """The zoo's fixed stratified split of sklearn's 8x8 digits, pixels scaled to [0, 1].

    ``x`` is float32 (N, 64) = pixel / 16, ``y`` int64; 25 % test, ``random_state=0``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return Split(x_tr, y_tr, x_te, y_te, DIGITS_CLASS_NAMES)


def binary_subset(split: Split, negative: int, positive: int) -> Split:
    """Restrict a split to two classes; ``negative`` becomes label 0, ``positive`` label 1."""

    def pick(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep = (y == negative) | (y == positive)
        return x[keep], (y[keep] == positive).astype(np.int64)

    x_tr, y_tr = pick(split.x_train, split.y_train)
    x_te, y_te = pick(split.x_test, split.y_test)
    names = (split.class_names[negative], split.class_names[positive])
    return Split(x_tr, y_tr, x_te, y_te, names)


def audit_arrays(
    x: np.ndarray,
    y: np.ndarray,
    class_names: tuple[str, ...],
    bounds: tuple[float, float],
    image_shape: tuple[int, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Arrays of one audit-data file, with the dtypes the format prescribes."""
    arrays = {
        "x": np.ascontiguousarray(x, dtype=np.float32),
        "y": np.ascontiguousarray(y, dtype=np.int64),
        "class_names": np.asarray(class_names, dtype=np.str_),
        "lower": np.asarray(bounds[0], dtype=np.float64),
        "upper": np.asarray(bounds[1], dtype=np.float64),
    }
    if image_shape is not None:
        arrays["image_shape"] = np.asarray(image_shape, dtype=np.int64)
    return arrays


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a compressed ``.npz`` byte-for-byte reproducibly (fixed zip dates, sorted keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Load every array of an audit-data file (no pickles)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def validate_dataset(
    arrays: dict[str, np.ndarray], input_shape: tuple[int, ...], num_classes: int
) -> None:
    """Raise ``ValueError`` unless ``arrays`` is valid audit data for this input shape.

    ``input_shape`` excludes the batch dimension. ``num_classes`` is the number of
    classes (2 for a single-logit binary model).
    """
    problems = _dataset_problems(arrays, tuple(input_shape), num_classes)
    if problems:
        raise ValueError("invalid audit dataset: " + "; ".join(problems))


def _dataset_problems(
    arrays: dict[str, np.ndarray], input_shape: tuple[int, ...], num_classes: int
) -> list[str]:
    missing = {"x", "y", "class_names", "lower", "upper"} - set(arrays)
    if missing:
        return [f"missing arrays {sorted(missing)}"]
    x, y = arrays["x"], arrays["y"]
    checks = [
        (x.dtype == np.float32, f"x dtype {x.dtype} != float32"),
        (x.shape[1:] == input_shape, f"x sample shape {x.shape[1:]} != {input_shape}"),
        (bool(np.isfinite(x).all()), "x has non-finite values"),
        (y.dtype == np.int64 and y.shape == (x.shape[0],), "y must be int64 of shape (N,)"),
        (bool(((y >= 0) & (y < num_classes)).all()), f"labels outside 0..{num_classes - 1}"),
        (arrays["class_names"].shape == (num_classes,), "class_names must have K entries"),
        (arrays["class_names"].dtype.kind == "U", "class_names must be unicode"),
    ]
    problems = [message for ok, message in checks if not ok]
    lower, upper = arrays["lower"], arrays["upper"]
    scalars = all(a.shape == () and a.dtype == np.float64 for a in (lower, upper))
    if not scalars:
        problems.append("lower/upper must be float64 scalars")
    elif not (lower <= x.min() and x.max() <= upper):
        problems.append("x outside [lower, upper]")
    return problems
