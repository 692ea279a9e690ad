"""Deterministic trainers of the model zoo, reusable by benchmarks.

- :func:`fit`: minibatch Adam on cross-entropy (one logit: logistic loss), optionally on
  adversarial examples (l2 PGD adversarial training, Madry et al. 2018, as used for the
  robustly trained 3-layer FCNNs of the feature-extractor lower-bounds paper, Sec. 5).
- :func:`pgd_l2`, :func:`robust_accuracy`: a small l2 PGD attack (zero start, box clip).
- :func:`sphere_data`, :func:`train_depth2_exponential`: the synthetic data and the
  training recipe of Vardi et al. 2022 ("Gradient methods provably converge to
  non-robust networks"), Sec. 6.

Every trainer runs inside :func:`deterministic_torch`: fixed seed, deterministic
algorithms, one thread; the same call gives bit-identical weights on the same machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def deterministic_torch(seed: int) -> Iterator[None]:
    """Seed torch, force deterministic algorithms and one thread; restore all on exit
    (including the caller's global RNG state)."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`fit` (Adam, shuffled minibatches)."""

    epochs: int
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 0.0
    seed: int = 0


def classification_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; for a single logit the logistic loss with label 1 iff logit > 0."""
    if logits.shape[1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
    return nn.functional.cross_entropy(logits, y)


def predict(logits: torch.Tensor) -> torch.Tensor:
    """The project's decision rule: argmax for K >= 2 outputs, ``logit > 0`` for one."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def fit(
    factory: Callable[[], nn.Module],
    x: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
    attack: Attack | None = None,
) -> tuple[nn.Module, list[float]]:
    """Build ``factory()`` under ``config.seed`` and train it with Adam; returns (model, losses).

    With ``attack``, every minibatch is replaced by ``attack(model, xb, yb)`` before the
    step (PGD adversarial training, Madry et al. 2018). The model is left in eval mode.
    """
    with deterministic_torch(config.seed):
        model = factory()
        xs, ys = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        gen = torch.Generator().manual_seed(config.seed)
        losses: list[float] = []
        for _ in range(config.epochs):
            losses.append(_epoch(model, opt, xs, ys, config.batch_size, gen, attack))
    model.eval()
    return model, losses


def _epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    xs: torch.Tensor,
    ys: torch.Tensor,
    batch_size: int,
    gen: torch.Generator,
    attack: Attack | None,
) -> float:
    total = 0.0
    for idx in torch.randperm(len(xs), generator=gen).split(batch_size):
        xb, yb = xs[idx], ys[idx]
        if attack is not None:
            model.eval()
            xb = attack(model, xb, yb)
        model.train()
        loss = classification_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(xs)


def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """l2 PGD (zero start, step 2.5 eps / steps, projection then clip to ``bounds``).

    Returns the last iterate; see :func:`robust_accuracy` for the any-iterate evaluation.
    """
    return _pgd_l2(model, x, y, eps, steps, bounds)[0]


def robust_accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    steps: int = 100,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> float:
    """Fraction of samples that no iterate of :func:`pgd_l2` (nor x itself) misclassifies."""
    with deterministic_torch(0):
        _, fooled = _pgd_l2(model, torch.from_numpy(x), torch.from_numpy(y), eps, steps, bounds)
    return float((~fooled).sum()) / len(y)


def _pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    bounds: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    step_size = 2.5 * eps / steps
    delta = torch.zeros_like(x)
    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta)
        fooled |= predict(logits.detach()) != y
        (grad,) = torch.autograd.grad(classification_loss(logits, y) * len(x), delta)
        step = grad / _norms(grad).clamp_min(1e-12)
        delta = _project_l2(delta.detach() + step_size * step, eps)
        delta = (x + delta).clamp(*bounds) - x
    with torch.no_grad():
        fooled |= predict(model(x + delta)) != y
    return (x + delta).detach(), fooled


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-sample l2 norms, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    return delta * (eps / _norms(delta).clamp_min(eps))


# --- Vardi et al. 2022, Sec. 6: depth-2 ReLU nets on random points of the sphere ---------


class Depth2Fit(NamedTuple):
    """Result of :func:`train_depth2_exponential`; N(x) = v^T relu(W x + b), no output bias."""

    W: np.ndarray
    b: np.ndarray
    v: np.ndarray
    history: list[dict[str, float]]


def sphere_data(d: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m points uniform on the sphere of radius sqrt(d) in R^d and uniform labels in {-1, +1}.

    The data distribution of Vardi et al. 2022, Sec. 6 ("Dataset"); returns float64
    x (m, d) and int64 y (m,).
    """
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((m, d))
    x = math.sqrt(d) * g / np.linalg.norm(g, axis=1, keepdims=True)
    y = rng.choice(np.array([-1, 1], dtype=np.int64), size=m)
    return x, y


def train_depth2_exponential(
    x: np.ndarray,
    y_pm1: np.ndarray,
    width: int,
    seed: int,
    loss_target: float = 1e-30,
    max_iters: int = 200_000,
    lr0: float = 1e-5,
    lr_growth: float = 1.1,
    lr_every: int = 100,
) -> Depth2Fit:
    """Full-batch gradient descent on the exponential loss, the recipe of Vardi et al.
    2022, Sec. 6 (and eq. (1) of Sec. 2): L = sum_i exp(-y_i N(x_i)), float64, learning
    rate ``lr0`` multiplied by ``lr_growth`` every ``lr_every`` iterations, stop once
    L < ``loss_target`` (the paper uses 1e-30).

    Init (not specified by the paper): W_jk ~ N(0, 1/d), b = 0, v_j ~ N(0, 1/width).
    ``history`` has one record (iteration, lr, loss, min margin y_i N(x_i)) every
    ``lr_every`` iterations and one for the final state. Raises ``RuntimeError`` if the
    loss is not finite or ``max_iters`` is reached first.
    """
    with deterministic_torch(seed):
        X = torch.as_tensor(x, dtype=torch.float64)
        Y = torch.as_tensor(y_pm1, dtype=torch.float64)
        params = _depth2_init(X.shape[1], width, seed)
        history = _depth2_descent(X, Y, params, loss_target, max_iters, (lr0, lr_growth, lr_every))
    W, b, v = (p.numpy() for p in params)
    return Depth2Fit(W, b, v, history)


def _depth2_init(d: int, width: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(width, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    v = torch.randn(width, generator=gen, dtype=torch.float64) / math.sqrt(width)
    return [W, torch.zeros(width, dtype=torch.float64), v]


def _depth2_descent(
    X: torch.Tensor,
    Y: torch.Tensor,
    params: list[torch.Tensor],
    loss_target: float,
    max_iters: int,
    schedule: tuple[float, float, int],
) -> list[dict[str, float]]:
    """Gradient descent in place on ``params`` = [W, b, v]; returns the history."""
    lr0, growth, every = schedule
    history: list[dict[str, float]] = []
    for it in range(max_iters + 1):
        lr = lr0 * growth ** (it // every)
        loss, margin, grads = _depth2_loss_and_grad(X, Y, *params)
        if not math.isfinite(loss):
            raise RuntimeError(f"exponential loss diverged at iteration {it} (lr {lr:.3g})")
        done = loss < loss_target
        if it % every == 0 or done:
            history.append({"iteration": it, "lr": lr, "loss": loss, "min_margin": margin})
        if done:
            return history
        for p, g in zip(params, grads, strict=True):
            p -= lr * g
    raise RuntimeError(f"loss {loss:.3g} still above {loss_target:g} after {max_iters} iterations")


def _depth2_loss_and_grad(
    X: torch.Tensor, Y: torch.Tensor, W: torch.Tensor, b: torch.Tensor, v: torch.Tensor
) -> tuple[float, float, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Exponential loss, min margin and the gradient (relu'(0) = 0) in closed form."""
    Z = X @ W.T + b
    A = Z.clamp_min(0.0)
    q = Y * (A @ v)
    e = torch.exp(-q)
    g_out = -Y * e
    g_z = (g_out[:, None] * v[None, :]) * (Z > 0)
    return float(e.sum()), float(q.min()), (g_z.T @ X, g_z.sum(0), A.T @ g_out)
