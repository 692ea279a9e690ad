"""Independent evidence for the soundness tests of bound propagation and the complete
search (importable as ``soundness_oracles``; a test helper, never used by the audit).

Nothing here calls ``audit_core.attacks`` or ``audit_core.bounds``:

* ``pgd``: projected gradient descent on the classification margin, float64, on the
  layer graph's forward pass, with random restarts, projecting EXACTLY onto the l2 ball
  or linf box intersected with the input bounds (``project``);
* ``Runtime``: an onnxruntime session built here (float32, the deployed model);
* ``exact_distance``: the true minimal adversarial distance (l2 or linf, within input
  bounds) of a small dense ReLU / LeakyReLU net given by its weights, by enumerating
  every linear region that meets the search box (LP feasibility with HiGHS, stable
  neurons detected by two LPs per neuron) and solving, per region and rival class,
  the convex distance problem (an LP for linf, a QP with CLARABEL for l2);
* ``onnx_dense_layers``: the weights of a Gemm/MatMul/Add/Relu/LeakyRelu onnx file read
  with ``onnx.numpy_helper`` (not the project's loader).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cvxpy as cp
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from scipy.optimize import linprog

Tensor = torch.Tensor


# --------------------------------------------------------------------------- margins


def margins(logits: Tensor, labels: Tensor) -> Tensor:
    """``(N,)``: label logit minus the best other one (single logit: ``+-logit``, class 1
    where the logit is > 0). Negative: misclassified for sure (ties aside)."""
    logits = logits.reshape(len(logits), -1)
    labels = labels.long()
    if logits.shape[1] == 1:
        return (2.0 * labels.to(logits.dtype) - 1.0) * logits[:, 0]
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], -torch.inf)
    return true - others.amax(1)


def predicted(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits).reshape(len(logits), -1)
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return logits.argmax(1)


# --------------------------------------------------------------------------- projection


def project(y: Tensor, center: Tensor, eps: Tensor, norm: str, lower, upper) -> Tensor:
    """Exact Euclidean projection of ``y`` ``(N, D)`` onto ``{x : ||x - center|| <= eps,
    lower <= x <= upper}`` (``center`` inside the bounds).

    linf: clip to the intersected box. l2 (KKT): ``x(t) = clip(center + t (y - center))``
    for the largest t in [0, 1] with ``||x(t) - center|| <= eps``; ``||x(t) - center||^2 =
    t^2 A_k + B_k`` between the sorted t at which coordinates reach a bound (A_k: squared
    steps of the free coordinates, B_k: squared rooms of the clipped ones), so t solves
    one quadratic on the right segment. A final pull towards the centre absorbs rounding:
    the result is always feasible."""
    lower = torch.as_tensor(lower, dtype=y.dtype)
    upper = torch.as_tensor(upper, dtype=y.dtype)
    radius = eps.reshape(-1, 1)
    if norm == "linf":
        low = torch.maximum(center - radius, lower)
        high = torch.minimum(center + radius, upper)
        return torch.minimum(torch.maximum(y, low), high)
    step = y - center
    room = torch.where(step > 0, upper - center, center - lower).clamp_min(0.0)
    size = step.abs()
    reach = torch.where(size > 0, room / torch.where(size > 0, size, 1.0), torch.inf)
    reach, order = reach.sort(dim=1)
    size2 = (size * size).gather(1, order)
    room2 = torch.nan_to_num((room * room).gather(1, order), posinf=0.0)  # reached: finite
    free = size2.flip(1).cumsum(1).flip(1)  # A_k: coordinates k.. still free
    clipped = torch.cat([torch.zeros_like(room2[:, :1]), room2.cumsum(1)[:, :-1]], dim=1)
    eps2 = (eps * eps)[:, None]
    t = torch.sqrt(((eps2 - clipped) / free.clamp_min(1e-300)).clamp_min(0.0))
    start = torch.cat([torch.zeros_like(reach[:, :1]), reach[:, :-1]], dim=1)
    valid = (t >= start) & (t <= reach) & (clipped <= eps2)
    choice = torch.where(valid, t, torch.inf).amin(dim=1, keepdim=True)
    choice = torch.nan_to_num(choice, posinf=1.0).clamp(0.0, 1.0)
    out = torch.minimum(torch.maximum(center + choice * step, lower), upper)
    length = (out - center).norm(dim=1, keepdim=True)
    scale = torch.clamp(radius / length.clamp_min(1e-300), max=1.0)
    # clipping into the bounds only moves coordinates towards the centre (it is inside)
    return torch.minimum(torch.maximum(center + (out - center) * scale, lower), upper)


# --------------------------------------------------------------------------- PGD


@dataclass(frozen=True)
class PgdResult:
    margin: np.ndarray
    """``(N,)`` the smallest float64 margin seen at a feasible point."""
    point: np.ndarray
    """``(N, D)`` that point (inside the set)."""


def pgd(
    forward,
    center: np.ndarray,
    labels: np.ndarray,
    eps: np.ndarray | float,
    norm: str,
    lower: float = 0.0,
    upper: float = 1.0,
    *,
    steps: int = 60,
    restarts: int = 4,
    seed: int = 0,
) -> PgdResult:
    """Minimise the margin over each set ``||x - center[n]|| <= eps[n]`` within the
    bounds. ``forward``: float64 ``(N, D)`` tensor -> logits (differentiable). Restart 0
    starts at the centre, the others at random points of the set; steps shrink from
    ``eps`` to ``eps / 50`` (sign steps for linf, normalised gradients for l2)."""
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.as_tensor(np.asarray(center, dtype=np.float64)).reshape(len(center), -1)
    x0 = torch.minimum(torch.maximum(x0, torch.tensor(lower)), torch.tensor(upper))
    y = torch.as_tensor(np.asarray(labels)).long()
    eps_t = torch.as_tensor(np.broadcast_to(np.asarray(eps, np.float64), (len(x0),)).copy())
    best = torch.full((len(x0),), torch.inf, dtype=torch.float64)
    best_point = x0.clone()
    with torch.no_grad():
        start_margin = margins(forward(x0), y)
    best = torch.minimum(best, start_margin)
    for restart in range(restarts):
        if restart == 0:
            x = x0.clone()
        elif norm == "linf":
            noise = torch.rand(x0.shape, generator=gen, dtype=torch.float64) * 2 - 1
            x = project(x0 + noise * eps_t[:, None], x0, eps_t, norm, lower, upper)
        else:
            noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
            noise = noise / noise.norm(dim=1, keepdim=True)
            x = project(x0 + noise * eps_t[:, None], x0, eps_t, norm, lower, upper)
        for step in range(steps):
            size = eps_t * (0.02 + 0.98 * (1 - step / max(1, steps - 1)) ** 2)
            x = x.detach().requires_grad_(True)
            value = margins(forward(x), y)
            better = value.detach() < best
            best = torch.where(better, value.detach(), best)
            best_point = torch.where(better[:, None], x.detach(), best_point)
            (grad,) = torch.autograd.grad(value.sum(), x)
            grad = torch.nan_to_num(grad)
            if norm == "linf":
                move = -torch.sign(grad)
            else:
                move = -grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-300)
            x = project(x.detach() + size[:, None] * move, x0, eps_t, norm, lower, upper)
        with torch.no_grad():
            value = margins(forward(x), y)
        better = value < best
        best = torch.where(better, value, best)
        best_point = torch.where(better[:, None], x, best_point)
    return PgdResult(best.numpy(), best_point.numpy())


def graph_forward(graph):
    """The layer graph's float64 forward pass on flat rows (differentiable)."""

    def forward(x: Tensor) -> Tensor:
        return graph.forward(x.reshape(len(x), *graph.input_shape)).reshape(len(x), -1)

    return forward


def distance(points: np.ndarray, center: np.ndarray, norm: str) -> np.ndarray:
    step = np.asarray(points, np.float64) - np.asarray(center, np.float64)
    step = step.reshape(len(step), -1)
    return np.linalg.norm(step, ord=2 if norm == "l2" else np.inf, axis=1)


# --------------------------------------------------------------------------- onnxruntime


class Runtime:
    """The deployed model: an onnxruntime session on the file, float32, CPU."""

    def __init__(self, path: str | Path) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        model = onnx.load(str(path))
        initialisers = {i.name for i in model.graph.initializer}
        (real,) = [i for i in model.graph.input if i.name not in initialisers]
        self.name = real.name
        dims = [d.dim_value if d.HasField("dim_value") else None for d in
                real.type.tensor_type.shape.dim]  # fmt: skip
        self.dims = dims
        self.batched = dims[0] is None or dims[0] == 0

    def logits(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float32)
        n = len(points)
        if self.batched:
            shape = (n, *self.dims[1:])
            (out,) = self.session.run(None, {self.name: points.reshape(shape)})[:1]
            return np.asarray(out, np.float64).reshape(n, -1)
        rows = []
        for p in points:
            (out,) = self.session.run(None, {self.name: p.reshape(self.dims)})[:1]
            rows.append(np.asarray(out, np.float64).reshape(-1))
        return np.stack(rows)

    def predict(self, points: np.ndarray) -> np.ndarray:
        return predicted(self.logits(points))

    def confirm(self, points: np.ndarray, label: int) -> np.ndarray:
        """The search's ``confirm``: True where the deployed model misclassifies."""
        return self.predict(points) != label


# --------------------------------------------------------------------------- exact distance


@dataclass(frozen=True)
class DenseLayer:
    """``z = W x + b`` then ``act``: "relu", "leaky:<alpha>" or "none"."""

    weight: np.ndarray
    bias: np.ndarray
    act: str = "relu"

    @property
    def negative_slope(self) -> float:
        if self.act == "relu":
            return 0.0
        if self.act.startswith("leaky:"):
            return float(self.act.split(":")[1])
        raise ValueError(self.act)


def dense_forward(layers: list[DenseLayer], x: np.ndarray) -> np.ndarray:
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for layer in layers:
        h = h @ layer.weight.T + layer.bias
        if layer.act != "none":
            h = np.where(h >= 0, h, layer.negative_slope * h)
    return h


def onnx_dense_layers(path: str | Path) -> list[DenseLayer]:
    """The dense layers of a chain of MatMul/Gemm(+Add) and Relu/LeakyRelu, read from the
    file's initialisers (float32 values, as stored)."""
    model = onnx.load(str(path))
    consts = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    layers: list[DenseLayer] = []
    weight = bias = None
    for node in model.graph.node:
        if node.op_type == "MatMul":  # x @ W, or W @ x (column-vector exports)
            first, second = node.input
            weight = consts[first] if first in consts else consts[second].T
            bias = np.zeros(weight.shape[0])
        elif node.op_type == "Gemm":
            attrs = {a.name: helper_value(a) for a in node.attribute}
            w = consts[node.input[1]]
            weight = w if attrs.get("transB", 0) else w.T
            weight = weight * attrs.get("alpha", 1.0)
            bias = consts[node.input[2]] * attrs.get("beta", 1.0) if len(node.input) > 2 else 0.0
            bias = np.broadcast_to(bias, (weight.shape[0],)).astype(np.float64)
        elif node.op_type == "Add":
            (name,) = [i for i in node.input if i in consts]
            bias = bias + consts[name].reshape(-1)
        elif node.op_type in ("Relu", "LeakyRelu"):
            act = "relu"
            if node.op_type == "LeakyRelu":
                attrs = {a.name: helper_value(a) for a in node.attribute}
                act = f"leaky:{attrs.get('alpha', 0.01)}"
            layers.append(DenseLayer(weight, bias, act))
            weight = bias = None
        elif node.op_type in ("Identity", "Flatten"):
            continue
        else:
            raise ValueError(f"unsupported op {node.op_type}")
    if weight is not None:
        layers.append(DenseLayer(weight, bias, "none"))
    return layers


def helper_value(attribute):
    return onnx.helper.get_attribute_value(attribute)


@dataclass
class _Region:
    rows: list[np.ndarray]
    limits: list[float]


def exact_distance(
    layers: list[DenseLayer],
    center: np.ndarray,
    label: int,
    norm: str,
    lower: float,
    upper: float,
    reach: float,
) -> float:
    """The smallest ``||x - center||`` (``norm``) over ``lower <= x <= upper`` with the net
    not predicting ``label`` (its closure: ``logit_j >= logit_label`` for some j, or the
    sign flip of a single logit), searched within ``reach`` of the centre (inf when none
    is that close). Exact up to the LP/QP solvers' accuracy (~1e-8)."""
    center = np.asarray(center, np.float64).reshape(-1)
    dim = center.size
    box_low = np.maximum(center - reach, lower)
    box_high = np.minimum(center + reach, upper)
    best = [np.inf]

    def feasible(rows, limits) -> bool:
        if not rows:
            return True
        result = linprog(
            np.zeros(dim), A_ub=np.array(rows), b_ub=np.array(limits),
            bounds=list(zip(box_low, box_high, strict=True)), method="highs",
        )  # fmt: skip
        return result.status == 0

    def extreme(rows, limits, c: np.ndarray) -> float:
        result = linprog(
            c, A_ub=np.array(rows) if rows else None, b_ub=np.array(limits) if rows else None,
            bounds=list(zip(box_low, box_high, strict=True)), method="highs",
        )  # fmt: skip
        return float(result.fun) if result.status == 0 else np.inf

    def leaf(rows, limits, out_w: np.ndarray, out_b: np.ndarray) -> None:
        k = out_w.shape[0]
        if k == 1:
            sign = 1.0 if label == 1 else -1.0
            rivals = [(-sign * out_w[0], -sign * out_b[0])]  # need sign * logit <= 0
        else:
            rivals = [
                (out_w[j] - out_w[label], out_b[j] - out_b[label]) for j in range(k) if j != label
            ]
        for gain, offset in rivals:  # adversarial: gain . x + offset >= 0
            d = _closest([*rows, -gain], [*limits, offset], center, box_low, box_high, norm)
            best[0] = min(best[0], d)

    def descend(index: int, mat: np.ndarray, off: np.ndarray, rows, limits) -> None:
        """Layer ``index`` with input ``mat x + off`` (affine in x on this region)."""
        if index == len(layers):
            leaf(rows, limits, mat, off)
            return
        layer = layers[index]
        zm, zo = layer.weight @ mat, layer.weight @ off + layer.bias
        if layer.act == "none":
            descend(index + 1, zm, zo, rows, limits)
            return
        slope = layer.negative_slope
        sides: list[list[tuple[int, int]]] = [[]]
        for neuron in range(zm.shape[0]):
            low = extreme(rows, limits, zm[neuron]) + zo[neuron]
            high = -extreme(rows, limits, -zm[neuron]) + zo[neuron]
            if low >= 0:
                options = [1]
            elif high <= 0:
                options = [0]
            else:
                options = [1, 0]
            sides = [[*s, (neuron, o)] for s in sides for o in options]
            # prune patterns that are infeasible so far (keeps the product small)
            kept = []
            for s in sides:
                r, lim = _pattern_rows(s, zm, zo, rows, limits)
                if len(options) == 1 or feasible(r, lim):
                    kept.append(s)
            sides = kept
        for s in sides:
            r, lim = _pattern_rows(s, zm, zo, rows, limits)
            active = np.array([o for _, o in sorted(s)], dtype=np.float64)
            scale = np.where(active > 0, 1.0, slope)
            descend(index + 1, zm * scale[:, None], zo * scale, r, lim)

    descend(0, np.eye(dim), np.zeros(dim), [], [])
    return best[0]


def _pattern_rows(pattern, zm, zo, rows, limits):
    """``rows x <= limits`` plus each neuron's side: active ``z >= 0``, else ``z <= 0``."""
    rows, limits = list(rows), list(limits)
    for neuron, on in pattern:
        if on:
            rows.append(-zm[neuron])
            limits.append(zo[neuron])
        else:
            rows.append(zm[neuron])
            limits.append(-zo[neuron])
    return rows, limits


def _closest(rows, limits, center, low, high, norm: str) -> float:
    """``min ||x - center||`` over ``rows x <= limits``, ``low <= x <= high``; inf if empty."""
    dim = center.size
    a, b = np.array(rows), np.array(limits)
    if norm == "linf":  # variables (x, t): min t, |x - c| <= t
        cost = np.zeros(dim + 1)
        cost[-1] = 1.0
        eye = np.eye(dim)
        ub = np.vstack([
            np.hstack([a, np.zeros((len(a), 1))]),
            np.hstack([eye, -np.ones((dim, 1))]),
            np.hstack([-eye, -np.ones((dim, 1))]),
        ])  # fmt: skip
        lim = np.concatenate([b, center, -center])
        bounds = [*zip(low, high, strict=True), (0, None)]
        result = linprog(cost, A_ub=ub, b_ub=lim, bounds=bounds, method="highs")
        return float(result.fun) if result.status == 0 else np.inf
    if not _has_point(a, b, low, high):
        return np.inf
    x = cp.Variable(dim)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - center)), [a @ x <= b, x >= low, x <= high])
    problem.solve(solver=cp.CLARABEL)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        return np.inf
    return float(np.sqrt(max(problem.value, 0.0)))


def _has_point(a, b, low, high) -> bool:
    result = linprog(
        np.zeros(a.shape[1]), A_ub=a, b_ub=b, bounds=list(zip(low, high, strict=True)),
        method="highs",
    )  # fmt: skip
    return result.status == 0


def spec_pgd(
    forward,
    center: np.ndarray,
    specs: np.ndarray,
    eps: np.ndarray | float,
    norm: str,
    lower: float = 0.0,
    upper: float = 1.0,
    **options,
) -> np.ndarray:
    """``(N, S)``: PGD's smallest value of each ``specs[n, s] . logits(x)`` over sample n's
    set (one attack per spec; a sound lower bound of the spec can never exceed it)."""
    center = np.asarray(center, np.float64).reshape(len(center), -1)
    count, per = specs.shape[:2]
    rows = torch.as_tensor(np.asarray(specs, np.float64).reshape(count * per, -1))
    eps_rows = np.repeat(np.broadcast_to(np.asarray(eps, np.float64), (count,)), per)

    def value(x: Tensor) -> Tensor:  # one "logit" per row, label 1: the margin is the spec
        return (forward(x).reshape(len(x), -1) * rows).sum(1, keepdim=True)

    found = pgd(
        value, np.repeat(center, per, axis=0), np.ones(count * per, np.int64), eps_rows, norm,
        lower, upper, **options,
    )  # fmt: skip
    return found.margin.reshape(count, per)


def minimal_distance(
    layers: list[DenseLayer],
    center: np.ndarray,
    label: int,
    norm: str,
    lower: float,
    upper: float,
    reach: float,
    samples: int = 4000,
    seed: int = 0,
) -> float:
    """``exact_distance`` with its search box shrunk to the closest misclassified point of
    a uniform sample of the box (an upper bound of the exact distance; far fewer regions
    to enumerate)."""
    center = np.asarray(center, np.float64).reshape(-1)
    rng = np.random.default_rng(seed)
    low = np.maximum(center - reach, lower)
    high = np.minimum(center + reach, upper)
    points = rng.uniform(low, high, (samples, center.size))
    wrong = predicted(dense_forward(layers, points)) != label
    if wrong.any():
        reach = min(reach, float(distance(points[wrong], center[None], norm).min()) * (1 + 1e-9))
    return exact_distance(layers, center, label, norm, lower, upper, reach)
