"""The lower-bounds analysis's numbers on the audit data (feature-extractor lower bounds,
Sections 2-4): the two-class task, the analysed pairs, the budgets, every prefix's verified
collisions (``collisions``), the bound curves per prefix (``graph``, Lemma 1) and the
layer-wise reading of Section 4.2, in one ``Result`` the findings read."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.analysis import AuditContext
from audit_core.data import AuditData
from audit_core.errors import NotApplicable
from audit_core.graph import LayerGraph
from audit_plugins.lower_bounds import LowerBoundsConfig
from audit_plugins.lower_bounds.collisions import (
    Collisions,
    Pairs,
    SearchSettings,
    half_distances,
    prefix_collisions,
)
from audit_plugins.lower_bounds.descent import DescentSettings
from audit_plugins.lower_bounds.graph import bound_curves
from audit_plugins.lower_bounds.prefix import AFFINE, RELU, Prefix, build_prefixes


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
            graph,
            prefix,
            position,
            pairs,
            previous,
            settings,
            deadline,
            ctx.progress.advance,
            ctx.executor,
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


# ------------------------------------------------------------------ layer-wise reading


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
