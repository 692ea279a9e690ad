"""Max-margin directions of Charles, Rosenberg & Papailiopoulos (2019), Sections 3-4.

Part of ``audit_plugins.transfer`` (linear transfer):

- :func:`separable`: hard-margin linear separability of a labelled set, an LP
  feasibility check (``y_i (w.x_i + b) >= 1``, scipy's HiGHS);
- :func:`max_margin`: the hard-margin SVM ``w*, b*`` with the dual coefficients
  ``alpha`` of Lemma 3 (``w* = sum alpha_i y_i x_i``, ``sum alpha_i y_i = 0``,
  ``alpha >= 0``) and ``c_S = 1 / sum alpha`` (Corollary 6);
- :func:`separable_subset`: the set the SVM is solved on -- all of ``S[k, l]``
  when it is separable, otherwise the points the model classifies correctly (for
  a linear model these are separated by the model itself, as in the proof of
  Theorem 7), thinned greedily until separable for other models;
- :func:`theorem5_bounds`: Theorem 5 on a linear separator ``(w, b)`` of ``S``:
  the per-point constant beyond which ``x - c y w*`` is misclassified, and the
  inequality (A.4) ``<w, w*> >= gamma_h sum alpha`` it rests on.

Labels are ``+1`` / ``-1`` (``+1`` is class ``k`` of the pair ``(k, l)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# scipy.optimize and sklearn are imported where used: this module loads with every
# `audit` command (plugins are imported to list them), most of which never fit an SVM.

HOW_ALL = "all points of S[k, l] (hard-margin separable)"
HOW_CORRECT = "the points the model classifies correctly (S[k, l] is not separable)"
HOW_GREEDY = (
    "a separable subset of the points the model classifies correctly, found greedily by "
    "dropping the point with the worst soft-margin SVM margin until separable (not "
    "necessarily the largest)"
)


@dataclass(frozen=True)
class MaxMargin:
    """The hard-margin SVM on ``x[subset]`` (labels ``y[subset]`` in {-1, +1}).

    ``w = sum_i alpha_i y_i x_i`` over the subset (Lemma 3), ``b`` its offset, ``alpha``
    ``(len(subset),)`` the dual coefficients (zero off the support vectors).
    """

    w: np.ndarray
    b: float
    alpha: np.ndarray
    subset: np.ndarray
    how: str
    min_margin: float
    """``min_i y_i (w.x_i + b)`` over the subset (1 for an exact hard-margin SVM)."""
    dual_residual: float
    """``|sum alpha_i y_i|`` relative to ``sum alpha`` (0 in exact arithmetic)."""

    @property
    def sum_alpha(self) -> float:
        return float(self.alpha.sum())

    @property
    def c_S(self) -> float:
        """The universal constant of Corollary 6: ``1 / sum alpha``."""
        return 1.0 / self.sum_alpha

    @property
    def geometric_margin(self) -> float:
        """``gamma* = min_i y_i (w.x_i + b) / ||w||``."""
        return self.min_margin / float(np.linalg.norm(self.w))

    @property
    def support_vectors(self) -> int:
        return int(np.count_nonzero(self.alpha > 0))


def separable(x: np.ndarray, y_pm: np.ndarray) -> bool:
    """Is ``{(x_i, y_i)}`` strictly linearly separable? (LP: ``y_i (w.x_i + b) >= 1``)."""
    if len(np.unique(y_pm)) < 2:
        return False
    n, d = x.shape
    a_ub = -y_pm[:, None] * np.hstack([x, np.ones((n, 1))])
    from scipy.optimize import linprog

    result = linprog(
        np.zeros(d + 1),
        A_ub=a_ub,
        b_ub=-np.ones(n),
        bounds=[(None, None)] * (d + 1),
        method="highs",
    )
    return bool(result.status == 0)


def max_margin(
    x: np.ndarray, y_pm: np.ndarray, subset: np.ndarray, how: str, c: float = 1e6
) -> MaxMargin:
    """Hard-margin SVM on ``x[subset]`` (sklearn ``SVC``, linear kernel, large ``C``)."""
    xs, ys = x[subset], y_pm[subset]
    from sklearn.svm import SVC

    svm = SVC(kernel="linear", C=c, tol=1e-8, max_iter=-1).fit(xs, ys)
    alpha = np.zeros(len(subset))
    # dual_coef_ holds alpha_i y_i for the support vectors; classes_ = [-1, 1].
    alpha[svm.support_] = np.abs(svm.dual_coef_[0])
    w = (alpha * ys) @ xs  # Lemma 3 (1), exactly as the theorem uses it
    b = float(svm.intercept_[0])
    margins = ys * (xs @ w + b)
    residual = abs(float(alpha @ ys)) / max(float(alpha.sum()), np.finfo(float).tiny)
    return MaxMargin(w, b, alpha, np.asarray(subset), how, float(margins.min()), residual)


def separable_subset(
    x: np.ndarray, y_pm: np.ndarray, correct: np.ndarray
) -> tuple[np.ndarray, str]:
    """The indices the max-margin SVM is solved on, and how they were chosen."""
    everything = np.arange(len(y_pm))
    if separable(x, y_pm):
        return everything, HOW_ALL
    keep = everything[correct]
    if separable(x[keep], y_pm[keep]):
        return keep, HOW_CORRECT
    while len(np.unique(y_pm[keep])) == 2:
        from sklearn.svm import SVC

        soft = SVC(kernel="linear", C=10.0).fit(x[keep], y_pm[keep])
        margins = y_pm[keep] * soft.decision_function(x[keep])
        counts = {label: int((y_pm[keep] == label).sum()) for label in (-1.0, 1.0)}
        droppable = np.array([counts[label] > 1 for label in y_pm[keep]])
        if not droppable.any():
            break
        keep = np.delete(keep, np.argmin(np.where(droppable, margins, np.inf)))
        if separable(x[keep], y_pm[keep]):
            return keep, HOW_GREEDY
    raise ValueError("no separable subset with both classes was found")


@dataclass(frozen=True)
class Theorem5:
    """Theorem 5 for the linear separator ``(w, b)`` of the SVM's set ``S``.

    ``bound[i]``: every ``c > bound[i]`` misclassifies ``x_i - c y_i w*``;
    ``ratio = <w, w*> / (gamma_h sum alpha)`` (>= 1 is inequality (A.4));
    ``margins[i] = y_i (w.x_i + b)`` (unnormalised; all > 0 when ``h`` separates S).
    """

    bound: np.ndarray
    margins: np.ndarray
    ratio: float
    inner: float

    @property
    def separates(self) -> bool:
        """True when the separator ``h`` of Theorem 5 puts every point on its side."""
        return bool((self.margins > 0).all())


def theorem5_bounds(
    w: np.ndarray, b: float, svm: MaxMargin, x: np.ndarray, y_pm: np.ndarray
) -> Theorem5:
    """The bounds of Theorem 5 for ``h = sign(w.x + b)`` on the SVM's set (scale-free)."""
    xs, ys = x[svm.subset], y_pm[svm.subset]
    margins = ys * (xs @ w + b)
    gamma_sum = margins.min() * svm.sum_alpha  # gamma_h sum alpha (times ||w||)
    inner = float(w @ svm.w)
    bound = margins / gamma_sum
    return Theorem5(bound, margins, inner / gamma_sum, inner)
