"""The model zoo of robustness-audit: small reference ONNX models and their audit datasets.

Built deterministically by ``python -m audit_model_zoo.build`` (see ``README.md`` in this
folder); ``zoo.json`` is the manifest. Importing this package is cheap (no torch).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_DIR = Path(__file__).resolve().parent
MODELS_DIR = ZOO_DIR / "models"
DATA_DIR = ZOO_DIR / "data"
MANIFEST_PATH = ZOO_DIR / "zoo.json"

__all__ = [
    "DATA_DIR",
    "MANIFEST_PATH",
    "MODELS_DIR",
    "ZOO_DIR",
    "dataset_path",
    "entry",
    "manifest",
    "model_path",
    "names",
]


def manifest() -> list[dict[str, Any]]:
    """The entries of ``zoo.json``, in build order."""
    return json.loads(MANIFEST_PATH.read_text(encoding="utf-8"))


def names() -> list[str]:
    """Names of all models in the zoo."""
    return [e["name"] for e in manifest()]


def entry(name: str) -> dict[str, Any]:
    """The manifest entry of one model; ``KeyError`` lists the known names."""
    for e in manifest():
        if e["name"] == name:
            return e
    raise KeyError(f"no model {name!r} in the zoo; known: {', '.join(names())}")


def model_path(name: str) -> Path:
    """Path of the ONNX file of model ``name``."""
    return ZOO_DIR / entry(name)["file"]


def dataset_path(name: str) -> Path:
    """Path of the dataset of model ``name`` (or of the dataset file ``name[.npz]``)."""
    stem = name.removesuffix(".npz")
    if (DATA_DIR / f"{stem}.npz").is_file():
        return DATA_DIR / f"{stem}.npz"
    return ZOO_DIR / entry(name)["dataset"]
