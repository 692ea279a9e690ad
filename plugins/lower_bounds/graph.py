"""Conflict graph and lower bounds on the robust loss of any classifier on a prefix.

Section 2 of the paper: for a budget eps, the conflict graph of a feature
extractor f has one vertex per audit point and an edge between points u, v of
different classes when f(N_eps(u)) and f(N_eps(v)) intersect. Lemma 1: the
correct-classification probabilities achievable by classifiers g o f form the
polytope {q : 0 <= q <= 1, B q <= 1} (B the edge incidence matrix). Minimising
an expected loss over it gives the smallest robust loss of any classifier on f.

We only know the edges of verified collisions, a subgraph of the true conflict
graph; a subgraph has fewer constraints, hence a larger polytope and a smaller
minimum: every number here is a valid lower bound (Section 2, "Approximating").

- 0-1 loss with uniform weights 1/n: minimise sum(1 - q_v) / n; on a bipartite
  graph the polytope is integral, the optimum is n - (maximum independent set),
  i.e. (minimum vertex cover) / n = (maximum matching) / n (Konig).
- cross-entropy: minimise sum(-log q_v) / n over the polytope (convex); solved
  with cvxpy, and reported through the Lagrangian dual at the solver's
  multipliers, which is a lower bound on the optimum whatever the solver's
  accuracy (weak duality).
"""

from __future__ import annotations

import math
import warnings

import networkx as nx
import numpy as np


def conflict_graph(n_a: int, n_b: int, edge_a: np.ndarray, edge_b: np.ndarray) -> nx.Graph:
    """Bipartite conflict graph: vertices ("a", i) and ("b", j), one edge per collision."""
    graph = nx.Graph()
    graph.add_nodes_from((("a", i) for i in range(n_a)), bipartite=0)
    graph.add_nodes_from((("b", j) for j in range(n_b)), bipartite=1)
    graph.add_edges_from(
        (("a", int(i)), ("b", int(j))) for i, j in zip(edge_a, edge_b, strict=True)
    )
    return graph


def maximum_matching(graph: nx.Graph) -> int:
    """Size of a maximum matching of the bipartite conflict graph (Hopcroft-Karp)."""
    if graph.number_of_edges() == 0:
        return 0
    top = [node for node in graph if node[0] == "a"]
    return len(nx.bipartite.hopcroft_karp_matching(graph, top_nodes=top)) // 2


def zero_one_bound(graph: nx.Graph, n: int) -> float:
    """Smallest robust 0-1 loss of any classifier: (maximum matching) / n (Konig)."""
    return maximum_matching(graph) / n


def cross_entropy_bound(edge_a: np.ndarray, edge_b: np.ndarray, n: int, matched: int = 0) -> float:
    """Smallest robust cross-entropy (nats, mean over n points) over Lemma 1's polytope.

    Only vertices with an edge enter the program (the others get q = 1, loss 0).
    The value returned is the dual function at the solver's multipliers lambda >= 0
    of the edge constraints: g(lambda) = sum_v phi(Lambda_v) - sum_e lambda_e with
    Lambda_v the sum of lambda over v's edges and phi(L) = min_{0 < q <= 1}
    -log(q) / n + L q, i.e. L when n L <= 1, else (1 + log(n L)) / n. It is never
    below the closed-form bound of a matching of ``matched`` edges (disjoint edges
    each force -log q_u - log q_v >= 2 log 2), which is also valid.
    """
    floor = 2.0 * math.log(2.0) * matched / n
    if len(edge_a) == 0:
        return floor
    import cvxpy as cp

    vertices_a, ia = np.unique(edge_a, return_inverse=True)
    vertices_b, ib = np.unique(edge_b, return_inverse=True)
    q = cp.Variable(len(vertices_a) + len(vertices_b))
    shift = len(vertices_a)
    edges = q[ia] + q[ib + shift] <= 1
    problem = cp.Problem(cp.Minimize(-cp.sum(cp.log(q)) / n), [edges, q <= 1])
    with warnings.catch_warnings():  # an inaccurate solve still gives a valid dual bound
        warnings.simplefilter("ignore")
        try:
            problem.solve(solver=cp.CLARABEL)
        except cp.SolverError:
            return floor
    if edges.dual_value is None:
        return floor
    multipliers = np.maximum(np.asarray(edges.dual_value, dtype=np.float64).ravel(), 0.0)
    return max(floor, dual_value(multipliers, ia, ib + shift, q.size, n))


def dual_value(lam: np.ndarray, ea: np.ndarray, eb: np.ndarray, vertices: int, n: int) -> float:
    """Lagrangian dual of the cross-entropy program at ``lam`` (a valid lower bound)."""
    load = np.bincount(ea, lam, vertices) + np.bincount(eb, lam, vertices)
    scaled = n * load
    phi = np.where(scaled <= 1.0, load, (1.0 + np.log(np.maximum(scaled, 1.0))) / n)
    return max(0.0, float(phi.sum() - lam.sum()))


def bound_curves(
    distances: np.ndarray,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    n_a: int,
    n_b: int,
    eps_grid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """0-1 and cross-entropy lower bounds and edge counts, per prefix (rows) and budget.

    ``distances`` (prefixes, pairs): verified collision distance of each pair
    (inf: none). An edge is present at budget eps when its distance is <= eps.
    Identical edge sets are solved once.
    """
    n = n_a + n_b
    shape = (len(distances), len(eps_grid))
    zero_one, entropy, edges = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64)
    cache: dict[bytes, tuple[float, float]] = {}
    for p, row in enumerate(distances):
        for e, eps in enumerate(eps_grid):
            present = np.flatnonzero(row <= eps)
            key = present.tobytes()
            if key not in cache:
                ea, eb = pair_a[present], pair_b[present]
                matched = maximum_matching(conflict_graph(n_a, n_b, ea, eb))
                cache[key] = (matched / n, cross_entropy_bound(ea, eb, n, matched))
            zero_one[p, e], entropy[p, e] = cache[key]
            edges[p, e] = len(present)
    return zero_one, entropy, edges
