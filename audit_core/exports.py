"""``--export DIR``: each analysis's per-sample arrays as ``DIR/<name>.npz``.

With several models the files go to ``DIR/<model>/<name>.npz``; an analysis of
all models together (model-transfer) writes ``DIR/<name>.npz`` (its model key is
``RUN_WIDE``, as for its findings). Each file is written to a temporary name and
moved into place, so an interrupted run never leaves a half-written archive.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from audit_core.findings import RUN_WIDE


def write_exports(
    exports: dict[tuple[str, str], dict[str, np.ndarray]], directory: str | os.PathLike[str]
) -> list[Path]:
    """Write every (model, name) -> arrays entry; return the paths written."""
    root = Path(directory)
    several = len({model for model, _ in exports if model != RUN_WIDE}) > 1
    payloads = {}
    for (model, name), arrays in sorted(exports.items()):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        folder = root / model if several and model != RUN_WIDE else root
        target = folder / f"{name}.npz"
        payloads[target] = buffer.getvalue()
    return [_atomic_write(path, data) for path, data in payloads.items()]


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
