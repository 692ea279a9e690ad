"""Lower bounds on the robust loss of any classifier built on a fixed feature extractor.

"Lower Bounds on Adversarial Robustness for Fixed Feature Extractors"
(feature-extractor-lower-bounds), Sections 2-4, Lemma 1, Algorithm 2,
Appendices C-D. For a two-class task (a binary model, or a pair of classes of a
multi-class model) and every layer prefix f of the model (the input, each
affine layer, each ReLU layer, up to the penultimate layer):

1. collision distances eps_f(u, v) for the pairs of audit points of different
   classes (l2): ||u - v|| / 2 in input space, the closed form
   ||V^T (v - u)|| / 2 of Section 3.1 for affine prefixes, the descent of
   Algorithm 2 / Appendix C (one cone program per step) for ReLU prefixes. Every
   collision is verified in float64 before it becomes an edge, and collisions
   carry over from a prefix to every longer one (``collisions``);
2. per budget eps the conflict graph (networkx) of the verified collisions and,
   from Lemma 1, the smallest robust 0-1 loss (maximum matching, Konig) and
   cross-entropy loss (convex program, dual-certified) of ANY classifier g o f,
   uniform weights over the audit points of the two classes
   (``graph``);
3. layer-wise curves of these bounds against eps, and the layer whose prefix
   raises the bound the most at the audit eps (Section 4.2).

The bounds use the collisions found, a subgraph of the true conflict graph, so
they are valid lower bounds (possibly loose). The threat model is the l2 ball
without input-box constraints (Section 3, X~ = R^n). For the model itself, the
deepest prefix's 0-1 bound is a certified ceiling on its robust accuracy:
robust accuracy <= 1 - bound on these points.

Modules: ``prefix`` (the prefixes and their kind), ``chain`` and ``descent`` (the cone
programs of Algorithm 2, cheap to import in worker processes), ``collisions`` (every
prefix's verified collisions, carried over), ``graph`` (conflict graphs and the bounds of
Lemma 1), ``compute`` (the task, the pairs and all of it on the audit data), ``findings``
(the prose).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.errors import NotApplicable
from audit_core.findings import Finding, Reference
from audit_core.hookspecs import hookimpl

__version__ = "0.1.0"

PAPER = "feature-extractor-lower-bounds"


@dataclass(frozen=True)
class LowerBoundsConfig:
    """Parameters of the lower-bounds analysis (table ``[lower-bounds]``)."""

    classes: str = ""
    """Class pair "a,b" (indices or class names) for a multi-class model; default: the
    most confused pair on the audit data (confusion matrix of the model)."""
    eps_grid: tuple[float, ...] = ()
    """Budgets of the curves; default: ``grid_points`` budgets from 0 to ``grid_max``."""
    grid_points: int = 11
    """Number of budgets of the default grid (0 included)."""
    grid_max: float = 0.0
    """Largest budget of the default grid; 0: 2.5 x the largest --eps."""
    max_pairs: int = 2500
    """Pairs of points analysed (the closest in input space when there are more)."""
    max_steps: int = 20
    """Cone programs per pair and ReLU prefix (descent steps)."""
    max_seconds: float = 120.0
    """Time for all descents; pairs not reached keep the collisions of shorter prefixes."""
    solver: str = "clarabel"
    """``clarabel`` (cone program solved directly) or ``cvxpy`` (fresh problem per step)."""
    collision_rtol: float = 1e-6
    """Relative tolerance of f(u~) = f(v~) in the float64 verification."""
    dual_tol: float = 1e-6
    """A pattern dual above this flips the neuron (Algorithm 2)."""
    box: bool = False
    """Keep the perturbed points inside the data's input bounds (lower/upper). Default:
    the paper's unconstrained l2 ball (valid for the stronger, unconstrained adversary)."""
    max_matrix_entries: int = 50_000_000
    """Largest composed dense matrix; larger prefixes only carry collisions over."""
    max_search_size: int = 2_000_000
    """Largest ReLU chain searched with cone programs (neurons x search dimension; a step
    can take half a minute near the limit); larger ones only carry collisions over."""
    fail_above: float = 0.5
    """Deepest-prefix 0-1 lower bound at eps above this fails (severity high)."""
    warn_above: float = 0.1
    """Deepest-prefix 0-1 lower bound at eps above this warns (severity medium)."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "eps_grid": 0,
                "grid_points": 2,
                "grid_max": 0,
                "max_pairs": 0,
                "max_steps": 1,
                "max_seconds": 0,
                "max_matrix_entries": 1,
                "max_search_size": 0,
            },
            positive=("collision_rtol", "dual_tol"),
            choices={"solver": ("clarabel", "cvxpy")},
        )


class LowerBounds(Analysis):
    """Layer-wise lower bounds on the robust loss of any classifier on each prefix."""

    name = "lower-bounds"
    title = "Feature-extractor lower bounds"
    description = (
        "Collision distances per layer prefix (closed form for affine prefixes, cone-program "
        "descent for ReLU prefixes), conflict graphs, and lower bounds on the robust 0-1 and "
        "cross-entropy loss of any classifier built on each prefix."
    )
    tags = ("certified", "lower-bound")
    references = (
        Reference(PAPER, "Lemma 1 (feasible output probabilities)"),
        Reference(PAPER, "Section 3.1 (linear feature extractors)"),
        Reference(PAPER, "Algorithm 2, Appendices C-D (collision descent)"),
        Reference(PAPER, "Section 4.2 (layer-wise reading)"),
    )
    requires = Requirements(data=True)
    Config = LowerBoundsConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        if ctx.norm != "l2":
            raise NotApplicable("collision distances are computed for the l2 norm only")
        if ctx.config.solver not in ("clarabel", "cvxpy"):
            raise NotApplicable(f"unknown lower-bounds.solver {ctx.config.solver!r}")
        from audit_plugins.lower_bounds import compute, findings

        result = compute.analyse(ctx)
        ctx.export("lower_bounds", **compute.export_arrays(result, ctx.data.indices))
        yield findings.bound_finding(ctx, result)
        yield findings.layer_finding(ctx, result)
        yield findings.collision_finding(ctx, result)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        return findings[0].summary.split(". ")[0] + "." if findings else ""


@hookimpl
def audit_register_analyses(register) -> None:
    register(LowerBounds())
