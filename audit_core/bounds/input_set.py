"""The set of inputs a bound holds over: an l2 ball or linf box around each sample,
intersected with the input bounds (e.g. pixels in [0, 1]).

``minimum(A)`` is the exact minimum of ``A . x`` over the set, the last step of
backward bound propagation ("concretisation"):

* linf: the set is the box ``[max(lo, x0 - eps), min(hi, x0 + eps)]`` and the minimum
  is ``A . c - |A| . r`` with the box's centre c and radius r;
* l2: ``min A . delta`` over ``||delta|| <= eps, lo - x0 <= delta <= hi - x0``, a convex
  problem solved through its Lagrangian dual: for any ``mu >= 0``,
  ``g(mu) = -mu eps^2 + sum_i min_{delta_i in [l_i, u_i]} (a_i delta_i + mu delta_i^2)``
  is a lower bound (weak duality), attained at the optimal mu (strong duality: Slater
  holds as x0 is inside the box). The inner minimiser is
  ``clip(-a_i / (2 mu), l_i, u_i)``; the optimal mu makes ``||delta(mu)|| = eps`` and is
  found exactly by sorting the coordinates by the mu below which they clip. Because
  ``g(mu)`` is evaluated at the mu found, rounding in finding it can only loosen the
  bound, never make it wrong.

Extreme sets (eps 0 or denormal, eps whose square overflows, infinite bounds, huge
coefficients) can make these formulas produce ``inf - inf``; every minimum is therefore
returned with NaN replaced by ``-inf``, which is no bound at all but never a false one.

auto_LiRPA's l2 balls ignore the input bounds; for images whose pixels sit on the
bounds (MNIST's black background) the intersection roughly halves the directions
an adversary can use, and the bounds are correspondingly tighter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Tensor = torch.Tensor
NORMS = ("l2", "linf")


@dataclass(frozen=True)
class InputSet:
    """``{x : ||x - center[b]|| <= eps[b], lower <= x <= upper}`` for each row b.

    ``center`` ``(B, D)`` (flat, inside the bounds), ``eps`` ``(B,)``, ``lower``/``upper``
    broadcastable to ``(B, D)``; float64.
    """

    center: Tensor
    eps: Tensor
    norm: str
    lower: Tensor
    upper: Tensor

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")

    @classmethod
    def around(
        cls,
        center: Tensor,
        eps: Tensor | float,
        norm: str,
        lower: float | Tensor = float("-inf"),
        upper: float | Tensor = float("inf"),
    ) -> InputSet:
        """The set around ``center`` (any shape ``(B, ...)``), clipped into the bounds."""
        flat = torch.as_tensor(center, dtype=torch.float64).reshape(len(center), -1)
        low = torch.as_tensor(lower, dtype=torch.float64)
        high = torch.as_tensor(upper, dtype=torch.float64)
        low, high = (b.reshape(1, -1) if b.dim() else b for b in (low, high))
        flat = torch.maximum(torch.minimum(flat, high), low)
        eps = torch.as_tensor(eps, dtype=torch.float64).expand(len(flat)).clone()
        return cls(flat, eps, norm, low, high)

    def __len__(self) -> int:
        return len(self.center)

    def repeat(self, index: Tensor) -> InputSet:
        """The sets of rows ``index`` (e.g. one sample's set for each of its subdomains)."""
        lower, upper = _rows(self.lower, index), _rows(self.upper, index)
        return InputSet(self.center[index], self.eps[index], self.norm, lower, upper)

    def with_eps(self, eps: Tensor) -> InputSet:
        return InputSet(self.center, eps, self.norm, self.lower, self.upper)

    def box(self) -> tuple[Tensor, Tensor]:
        """The smallest box containing the set (exact for linf), ``(B, D)`` each."""
        radius = self.eps[:, None]
        low = torch.maximum(self.center - radius, self.lower)
        high = torch.minimum(self.center + radius, self.upper)
        return low, high

    def minimum(self, coefficients: Tensor) -> Tensor:
        """``min over x in the set of coefficients . x``: ``(B, S, D)`` -> ``(B, S)``."""
        if self.norm == "linf":
            return no_nan(_box_minimum(coefficients, *self.box()))
        return no_nan(self._minimize(coefficients)[0])

    def quick_minimum(self, coefficients: Tensor) -> Tensor:
        """A lower bound on ``minimum``, cheaper for l2: the dual function at the
        multiplier of the ball without the bounds (``mu = ||a|| / (2 eps)``), which is
        never below the ball's bound ``a . x0 - eps ||a||``. Exact for linf."""
        if self.norm == "linf":
            return self.minimum(coefficients)
        mu = _ball_mu(coefficients, self.eps)
        return no_nan(_dual_value(coefficients, self.center, self.eps, self.lower, self.upper, mu))

    def argmin(self, coefficients: Tensor) -> Tensor:
        """A point of the set attaining ``minimum`` per row: ``(B, S, D)``."""
        return self._minimize(coefficients)[1]

    def _minimize(self, a: Tensor) -> tuple[Tensor, Tensor]:
        if self.norm == "linf":
            low, high = self.box()
            return _box_minimum(a, low, high), torch.where(a > 0, low[:, None], high[:, None])
        return _l2_minimum(a, self.center, self.eps, self.lower, self.upper)


def no_nan(lower: Tensor) -> Tensor:
    """A lower bound with NaN (from ``inf - inf`` or ``0 * inf``) replaced by ``-inf``."""
    return torch.where(torch.isnan(lower), -torch.inf, lower)


def _box_minimum(a: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """``min a . x`` over the box ``[low, high]`` (``(B, D)`` each): ``a . c - |a| . r``."""
    center = ((low + high) / 2).unsqueeze(-1)
    radius = ((high - low) / 2).unsqueeze(-1)
    return (torch.bmm(a, center) - torch.bmm(a.abs(), radius))[..., 0]


def _rows(bound: Tensor, index: Tensor) -> Tensor:
    return bound[index] if bound.dim() == 2 and bound.shape[0] > 1 else bound


def _l2_minimum(
    a: Tensor, center: Tensor, eps: Tensor, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """``min a . x`` over the l2 ball of radius eps around center, within [lower, upper].

    ``a`` ``(B, S, D)``. Coordinate i moves opposite to ``a_i`` up to its room ``b_i``
    (to the bound on that side); for ``mu >= t_i = |a_i| / (2 b_i)`` it is unclipped
    (``|delta_i| = |a_i| / (2 mu)``), below it clipped (``|delta_i| = b_i``). With the
    coordinates sorted by t, ``||delta(mu)||^2 = A_k / (4 mu^2) + B_k`` between breakpoints
    (A_k: sum of a^2 of the unclipped, B_k: sum of b^2 of the clipped), so the optimal mu
    solves one quadratic on the right segment. The search runs in float32 (it only
    picks mu); the bound ``g(mu)`` is evaluated in float64.
    """
    low, high = _step_bounds(center, eps, lower, upper)
    mu = _ball_mu(a, eps)
    clipped = _clipped(a, mu, low, high)
    if bool(clipped.any()):  # the ball's own minimiser leaves the bounds: sort those rows
        rows, specs = clipped.nonzero(as_tuple=True)
        picked = a.detach()[rows, specs][:, None, :]
        room = torch.where(picked < 0, high[rows], -low[rows]).clamp_min(0.0)
        ball = mu[rows, specs]
        mu = mu.clone()
        mu[rows, specs] = _optimal_mu(picked, room, eps[rows])[:, 0].to(a.dtype)
    value, delta = _dual_value(a, center, eps, lower, upper, mu, with_step=True)
    if bool(clipped.any()):  # both multipliers give bounds: rounding never loses to the ball's
        at_ball = _dual_value(
            picked, center[rows], eps[rows], _rows(lower, rows), _rows(upper, rows), ball[:, None]
        )[:, 0]
        value = value.clone()
        value[rows, specs] = torch.maximum(value[rows, specs], no_nan(at_ball))
    # mu from the float32 search can leave delta a hair outside the ball: the bound g(mu)
    # is valid anyway; the point is scaled back in (the box contains 0, so it stays there)
    length = delta.norm(dim=-1, keepdim=True)
    inside = delta * torch.clamp(eps[:, None, None] / length.clamp_min(1e-300), max=1.0)
    return value, center[:, None, :] + inside


def _ball_mu(a: Tensor, eps: Tensor) -> Tensor:
    """The multiplier of the plain ball, ``||a|| / (2 eps)`` ``(B, S)`` (no gradient)."""
    return a.detach().norm(dim=-1) / (2 * eps[:, None])


def _clipped(a: Tensor, mu: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """Rows whose minimiser at ``mu`` (``-a / (2 mu)``) leaves the step bounds: there the
    ball's multiplier is not optimal and the exact one must be searched."""
    safe = torch.where(mu > 0, mu, 1.0)[..., None]
    step = -a.detach() / (2 * safe)
    return ((step < low) | (step > high)).any(dim=-1) & (mu > 0)


def _step_bounds(
    center: Tensor, eps: Tensor, lower: Tensor, upper: Tensor
) -> tuple[Tensor, Tensor]:
    """Bounds on each coordinate of the step ``delta = x - x0``, ``(B, 1, D)``: the input
    bounds, and ``|delta_i| <= eps`` (implied by the ball; keeps infinite bounds finite)."""
    radius = eps[:, None]
    low = torch.maximum(lower - center, -radius)
    high = torch.minimum(upper - center, radius)
    return low[:, None, :], high[:, None, :]


def _dual_value(
    a: Tensor,
    center: Tensor,
    eps: Tensor,
    lower: Tensor,
    upper: Tensor,
    mu: Tensor,
    with_step: bool = False,
):
    """``a . x0 + g(mu)``: a lower bound of ``min a . x`` for any ``mu >= 0`` ``(B, S)``
    (and the inner minimiser ``delta(mu)`` with ``with_step``)."""
    low, high = _step_bounds(center, eps, lower, upper)
    positive = mu > 0
    scale = torch.where(positive, 0.5 / torch.where(positive, mu, 1.0), 0.0)[..., None]
    delta = torch.clamp(-a * scale, min=low, max=high)
    if not bool(positive.all()):  # mu = 0: the box corner (a = 0: stay)
        corner = torch.where(a > 0, low, torch.where(a < 0, high, torch.zeros_like(a)))
        delta = torch.where(positive[..., None], delta, corner)
    eps2 = (eps * eps)[:, None]
    at_center = torch.einsum("bsd,bd->bs", a, center)
    penalty = torch.where(positive, mu * ((delta * delta).sum(-1) - eps2), 0.0)
    value = at_center + (a * delta).sum(-1) + penalty
    # mu = inf (eps 0 or denormal: the ball is the centre): the plain ball's bound
    ball = at_center - eps[:, None] * a.norm(dim=-1)
    value = torch.where(torch.isinf(mu), ball, value)
    return (value, delta) if with_step else value


def _optimal_mu(a: Tensor, room: Tensor, eps: Tensor) -> Tensor:
    """The dual optimum mu >= 0 per row ``(B, S)`` (0 when the box corner is in the ball).

    Searched in float32 on the problem scaled to ``max |a| = 1`` and ``eps = 1`` (the
    multiplier scales by ``max |a| / eps``), so that no square overflows."""
    with torch.no_grad():
        scale = a.abs().amax(dim=-1, keepdim=True).clamp_min(1e-300)
        mu = _unit_mu(a / scale, room.abs() / eps[:, None, None], torch.ones_like(eps))
        return mu * scale[..., 0] / eps[:, None]


def _unit_mu(a: Tensor, room: Tensor, eps: Tensor) -> Tensor:
    with torch.no_grad():
        a = a.float()
        room = room.float().abs()  # -0.0 would give a threshold of -inf
        # room 0 with a != 0: t = inf (always clipped); a = 0: t = 0 (never moves)
        threshold = torch.nan_to_num(a.abs() / (2 * room), nan=0.0)
        t, order = threshold.sort(dim=-1)
        a2 = (a * a).gather(-1, order)
        b2 = (room * room).gather(-1, order)
        unclipped = a2.cumsum(-1)
        clipped = (b2.sum(-1, keepdim=True) - b2.cumsum(-1)).clamp_min(0.0)
        eps2 = (eps * eps).float()[:, None, None]
        phi = unclipped / (4 * t * t) + clipped - eps2  # at t = 0: inf or nan (counted)
        count = (~(phi <= 0)).sum(-1, keepdim=True)  # breakpoints below the optimum
        k = (count - 1).clamp_min(0)
        a_k = unclipped.gather(-1, k)[..., 0]
        gap = (eps2[..., 0] - clipped.gather(-1, k)[..., 0]).clamp_min(1e-30)
        mu = torch.sqrt(a_k / (4 * gap))
        return torch.where(count[..., 0] > 0, mu, 0.0).double()
