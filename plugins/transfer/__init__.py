"""Transferable adversarial directions (Charles, Rosenberg & Papailiopoulos 2019).

Three analyses:

- ``linear-transfer`` (Theorems 4, 5, 8, Corollary 6): per class pair ``(k, l)`` the
  hard-margin SVM ``w*, b*`` on ``S[k, l]`` (separability checked by LP), its dual
  coefficients ``alpha`` and ``c_S = 1 / sum alpha``. For every linear separator of
  ``S[k, l]``, ``-y w*`` is an adversarial direction at every point (Theorems 4, 8);
  when the audited model is itself affine, Theorem 5's bound is evaluated on it and
  checked exactly. For any model: how the single direction transfers (flip rate vs
  l2 norm, beside random directions of equal norm).
- ``convex-transfer`` (Theorems 11, 12, 15, 16, Lemmas 13, 14, Corollary 17): when a
  decision region is provably convex (affine models; depth-2 ReLU nets with a scalar
  decision and sign-constant output weights; AND/OR-of-halfspaces nets), the
  direction ``v = x_beta - x_alpha`` is adversarial at every point of that class for
  every such network that classifies ``x_alpha`` and ``x_beta`` correctly; the
  smallest ``c`` with ``h(x + c v) != h(x)`` is computed exactly from the breakpoints
  of the piecewise-linear model along the line. Other models get an empirical
  convexity test and the same direction test, reported as empirical.
- ``model-transfer`` (Section 7, several models in one run): adversarial examples
  made on each model (iterated FGSM, as in the paper, or PGD; linf and l2 eps grids)
  and on optional linear-SVM surrogates, evaluated on every other model beside random
  perturbations of the same norm: a transfer matrix and, per target, the most
  transferable source.

Theorem 11's printed proof assumes every halfspace describing the convex region
separates ``x_alpha`` from ``x_beta``; the statement holds for a different reason:
a closed convex set contains the ray ``x + c v`` (``c >= 0``) from one of its points
only if ``v`` is in its recession cone, and then it would contain ``x_alpha + v =
x_beta``. Along a line a convex region is an interval, so once the ray leaves it,
it never comes back: ``c > max_x c(x)`` flips every point of the class at once.

Modules: ``linear``, ``convex`` and ``models`` compute the three analyses (each returns a
result dataclass) with ``svm`` (max-margin SVM, Theorem 5), ``lines`` (exact line
searches), ``structure`` (which regions are provably convex) and ``common``; ``findings``
is the prose of all three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.findings import Finding, Reference
from audit_core.hookspecs import hookimpl

__version__ = "0.1.0"

PAPER = "charles2019"


# =============================================================== linear transfer


@dataclass(frozen=True)
class LinearTransferConfig:
    """Parameters of the linear-transfer analysis (table ``[linear-transfer]``)."""

    all_pairs_up_to: int = 4
    """Number of classes up to which every class pair (k, l) is analysed."""
    max_pairs: int = 3
    """Above that, the most confused pairs (softmax mass the model puts on the other class)."""
    svm_c: float = 1e6
    """C of the hard-margin SVM (sklearn SVC, linear kernel); large means hard margin."""
    margin_tol: float = 1e-6
    """The SVM counts as hard-margin when every y (w*.x + b*) >= 1 - margin_tol."""
    grid_points: int = 48
    """Norms per flip-rate curve."""
    max_norm: float = 0.0
    """Largest l2 norm of the curves; 0 means the l2 diameter of the input box."""
    random_directions: int = 8
    """Random directions of the baseline (each applied to a whole class)."""
    warn_flip_rate: float = 0.5
    """One direction flipping at least this fraction of a class within eps warns."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "all_pairs_up_to": 2,
                "max_pairs": 1,
                "margin_tol": 0,
                "grid_points": 2,
                "max_norm": 0,
                "random_directions": 1,
            },
            positive=("svm_c",),
            fractions=("warn_flip_rate",),
        )


class LinearTransfer(Analysis):
    """Max-margin directions per class pair; Theorem 5 on affine models; measured transfer."""

    name = "linear-transfer"
    title = "Transferable max-margin directions"
    description = (
        "Hard-margin SVM direction w* and c_S = 1/sum(alpha) per class pair (Charles et al. "
        "2019, Thm 4, 5, 8, Cor 6): Theorem 5 checked exactly on affine models; flip rate of "
        "the single direction vs random directions on any model."
    )
    tags = ("theorem", "empirical", "transfer")
    references = (
        Reference(PAPER, "Theorem 4"),
        Reference(PAPER, "Theorem 5"),
        Reference(PAPER, "Corollary 6"),
        Reference(PAPER, "Theorem 8"),
    )
    requires = Requirements(data=True, layer_graph=False)
    Config = LinearTransferConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.transfer import findings, linear

        result = linear.analyse(ctx)
        linear.export(ctx, result.pairs)
        yield findings.max_margin_finding(ctx, result.pairs, result.affine, result.notes)
        if result.affine:
            yield findings.guarantee_finding(ctx, result.pairs)
        yield findings.direction_finding(ctx, result.pairs)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        from audit_plugins.transfer.findings import linear_headline

        return linear_headline(findings)


# =============================================================== convex-region transfer


@dataclass(frozen=True)
class ConvexTransferConfig:
    """Parameters of the convex-transfer analysis (table ``[convex-transfer]``)."""

    max_candidates: int = 400
    """(x_alpha, x_beta) pairs tried for v = x_beta - x_alpha per class (random subset)."""
    segments_per_class: int = 50
    """Empirical convexity test: segments between same-class points per class."""
    segment_points: int = 32
    """Points evaluated inside each segment."""
    empirical_candidates: int = 12
    """Empirical direction test: (x_alpha, x_beta) pairs tried per class."""
    ray_points: int = 64
    """Empirical direction test: grid points along each ray x + c v, c in (0, max_scale]
    (candidates are compared on a 4x coarser grid, the chosen one measured on this one)."""
    max_scale: float = 4.0
    """Empirical direction test: largest c."""
    warn_flip_fraction: float = 0.5
    """The direction flipping at least this fraction of a class within eps warns."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "max_candidates": 1,
                "segments_per_class": 1,
                "segment_points": 2,
                "empirical_candidates": 1,
                "ray_points": 2,
            },
            positive=("max_scale",),
            fractions=("warn_flip_fraction",),
        )


class ConvexTransfer(Analysis):
    """Convex decision regions and the direction x_beta - x_alpha (exact where proven)."""

    name = "convex-transfer"
    title = "Convex-region transferable directions"
    description = (
        "Detects convex decision regions (affine models, depth-2 ReLU nets with nonnegative "
        "output weights, AND/OR-of-halfspaces nets; Charles et al. 2019, Lemmas 13-14, "
        "Thm 11-16) and the direction x_beta - x_alpha, with exact flip scales from the "
        "line's breakpoints; empirical convexity and direction tests for other models."
    )
    tags = ("theorem", "empirical", "transfer")
    references = (
        Reference(PAPER, "Theorem 11"),
        Reference(PAPER, "Theorem 12"),
        Reference(PAPER, "Lemma 13"),
        Reference(PAPER, "Lemma 14"),
        Reference(PAPER, "Theorem 15"),
        Reference(PAPER, "Theorem 16"),
        Reference(PAPER, "Corollary 17"),
    )
    requires = Requirements(data=True, layer_graph=False)
    Config = ConvexTransferConfig

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.transfer import convex, findings

        result = convex.analyse(ctx)
        convex.export(ctx, result)
        yield findings.structure_finding(ctx, result.structure, result.why)
        if result.structure is not None:
            yield findings.convex_direction_finding(ctx, result.structure, result.directions)
            return
        yield findings.convexity_finding(ctx, result.convexity)
        yield findings.empirical_direction_finding(ctx, result.directions)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        from audit_plugins.transfer.findings import convex_headline

        return convex_headline(findings)


# =============================================================== model-to-model transfer


@dataclass(frozen=True)
class ModelTransferConfig:
    """Parameters of the model-transfer analysis (table ``[model-transfer]``)."""

    norms: tuple[str, ...] = ("linf", "l2")
    """Perturbation norms (each gets its own eps grid and matrix)."""
    linf_eps: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.3)
    """linf eps grid as fractions of the input range (upper - lower); --eps adds to it."""
    l2_eps: tuple[float, ...] = (0.025, 0.05, 0.1, 0.2)
    """l2 eps grid as fractions of the box diameter sqrt(d) (upper - lower)."""
    attack: str = "ifgsm"
    """``ifgsm`` (iterated FGSM, as in the paper: no random start, last iterate) or ``pgd``."""
    steps: int = 40
    """Attack iterations per eps (the paper's iterated FGSM: 40 steps)."""
    linf_step: float = 0.01
    """linf step as a fraction of the input range (the paper's gamma = 0.01); raised to
    eps / steps where the steps could not reach eps otherwise."""
    svm_surrogates: int = 0
    """Linear SVMs (LinearSVC) trained on disjoint parts of the audit data, added as sources."""
    svm_c: float = 1.0
    """Regularisation C of the surrogate LinearSVCs."""
    warn_drop: float = 0.2
    """Warn when the best source lowers a target's accuracy this much more than random."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={"linf_eps": 0, "l2_eps": 0, "steps": 1, "linf_step": 0, "svm_surrogates": 0},
            positive=("svm_c",),
            fractions=("warn_drop",),
            choices={"norms": ("l2", "linf"), "attack": ("ifgsm", "pgd")},
        )


class ModelTransfer(Analysis):
    """Transfer matrix of adversarial examples between the audited models (Section 7)."""

    name = "model-transfer"
    title = "Model-to-model transfer of adversarial examples"
    description = (
        "Adversarial examples made on each model (iterated FGSM/PGD, linf and l2 eps grids) "
        "and optional linear-SVM surrogates, evaluated on every other model beside random "
        "perturbations of the same norm (Charles et al. 2019, Sec. 7)."
    )
    tags = ("empirical", "transfer", "attack")
    references = (Reference(PAPER, "Section 7"), Reference(PAPER, "Section 6"))
    requires = Requirements(data=True, min_models=2, layer_graph=False)
    Config = ModelTransferConfig
    multi_model = True

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.transfer import findings, models

        result = models.analyse(ctx)
        models.export(ctx, result)
        yield findings.matrix_finding(ctx, result)
        for t, target in enumerate(result.targets):
            yield findings.target_finding(ctx, result, t, target)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        from audit_plugins.transfer.findings import model_headline

        return model_headline(findings)


@hookimpl
def audit_register_analyses(register) -> None:
    register(LinearTransfer())
    register(ConvexTransfer())
    register(ModelTransfer())
