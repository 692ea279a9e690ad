"""Evidence helpers for analyses (built-in or third-party): sample images, examples, plots."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audit_core.data import AuditData
from audit_core.findings import Example, Plot, Series, floats, image_rows


def image_shape(data: AuditData) -> tuple[int, int] | None:
    """The 2-D shape to draw one sample as a grayscale image, or None."""
    if data.image_shape is not None and len(data.image_shape) == 2:
        return int(data.image_shape[0]), int(data.image_shape[1])
    shape = data.x.shape[1:]
    if len(shape) == 3 and shape[0] in (1, 3) and min(shape[1:]) >= 4:
        return int(shape[1]), int(shape[2])
    if len(shape) == 2 and min(shape) >= 4:
        return int(shape[0]), int(shape[1])
    return None


def as_image(sample: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A sample as a 2-D array (channels averaged)."""
    flat = np.asarray(sample, dtype=np.float64).reshape(-1)
    channels = flat.size // (shape[0] * shape[1])
    return flat.reshape(channels, *shape).mean(axis=0)


def adversarial_example(
    data: AuditData,
    position: int,
    x_adv: np.ndarray,
    values: dict[str, float | int | str | None],
) -> Example:
    """An ``Example`` for sample ``position`` with input/adversarial/perturbation images."""
    images = {}
    shape = image_shape(data)
    if shape is not None:
        original = as_image(data.x[position], shape)
        adversarial = as_image(x_adv, shape)
        images = {
            "input": image_rows(original),
            "adversarial": image_rows(adversarial),
            "perturbation": image_rows(adversarial - original),
        }
    return Example(
        index=int(data.indices[position]),
        label=int(data.y[position]),
        values=values,
        images=images,
    )


def histogram(
    plot_id: str,
    title: str,
    values: np.ndarray | Sequence[float],
    *,
    x_label: str,
    y_label: str = "samples",
    series: str | None = None,
) -> Plot:
    """A histogram ``Plot`` of the finite entries of ``values`` (NaN and inf are dropped);
    its one series is called ``series`` (default: the title)."""
    array = np.asarray(values, dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    return Plot(
        id=plot_id,
        title=title,
        kind="histogram",
        x_label=x_label,
        y_label=y_label,
        series=(Series(title if series is None else series, floats(finite)),),
    )
