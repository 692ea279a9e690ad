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
   carry over from a prefix to every longer one (``_lower_bounds_collisions``);
2. per budget eps the conflict graph (networkx) of the verified collisions and,
   from Lemma 1, the smallest robust 0-1 loss (maximum matching, Konig) and
   cross-entropy loss (convex program, dual-certified) of ANY classifier g o f,
   uniform weights over the audit points of the two classes
   (``_lower_bounds_graph``);
3. layer-wise curves of these bounds against eps, and the layer whose prefix
   raises the bound the most at the audit eps (Section 4.2).

The bounds use the collisions found, a subgraph of the true conflict graph, so
they are valid lower bounds (possibly loose). The threat model is the l2 ball
without input-box constraints (Section 3, X~ = R^n). For the model itself, the
deepest prefix's 0-1 bound is a certified ceiling on its robust accuracy:
robust accuracy <= 1 - bound on these points.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.analysis import Analysis, AuditContext, Requirements, check_config
from audit_core.data import AuditData
from audit_core.errors import NotApplicable
from audit_core.evidence import as_image, image_shape
from audit_core.findings import (
    Evidence,
    Example,
    Finding,
    Method,
    Metric,
    Plot,
    Reference,
    Series,
    Severity,
    Status,
    floats,
    image_rows,
    summarize,
)
from audit_core.grading import grade
from audit_core.graph import LayerGraph
from audit_core.hookspecs import hookimpl
from audit_plugins._lower_bounds_collisions import (
    Collisions,
    Pairs,
    SearchSettings,
    half_distances,
    prefix_collisions,
)
from audit_plugins._lower_bounds_descent import DescentSettings
from audit_plugins._lower_bounds_graph import bound_curves
from audit_plugins._lower_bounds_prefix import AFFINE, RELU, Prefix, build_prefixes

__version__ = "0.1.0"

CAVEAT = (
    "The bounds use only the verified collisions found (a subgraph of the true conflict "
    "graph), so they are valid lower bounds; the true minimum robust loss may be higher."
)
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
    workers: int = 0
    """Processes for the descents; 0: all cores when there is enough work."""
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
                "workers": 0,
                "max_matrix_entries": 1,
                "max_search_size": 0,
            },
            positive=("collision_rtol", "dual_tol"),
            choices={"solver": ("clarabel", "cvxpy")},
        )


@dataclass
class Task:
    """The two-class task: positions of each class's points in the audit data."""

    classes: tuple[int, int]
    names: tuple[str, str]
    reason: str
    pos_a: np.ndarray
    pos_b: np.ndarray


@dataclass
class Result:
    """Everything the findings and the export need."""

    task: Task
    pairs: Pairs
    local_a: np.ndarray
    local_b: np.ndarray
    prefixes: tuple[Prefix, ...]
    collisions: list[Collisions]
    eps_grid: np.ndarray
    zero_one: np.ndarray
    entropy: np.ndarray
    edges: np.ndarray
    eps0: float

    @property
    def n(self) -> int:
        return len(self.task.pos_a) + len(self.task.pos_b)

    def at_eps0(self, curves: np.ndarray) -> np.ndarray:
        return curves[:, int(np.flatnonzero(self.eps_grid == self.eps0)[0])]


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
        result = analyse(ctx)
        ctx.export("lower_bounds", **export_arrays(result, ctx.data.indices))
        yield _bound_finding(ctx, result)
        yield _layer_finding(ctx, result)
        yield _collision_finding(ctx, result)

    def headline(self, findings: tuple[Finding, ...]) -> str:
        return findings[0].summary.split(". ")[0] + "." if findings else ""


# ------------------------------------------------------------------ the task


def choose_task(graph: LayerGraph, data: AuditData, option: str) -> Task:
    """The class pair: the model's two classes, the user's pair, or the most confused one."""
    k = graph.num_classes
    names = data.class_names if len(data.class_names) == k else tuple(str(i) for i in range(k))
    if option.strip():
        pair, reason = _parse_pair(option, names), "chosen with lower-bounds.classes"
    elif k == 2:
        pair, reason = (0, 1), "binary model"
    else:
        pair, reason = _most_confused(graph, data, k), "most confused pair on the audit data"
    pos_a, pos_b = np.flatnonzero(data.y == pair[0]), np.flatnonzero(data.y == pair[1])
    if len(pos_a) == 0 or len(pos_b) == 0:
        missing = names[pair[0]] if len(pos_a) == 0 else names[pair[1]]
        raise NotApplicable(
            f"no audit sample of class {missing} (pair {names[pair[0]]},{names[pair[1]]})"
        )
    return Task(pair, (names[pair[0]], names[pair[1]]), reason, pos_a, pos_b)


def _parse_pair(option: str, names: tuple[str, ...]) -> tuple[int, int]:
    parts = [p.strip() for p in option.split(",")]
    if len(parts) != 2:
        raise NotApplicable(f"lower-bounds.classes must name two classes, got {option!r}")
    pair = tuple(_class_index(p, names) for p in parts)
    if pair[0] == pair[1]:
        raise NotApplicable(f"lower-bounds.classes names the same class twice ({option!r})")
    return tuple(sorted(pair))  # type: ignore[return-value]


def _class_index(text: str, names: tuple[str, ...]) -> int:
    if text in names:
        return names.index(text)
    if text.isdigit() and int(text) < len(names):
        return int(text)
    raise NotApplicable(f"unknown class {text!r} (classes: {', '.join(names)})")


def _most_confused(graph: LayerGraph, data: AuditData, k: int) -> tuple[int, int]:
    """Largest C[i, j] + C[j, i] of the confusion matrix; ties broken by softmax mass."""
    with torch.no_grad():
        logits = graph.forward(data.x).reshape(len(data.x), -1)
    probs = torch.softmax(logits, dim=1).numpy()
    predicted = logits.argmax(1).numpy()
    counts = np.zeros((k, k))
    np.add.at(counts, (data.y, predicted), 1.0)
    soft = np.zeros((k, k))
    np.add.at(soft, data.y, probs)
    present = set(np.unique(data.y).tolist())
    candidates = [(i, j) for i, j in itertools.combinations(range(k), 2) if {i, j} <= present]
    if not candidates:
        raise NotApplicable("the audit data hold fewer than two classes")
    return max(candidates, key=lambda p: (counts[p] + counts[p[::-1]], soft[p] + soft[p[::-1]]))


def select_pairs(task: Task, x: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Local indices (into class a, class b) of the analysed pairs: all, or the closest."""
    distances = half_distances(x[task.pos_a], x[task.pos_b])
    local_a, local_b = np.divmod(np.arange(distances.size), distances.shape[1])
    if limit and distances.size > limit:
        keep = np.sort(np.argpartition(distances.ravel(), limit - 1)[:limit])
        local_a, local_b = local_a[keep], local_b[keep]
    return local_a, local_b


def eps_grid(ctx: AuditContext) -> np.ndarray:
    """Budgets of the curves: the user's grid (or a default one) plus every --eps."""
    config: LowerBoundsConfig = ctx.config
    if config.eps_grid:
        grid = [float(e) for e in config.eps_grid]
    else:
        top = config.grid_max or 2.5 * max(ctx.eps)
        grid = list(np.linspace(0.0, top, max(2, config.grid_points)))
    return np.unique(np.array(grid + [float(e) for e in ctx.eps]))


# ------------------------------------------------------------------ analysis


def analyse(ctx: AuditContext) -> Result:
    config: LowerBoundsConfig = ctx.config
    graph, data = ctx.model.graph, ctx.data
    task = choose_task(graph, data, config.classes)
    x = np.ascontiguousarray(data.flat, dtype=np.float64)
    local_a, local_b = select_pairs(task, x, config.max_pairs)
    pairs = Pairs(x, task.pos_a[local_a], task.pos_b[local_b])
    grid = eps_grid(ctx)
    prefixes = build_prefixes(graph, config.max_matrix_entries, config.max_search_size)
    settings = SearchSettings(
        max_budget=float(grid.max()),
        descent=DescentSettings(config.max_steps, config.dual_tol, config.solver),
        rtol=config.collision_rtol,
        workers=config.workers,
        bounds=(float(data.lower), float(data.upper)) if config.box else None,
    )
    collisions = _all_collisions(ctx, graph, prefixes, pairs, settings)
    distances = np.array([c.eps for c in collisions])
    ctx.progress.note("conflict graphs and bounds")
    zero_one, entropy, edges = bound_curves(
        distances, local_a, local_b, len(task.pos_a), len(task.pos_b), grid
    )
    return Result(
        task,
        pairs,
        local_a,
        local_b,
        prefixes,
        collisions,
        grid,
        zero_one,
        entropy,
        edges,
        float(ctx.eps[0]),
    )


def _all_collisions(
    ctx: AuditContext,
    graph: LayerGraph,
    prefixes: tuple[Prefix, ...],
    pairs: Pairs,
    settings: SearchSettings,
) -> list[Collisions]:
    """Prefixes in order of depth, each starting from the previous one's collisions."""
    config: LowerBoundsConfig = ctx.config

    def searched(prefix: Prefix) -> bool:  # prefixes with a cone-program search
        return prefix.kind == RELU or (prefix.kind == AFFINE and settings.bounds is not None)

    relu_left = sum(searched(p) for p in prefixes)
    ctx.progress.total(len(pairs) * relu_left + len(prefixes))
    end = time.monotonic() + config.max_seconds
    wall_end = time.time() + config.max_seconds
    collisions: list[Collisions] = []
    for position, prefix in enumerate(prefixes):
        ctx.progress.note(f"collisions after {prefix.name}")
        share = max(0.0, end - time.monotonic()) / max(1, relu_left)
        deadline = min(wall_end, time.time() + share) if searched(prefix) else wall_end
        previous = collisions[-1] if collisions else None
        current = prefix_collisions(
            graph, prefix, position, pairs, previous, settings, deadline, ctx.progress.advance
        )
        if searched(prefix):
            relu_left -= 1
            ctx.progress.advance(len(pairs) - current.stats.get("searched", 0))
        ctx.progress.advance(1)
        collisions.append(current)
    return collisions


def export_arrays(result: Result, indices: np.ndarray) -> dict[str, np.ndarray]:
    """``--export``: pair indices, per-prefix collision distances, per-prefix per-eps bounds.

    ``pair_position``: positions of each pair's points in the audit data (class a
    first); ``pair_index``: their indices in the data file; ``pair_local``: their
    indices within each class.
    """
    data_positions = np.stack([result.pairs.a, result.pairs.b], axis=1)
    return {
        "classes": np.array(result.task.classes),
        "pair_position": data_positions,
        "pair_index": np.asarray(indices)[data_positions],
        "pair_local": np.stack([result.local_a, result.local_b], axis=1),
        "prefix_node": np.array([p.node for p in result.prefixes]),
        "prefix_name": np.array([p.name for p in result.prefixes]),
        "prefix_kind": np.array([p.kind for p in result.prefixes]),
        "collision_distance": np.array([c.eps for c in result.collisions]),
        "found_at_prefix": np.array([c.found_at for c in result.collisions]),
        "eps": result.eps_grid,
        "zero_one_bound": result.zero_one,
        "cross_entropy_bound": result.entropy,
        "edges": result.edges,
    }


# ------------------------------------------------------------------ findings


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


def _bound_finding(ctx: AuditContext, result: Result) -> Finding:
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


def layer_contribution(values: np.ndarray) -> tuple[int, float]:
    """Prefix index with the largest rise over the previous prefix, and that rise."""
    rises = np.diff(values)
    if rises.size == 0:
        return 0, 0.0
    best = int(np.argmax(rises)) + 1
    return best, float(rises[best - 1])


def saturation_prefix(values: np.ndarray, tol: float = 1e-9) -> int:
    """The shortest prefix whose bound is already the deepest prefix's (largest) bound."""
    return int(np.flatnonzero(values >= values[-1] - tol)[0])


def _layer_finding(ctx: AuditContext, result: Result) -> Finding:
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


def _collision_finding(ctx: AuditContext, result: Result) -> Finding:
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


@hookimpl
def audit_register_analyses(register) -> None:
    register(LowerBounds())
