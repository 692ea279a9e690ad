"""Plain helpers for the tests (importable as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = Path(
    os.environ.get("AUDIT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "corpus")
)
"""The public test corpus in ../shared/corpus (override with AUDIT_CORPUS)."""


def corpus(relative: str) -> Path:
    """A file of the corpus; fails loudly when the corpus is missing."""
    path = CORPUS / relative
    assert path.is_file(), f"corpus file missing: {path}"
    return path
