"""Certified radii (Singla & Feizi 2019) beside attack upper bounds: the gap.

Per audit sample and relative to the class the model *predicts* there:

* **simplex certificate** (Theorem 3, Algorithm 1): ``min(d_min, P_min)`` from the
  local linearisation of any piecewise-linear layer graph (MLPs of any depth, CNNs
  with MaxPool/AveragePool, residual sums), batched, in float64;
* **decision-boundary certificate** (Theorem 4) for one-hidden-layer ReLU nets: the
  numerator minimised over theta in ``[0, 1]^N1`` in closed form, the denominator with
  the spectral norm of ``W1``;
* **the gap to attacks** (Section 5): the certified radius beside the smallest
  adversarial distance the core's minimal-norm l2 search finds (the run's one search,
  ``ctx.attacks.minimal("l2")``, exactly the one ``attack-bound`` reports), their
  ratio, certified and empirical robust accuracy as curves over eps (l2, and linf
  through ``r / sqrt(d)``), and at ``--eps`` the fractions certified robust / proven
  non-robust / undecided.

Both radii have a documented numerical safety margin subtracted (float32 runtime
deviation within the fidelity tolerance, float32 input rounding, float64 rounding;
see ``audit_plugins.certificates.radii``), so that they hold for the deployed
model, not only for the float64 graph. The runtime part is spot-checked: onnxruntime
is run at points of every certified ball, and a larger deviation than assumed
raises the tolerance and recomputes the radii (finding ``runtime``).

Misclassified samples: a radius is still computed (it protects the predicted
class), but such a sample is already adversarial for its label, so it is never
counted as certified robust and always counts as proven non-robust; ratios are
reported for correctly classified samples only.

Modules: ``radii`` (the maths of Theorems 3 and 4 and the safety margin), ``compute``
(the radii on the audit samples, the runtime spot-check, the run's attack search),
``findings`` (the prose).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.findings import Finding, Reference
from audit_core.hookspecs import hookimpl
from audit_core.memory import MemoryNeed, attack_need, largest, linearization_need

__version__ = "0.1.0"


@dataclass(frozen=True)
class CertificatesConfig:
    """Parameters of the certificates analysis (table ``[certificates]``)."""

    fail_nonrobust_above: float = 0.5
    """Proven non-robust fraction at eps above this fails (severity ``high``)."""
    warn_nonrobust_above: float = 0.1
    """Proven non-robust fraction at eps above this warns (severity ``medium``)."""
    warn_undecided_above: float = 0.5
    """Undecided fraction at eps above this warns (severity ``low``): the certificates are
    too loose to settle the question either way."""
    logit_tolerance: float = 0.0
    """Relative logit deviation of the deployed runtime from the float64 graph to guard
    against; the larger of this, the fidelity tolerance and the observed fidelity error is
    used (raise it for e.g. a float16 deployment)."""
    worst_examples: int = 5
    """Number of samples with the smallest certified radius shown as evidence."""
    runtime_points: int = 32
    """Points per certified ball (half on its surface, half inside) at which onnxruntime's
    logits are compared with the float64 graph's; a deviation above the logit slack's
    tolerance raises the tolerance and recomputes the radii. 0: no check."""
    bound_propagation: bool = True
    """Compute the bound-propagation radius (CROWN, then alpha-CROWN) and run the search."""
    effort: str = "quick"
    """Budget preset: ``quick`` (CROWN radii, searches of 400 subdomains for the verdicts:
    an audit stays fast) or ``thorough`` (optimised slopes, searches of up to 60 s with no
    total limit, and searches that close the gap to the attack distance: for a release
    review). The keys below override it when set."""
    search: bool = True
    """Run the complete search (branch and bound) on the samples no radius or attack settles."""
    search_branches: int = 0
    """Subdomains one search may bound (0: from ``effort``): the deterministic budget."""
    search_seconds: float = 0.0
    """Wall-clock cap of one search in seconds (0: from ``effort``)."""
    search_total_seconds: float = 0.0
    """Wall-clock budget of all searches of the analysis (0: from ``effort``)."""
    propagation_seconds: float = 0.0
    """Wall-clock budget of all bound-propagation radii (0: from ``effort``)."""
    propagation_steps: int = 10
    """Bisection halvings of each bound-propagation radius with CROWN."""
    alpha_steps: int = 4
    """Further halvings with optimised slopes (alpha-CROWN) above the CROWN radius."""
    alpha_iterations: int = -1
    """Gradient steps of each alpha-CROWN bound (-1: from ``effort``; 0: CROWN only)."""
    root_iterations: int = -1
    """alpha-CROWN steps on a search's root bounds (intermediate slopes included; -1: from
    ``effort``: 0 quick, 20 thorough)."""
    exact_search: str = "auto"
    """``on``: after the verdicts, search at ``(1 - exact_tolerance) x`` the attack distance
    to prove exact radii; ``off``: never; ``auto``: as ``effort`` says (thorough: on)."""
    exact_tolerance: float = 0.01
    """A radius within this fraction of the closest verified adversarial example is
    reported as exact; the search tries to prove ``(1 - exact_tolerance) x`` that distance,
    and moves down to any closer counterexample it finds. Much smaller tolerances hit the
    deployed runtime's logit slack: a margin below ``2 tau max(1, |logit|)`` can be neither
    certified nor refuted."""

    def __post_init__(self) -> None:
        check_config(
            self,
            minimum={
                "logit_tolerance": 0,
                "worst_examples": 0,
                "runtime_points": 0,
                "search_branches": 0,
                "search_seconds": 0,
                "search_total_seconds": 0,
                "propagation_seconds": 0,
                "propagation_steps": 0,
                "alpha_steps": 0,
                "alpha_iterations": -1,
                "root_iterations": -1,
            },
            fractions=("exact_tolerance",),
            choices={"effort": ("quick", "thorough"), "exact_search": ("auto", "on", "off")},
        )


class Certificates(Analysis):
    """Simplex and decision-boundary certified radii, and their gap to attack distances."""

    name = "certificates"
    title = "Certified radii and the gap to attacks"
    description = (
        "Per-sample certified l2 radius (simplex certificate, Theorem 3; decision-boundary "
        "certificate, Theorem 4, for one-hidden-layer nets) beside the smallest adversarial "
        "distance found by attacks: certified vs empirical robust accuracy over eps."
    )
    tags = ("certified", "certificate")
    references = (
        Reference("singla2019", "Theorem 3 (simplex certificate), Algorithm 1"),
        Reference("singla2019", "Theorem 4 (decision-boundary certificate)"),
        Reference("singla2019", "Section 5 (attack upper bounds)"),
    )
    requires = Requirements(data=True, piecewise_linear=True)
    Config = CertificatesConfig

    def memory_need(self, model, data, config, attacks) -> MemoryNeed | None:
        """The local linearisation of a sample (the simplex and decision-boundary
        certificates) or the attack search whose distances the gap compares with."""
        return largest((linearization_need(model.graph), attack_need(model, attacks)))

    def run(self, ctx: AuditContext) -> Iterable[Finding]:
        from audit_plugins.certificates import compute, findings

        results = compute.compute(ctx)
        compute.export(ctx, self.name, results)
        yield findings.simplex_finding(ctx, results)
        yield findings.decision_boundary_finding(ctx, results)
        yield findings.propagation_finding(ctx, results)
        yield findings.search_finding(ctx, results)
        yield findings.gap_finding(ctx, results)
        yield findings.consistency_finding(ctx, results)
        yield findings.runtime_finding(ctx, results)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        gap = [f for f in findings if f.id.startswith(f"{self.name}/gap/")]
        return gap[0].summary if gap else super().headline(findings)


@hookimpl
def audit_register_analyses(register) -> None:
    register(Certificates())
