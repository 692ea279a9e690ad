"""Adversarial attacks: the core's attack service (upper bounds on robustness).

Several analyses need *attack upper bounds*: the distance to an adversarial example
that was actually found. This module provides, batched over samples and in float64:

* :func:`pgd` -- projected gradient descent on a margin (Carlini-Wagner style) loss,
  Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks";
* :func:`iterated_fgsm` -- the basic iterative method (I-FGSM), Kurakin et al. 2016,
  "Adversarial examples in the physical world";
* :func:`deepfool` -- multi-class DeepFool, Moosavi-Dezfooli et al. 2016, "DeepFool: a
  simple and accurate method to fool deep neural networks" (l2, and linf through the
  l1 dual norm);
* :func:`random_search` -- uniform sampling inside a ball (a weak but assumption-free
  attack used by soundness tests);
* :func:`minimal_adversarial` -- the minimal-norm search: DeepFool, then a per-sample
  bisection on the radius with PGD, each adversarial point shrunk by a line search
  towards the clean input.

Decision rule: :func:`audit_core.labels.predict` (argmax for K >= 2 logits; a single
logit is a binary classifier predicting class 1 iff the logit is > 0).

Soundness contract: a *distance* is only ever reported for a point ``x_adv`` that a
forward pass of ``model`` classified differently from ``y`` and that lies inside the
input bounds; the distance is the float64 norm of ``x_adv - x`` computed from the
returned arrays. Elsewhere the distance is ``inf``.

Determinism: the random attacks draw from a ``torch.Generator``; without one they use a
fresh generator seeded with 0, so that repeated calls give identical results. The model
should be in evaluation mode (no dropout, frozen batch-norm statistics) and process
samples independently.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.attack_budget import MinimalAttackConfig
from audit_core.labels import margin, predict

Model = Callable[[torch.Tensor], torch.Tensor]
"""Maps a float64 batch ``(N, *input_shape)`` to logits ``(N, K)``."""
BoundLike = float | torch.Tensor | np.ndarray | None
Radius = float | torch.Tensor

NORMS = ("l2", "linf")
MARGIN_TOL = 1e-10
"""Relative margin an internal candidate must clear to count as adversarial.

A candidate is accepted when ``margin < -MARGIN_TOL * (1 + max |logit|)``, so that a
point found by one forward pass stays misclassified when the model is re-evaluated on a
different batch (float64 rounding differs by ~1e-16 relative). The final verification of
returned points only asks ``predict(model(x_adv)) != y``.
"""
_UNIT = float(torch.finfo(torch.float64).eps)
_RANDOM_CHUNK_ELEMENTS = 2**22


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack on a batch (torch tensors, float64).

    Attributes:
        x_adv: ``(N, *input_shape)`` the attack's final point per sample (for PGD the most
            adversarial iterate); inside the bounds. Equal to ``x`` for samples that were
            misclassified to begin with.
        success: ``(N,)`` bool, ``x_adv`` verified misclassified by a final forward pass,
            inside the bounds (and, for the eps-bounded attacks, within ``eps``).
        distance: ``(N,)`` norm of ``x_adv - x`` where ``success``, ``inf`` elsewhere.
        norm: ``"l2"`` or ``"linf"``.
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    distance: torch.Tensor
    norm: str


@dataclass(frozen=True)
class MinimalAdversarial:
    """Per-sample smallest adversarial perturbation found (numpy, float64).

    Attributes:
        distance: ``(N,)`` exact norm of ``x_adv - x``; ``inf`` where nothing was found,
            ``0`` for samples misclassified to begin with.
        x_adv: ``(N, *input_shape)`` verified adversarial example; equal to ``x`` where
            nothing was found.
        found: ``(N,)`` bool.
        adv_label: ``(N,)`` int64 label predicted at ``x_adv``; ``-1`` where not found.
        norm: ``"l2"`` or ``"linf"``.
    """

    distance: np.ndarray
    x_adv: np.ndarray
    found: np.ndarray
    adv_label: np.ndarray
    norm: str


# --------------------------------------------------------------------------- helpers


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def _as_inputs(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x, dtype=torch.float64).detach()
    y = torch.as_tensor(y).long().reshape(-1)
    if x.dim() < 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x must be (N, *input_shape) and y (N,); got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    return x, y


def _flatten(v: torch.Tensor) -> torch.Tensor:
    """``(N, ...)`` -> ``(N, D)``, also for ``N = 0``."""
    return v.reshape(v.shape[0], math.prod(v.shape[1:]))


def _flat_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``norm`` of a batch ``(N, ...)``; ``"l1"`` is allowed as a dual norm."""
    flat = _flatten(v)
    if norm == "l2":
        return torch.linalg.vector_norm(flat, 2, dim=1)
    if norm == "l1":
        return flat.abs().sum(1)
    return flat.abs().amax(1) if flat.shape[1] else flat.new_zeros(flat.shape[0])


def numpy_distance(x_adv: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    """``(N,)`` float64 ``norm`` of ``x_adv - x`` per sample: the reported distance."""
    diff = (x_adv - x).reshape(x.shape[0], math.prod(x.shape[1:]))
    if norm == "l2":
        return np.linalg.norm(diff, axis=1)
    return np.abs(diff).max(axis=1, initial=0.0)


def _bc(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample ``(N,)`` tensor to broadcast against ``like`` ``(N, ...)``."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def _per_sample(value: Radius, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64).detach()
    t = t.expand(n).clone() if t.dim() == 0 else t.reshape(-1).clone()
    if t.shape[0] != n:
        raise ValueError(f"{name} must be a float or a tensor of shape ({n},)")
    if not bool(torch.all(t >= 0)):
        raise ValueError(f"{name} must be >= 0")
    return t


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def _safe_radius(x: torch.Tensor, eps: torch.Tensor, norm: str) -> torch.Tensor:
    """Radius slightly below ``eps`` so that rounding in ``x + delta - x`` stays <= eps."""
    slack = 1e-12 * eps + 8 * _UNIT * (_flat_norm(x, norm) + eps)
    return (eps - slack).clamp_min(0.0)


@dataclass(frozen=True)
class _Box:
    """Input bounds, broadcastable to ``x`` (``None`` = unbounded side).

    A bound with a leading sample axis (``per_sample``) follows sub-batches; any other
    bound (a float, a per-feature tensor) is shared by all samples.
    """

    lower: torch.Tensor | None
    upper: torch.Tensor | None
    per_sample: bool = False

    @staticmethod
    def make(x: torch.Tensor, lower: BoundLike, upper: BoundLike) -> _Box:
        bounds = [_as_bound(b, x) for b in (lower, upper)]
        per_sample = any(b is not None and b.dim() == x.dim() and b.shape[0] > 1 for b in bounds)
        box = _Box(bounds[0], bounds[1], per_sample)
        if box.lower is not None and box.upper is not None and bool((box.lower > box.upper).any()):
            raise ValueError("lower bound above upper bound")
        if not bool(torch.all(box.contains(x))):
            raise ValueError("x lies outside the input bounds [lower, upper]")
        return box

    def take(self, idx: torch.Tensor) -> _Box:
        """Bounds of the sub-batch ``x[idx]``."""
        if not self.per_sample:
            return self
        return _Box(*(None if b is None else b[idx] for b in (self.lower, self.upper)), True)

    def repeat(self, m: int) -> _Box:
        """Bounds of ``x.repeat(m, ...)``."""
        if not self.per_sample:
            return self
        reps = [_repeat_rows(b, m) if b is not None else None for b in (self.lower, self.upper)]
        return _Box(reps[0], reps[1], True)

    def clip(self, z: torch.Tensor) -> torch.Tensor:
        if self.lower is None and self.upper is None:
            return z
        return torch.clamp(z, min=self.lower, max=self.upper)

    def contains(self, z: torch.Tensor) -> torch.Tensor:
        ok = torch.isfinite(_flatten(z)).all(1)
        if self.lower is not None:
            ok &= _flatten(z >= self.lower).all(1)
        if self.upper is not None:
            ok &= _flatten(z <= self.upper).all(1)
        return ok

    def diameter(self, like: torch.Tensor, norm: str) -> torch.Tensor | None:
        """Per-sample size of the box in ``norm`` (``None`` if a side is unbounded)."""
        if self.lower is None or self.upper is None:
            return None
        return _flat_norm((self.upper - self.lower).expand_as(like), norm)


def _as_bound(bound: BoundLike, x: torch.Tensor) -> torch.Tensor | None:
    if bound is None:
        return None
    t = torch.as_tensor(bound, dtype=torch.float64).detach()
    if not _broadcasts_to(tuple(t.shape), tuple(x.shape)):
        raise ValueError(f"bound of shape {tuple(t.shape)} does not broadcast to {tuple(x.shape)}")
    return t


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target`` (``torch.broadcast_shapes`` would
    import sympy, 0.7 s, on an audit's first attack)."""
    if len(shape) > len(target):
        return False
    return all(s in (1, t) for s, t in zip(reversed(shape), reversed(target), strict=False))


def _repeat_rows(t: torch.Tensor, m: int) -> torch.Tensor:
    """``t`` stacked ``m`` times along the sample axis."""
    return t.repeat(m, *([1] * (t.dim() - 1)))


def _logits(model: Model, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(z)
    if out.dim() != 2 or out.shape[0] != z.shape[0]:
        raise ValueError(f"model must return logits (N, K); got {tuple(out.shape)}")
    return out.to(torch.float64)


def _is_adversarial(logits: torch.Tensor, y: torch.Tensor, tol: float) -> torch.Tensor:
    """``predict != y``, and for ``tol > 0`` a margin below ``-tol * (1 + max |logit|)``."""
    wrong = predict(logits) != y
    if tol <= 0:
        return wrong
    scale = 1.0 + logits.abs().amax(1)
    return wrong & (margin(logits, y) < -tol * scale)


def _margin_grad(model: Model, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Logits at ``z``, the per-sample margin and its gradient with respect to ``z``.

    The margin ``f_y - f_j`` (``j`` the best other class) is linear in the logits: one
    backward pass from ``sum(seed * logits)`` with the seed ``e_y - e_j`` (no gather/scatter
    in the graph). A scalar output, not ``grad_outputs=seed``: torch checks a tensor
    ``grad_outputs`` through its symbolic-shape module, whose import loads sympy (0.7 s).
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(z)
        seed = _margin_seed(logits.detach(), y)
        grad = torch.autograd.grad((seed * logits).sum(), z)[0]
    return logits.detach(), (seed * logits.detach()).sum(1), grad


def _margin_seed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``d margin / d logits`` per sample: ``e_y - e_j`` (``s`` for a single logit)."""
    if logits.shape[1] == 1:
        return (2.0 * y.to(logits.dtype) - 1.0)[:, None]
    own = y[:, None]
    other = logits.scatter(1, own, -math.inf).argmax(1, keepdim=True)
    return torch.zeros_like(logits).scatter_(1, own, 1.0).scatter_(1, other, -1.0)


def _finalize(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    x_adv: torch.Tensor,
    box: _Box,
    norm: str,
    eps: torch.Tensor | None = None,
) -> AttackResult:
    """Verify ``x_adv`` by a forward pass and measure the exact distances."""
    ok = _is_adversarial(_logits(model, x_adv), y, 0.0) & box.contains(x_adv)
    dist = torch.from_numpy(numpy_distance(x_adv.numpy(), x.numpy(), norm))
    if eps is not None:
        ok &= dist <= eps
    inf = torch.full_like(dist, math.inf)
    return AttackResult(x_adv, ok, torch.where(ok, dist, inf), norm)


def _project(delta: torch.Tensor, radius: torch.Tensor, norm: str) -> torch.Tensor:
    """Euclidean projection of ``delta`` onto the ``norm`` ball of per-sample ``radius``."""
    r = _bc(radius, delta)
    if norm == "linf":
        return torch.clamp(delta, min=-r, max=r)
    size = _bc(_flat_norm(delta, "l2"), delta)
    return delta * (r / size.clamp_min(1e-300)).clamp_max(1.0)


def _random_in_ball(
    like: torch.Tensor, radius: torch.Tensor, norm: str, gen: torch.Generator
) -> torch.Tensor:
    """Uniform samples in the ball (l2: direction on the sphere, length ``r U^(1/d)``)."""
    r = _bc(radius, like)
    if norm == "linf":
        u = torch.rand(like.shape, generator=gen, dtype=torch.float64)
        return (2.0 * u - 1.0) * r
    d = max(1, math.prod(like.shape[1:]))
    g = torch.randn(like.shape, generator=gen, dtype=torch.float64)
    g = g / _bc(_flat_norm(g, "l2").clamp_min(1e-300), g)
    u = torch.rand(like.shape[0], generator=gen, dtype=torch.float64) ** (1.0 / d)
    return g * r * _bc(u, like)


def _steepest_step(grad: torch.Tensor, size: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest *ascent* step of per-sample ``size`` in ``norm`` along ``grad``."""
    if norm == "linf":
        return _bc(size, grad) * grad.sign()
    length = _bc(_flat_norm(grad, "l2").clamp_min(1e-300), grad)
    return grad * (_bc(size, grad) / length)


# --------------------------------------------------------------------------- PGD


def pgd(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Radius,
    *,
    norm: str,
    steps: int = 40,
    step_size: Radius | None = None,
    restarts: int = 1,
    lower: BoundLike = None,
    upper: BoundLike = None,
    generator: torch.Generator | None = None,
    x_init: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> AttackResult:
    """Projected gradient descent on the margin (Madry et al. 2018).

    Minimises the margin ``true logit - best other logit`` (the CW loss) over the
    ``norm`` ball of radius ``eps`` around each sample intersected with the bounds. Each
    restart begins at a uniformly random point of the ball except the first ones: the
    points of ``x_init`` projected into the ball, or without ``x_init`` the clean point
    ``x`` itself (on nets with flat regions a random start can see no gradient where the
    clean point does); steps follow the steepest-descent direction of the norm (sign of
    the gradient for linf, normalised gradient for l2) and are then projected. Restarts
    run side by side in one batch (as memory allows). A sample stops as soon as one of
    its iterates is adversarial; otherwise the iterate with the smallest margin over all
    restarts is kept.

    Args:
        eps: radius, a float or a per-sample tensor ``(N,)``.
        step_size: float or ``(N,)``; default ``2.5 * eps / steps``.
        restarts: number of starts per sample.
        x_init: optional starting points ``(N, *input_shape)`` for the first restart, or a
            sequence of such batches for the first ``len(x_init)`` restarts (``x`` itself is
            a start: the clean point, Madry et al.'s deterministic start).

    Returns:
        :class:`AttackResult`; ``success`` also requires ``||x_adv - x|| <= eps``.
    """
    _check_norm(norm)
    x, y = _as_inputs(x, y)
    box = _Box.make(x, lower, upper)
    n = x.shape[0]
    eps_t = _per_sample(eps, n, "eps")
    step = (
        2.5 * eps_t / max(steps, 1) if step_size is None else _per_sample(step_size, n, "step_size")
    )
    logits = _logits(model, x)
    done = _is_adversarial(logits, y, 0.0)
    best = _Best(x.clone(), torch.where(done, margin(logits, y), math.inf))
    radius = _safe_radius(x, eps_t, norm)
    gen = _generator(generator)
    group = max(1, _PGD_BATCH_ELEMENTS // max(1, x.numel()))
    inits = _start_list(x_init) if x_init is not None else [x]
    for first in range(0, restarts, group):
        idx = (~done).nonzero().flatten()
        if idx.numel() == 0:
            break
        reps = min(group, restarts - first)
        given = [s[idx].to(torch.float64) for s in inits[first : first + reps]]
        run = _PGDRun.replicate(
            model, x[idx], y[idx], radius[idx], step[idx], norm, box.take(idx), reps
        )
        z, m, adv = run.execute(run.starts(given, gen), steps)
        best.update_rows(idx, z, m)
        done[idx] |= adv
    return _finalize(model, x, y, best.x, box, norm, eps_t)


_PGD_BATCH_ELEMENTS = 2**23


def _start_list(x_init: torch.Tensor | Sequence[torch.Tensor] | None) -> list[torch.Tensor]:
    """``pgd``'s given starting points as a list of batches (one per restart)."""
    if x_init is None:
        return []
    if isinstance(x_init, torch.Tensor):
        return [x_init]
    return list(x_init)


@dataclass
class _Best:
    """Most adversarial point (smallest margin) seen per sample."""

    x: torch.Tensor
    score: torch.Tensor

    def update(self, z: torch.Tensor, score: torch.Tensor) -> None:
        """Keep ``z``'s rows where ``score`` is smaller (``z``'s rows are ours)."""
        better = score < self.score
        self.x = torch.where(_bc(better, z), z, self.x)
        self.score = torch.where(better, score, self.score)

    def update_rows(self, idx: torch.Tensor, z: torch.Tensor, score: torch.Tensor) -> None:
        """Keep ``z``'s rows where ``score`` is smaller than that of our rows ``idx``."""
        better = score < self.score[idx]
        if bool(better.any()):
            self.x[idx[better]] = z[better]
            self.score[idx[better]] = score[better]


@dataclass(frozen=True)
class _PGDRun:
    """Restarts of PGD on a sub-batch, as replicas of every sample in one batch.

    Replica ``r`` of sample ``i`` is row ``r * n + i`` (``owner`` maps rows to samples).
    Once a replica is adversarial, all replicas of its sample stop, and the batch is
    compacted to the rows still running.
    """

    model: Model
    x: torch.Tensor
    y: torch.Tensor
    radius: torch.Tensor
    step: torch.Tensor
    norm: str
    box: _Box
    owner: torch.Tensor
    n: int

    @staticmethod
    def replicate(
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        radius: torch.Tensor,
        step: torch.Tensor,
        norm: str,
        box: _Box,
        reps: int,
    ) -> _PGDRun:
        rows = torch.arange(x.shape[0]).repeat(reps)
        sub = (x[rows], y[rows], radius[rows], step[rows])
        return _PGDRun(model, *sub, norm, box.repeat(reps), rows, x.shape[0])

    def take(self, keep: torch.Tensor) -> _PGDRun:
        """The rows ``keep`` (bool mask) of this run."""
        rows = keep.nonzero().flatten()
        sub = (self.x[rows], self.y[rows], self.radius[rows], self.step[rows])
        return _PGDRun(self.model, *sub, self.norm, self.box.take(rows), self.owner[rows], self.n)

    def starts(self, given: list[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """Starting points: ``given[r]`` for replica ``r`` (projected into the ball), random
        points of the ball for the other replicas."""
        first = min(len(given), self.x.shape[0] // max(self.n, 1)) * self.n
        delta = torch.empty_like(self.x)
        if first:
            init = torch.cat(given)[:first]
            delta[:first] = _project(init - self.x[:first], self.radius[:first], self.norm)
        delta[first:] = _random_in_ball(self.x[first:], self.radius[first:], self.norm, gen)
        return self.box.clip(self.x + delta)

    def execute(self, z: torch.Tensor, steps: int) -> tuple[torch.Tensor, ...]:
        """Run from ``z``; per sample: best iterate, its margin, and an adversarial flag.

        ``best`` follows the running rows (aligned with ``z``); rows that stop hand theirs
        to ``stopped``, which holds every row's at the end."""
        best = _Best(z.clone(), torch.full((z.shape[0],), math.inf, dtype=torch.float64))
        stopped = _Best(best.x.clone(), best.score.clone())
        adv = torch.zeros(self.n, dtype=torch.bool)
        run, rows = self, torch.arange(z.shape[0])
        feasible = run._feasible()
        for t in range(steps + 1):
            if t == steps:
                logits, grad = _logits(run.model, z), None
                m = margin(logits, run.y)
            else:
                logits, m, grad = _margin_grad(run.model, z, run.y)
            best.update(z, m)
            # margin < -tol * scale implies a prediction other than y (see _is_adversarial)
            if grad is not None and not bool((m < 0).any()):  # the common step: nothing new
                z = run._step(z, grad, feasible)
                continue
            adv[run.owner[m < -MARGIN_TOL * (1.0 + logits.abs().amax(1))]] = True
            keep = ~adv[run.owner]
            if grad is None or not bool(keep.any()):
                break
            if not bool(keep.all()):
                gone = rows[~keep]
                stopped.x[gone], stopped.score[gone] = best.x[~keep], best.score[~keep]
                best = _Best(best.x[keep], best.score[keep])
                run, rows, z, grad = run.take(keep), rows[keep], z[keep], grad[keep]
                feasible = run._feasible()
            z = run._step(z, grad, feasible)
        stopped.x[rows], stopped.score[rows] = best.x, best.score
        return *self._reduce(stopped), adv

    def _reduce(self, best: _Best) -> tuple[torch.Tensor, torch.Tensor]:
        """Best replica per sample."""
        score, which = best.score.reshape(-1, self.n).min(0)
        return best.x[which * self.n + torch.arange(self.n)], score

    def _feasible(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """linf: the ball intersected with the bounds is a box ``[lo, hi]``; l2: ``None``."""
        if self.norm != "linf":
            return None
        r = _bc(self.radius, self.x)
        lo, hi = self.x - r, self.x + r
        if self.box.lower is not None:
            lo = torch.maximum(lo, self.box.lower)
        if self.box.upper is not None:
            hi = torch.minimum(hi, self.box.upper)
        return lo, hi

    def _step(
        self, z: torch.Tensor, grad: torch.Tensor, feasible: tuple[torch.Tensor, ...] | None
    ) -> torch.Tensor:
        """Descent step on the margin, then projection onto ball and bounds."""
        z = z - _steepest_step(grad, self.step, self.norm)
        if feasible is not None:
            return torch.clamp(z, min=feasible[0], max=feasible[1])
        return self.box.clip(self.x + _project(z - self.x, self.radius, self.norm))


# --------------------------------------------------------------------------- I-FGSM


def iterated_fgsm(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Radius,
    *,
    norm: str = "linf",
    steps: int,
    step_size: Radius | None = None,
    lower: BoundLike = None,
    upper: BoundLike = None,
) -> AttackResult:
    """Iterated FGSM / basic iterative method (Kurakin et al. 2016).

    Starting at ``x``, ``steps`` ascent steps on the cross-entropy loss (binary
    cross-entropy for a single logit), each of size ``step_size`` along the sign of the
    gradient (linf) or the normalised gradient (l2), followed by projection onto the
    ``eps`` ball and the bounds. No random start, no early stop: the final iterate is
    returned, as in the paper. ``step_size`` defaults to ``1.25 * eps / steps`` (Kurakin
    et al. use ``min(eps + 4, 1.25 eps)`` unit steps).
    """
    _check_norm(norm)
    x, y = _as_inputs(x, y)
    box = _Box.make(x, lower, upper)
    eps_t = _per_sample(eps, x.shape[0], "eps")
    radius = _safe_radius(x, eps_t, norm)
    alpha = (
        1.25 * eps_t / max(steps, 1)
        if step_size is None
        else _per_sample(step_size, x.shape[0], "step_size")
    )
    z = x.clone()
    for _ in range(steps):
        z = z + _steepest_step(_loss_grad(model, z, y), alpha, norm)
        z = box.clip(x + _project(z - x, radius, norm))
    return _finalize(model, x, y, z, box, norm, eps_t)


def _loss_grad(model: Model, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy (BCE for one logit) with respect to ``z``."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(z)
        if logits.shape[1] == 1:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, 0], y.to(logits.dtype), reduction="sum"
            )
        else:
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
        return torch.autograd.grad(loss, z)[0]


# --------------------------------------------------------------------------- DeepFool


def deepfool(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "l2",
    max_iter: int = 50,
    overshoot: float = 0.02,
    classes: int = 10,
    lower: BoundLike = None,
    upper: BoundLike = None,
) -> AttackResult:
    """Multi-class DeepFool (Moosavi-Dezfooli et al. 2016, Algorithm 2).

    At each iterate the classifier is linearised; for every candidate class ``j != y`` the
    gap ``f_j - f_y`` and its gradient ``w_j`` give the distance ``|f_j - f_y| / ||w_j||_*``
    to the linearised boundary (``||.||_*`` is the dual norm: l2 for l2, l1 for linf). The
    closest boundary's minimal step ``r_i`` moves the iterate to
    ``clip(z + (1 + overshoot) r_i)``: the iterate stays in the bounds at every step, so
    the next linearisation is taken where the search really is (accumulating the steps
    and clipping only ``x + r`` loses every component pushed past a bound). The
    candidates are the ``classes`` classes with the largest logits besides ``y`` at the
    current iterate (the paper's implementation uses the top 10): one backward pass each,
    so the cost does not grow with the number of classes. A single-logit model has the one
    gap ``-s * logit`` with ``s = 2y - 1``. Samples stop once misclassified (or when
    every gradient vanishes).
    """
    _check_norm(norm)
    x, y = _as_inputs(x, y)
    box = _Box.make(x, lower, upper)
    z = x.clone()
    active = (~_is_adversarial(_logits(model, x), y, 0.0)).nonzero().flatten()
    for _ in range(max_iter):
        if active.numel() == 0:
            break
        gaps, grads, crossed = _gap_gradients(model, z[active], y[active], max(1, classes))
        step = _deepfool_step(gaps, grads, norm)
        moving = ~crossed & torch.isfinite(_flatten(step)).all(1)
        active, step = active[moving], step[moving]
        z[active] = box.take(active).clip(z[active] + (1.0 + overshoot) * step)
    return _finalize(model, x, y, z, box, norm)


def _gap_gradients(
    model: Model, z: torch.Tensor, y: torch.Tensor, classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaps ``f_j - f_y`` (``(n, c)``, < 0 while classified as ``y``) of the ``c`` classes
    with the largest logits besides ``y``, their gradients ``(n, c, *input_shape)``, and
    whether a gap is crossed beyond the margin tolerance (``(n,)``, as for every other
    candidate of the attacks). One backward pass per candidate rank."""
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(z)
        rows = torch.arange(z.shape[0])
        if logits.shape[1] == 1:
            s = 2.0 * y.to(logits.dtype) - 1.0
            gaps = (-s * logits[:, 0])[:, None]
        else:
            others = logits.detach().clone()
            others[rows, y] = -math.inf
            top = others.topk(min(classes, logits.shape[1] - 1), dim=1).indices
            gaps = logits.gather(1, top) - logits[rows, y][:, None]
        c = gaps.shape[1]
        grads = [
            torch.autograd.grad(gaps[:, j].sum(), z, retain_graph=j < c - 1)[0] for j in range(c)
        ]
    tol = MARGIN_TOL * (1.0 + logits.detach().abs().amax(1))
    gaps = gaps.detach().to(torch.float64)
    crossed = gaps.amax(1) > tol.to(torch.float64)
    return gaps, torch.stack(grads, 1).to(torch.float64), crossed


def _deepfool_step(gaps: torch.Tensor, grads: torch.Tensor, norm: str) -> torch.Tensor:
    """Minimal step onto the closest linearised boundary (``inf`` where none exists)."""
    n, k = gaps.shape
    flat = grads.reshape(n, k, math.prod(grads.shape[2:]))
    dual = torch.linalg.vector_norm(flat, 2, dim=2) if norm == "l2" else flat.abs().sum(2)
    ratio = gaps.abs() / dual
    ratio = torch.where(dual > 0, ratio, torch.full_like(ratio, math.inf))
    best = ratio.argmin(1)
    rows = torch.arange(n)
    r, w = ratio[rows, best], grads[rows, best]
    unit = w / _bc(dual[rows, best].clamp_min(1e-300), w)
    return _bc(r, w) * (unit if norm == "l2" else w.sign())


# --------------------------------------------------------------------------- random search


def random_search(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: Radius,
    *,
    norm: str,
    samples: int,
    lower: BoundLike = None,
    upper: BoundLike = None,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """Closest adversarial point among ``samples`` uniform draws in the ball per sample.

    l2: direction uniform on the sphere times ``radius * U^(1/d)``; linf: uniform in the
    box. Draws are clipped to the bounds (which keeps them in the ball). Assumes nothing
    about the model, hence a reference for soundness tests.
    """
    _check_norm(norm)
    x, y = _as_inputs(x, y)
    box = _Box.make(x, lower, upper)
    n = x.shape[0]
    safe = _safe_radius(x, _per_sample(radius, n, "radius"), norm)
    gen = _generator(generator)
    best_x = x.clone()
    best_d = torch.where(_is_adversarial(_logits(model, x), y, 0.0), 0.0, math.inf)
    chunk = max(1, _RANDOM_CHUNK_ELEMENTS // max(1, x.numel()))
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        xs, ys = _repeat_rows(x, m), y.repeat(m)
        zs = box.repeat(m).clip(xs + _random_in_ball(xs, safe.repeat(m), norm, gen))
        adv = _is_adversarial(_logits(model, zs), ys, MARGIN_TOL)
        dist = torch.where(adv, _flat_norm(zs - xs, norm), math.inf).reshape(m, n)
        d_min, which = dist.min(0)
        better = d_min < best_d
        best_d = torch.where(better, d_min, best_d)
        best_x[better] = zs.reshape(m, *x.shape)[which, torch.arange(n)][better]
    return _finalize(model, x, y, best_x, box, norm)


# --------------------------------------------------------------------------- minimal search


def minimal_adversarial(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    norm: str = "l2",
    config: MinimalAttackConfig | None = None,
    lower: BoundLike = None,
    upper: BoundLike = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> MinimalAdversarial:
    """Smallest adversarial perturbation found per sample (an attack *upper bound*).

    Per batch of ``config.batch_size`` samples: (1) DeepFool (Moosavi-Dezfooli et al. 2016)
    gives a first adversarial point; samples it misses get a PGD run at
    ``config.search_radius``; (2) a per-sample bisection on the radius runs PGD (Madry et
    al. 2018) with a per-sample radius ``(lo + hi) / 2``, where ``hi`` is the best distance
    so far; (3) every adversarial point found is shrunk by a line search on ``t`` along
    ``x_adv - x`` (binary search keeping the point adversarial). Samples misclassified
    at ``x`` get distance 0 and ``x_adv = x``.

    Every returned point is re-verified by a final forward pass (misclassified and
    inside the bounds); a point that fails is dropped (``found`` False, distance inf).

    Args:
        config: the budget (default ``MinimalAttackConfig()``).
        progress: called with the cumulative number of work units done; a unit is one
            sample through one phase, see :meth:`MinimalAttackConfig.work_units` for the
            total.
    """
    _check_norm(norm)
    config = config or MinimalAttackConfig()
    x, y = _as_inputs(x, y)
    box = _Box.make(x, lower, upper)
    gen = _generator(generator)
    meter = _Meter(progress)
    best_x, best_d = x.clone(), torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for s in range(0, x.shape[0], config.batch_size):
        idx = torch.arange(s, min(s + config.batch_size, x.shape[0]))
        search = _Search(model, x[idx], y[idx], norm, box.take(idx), config, gen, meter)
        best_x[idx], best_d[idx] = search.run()
    return _verified_minimal(model, x, y, best_x, best_d, box, norm, config.batch_size)


@dataclass
class _Meter:
    """Cumulative progress reporting."""

    callback: Callable[[int], None] | None
    done: int = 0

    def add(self, units: int) -> None:
        self.done += units
        if self.callback is not None:
            self.callback(self.done)


@dataclass
class _Search:
    """Minimal-norm search on one batch; keeps the best verified point per sample."""

    model: Model
    x: torch.Tensor
    y: torch.Tensor
    norm: str
    box: _Box
    config: MinimalAttackConfig
    gen: torch.Generator
    meter: _Meter
    best_x: torch.Tensor = field(init=False)
    best_d: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        self.best_x = self.x.clone()
        self.best_d = torch.full((n,), math.inf, dtype=torch.float64)
        wrong = _is_adversarial(_logits(self.model, self.x), self.y, 0.0)
        self.best_d[wrong] = 0.0

    def run(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All phases; returns ``(best_x, best_d)``."""
        todo = torch.isinf(self.best_d).nonzero().flatten()
        self._deepfool(todo)
        self._wide_search(torch.isinf(self.best_d).nonzero().flatten())
        self._bisection(todo[torch.isfinite(self.best_d[todo])])
        return self.best_x, self.best_d

    def _deepfool(self, idx: torch.Tensor) -> None:
        if idx.numel():
            res = deepfool(
                self.model,
                self.x[idx],
                self.y[idx],
                norm=self.norm,
                max_iter=self.config.deepfool_iter,
                overshoot=self.config.overshoot,
                classes=self.config.deepfool_classes,
                lower=self.box.take(idx).lower,
                upper=self.box.take(idx).upper,
            )
            self._offer(idx[res.success], res.x_adv[res.success])
        self.meter.add(self.x.shape[0])

    def _wide_search(self, idx: torch.Tensor) -> None:
        """PGD at growing radii (``search_radius * 2^-k``, smallest first) for the samples
        DeepFool missed, each from the clean point and random points, until one is found.

        Starting small matters: at the full box radius a random start is noise over the
        whole input, where a ReLU net can sit on a flat region (no gradient) far from any
        boundary; from the clean point a small ball is searched along the model's own
        gradients (mnist-net_256x2, image 9 of the corpus: found at linf 0.05 this way, never
        from random starts at radius 1)."""
        if idx.numel():
            radius = self._search_radius(idx)
            for level in reversed(range(self.config.search_levels)):
                open_ = idx[torch.isinf(self.best_d[idx])]
                if open_.numel() == 0:
                    break
                scale = 2.0**-level
                self._pgd(open_, scale * radius[torch.isinf(self.best_d[idx])])
        self.meter.add(self.x.shape[0])

    def _search_radius(self, idx: torch.Tensor) -> torch.Tensor:
        if self.config.search_radius > 0:
            return torch.full((idx.numel(),), float(self.config.search_radius), dtype=torch.float64)
        diameter = self.box.take(idx).diameter(self.x[idx], self.norm)
        if diameter is not None and bool(torch.isfinite(diameter).all()):
            return diameter
        return 4.0 * _flat_norm(self.x[idx], self.norm).clamp_min(1.0)

    def _bisection(self, idx: torch.Tensor) -> None:
        lo = torch.zeros(idx.numel(), dtype=torch.float64)
        steps = self.config.bisection_steps
        for done in range(steps):
            hi = self.best_d[idx]
            open_ = hi - lo > self.config.bisection_rtol * hi
            if not bool(open_.any()):
                self.meter.add(self.x.shape[0] * (steps - done))
                return
            sub, mid = idx[open_], 0.5 * (lo[open_] + hi[open_])
            found = self._pgd(sub, mid, warm=True)
            lo[open_] = torch.where(found, lo[open_], mid)
            self.meter.add(self.x.shape[0])

    def _pgd(self, idx: torch.Tensor, radius: torch.Tensor, warm: bool = False) -> torch.Tensor:
        """PGD at per-sample ``radius``; starts: the best point so far rescaled into the ball
        (``warm``), the clean point, then random points; candidates go to ``_offer``."""
        cfg = self.config
        res = pgd(
            self.model,
            self.x[idx],
            self.y[idx],
            radius,
            norm=self.norm,
            steps=cfg.steps,
            step_size=cfg.step_fraction * radius,
            restarts=cfg.restarts,
            lower=self.box.take(idx).lower,
            upper=self.box.take(idx).upper,
            generator=self.gen,
            x_init=[self.best_x[idx], self.x[idx]] if warm else [self.x[idx]],
        )
        return self._offer(idx[res.success], res.x_adv[res.success], res.success)

    def _offer(
        self, idx: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Line-search candidates, keep improvements; return which candidates were accepted."""
        if idx.numel() == 0:
            return torch.zeros_like(mask) if mask is not None else torch.zeros(0, dtype=bool)
        box = self.box.take(idx)
        z, ok = _line_search(
            self.model, self.x[idx], self.y[idx], z, box, self.config.line_search_steps
        )
        ok &= box.contains(z)
        dist = torch.from_numpy(numpy_distance(z.numpy(), self.x[idx].numpy(), self.norm))
        better = ok & (dist < self.best_d[idx])
        self.best_x[idx[better]] = z[better]
        self.best_d[idx[better]] = dist[better]
        if mask is None:
            return ok
        accepted = torch.zeros_like(mask)
        accepted[mask.nonzero().flatten()[ok]] = True
        return accepted


def _line_search(
    model: Model, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, box: _Box, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shrink adversarial ``z`` towards ``x`` along ``z - x`` by bisection on ``t``.

    Returns the closest point ``x + t (z - x)`` seen to be adversarial (with the margin
    tolerance) and a flag: ``False`` where ``z`` itself is not adversarial. Points are
    clipped to the box (the segment lies in it; clipping only undoes rounding).
    """
    ok = _is_adversarial(_logits(model, z), y, MARGIN_TOL)
    best = z.clone()
    lo = torch.zeros(x.shape[0], dtype=torch.float64)
    hi = torch.ones(x.shape[0], dtype=torch.float64)
    direction = z - x
    for _ in range(steps if bool(ok.any()) else 0):
        mid = 0.5 * (lo + hi)
        cand = box.clip(x + _bc(mid, x) * direction)
        adv = _is_adversarial(_logits(model, cand), y, MARGIN_TOL) & ok
        best[adv] = cand[adv]
        hi = torch.where(adv, mid, hi)
        lo = torch.where(adv, lo, mid)
    return best, ok


def _verified_minimal(
    model: Model,
    x: torch.Tensor,
    y: torch.Tensor,
    best_x: torch.Tensor,
    best_d: torch.Tensor,
    box: _Box,
    norm: str,
    batch_size: int,
) -> MinimalAdversarial:
    """Final forward pass: keep only misclassified, in-bounds points; exact distances."""
    labels = (
        torch.cat(
            [
                predict(_logits(model, best_x[s : s + batch_size]))
                for s in range(0, x.shape[0], batch_size)
            ]
        )
        if x.shape[0]
        else y
    )
    found = torch.isfinite(best_d) & (labels != y) & box.contains(best_x)
    x_np = x.numpy()
    x_adv = np.where(_bc(found, x).numpy(), best_x.numpy(), x_np)
    dist = np.where(found.numpy(), numpy_distance(x_adv, x_np, norm), np.inf)
    adv_label = np.where(found.numpy(), labels.numpy(), -1).astype(np.int64)
    return MinimalAdversarial(dist, x_adv, found.numpy(), adv_label, norm)
