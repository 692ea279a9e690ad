"""The certificates analysis's findings: the simplex and decision-boundary certificates,
the gap to the attack (certified / proven non-robust / undecided at eps), the consistency
check (no verified attack inside a certified ball) and the deployed runtime inside the
balls (Singla & Feizi 2019, Theorems 3 and 4, Section 5, Figure 2)."""

from __future__ import annotations

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.evidence import adversarial_example, histogram
from audit_core.findings import (
    Assumption,
    Evidence,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    Series,
    Severity,
    Status,
    floats,
    summarize,
)
from audit_core.grading import Grade, grade, worst
from audit_plugins.certificates import CertificatesConfig
from audit_plugins.certificates.compute import CertificateResults, logit_tolerance
from audit_plugins.certificates.radii import linf_radius, verdicts, violations


def _assumptions(ctx: AuditContext, r: CertificateResults) -> tuple[Assumption, ...]:
    fidelity = ctx.model.fidelity
    return (
        Assumption("piecewise-linear layer graph", True, "every layer is affine, ReLU or MaxPool"),
        Assumption(
            "float64 layer graph matches onnxruntime",
            fidelity.graph_error <= fidelity.tolerance,
            f"max scaled error {fidelity.graph_error:.3g} on {fidelity.inputs_checked} inputs "
            f"(tolerance {fidelity.tolerance:g})",
        ),
        Assumption(
            "deployed runtime within the logit tolerance everywhere in each certified ball",
            None,
            f"spot-checked at {r.runtime.points} onnxruntime points per ball (largest scaled "
            f"deviation {r.runtime.deviation:.3g}), not proven everywhere; radii keep a logit "
            f"slack of 2 x {r.tolerance:.3g} x max(1, |logit|) and the float32 input rounding",
        ),
    )


def _certified_accuracy(radius: np.ndarray, correct: np.ndarray, eps: float) -> float:
    return float(np.mean(correct & (radius > eps)))


def _radius_in_norm(ctx: AuditContext, radius: np.ndarray, r: CertificateResults) -> np.ndarray:
    return linf_radius(radius, r.dimension) if ctx.norm == "linf" else radius


def simplex_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    s = r.simplex
    radius_norm = _radius_in_norm(ctx, s.radius, r)
    accuracies = [_certified_accuracy(radius_norm, r.correct, e) for e in ctx.eps]
    values = s.radius[r.correct]
    median = float(np.median(values)) if values.size else None
    median_linf = None if median is None else float(linf_radius(np.array(median), r.dimension))
    zero = float(np.mean(values == 0)) if values.size else 0.0
    slack_bound = (s.decision_distance == 0) & (s.raw_decision_distance > 0)
    by_slack = float(np.mean(slack_bound[r.correct])) if values.size else 0.0
    summary = (
        f"Simplex certificate (Theorem 3): median certified l2 radius {median:.4g} "
        f"(linf {median_linf:.3g}) over {values.size} correctly classified "
        f"samples; certified accuracy {accuracies[0]:.1%} at {ctx.norm} eps {ctx.eps[0]:g}."
        if median is not None
        else "Simplex certificate (Theorem 3): no correctly classified sample."
    )
    metrics = [
        Metric("median_radius", median, "l2", "median certified radius, correct samples"),
        Metric("min_radius", float(values.min()) if values.size else None, "l2"),
        Metric("median_linf_radius", median_linf),
        Metric("certified_accuracy", accuracies[0], "fraction", f"at eps {ctx.eps[0]:g}"),
        *(
            Metric(f"certified_accuracy@{e:g}", a, "fraction", f"{ctx.norm} eps {e:g}")
            for e, a in zip(ctx.eps, accuracies, strict=True)
        ),
        Metric(
            "face_binding_fraction",
            float(np.mean(s.face_binds)),
            "fraction",
            "samples whose radius is P_min (the activation region), not d_min",
        ),
        Metric(
            "zero_radius_fraction",
            zero,
            "fraction",
            "correct samples certified with radius 0",
        ),
        Metric(
            "zero_by_logit_slack_fraction",
            by_slack,
            "fraction",
            "correct samples whose logit gap is below the runtime slack: radius 0",
        ),
        Metric("seconds_per_sample", r.seconds_per_sample, "s"),
        Metric("logit_tolerance", r.tolerance, "relative"),
    ]
    evidence = Evidence(
        summaries=(
            summarize("simplex_radius", s.radius, "l2"),
            summarize("face_distance (P_min)", s.face_distance, "l2"),
            summarize("decision_distance (d_min)", s.decision_distance, "l2"),
        ),
        examples=_smallest_examples(ctx, r),
        plots=(
            histogram(
                "simplex-radius", "Simplex certified radius", s.radius[r.correct], x_label="l2"
            ),
        ),
        notes=_simplex_notes(zero, by_slack, r.tolerance),
    )
    return ctx.finding(
        "simplex",
        title="Simplex certificate (certified l2 radius, Theorem 3)",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=evidence,
        assumptions=_assumptions(ctx, r),
        references=(Reference("singla2019", "Theorem 3, Algorithm 1"),),
    )


def _simplex_notes(zero: float, by_slack: float, tolerance: float) -> tuple[str, ...]:
    notes = (
        "Radii protect the predicted class; misclassified samples are never counted as "
        "certified robust.",
        "Each radius has a safety margin subtracted (deployed float32 runtime, input "
        "rounding, float64 rounding) and is clamped at 0.",
    )
    if by_slack > 0:
        notes += (
            f"{by_slack:.0%} of the correctly classified samples have a top-2 logit gap below "
            f"the runtime slack (2 x {tolerance:.3g} x max(1, |logit|)): the float32 runtime "
            "may already rank them differently, so nothing is certified there. If the fidelity "
            "check shows a smaller error, a smaller `fidelity-tolerance` certifies them.",
        )
    if zero - by_slack > 0:
        notes += (
            f"{zero - by_slack:.0%} of the correctly classified samples lie on (or within "
            "rounding of) a face of their activation region, e.g. exact MaxPool ties or ReLU "
            "pre-activations at 0 on a constant image background: Theorem 3 certifies nothing "
            "there (radius 0). This is a limit of the certificate, not evidence of an "
            "adversarial example.",
        )
    return notes


def _smallest_examples(ctx: AuditContext, r: CertificateResults) -> tuple:
    order = np.argsort(np.where(r.correct, r.certified, np.inf), kind="stable")
    chosen = [int(i) for i in order[: ctx.config.worst_examples] if r.correct[i]]
    db = r.decision_boundary
    return tuple(
        adversarial_example(
            ctx.data,
            i,
            r.attack.x_adv[i],
            {
                "certified_radius": float(r.certified[i]),
                "simplex_radius": float(r.simplex.radius[i]),
                "face_distance": float(r.simplex.face_distance[i]),
                "decision_distance": float(r.simplex.decision_distance[i]),
                "decision_boundary_radius": None if db is None else float(db[i]),
                "attack_distance": float(r.attack.distance[i]) if r.attack.found[i] else None,
                "ratio": None if np.isnan(r.ratio[i]) else float(r.ratio[i]),
            },
        )
        for i in chosen
    )


def decision_boundary_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    reference = (Reference("singla2019", "Theorem 4"),)
    if r.decision_boundary is None:
        return ctx.finding(
            "decision-boundary",
            title="Decision-boundary certificate (Theorem 4): not applicable",
            status=Status.SKIPPED,
            severity=Severity.INFO,
            method=Method.CERTIFIED,
            summary=f"Skipped: {r.db_reason}.",
            references=reference,
        )
    db, simplex = r.decision_boundary, r.simplex.radius
    values = db[r.correct]
    accuracy = _certified_accuracy(_radius_in_norm(ctx, db, r), r.correct, ctx.eps[0])
    at_least = float(np.mean(simplex[r.correct] >= values)) if values.size else None
    median = float(np.median(values)) if values.size else None
    summary = (
        f"Decision-boundary certificate (Theorem 4): median certified l2 radius {median:.4g}; "
        f"certified accuracy {accuracy:.1%} at {ctx.norm} eps {ctx.eps[0]:g}; the simplex "
        f"certificate is at least as large on {at_least:.0%} of the samples."
        if median is not None
        else "Decision-boundary certificate (Theorem 4): no correctly classified sample."
    )
    return ctx.finding(
        "decision-boundary",
        title="Decision-boundary certificate (certified l2 radius, Theorem 4)",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=[
            Metric("median_radius", median, "l2"),
            Metric("min_radius", float(values.min()) if values.size else None, "l2"),
            Metric("certified_accuracy", accuracy, "fraction", f"at eps {ctx.eps[0]:g}"),
            Metric(
                "simplex_at_least_as_large",
                at_least,
                "fraction",
                "samples where simplex >= decision boundary (the paper's Figure 2a)",
            ),
        ],
        evidence=Evidence(
            summaries=(summarize("decision_boundary_radius", db, "l2"),),
            plots=(
                histogram(
                    "decision-boundary-radius", "Decision-boundary radius", values, x_label="l2"
                ),
            ),
        ),
        assumptions=(
            Assumption("one hidden ReLU layer (depth 2)", True, "checked on the layer graph"),
            *_assumptions(ctx, r)[1:],
        ),
        references=reference,
    )


METHODS = ("simplex", "decision-boundary", "bound-propagation", "complete-search")


def method_radii(r: CertificateResults) -> dict[str, np.ndarray]:
    """Each method that ran: its certified radius per sample, in the run's norm."""
    to_norm = (lambda v: linf_radius(v, r.dimension)) if r.norm == "linf" else (lambda v: v)
    radii = {"simplex": to_norm(r.simplex.radius)}
    if r.decision_boundary is not None:
        radii["decision-boundary"] = to_norm(r.decision_boundary)
    if r.propagation is not None:
        radii["bound-propagation"] = r.propagation.radius
    if r.search is not None:
        radii["complete-search"] = r.best
    return radii


def _fractions(verdict: np.ndarray) -> dict[str, float]:
    return {
        "certified": float(np.mean(verdict == 1)),
        "non_robust": float(np.mean(verdict == -1)),
        "undecided": float(np.mean(verdict == 0)),
    }


def _method_verdicts(ctx: AuditContext, r: CertificateResults, radius: np.ndarray) -> np.ndarray:
    """``(E, N)`` verdicts a single method's radius gives with the attack distances."""
    rows = []
    for eps in ctx.eps:
        v = verdicts(r.correct, radius, r.attack_distance, eps)
        rows.append(np.where(v.certified, 1, np.where(v.non_robust, -1, 0)))
    return np.asarray(rows, dtype=np.int8)


def gap_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    config: CertificatesConfig = ctx.config
    fractions = _fractions(r.verdict[0])
    judged = _grade(fractions, config)
    ratio = r.ratio[np.isfinite(r.ratio)]
    best_method = list(method_radii(r))[-1]
    summary = (
        f"At {ctx.norm} eps {ctx.eps[0]:g}: {fractions['certified']:.1%} of the samples are "
        f"certified robust, {fractions['non_robust']:.1%} are proven non-robust (misclassified "
        f"or an adversarial example verified in onnxruntime within eps) and "
        f"{fractions['undecided']:.1%} are undecided (best method: {best_method})"
        + (f"; median certified/attack ratio {np.median(ratio):.3g}." if ratio.size else ".")
    )
    metrics = [
        Metric("certified_fraction", fractions["certified"], "fraction", f"eps {ctx.eps[0]:g}"),
        Metric("non_robust_fraction", fractions["non_robust"], "fraction", f"eps {ctx.eps[0]:g}"),
        Metric("undecided_fraction", fractions["undecided"], "fraction", f"eps {ctx.eps[0]:g}"),
        Metric("clean_accuracy", float(np.mean(r.correct)), "fraction"),
        Metric(
            "median_ratio",
            float(np.median(ratio)) if ratio.size else None,
            "ratio",
            f"best certified radius / attack distance ({r.norm}), correctly classified samples",
        ),
        Metric("min_ratio", float(ratio.min()) if ratio.size else None, "ratio"),
        Metric("max_ratio", float(ratio.max()) if ratio.size else None, "ratio"),
    ]
    for e, row in zip(ctx.eps, r.verdict, strict=True):
        f = _fractions(row)
        metrics += [
            Metric(f"certified_fraction@{e:g}", f["certified"], "fraction"),
            Metric(f"non_robust_fraction@{e:g}", f["non_robust"], "fraction"),
            Metric(f"undecided_fraction@{e:g}", f["undecided"], "fraction"),
        ]
    metrics += _method_metrics(ctx, r)
    return ctx.finding(
        "gap",
        title=f"Certified vs attacked at eps {ctx.eps[0]:g} ({ctx.norm})",
        status=judged.status,
        severity=judged.severity,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=Evidence(
            summaries=(
                summarize("certified_radius", r.best, r.norm),
                summarize("attack_distance", r.attack_distance[r.correct], r.norm),
                summarize("certified/attack ratio", ratio, "ratio"),
            ),
            plots=_gap_plots(r),
            notes=(
                "Certified radius: the largest of the methods that ran (simplex and "
                "decision-boundary certificates, bound propagation, complete search; all "
                "lower bounds). Attack distance: the core's minimal-norm search (DeepFool + "
                "PGD bisection), an upper bound on the true minimal distance, verified in "
                "onnxruntime.",
                "Undecided samples are where the truth lies between the two bounds: a larger "
                "search budget (certificates.effort = thorough) or a stronger attack could "
                "settle them.",
            ),
        ),
        remediation=(
            "A large non-robust fraction calls for adversarial or certified training at this "
            "eps; a large undecided fraction for a larger verification budget "
            "(-o certificates.effort=thorough) before trusting the model at this eps."
        ),
        references=(Reference("singla2019", "Section 5, Figure 2"),),
    )


def _method_metrics(ctx: AuditContext, r: CertificateResults) -> list[Metric]:
    """Per method that ran: certified / non-robust / undecided fractions at eps (the first
    eps unqualified, then ``@eps`` for each), the median ratio to the closest adversarial
    example and the time per sample. A radius method's verdicts use the attacks for the
    non-robust side; the complete search's are the analysis's own."""
    seconds = {
        "simplex": r.seconds_per_sample,
        "decision-boundary": r.seconds_per_sample,
        "bound-propagation": r.propagation.seconds_per_sample if r.propagation else None,
        "complete-search": r.search.seconds / max(1, len(ctx.data)) if r.search else None,
    }
    metrics = []
    for method, radius in method_radii(r).items():
        rows = r.verdict if method == "complete-search" else _method_verdicts(ctx, r, radius)
        for e, row in zip(ctx.eps, rows, strict=True):
            for kind, value in _fractions(row).items():
                suffix = "" if e == ctx.eps[0] else f"@{e:g}"
                metrics.append(Metric(f"{kind}_fraction[{method}]{suffix}", value, "fraction"))
        ratio = r.ratio_of(radius)
        ratio = ratio[np.isfinite(ratio)]
        median = float(np.median(ratio)) if ratio.size else None
        metrics += [
            Metric(f"median_ratio[{method}]", median, "ratio", "radius / adversarial distance"),
            Metric(f"seconds_per_sample[{method}]", seconds[method], "s"),
        ]
    return metrics


def _grade(fractions: dict[str, float], config: CertificatesConfig) -> Grade:
    """Proven non-robust fraction (fail, warn), then the undecided fraction (warn, low)."""
    return worst(
        grade(
            fractions["non_robust"],
            "non_robust_fraction",
            "<=",
            fail=config.fail_nonrobust_above,
            warn=config.warn_nonrobust_above,
        ),
        grade(
            fractions["undecided"],
            "undecided_fraction",
            "<=",
            warn=config.warn_undecided_above,
            warn_severity=Severity.LOW,
        ),
    )


def _gap_plots(r: CertificateResults) -> tuple[Plot, ...]:
    usable = np.isfinite(r.ratio)
    attack = r.attack_distance[usable]
    top = float(max(attack.max(initial=0.0), r.best[usable].max(initial=0.0))) or 1.0
    return (
        _accuracy_plot(f"accuracy-curves-{r.norm}", r.norm, r.best, r.attack_distance, r.correct),
        Plot(
            id="certified-vs-attack",
            title=f"Per sample: certified radius vs attack distance ({r.norm})",
            x_label=f"attack distance ({r.norm})",
            y_label=f"certified radius ({r.norm})",
            series=(
                Series("samples", floats(r.best[usable]), floats(attack), "scatter"),
                Series("certified = attack", floats([0.0, top]), floats([0.0, top]), "line"),
            ),
        ),
        histogram(
            "ratio",
            f"Per-sample ratio certified / attack ({r.norm})",
            r.ratio[usable],
            x_label="ratio",
        ),
    )


def _accuracy_plot(
    plot_id: str, norm: str, certified: np.ndarray, attack: np.ndarray, correct: np.ndarray
) -> Plot:
    finite = attack[np.isfinite(attack) & correct]
    top = float(max(finite.max(initial=0.0), certified[correct].max(initial=0.0)))
    grid = np.linspace(0.0, 1.1 * top if top > 0 else 1.0, 80)
    certified_curve = [_certified_accuracy(certified, correct, e) for e in grid]
    empirical_curve = [float(np.mean(correct & (attack > e))) for e in grid]
    return Plot(
        id=plot_id,
        title=f"Certified vs empirical robust accuracy ({norm})",
        x_label=f"eps ({norm})",
        y_label="accuracy",
        series=(
            Series("certified (lower bound)", floats(certified_curve), floats(grid), "step"),
            Series("attack (upper bound)", floats(empirical_curve), floats(grid), "step"),
        ),
    )


def consistency_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    attack = r.adversarial_distance
    bad = violations(r.correct, r.best, attack)
    compared = int(np.sum(r.correct & np.isfinite(attack)))
    if bad.any():
        worst = int(np.argmax(np.where(bad, r.best - attack, -np.inf)))
        summary = (
            f"{int(bad.sum())} certified radius/radii exceed a verified attack distance "
            f"(e.g. sample {int(ctx.data.indices[worst])}: certified {r.best[worst]:.6g} > "
            f"attack {attack[worst]:.6g}, {r.norm}). A certificate is unsound here: this is a "
            "bug in the tool; do not trust these radii."
        )
        status, severity = Status.FAIL, Severity.CRITICAL
    else:
        summary = (
            f"No verified attack point lies inside a certified ball ({compared} samples "
            f"compared, {r.norm}, every method)."
        )
        status, severity = Status.PASS, Severity.INFO
    return ctx.finding(
        "consistency",
        title="Certificates never exceed a verified attack distance",
        status=status,
        severity=severity,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=[
            Metric("violations", int(bad.sum()), "samples"),
            Metric("samples_compared", compared, "samples"),
        ],
        references=(Reference("singla2019", "Section 5"),),
    )


def runtime_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    """The deployed model (onnxruntime, float32) against the float64 graph in the balls."""
    check = r.runtime
    flips = int(check.flipped.sum())
    if check.points <= 0:
        summary = "Not checked (certificates.runtime_points = 0)."
        status, severity = Status.SKIPPED, Severity.INFO
    elif flips or check.raised:
        summary = (
            f"onnxruntime deviates from the float64 graph by up to {check.deviation:.3g} "
            f"(scaled) inside the certified balls, above the assumed {logit_tolerance(ctx):.3g}: "
            f"the radii were recomputed with a logit tolerance of {check.tolerance:.3g}"
            + (
                f", and {flips} sample(s) whose deployed class changed inside their ball get "
                "radius 0"
                if flips
                else ""
            )
            + ". The deployed model's float32 arithmetic is fragile here (e.g. cancellation "
            "of large pre-activations): certified radii for it are smaller than for the "
            "model's exact weights."
        )
        status, severity = Status.WARN, (Severity.HIGH if flips else Severity.MEDIUM)
    else:
        summary = (
            f"At {check.points} points of each certified ball onnxruntime stays within "
            f"{check.deviation:.3g} (scaled) of the float64 graph, inside the logit tolerance "
            f"{check.tolerance:.3g} the radii assume."
        )
        status, severity = Status.PASS, Severity.INFO
    return ctx.finding(
        "runtime",
        title="Deployed runtime inside the certified balls",
        status=status,
        severity=severity,
        method=Method.EMPIRICAL,
        summary=summary,
        metrics=[
            Metric("points_per_ball", check.points, "points"),
            Metric("max_scaled_deviation", check.deviation, "relative"),
            Metric("logit_tolerance_used", check.tolerance, "relative"),
            Metric("deployed_flips", flips, "samples", "radius set to 0"),
        ],
        remediation=(
            "Avoid huge cancelling pre-activations (weight scales, unnormalised inputs), or "
            "deploy in float64; the radii already account for the deviation seen."
            if status is Status.WARN
            else ""
        ),
    )


BP_REFERENCES = (
    Reference("singla2019", "Section 6 (tighter bounds: future work)"),
    Reference("zhang2018crown", "CROWN: linear relaxation by backward bound propagation"),
    Reference("xu2021alpha", "alpha-CROWN: optimised lower slopes"),
)
SEARCH_REFERENCES = (
    Reference("wang2021beta", "beta-CROWN: split constraints in branch and bound"),
    Reference("bunel2020branch", "branch and bound for piecewise-linear verification (BaBSR)"),
)


def propagation_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    """The bound-propagation radius: CROWN then alpha-CROWN, over the ball or box within
    the input bounds."""
    if r.propagation is None:
        return ctx.finding(
            "bound-propagation",
            title="Bound-propagation radius: not run",
            status=Status.SKIPPED,
            severity=Severity.INFO,
            method=Method.CERTIFIED,
            summary=f"Skipped: {r.propagation_reason}.",
            references=BP_REFERENCES,
        )
    radius = r.propagation.radius
    values = radius[r.correct]
    median = float(np.median(values)) if values.size else None
    row = _method_verdicts(ctx, r, radius)
    ratio = r.ratio_of(radius)
    ratio = ratio[np.isfinite(ratio)]
    theorem = np.maximum(r.theorem_radius[r.correct], 1e-300)
    summary = (
        f"Bound propagation (CROWN, then optimised slopes): median certified {r.norm} radius "
        f"{median:.4g}, {np.median(values / theorem):.3g}x the theorems'; certified "
        f"{_fractions(row[0])['certified']:.1%} at eps {ctx.eps[0]:g}"
        + (f"; median ratio to the attack distance {np.median(ratio):.3g}." if ratio.size else ".")
        if median is not None
        else "Bound propagation: no correctly classified sample."
    )
    metrics = [
        Metric("median_radius", median, r.norm, "correctly classified samples"),
        Metric("min_radius", float(values.min()) if values.size else None, r.norm),
        Metric(
            "median_ratio",
            float(np.median(ratio)) if ratio.size else None,
            "ratio",
            "radius / attack distance",
        ),
        Metric("seconds_per_sample", r.propagation.seconds_per_sample, "s"),
        *(
            Metric(f"certified_fraction@{e:g}", _fractions(v)["certified"], "fraction")
            for e, v in zip(ctx.eps, row, strict=True)
        ),
    ]
    return ctx.finding(
        "bound-propagation",
        title=f"Bound-propagation radius (certified {r.norm}, CROWN / alpha-CROWN)",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            summaries=(summarize("bp_radius", radius, r.norm),),
            plots=(histogram("bp-radius", "Bound-propagation radius", values, x_label=r.norm),),
            notes=(
                "Per sample the largest eps found by bisection (from the theorems' radius up "
                "to the attack distance) at which every margin's lower bound over the "
                f"{'l2 ball' if r.norm == 'l2' else 'linf box'} intersected with the input "
                "bounds exceeds the logit slack; the set is inflated by the float32 input "
                "rounding first. Intermediate bounds are computed once per eps and reused.",
            ),
        ),
        assumptions=_assumptions(ctx, r),
        references=BP_REFERENCES,
    )


def search_finding(ctx: AuditContext, r: CertificateResults) -> Finding:
    """The complete search: verdicts at every eps, exact radii, counterexamples."""
    if r.search is None:
        reason = r.propagation_reason or "disabled (certificates.search = false)"
        return ctx.finding(
            "complete-search",
            title="Complete search: not run",
            status=Status.SKIPPED,
            severity=Severity.INFO,
            method=Method.CERTIFIED,
            summary=f"Skipped: {reason}.",
            references=SEARCH_REFERENCES,
        )
    search = r.search
    first = _fractions(r.verdict[0])
    exact = float(np.mean(search.exact[r.correct])) if r.correct.any() else 0.0
    summary = (
        f"Branch and bound at {r.norm} eps {ctx.eps[0]:g}: {first['certified']:.1%} certified, "
        f"{first['non_robust']:.1%} proven non-robust, {first['undecided']:.1%} undecided "
        f"({search.searches} searches, {search.branches} subdomains, "
        f"{search.seconds_per_search:.2g} s per search); exact radius (within "
        f"{ctx.config.exact_tolerance:.1%} of the attack distance) for {exact:.1%} of the "
        "correctly classified samples."
        + (
            f" {search.timed_out} search(es) stopped at a wall-clock cap: those verdicts "
            "depend on the machine's speed."
            if search.timed_out
            else ""
        )
    )
    metrics = [
        Metric("searches", search.searches, "searches"),
        Metric("subdomains", search.branches, "subdomains"),
        Metric("seconds", search.seconds, "s", "all searches"),
        Metric("seconds_per_search", search.seconds_per_search, "s"),
        Metric("timed_out", search.timed_out, "searches", "stopped by a wall-clock cap"),
        Metric("exact_fraction", exact, "fraction", "radius within the tolerance of the attack"),
        Metric("counterexamples", len(search.counterexamples), "samples x eps"),
        *(
            Metric(f"{kind}_fraction@{e:g}", value, "fraction")
            for e, row in zip(ctx.eps, r.verdict, strict=True)
            for kind, value in _fractions(row).items()
        ),
    ]
    examples = tuple(
        adversarial_example(
            ctx.data, sample, point, {"eps": float(ctx.eps[e]), "found_by": "search"}
        )
        for (e, sample), point in list(search.counterexamples.items())[: ctx.config.worst_examples]
    )
    return ctx.finding(
        "complete-search",
        title=f"Complete search (branch and bound, {r.norm})",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            summaries=(summarize("search_radius", search.radius, r.norm),),
            examples=examples,
            notes=(
                "Each sample that no radius or attack settles is searched: subdomains fix "
                "the sides of unstable neurons (ReLU, LeakyReLU, PReLU), their bounds come "
                "from CROWN with optimised slopes and split multipliers (beta-CROWN), the "
                "lowest-bounded subdomain is split first, and the point minimising each "
                "bound is tried as an adversarial example (confirmed in onnxruntime). "
                "Undecided: the budget ran out (certificates.effort, search_seconds).",
            ),
        ),
        assumptions=_assumptions(ctx, r),
        references=SEARCH_REFERENCES,
    )
