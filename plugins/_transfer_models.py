"""Model-to-model transfer (Charles, Rosenberg & Papailiopoulos 2019, Section 7).

Helpers of ``audit_plugins.transfer`` (model transfer): every source model (and
optional linear-SVM surrogates trained on the audit data) makes adversarial
examples with iterated FGSM (or PGD) at each eps of a grid, in one batched attack
call per source and norm; every target model is evaluated on all of them (layer
graph, float64), beside random perturbations of the same norm. All inputs are flat
``(N, D)``; each model sees them in its own input shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from audit_core.attacks import iterated_fgsm, pgd
from audit_core.graph import LayerGraph

_PREDICT_ROWS = 8192


class FlatModule(torch.nn.Module):
    """A logits module that takes flat rows ``(N, D)`` and returns ``(N, K)``."""

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]):
        super().__init__()
        self.inner = module
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x.reshape(x.shape[0], *self.shape))
        return out.reshape(out.shape[0], -1)


class LinearModule(torch.nn.Module):
    """``x W^T + b`` in float64 (a linear-SVM surrogate)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.weight = torch.as_tensor(weight, dtype=torch.float64)
        self.bias = torch.as_tensor(bias, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias


def predict(graph: LayerGraph, x: np.ndarray) -> np.ndarray:
    """Labels of flat rows ``x`` by the layer graph (float64), in chunks."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(
        [graph.predict(x[s : s + _PREDICT_ROWS]) for s in range(0, len(x), _PREDICT_ROWS)]
    )


@dataclass(frozen=True)
class AttackPlan:
    """How adversarial examples are made (paper: 40 iterations of step 0.01 in linf)."""

    attack: str
    steps: int
    linf_step: float
    """Absolute linf step size (the paper's gamma; at least eps / steps)."""
    lower: float
    upper: float


def adversarial(
    model: torch.nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    eps: np.ndarray,
    norm: str,
    plan: AttackPlan,
    generator: torch.Generator,
) -> np.ndarray:
    """Adversarial examples ``(G, N, D)``: one batched attack over every eps of the grid."""
    grid, n = len(eps), len(x)
    xs = torch.as_tensor(np.tile(x, (grid, 1)), dtype=torch.float64)
    ys = torch.as_tensor(np.tile(y, grid), dtype=torch.int64)
    radius = torch.as_tensor(np.repeat(eps, n), dtype=torch.float64)
    if norm == "linf":  # the paper's gamma, raised where `steps` steps could not reach eps
        step = torch.clamp(radius / plan.steps, min=plan.linf_step)
    else:
        step = 2.5 * radius / plan.steps
    bounds = {"lower": plan.lower, "upper": plan.upper}
    if plan.attack == "pgd":
        result = pgd(
            model,
            xs,
            ys,
            radius,
            norm=norm,
            steps=plan.steps,
            step_size=step,
            generator=generator,
            **bounds,
        )
    else:
        result = iterated_fgsm(
            model, xs, ys, radius, norm=norm, steps=plan.steps, step_size=step, **bounds
        )
    return result.x_adv.numpy().reshape(grid, n, -1)


def random_perturbations(
    x: np.ndarray, eps: np.ndarray, norm: str, bounds: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """``x + eps r`` clipped to the bounds, ``r`` a random sign vector (linf) or a random
    unit vector (l2): the same norm as the adversarial perturbations before clipping."""
    shape = (len(eps), *x.shape)
    if norm == "linf":
        r = rng.choice(np.array([-1.0, 1.0]), size=shape)
    else:
        r = rng.standard_normal(shape)
        r /= np.linalg.norm(r, axis=2, keepdims=True)
    return np.clip(x[None] + eps[:, None, None] * r, *bounds)


def accuracy_grid(graph: LayerGraph, x_grid: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Accuracy ``(G,)`` of ``graph`` on each ``(N, D)`` slice of ``x_grid``."""
    grid, n, d = x_grid.shape
    labels = predict(graph, x_grid.reshape(grid * n, d)).reshape(grid, n)
    return (labels == y[None]).mean(axis=1)


def svm_surrogates(
    x: np.ndarray, y: np.ndarray, classes: int, count: int, c: float, rng: np.random.Generator
) -> list[tuple[str, LinearModule]]:
    """``count`` LinearSVCs (one-vs-rest, as in Section 7) on disjoint random parts of the
    audit data; each as a float64 logits module with the project's decision rule."""
    from sklearn.svm import LinearSVC

    parts = np.array_split(rng.permutation(len(y)), count)
    surrogates = []
    for number, part in enumerate(parts):
        if len(np.unique(y[part])) < 2:
            continue
        svm = LinearSVC(C=c, random_state=0, max_iter=20000).fit(x[part], y[part])
        weight, bias = _full_rows(svm.coef_, svm.intercept_, svm.classes_, classes)
        surrogates.append((f"svm-{number}", LinearModule(weight, bias)))
    return surrogates


def _full_rows(
    coef: np.ndarray, intercept: np.ndarray, present: np.ndarray, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logit rows for all ``classes`` (a class absent from the part never wins)."""
    if classes == 2 and coef.shape[0] == 1 and list(present) == [0, 1]:
        return coef, intercept
    weight = np.zeros((classes, coef.shape[1]))
    bias = np.full(classes, -1e6)
    if coef.shape[0] == 1:  # two classes present out of more
        weight[present[1]], bias[present[1]] = coef[0], intercept[0]
        weight[present[0]], bias[present[0]] = -coef[0], -intercept[0]
        return weight, bias
    weight[present], bias[present] = coef, intercept
    return weight, bias
