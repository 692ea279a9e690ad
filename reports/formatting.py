"""Plain-text formatting shared by the renderers (numbers, flags, labels)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np

from audit_core.findings import Finding, Metric, Status

_CONCLUSIVE = (Status.PASS, Status.WARN, Status.FAIL)
_SURROGATE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> str:
    """``text`` as UTF-8 can carry it: a lone surrogate (left in a name by a file name that
    is not UTF-8, say) becomes U+FFFD; a surrogate pair becomes the character it encodes."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def fmt_text(value: object) -> str:
    """A number (4 significant digits), flag or label as plain text; None and NaN -> n/a."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _fmt_float(value)
    return str(value)


def _fmt_float(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.4g}"


def is_number(value: object) -> bool:
    """A real number (numpy scalars included), not a flag or a label."""
    if isinstance(value, np.generic):
        value = value.item()
    return isinstance(value, int | float) and not isinstance(value, bool)


def conclusive(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that judged something (pass, warn, fail)."""
    return [f for f in findings if f.status in _CONCLUSIVE]


def key_metric(findings: Sequence[Finding]) -> Metric | None:
    """The number that stands for a set of findings, whatever the analysis: the metric
    the first judged (thresholded) conclusive finding was judged by; else the first
    numeric metric of the first conclusive finding, else of any finding; else None."""
    for finding in conclusive(findings):
        if finding.threshold is not None:
            judged = [m for m in finding.metrics if m.name == finding.threshold.metric]
            if judged and is_number(judged[0].value):
                return judged[0]
    for pool in (conclusive(findings), findings):
        for finding in pool:
            for metric in finding.metrics:
                if is_number(metric.value):
                    return metric
    return None
