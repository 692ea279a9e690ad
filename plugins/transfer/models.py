"""Model-to-model transfer (Charles, Rosenberg & Papailiopoulos 2019, Section 7).

The model-transfer analysis's numbers: every source model (and
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

from audit_core.analysis import AuditContext
from audit_core.attacks import iterated_fgsm, pgd
from audit_core.errors import ConfigError, NotApplicable
from audit_core.graph import LayerGraph
from audit_core.model import AuditedModel
from audit_plugins.transfer import ModelTransferConfig
from audit_plugins.transfer.common import predict


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


@dataclass
class TransferGrid:
    """Target accuracies ``(sources + 1, targets, G)`` on one norm's eps grid (last row:
    random perturbations)."""

    norm: str
    eps: np.ndarray
    accuracy: np.ndarray
    judged: int
    """Index of the eps the checks are judged at."""


@dataclass
class TransferResults:
    """Sources (models, surrogates), targets (the models), one grid per norm and the
    clean accuracies."""

    sources: list[str]
    targets: list[str]
    grids: list[TransferGrid]
    clean: np.ndarray

    def primary(self, norm: str) -> TransferGrid:
        """The grid the checks are judged on: ``norm``'s (``--norm``), else the first."""
        return next((g for g in self.grids if g.norm == norm), self.grids[0])


def analyse(ctx: AuditContext) -> TransferResults:
    """Adversarial examples of every source on every target, per norm and eps."""
    config: ModelTransferConfig = ctx.config
    _check_models(ctx.models)
    bad = [n for n in config.norms if n not in ("l2", "linf")]
    if bad or not config.norms or config.attack not in ("ifgsm", "pgd"):
        raise ConfigError(
            f"model-transfer: norms must be l2 or linf and attack ifgsm or pgd (got "
            f"norms {list(config.norms)}, attack {config.attack!r})"
        )
    data = ctx.data
    x, y = data.flat, data.y
    sources = [(m.name, FlatModule(m.module, m.graph.input_shape).eval()) for m in ctx.models]
    if config.svm_surrogates > 0:
        classes = ctx.models[0].graph.num_classes
        sources += svm_surrogates(x, y, classes, config.svm_surrogates, config.svm_c, ctx.rng)
    ctx.progress.total(len(config.norms) * (len(sources) + 1))
    grids = [_transfer_grid(ctx, sources, norm) for norm in config.norms]
    names = [name for name, _ in sources]
    targets = [m.name for m in ctx.models]
    clean = np.array([np.mean(predict(m.graph, x) == y) for m in ctx.models])
    return TransferResults(names, targets, grids, clean)


def _check_models(models: tuple[AuditedModel, ...]) -> None:
    first = models[0].graph
    for model in models[1:]:
        graph = model.graph
        if graph.input_size != first.input_size:
            raise NotApplicable(
                f"models take inputs of different sizes ({models[0].name}: {first.input_size}, "
                f"{model.name}: {graph.input_size})"
            )
        if graph.num_classes != first.num_classes:
            raise NotApplicable(
                f"models have different numbers of classes ({models[0].name}: "
                f"{first.num_classes}, {model.name}: {graph.num_classes})"
            )


def _eps_grid(ctx: AuditContext, norm: str) -> tuple[np.ndarray, int]:
    config: ModelTransferConfig = ctx.config
    span = ctx.data.upper - ctx.data.lower
    if norm == "linf":
        grid = [f * span for f in config.linf_eps]
    else:
        grid = [f * span * np.sqrt(ctx.data.flat.shape[1]) for f in config.l2_eps]
    if norm == ctx.norm:
        grid += list(ctx.eps)
    values = np.unique(np.round(np.asarray(grid, dtype=np.float64), 12))
    judged = ctx.eps[0] if norm == ctx.norm else values[len(values) // 2]
    return values, int(np.argmin(np.abs(values - judged)))


def _transfer_grid(ctx: AuditContext, sources: list, norm: str) -> TransferGrid:
    config: ModelTransferConfig = ctx.config
    data = ctx.data
    x, y = data.flat, data.y
    eps, judged = _eps_grid(ctx, norm)
    step = config.linf_step * (data.upper - data.lower)
    plan = AttackPlan(config.attack, config.steps, step, data.lower, data.upper)
    accuracy = np.zeros((len(sources) + 1, len(ctx.models), len(eps)))
    for s, (_, module) in enumerate(sources):
        x_adv = adversarial(module, x, y, eps, norm, plan, ctx.generator)
        for t, target in enumerate(ctx.models):
            accuracy[s, t] = accuracy_grid(target.graph, x_adv, y)
        ctx.progress.advance()
    noisy = random_perturbations(x, eps, norm, (data.lower, data.upper), ctx.rng)
    for t, target in enumerate(ctx.models):
        accuracy[-1, t] = accuracy_grid(target.graph, noisy, y)
    ctx.progress.advance()
    return TransferGrid(norm, eps, accuracy, judged)


def most_transferable(sources: list[str], targets: list[str], grid: TransferGrid) -> list[str]:
    """Per target, the other source with the lowest mean accuracy over the eps grid."""
    mean = grid.accuracy[: len(sources)].mean(axis=2)  # (S, T)
    best = []
    for t, target in enumerate(targets):
        scores = np.where(np.array(sources) == target, np.inf, mean[:, t])
        best.append(sources[int(np.argmin(scores))] if np.isfinite(scores).any() else "none")
    return best


def target_view(grid: TransferGrid, t: int) -> TransferGrid:
    """The grid restricted to target ``t``."""
    return TransferGrid(grid.norm, grid.eps, grid.accuracy[:, t : t + 1], grid.judged)


def export(ctx: AuditContext, result: TransferResults) -> None:
    """``--export``: sources, targets, clean accuracies, per norm its eps grid and accuracies."""
    sources, targets, grids, clean = result.sources, result.targets, result.grids, result.clean
    arrays: dict[str, np.ndarray] = {
        "sources": np.array([*sources, "random"]),
        "targets": np.array(targets),
        "clean_accuracy": clean,
    }
    for grid in grids:
        arrays[f"{grid.norm}_eps"] = grid.eps
        arrays[f"{grid.norm}_accuracy"] = grid.accuracy
    ctx.export("model-transfer", **arrays)
