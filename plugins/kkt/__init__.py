"""KKT non-robustness of depth-2 ReLU networks (Vardi, Yehudai & Shamir 2022).

"Gradient methods provably converge to non-robust networks": gradient flow on the
exponential or logistic loss converges in direction to a KKT point of the max-margin
problem (2) (Theorem 2.1), and on data on the sphere of radius sqrt(d) with small inner
products every such KKT point is non-robust: one perturbation along
``z = sum_{i in I} y_i x_i`` flips every point of the margin set ``I`` (Theorem 4.1,
Corollary 4.1), although a network robust to perturbations of size ~sqrt(d) exists
(Theorem 3.1). For a depth-2 ReLU net with one logit (or the difference of two), this
analysis reports, on the audit data:

- the normalised margins and the margin set ``I`` (within a slack, 10 % as in Section 6);
- the exact smallest ``c`` with ``y_i N(x_i - y_i c z/||z||) < 0`` for all ``i`` in ``I``
  (Section 6, Figure 1), from the breakpoints of the piecewise-linear net along the line,
  and the fraction of all audit points flipped there, beside sqrt(d) and the data norm;
- how close the parameters are to a KKT point: the nonnegative multipliers ``lambda`` on
  ``I`` that best satisfy the stationarity equations (3)-(4) (and the output layer's),
  by nonnegative least squares, with the relative residual;
- which assumptions of Theorem 4.1 / Corollary 4.1 and of Theorem 3.1 hold, each with
  its number, and the radius ``(1 - c)/4 sqrt(d)`` of Theorem 3.1's robust network.

ReLU subgradient at 0: a (sample, neuron) pair with ``|w_j . x_i + b_j|`` within a relative
``zero-tol`` of 0 is at the kink, where the Clarke subgradient ``sigma'`` is any value in
[0, 1] (Section 5.2); the fit chooses it (convex QP), elsewhere ``sigma' = 1(pre > 0)``.

Modules: ``geometry`` (the depth-2 net, margin set, exact line search, KKT fit, data
conditions, Theorem 3.1's construction), ``compute`` (all of it on the audit data),
``findings`` (the prose).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.findings import Finding, Reference
from audit_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from audit_core.model import AuditedModel

__version__ = "0.1.0"

PAPER = "vardi2022"


@dataclass(frozen=True)
class KKTConfig:
    """Parameters of the kkt analysis (table ``[kkt]``)."""

    slack: float = 0.1
    """A point is on the margin when ``y_i N(x_i) <= (1 + slack) * min_j y_j N(x_j)``."""
    high_below: float = 0.25
    """``c / sqrt(d)`` below this fails with severity high."""
    medium_below: float = 0.5
    """``c / sqrt(d)`` below this warns with severity medium."""
    kkt_tol: float = 0.1
    """Relative KKT residual at or below which the parameters count as a KKT point."""
    norm_rtol: float = 0.05
    """Relative tolerance of ``||x_i|| = sqrt(d)`` (Theorems 3.1 and 4.1)."""
    zero_tol: float = 1e-5
    """Relative ``|w_j . x_i + b_j|`` at or below which the ReLU is at its kink."""
    max_kinks: int = 2000
    """At most this many (sample, neuron) kink pairs get a free subgradient (the closest)."""
    plot_points: int = 200
    """Grid size of the flipped-fraction curve."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={"slack": 0, "kkt_tol": 0, "norm_rtol": 0, "zero_tol": 0, "max_kinks": 0},
            positive=("high_below", "medium_below"),
        )
        check_config(self, minimum={"plot_points": 2})


class KKTNonRobustness(Analysis):
    """Margin set, universal perturbation along z, KKT proximity, Theorems 3.1 and 4.1."""

    name = "kkt"
    title = "KKT non-robustness (depth-2 ReLU)"
    description = (
        "Depth-2 ReLU nets: margin set I, the exact smallest perturbation along "
        "z = sum_I y_i x_i flipping all of I, distance of the weights to a KKT point of "
        "the max-margin problem, and the assumptions of Theorems 3.1 and 4.1."
    )
    tags = ("theorem", "kkt")
    references = (
        Reference(PAPER, "Theorem 4.1, Corollary 4.1"),
        Reference(PAPER, "Theorem 2.1, equations (2)-(4)"),
        Reference(PAPER, "Theorem 3.1"),
        Reference(PAPER, "Section 6"),
    )
    requires = Requirements(data=True, dense_depth=2)
    Config = KKTConfig

    def check(self, model: AuditedModel, data) -> str | None:
        classes = model.graph.num_classes
        if classes == 2:
            return None
        return f"needs a binary classifier (the model has {classes} classes)"

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.kkt import compute, findings

        results = compute.analyse(ctx)
        compute.export(ctx, results)
        yield findings.universal_finding(ctx, results)
        yield findings.theorem41_finding(ctx, results)
        yield findings.margin_finding(ctx, results)
        yield findings.theorem31_finding(ctx, results)
        ctx.progress.advance()


@hookimpl
def audit_register_analyses(register) -> None:
    register(KKTNonRobustness())
