"""The max-margin SVM under linear-transfer (``audit_plugins.transfer.svm``, Charles et al.
2019): Theorems 4 and 5 on random separable data and separators, the tight bound, the
separable subset."""

from __future__ import annotations

import numpy as np
import pytest

from audit_plugins.transfer.svm import (
    HOW_ALL,
    HOW_CORRECT,
    HOW_GREEDY,
    max_margin,
    separable,
    separable_subset,
    theorem5_bounds,
)


def _separable_data(rng: np.random.Generator, n: int, d: int) -> tuple[np.ndarray, ...]:
    normal = rng.standard_normal(d)
    normal /= np.linalg.norm(normal)
    x = rng.standard_normal((n, d))
    y = np.where(x @ normal + 0.3 > 0, 1.0, -1.0)
    x += 0.4 * y[:, None] * normal  # push the classes apart: margin >= 0.4
    return x, y, normal


def _random_separator(rng, x, y, normal) -> tuple[np.ndarray, float]:
    """A random (w, b) that separates (x, y): a random tilt of the true normal and an
    offset drawn inside the feasible interval."""
    while True:
        w = normal + 0.4 * rng.standard_normal(len(normal)) / np.sqrt(len(normal))
        projected = x @ w
        low, high = projected[y < 0].max(), projected[y > 0].min()
        if low < high:
            return w, -rng.uniform(low, high)


@pytest.mark.parametrize("seed", range(4))
def test_theorems_4_and_5_on_random_separable_data_and_separators(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x, y, normal = _separable_data(rng, n=40, d=5)
    assert separable(x, y)
    svm = max_margin(x, y, np.arange(len(y)), HOW_ALL)
    assert svm.min_margin >= 1 - 1e-6 and svm.dual_residual < 1e-8
    assert (svm.alpha >= 0).all() and abs(svm.sum_alpha - svm.w @ svm.w) < 1e-5 * svm.sum_alpha
    for _ in range(25):
        w, b = _random_separator(rng, x, y, normal)
        theorem = theorem5_bounds(w, b, svm, x, y)
        assert theorem.separates and theorem.inner > 0  # Theorem 4: <w, w*> > 0
        assert theorem.ratio >= 1 - 1e-9  # inequality (A.4)
        for factor, flips in ((1 + 1e-9, True), (2.0, True), (50.0, True)):
            c = theorem.bound * factor
            moved = x - (c * y)[:, None] * svm.w
            assert ((np.sign(moved @ w + b) != y) == flips).all()
        least = np.argmin(theorem.margins)
        assert theorem.bound[least] == pytest.approx(svm.c_S)  # Corollary 6


def test_theorem5_bound_is_tight_for_the_max_margin_classifier_itself() -> None:
    rng = np.random.default_rng(7)
    x, y, _ = _separable_data(rng, n=30, d=4)
    svm = max_margin(x, y, np.arange(len(y)), HOW_ALL)
    theorem = theorem5_bounds(svm.w, svm.b, svm, x, y)
    assert theorem.ratio == pytest.approx(1.0, abs=1e-5)  # <w*, w*> = sum alpha (gamma = 1)
    just_before = x - (theorem.bound * (1 - 1e-3) * y)[:, None] * svm.w
    assert (np.sign(just_before @ svm.w + svm.b) == y).all()


def test_separable_subset_falls_back_to_correct_points_then_greedy() -> None:
    rng = np.random.default_rng(3)
    x, y, _ = _separable_data(rng, n=30, d=3)
    assert separable_subset(x, y, np.ones(30, bool))[1] == HOW_ALL
    flipped = y.copy()
    flipped[:2] *= -1  # two label errors the "model" gets wrong
    correct = np.ones(30, bool)
    correct[:2] = False
    subset, how = separable_subset(x, flipped, correct)
    assert how == HOW_CORRECT and set(subset) == set(range(2, 30))
    xor = np.array([[0, 0], [1, 1], [0, 1], [1, 0], [0.1, 0.05]], float)
    labels = np.array([1, 1, -1, -1, 1.0])
    assert not separable(xor, labels)
    subset, how = separable_subset(xor, labels, np.ones(5, bool))
    assert how == HOW_GREEDY and separable(xor[subset], labels[subset])
    assert len(np.unique(labels[subset])) == 2
