"""The input set's concretisation: the exact minimum of a linear function over an l2
ball intersected with the input bounds agrees with a cone-program solver (cvxpy), the
cheap bound never exceeds it, and the linf box minimum is exact."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from audit_core.bounds.input_set import InputSet


def _instances(seed: int, count: int):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        dim = int(rng.integers(1, 12))
        center = rng.uniform(0, 1, size=(1, dim))
        center[0, : dim // 2] = rng.choice([0.0, 1.0], size=dim // 2)  # on the bounds
        coefficients = rng.normal(size=(1, 3, dim))
        coefficients[0, 0, : dim // 3] = 0.0
        yield center, float(rng.uniform(0.01, 2.0)), coefficients


def _solver_minimum(a: np.ndarray, center: np.ndarray, eps: float, norm: str) -> float:
    x = cp.Variable(center.size)
    ball = cp.norm(x - center, 2 if norm == "l2" else "inf") <= eps
    problem = cp.Problem(cp.Minimize(a @ x), [ball, x >= 0, x <= 1])
    problem.solve()
    return float(problem.value)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_minimum_matches_a_cone_solver_and_is_never_above_it(norm) -> None:
    for center, eps, a in _instances(seed=1 if norm == "l2" else 2, count=60):
        inputs = InputSet.around(torch.as_tensor(center), eps, norm, 0.0, 1.0)
        ours = inputs.minimum(torch.as_tensor(a))[0].numpy()
        quick = inputs.quick_minimum(torch.as_tensor(a))[0].numpy()
        points = inputs.argmin(torch.as_tensor(a))[0].numpy()
        for j in range(a.shape[1]):
            solver = _solver_minimum(a[0, j], center[0], eps, norm)
            assert ours[j] <= solver + 1e-7  # a lower bound, whatever the solver's accuracy
            assert ours[j] == pytest.approx(solver, rel=1e-4, abs=1e-6)
            assert quick[j] <= ours[j] + 1e-12
            distance = np.linalg.norm(points[j] - center[0], 2 if norm == "l2" else np.inf)
            assert distance <= eps * (1 + 1e-9) and points[j].min() >= 0 and points[j].max() <= 1
            assert a[0, j] @ points[j] == pytest.approx(ours[j], rel=1e-4, abs=1e-6)


def test_the_bounds_tighten_the_l2_ball_where_pixels_sit_on_them() -> None:
    center = torch.zeros((1, 100), dtype=torch.float64)  # a black image: pixels may only rise
    a = torch.ones((1, 1, 100), dtype=torch.float64)
    ball = float(-0.5 * a.norm())
    inputs = InputSet.around(center, 0.5, "l2", 0.0, 1.0)
    assert float(inputs.minimum(a)) == pytest.approx(0.0)  # a . x >= 0 on [0, 1]^100
    assert float(inputs.quick_minimum(a)) >= ball


def test_unbounded_inputs_give_the_plain_ball() -> None:
    center = torch.as_tensor(np.random.default_rng(3).normal(size=(2, 7)))
    a = torch.as_tensor(np.random.default_rng(4).normal(size=(2, 4, 7)))
    inputs = InputSet.around(center, 0.3, "l2")
    expected = torch.einsum("bsd,bd->bs", a, center) - 0.3 * a.norm(dim=-1)
    torch.testing.assert_close(inputs.minimum(a), expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(inputs.quick_minimum(a), expected, rtol=1e-12, atol=1e-12)
