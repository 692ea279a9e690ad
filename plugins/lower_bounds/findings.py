"""The lower-bounds analysis's findings (feature-extractor lower bounds, Sections 2-4): the
bound on the robust loss of any classifier on the model's features, the layer that costs
the most robustness (Section 4.2), and the collision distances per prefix."""

from __future__ import annotations

import numpy as np

from audit_core.analysis import AuditContext
from audit_core.evidence import as_image, image_shape
from audit_core.findings import (
    Evidence,
    Example,
    Finding,
    Method,
    Metric,
    Plot,
    Series,
    Severity,
    Status,
    floats,
    image_rows,
    summarize,
)
from audit_core.grading import grade
from audit_plugins.lower_bounds import LowerBoundsConfig
from audit_plugins.lower_bounds.compute import Result, layer_contribution, saturation_prefix

CAVEAT = (
    "The bounds use only the verified collisions found (a subgraph of the true conflict "
    "graph), so they are valid lower bounds; the true minimum robust loss may be higher."
)


def _task_text(result: Result) -> str:
    a, b = result.task.names
    return (
        f"classes {a} vs {b} ({result.task.reason}; {len(result.task.pos_a)} + "
        f"{len(result.task.pos_b)} points, {len(result.pairs)} pairs)"
    )


_WEIGHTS = "Uniform weights over the audit points of the two classes; losses are means."


def _box_text(ctx: AuditContext) -> str:
    if ctx.config.box:
        return f"kept inside the input bounds [{ctx.data.lower:g}, {ctx.data.upper:g}]"
    return "without input-box constraint"


def _threat_model(ctx: AuditContext) -> str:
    return f"Threat model: l2 ball of radius eps around each point, {_box_text(ctx)}" + (
        "."
        if ctx.config.box
        else " (Section 3 of the paper; -o lower-bounds.box=true "
        "keeps collisions inside the data's bounds)."
    )


def _curves(result: Result, values: np.ndarray, loss: str, unit: str) -> Plot:
    return Plot(
        id=f"lower-bound-{loss}",
        title=f"Lower bound on the robust {loss} loss of any classifier on each prefix",
        x_label="eps (l2)",
        y_label=f"{loss} loss lower bound ({unit})",
        series=tuple(
            Series(p.name, floats(row), floats(result.eps_grid), "step")
            for p, row in zip(result.prefixes, values, strict=True)
        ),
    )


def bound_finding(ctx: AuditContext, result: Result) -> Finding:
    config: LowerBoundsConfig = ctx.config
    deepest = result.prefixes[-1]
    zero_one, entropy = result.at_eps0(result.zero_one), result.at_eps0(result.entropy)
    bound = float(zero_one[-1])
    judged = grade(
        bound, "zero_one_lower_bound", "<=", fail=config.fail_above, warn=config.warn_above
    )
    metrics = [
        Metric("classes", ",".join(result.task.names)),
        Metric("points", result.n, "samples"),
        Metric("pairs", len(result.pairs), "pairs"),
        Metric("zero_one_lower_bound", bound, "fraction", f"deepest prefix {deepest.name}"),
        Metric("cross_entropy_lower_bound", float(entropy[-1]), "nats"),
        Metric(
            "robust_accuracy_ceiling",
            1.0 - bound,
            "fraction",
            "no classifier on the deepest prefix (the model included) does better",
        ),
        Metric("input_space_zero_one_lower_bound", float(zero_one[0]), "fraction"),
        Metric("input_space_cross_entropy_lower_bound", float(entropy[0]), "nats"),
    ]
    metrics += [
        Metric(f"zero_one_lower_bound@{e:g}", float(v), "fraction")
        for e, v in zip(result.eps_grid, result.zero_one[-1], strict=True)
    ]
    summary = (
        f"At l2 eps {result.eps0:g}, any classifier built on the model's features "
        f"(prefix {deepest.name}) misclassifies at least {bound:.1%} of the audit points "
        f"under attack (cross-entropy >= {entropy[-1]:.4g} nats; input space alone: "
        f"{zero_one[0]:.1%}), so the model's robust accuracy on {_task_text(result)} against "
        f"an l2 adversary {_box_text(ctx)} is at most {1 - bound:.1%}. {CAVEAT}"
    )
    return ctx.finding(
        "robust-loss",
        title=f"Lower bound on the robust loss of any classifier at eps {result.eps0:g} (l2)",
        status=judged.status,
        severity=judged.severity,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        threshold=judged.threshold,
        evidence=Evidence(
            plots=(
                _curves(result, result.entropy, "cross-entropy", "nats"),
                _curves(result, result.zero_one, "0-1", "fraction"),
            ),
            notes=(_threat_model(ctx), _WEIGHTS),
        ),
        remediation=(
            "The bound holds for every classifier on these features: retraining only the "
            "head cannot beat it. Robust training of the layers named in the layer finding, "
            "or wider (less dimension-reducing) layers, can lower it."
        ),
    )


def layer_finding(ctx: AuditContext, result: Result) -> Finding:
    """Section 4.2: how much each prefix's bound exceeds the input-space bound, per layer."""
    entropy, zero_one = result.at_eps0(result.entropy), result.at_eps0(result.zero_one)
    best, rise = layer_contribution(entropy)
    full = saturation_prefix(entropy)
    names = [p.name for p in result.prefixes]
    excess = ", ".join(
        f"{name} {ce - entropy[0]:+.4g}" for name, ce in zip(names[1:], entropy[1:], strict=True)
    )
    metrics = []
    for name, ce, zo in zip(names, entropy, zero_one, strict=True):
        metrics += [
            Metric(f"cross_entropy_lower_bound[{name}]", float(ce), "nats"),
            Metric(f"zero_one_lower_bound[{name}]", float(zo), "fraction"),
            Metric(f"excess_over_input[{name}]", float(ce - entropy[0]), "nats"),
        ]
    if rise <= 1e-9:
        summary = (
            f"At l2 eps {result.eps0:g} no layer raises the lower bound above the input-space "
            f"bound ({entropy[0]:.4g} nats, 0-1 {zero_one[0]:.1%}) with the collisions found. "
            f"{CAVEAT}"
        )
    else:
        summary = (
            f"At l2 eps {result.eps0:g}, layer {names[best]} raises the cross-entropy lower "
            f"bound the most: {entropy[best - 1]:.4g} nats after {names[best - 1]} -> "
            f"{entropy[best]:.4g} nats (+{rise:.4g}); the 0-1 bound goes "
            f"{zero_one[best - 1]:.1%} -> {zero_one[best]:.1%}. Excess of each prefix over "
            f"the input-space bound ({entropy[0]:.4g} nats, 0-1 {zero_one[0]:.1%}): {excess} "
            f"nats; the deepest prefix's bound is reached at {names[full]}. {CAVEAT}"
        )
    metrics += [
        Metric("worst_layer", names[best] if rise > 1e-9 else "none"),
        Metric("worst_layer_rise", rise, "nats", "rise over the previous prefix at eps"),
        Metric("worst_layer_excess_over_input", float(entropy[best] - entropy[0]), "nats"),
        Metric("deepest_bound_reached_at", names[full]),
    ]
    return ctx.finding(
        "layer-contribution",
        title=f"Layer that costs the most robustness at eps {result.eps0:g}",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            plots=(_curves(result, result.entropy, "cross-entropy", "nats"),),
            notes=(
                "Section 4.2: the input-space bound holds for all classifiers; the excess of a "
                "prefix's bound over it measures the robustness lost by the layers up to it, "
                "and the rise over the previous prefix what the last layer adds.",
            ),
        ),
    )


def collision_finding(ctx: AuditContext, result: Result) -> Finding:
    summaries, notes, metrics = [], [], []
    for p, c in zip(result.prefixes, result.collisions, strict=True):
        finite = c.eps[np.isfinite(c.eps)]
        summaries.append(summarize(f"eps_f [{p.name}]", finite, "l2"))
        within = int(np.sum(c.eps <= result.eps0))
        metrics.append(Metric(f"edges_at_eps[{p.name}]", within, "pairs"))
        stats = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in c.stats.items()
        )
        extra = f" ({p.note})" if p.note else ""
        notes.append(f"{p.name} [{p.kind}{extra}]: {stats}")
    deepest = result.collisions[-1]
    median = float(np.median(deepest.eps[np.isfinite(deepest.eps)]))
    summary = (
        f"Median collision distance {median:.4g} (l2) at the deepest prefix "
        f"{result.prefixes[-1].name} vs {np.median(result.collisions[0].eps):.4g} in input "
        f"space; {int(np.sum(deepest.eps <= result.eps0))} of {len(result.pairs)} pairs "
        f"collide within eps {result.eps0:g}. Every edge is a collision f(u~) = f(v~) verified "
        f"in float64. {CAVEAT}"
    )
    return ctx.finding(
        "collisions",
        title="Collision distances per prefix",
        status=Status.PASS,
        severity=Severity.INFO,
        method=Method.CERTIFIED,
        summary=summary,
        metrics=metrics,
        evidence=Evidence(
            summaries=tuple(summaries),
            examples=_closest_collision(ctx, result),
            notes=tuple(notes),
        ),
    )


def _closest_collision(ctx: AuditContext, result: Result) -> tuple[Example, ...]:
    deepest = result.collisions[-1]
    if not np.isfinite(deepest.eps).any():
        return ()
    i = int(np.argmin(deepest.eps))
    a, b = int(result.pairs.a[i]), int(result.pairs.b[i])
    images = {}
    shape = image_shape(ctx.data)
    if shape is not None:
        for caption, sample in (
            ("u", result.pairs.x[a]),
            ("u + delta", deepest.u_tilde[i]),
            ("v", result.pairs.x[b]),
            ("v + delta'", deepest.v_tilde[i]),
        ):
            images[caption] = image_rows(as_image(sample, shape))
    values = {
        "collision_distance": float(deepest.eps[i]),
        "input_half_distance": float(result.collisions[0].eps[i]),
        "other_index": int(ctx.data.indices[b]),
        "prefix": result.prefixes[-1].name,
    }
    return (Example(int(ctx.data.indices[a]), int(ctx.data.y[a]), values, images),)
