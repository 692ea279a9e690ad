"""Soundness campaign for the certificates: strong attacks inside every certified ball.

A test helper, not part of the shipped package: used by the soundness tests
(``tests/test_certificates_soundness.py``, importable as ``certificate_campaign``) and by
``benchmarks/certificate_soundness.py`` (which puts ``tests/`` on ``sys.path``), never by
the analysis itself.

For each sample with a certified l2 radius ``r > 0`` the campaign runs, on the
onnx2torch module (an implementation independent of the layer graph that computed
the certificate), in float64:

* PGD-l2 (margin loss, random restarts; Madry et al. 2018) in the ball of radius r,
* DeepFool (Moosavi-Dezfooli et al. 2016), unbounded, whatever distance it reaches,
* uniform random search inside the ball of radius r,
* the core's minimal-norm search (DeepFool + PGD bisection + line search), unbounded,
  whose distance is the denominator of the certified/attack ratio,

and calls any adversarial point at distance ``<= r`` a *violation* (a soundness bug).
The attacks run **without input bounds**: the certificate is a statement about the
whole ball, and an adversarial point inside the box is also one inside the ball, so
dropping the box only makes the attacker stronger.

The deployed model is checked too: PGD's most adversarial point of each certified
ball (the smallest-margin iterate, on the ball's surface in the worst direction) is
evaluated by onnxruntime in float32 and must keep the certified class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from audit_core.attacks import (
    MinimalAttackConfig,
    deepfool,
    minimal_adversarial,
    pgd,
    random_search,
)
from audit_core.fidelity import onnxruntime_logits
from audit_core.labels import predict
from audit_core.onnx_import import LoadedModel


@dataclass(frozen=True)
class AttackBudget:
    """How hard the campaign attacks each certified ball."""

    pgd_steps: int = 50
    pgd_restarts: int = 5
    random_samples: int = 400
    deepfool_iter: int = 50
    minimal: MinimalAttackConfig | None = field(
        default_factory=lambda: MinimalAttackConfig(restarts=2, bisection_steps=8)
    )
    """The minimal-norm search (for the certified/attack ratio); None skips it."""


@dataclass(frozen=True)
class CampaignResult:
    """Per sample (``(N,)`` arrays): the radius attacked, what each attack found."""

    radius: np.ndarray
    distances: dict[str, np.ndarray]
    """Smallest adversarial l2 distance per attack (inf where none was found)."""
    deployed_ok: np.ndarray
    """onnxruntime (float32) keeps the class at PGD's worst point of the ball."""

    @property
    def attacked(self) -> np.ndarray:
        return (self.radius > 0) & np.isfinite(self.radius)

    @property
    def closest(self) -> np.ndarray:
        """Smallest adversarial distance any attack found."""
        return np.min(np.stack(list(self.distances.values())), axis=0)

    @property
    def violations(self) -> np.ndarray:
        """An adversarial point within the certified radius, or a deployed-model flip."""
        inside = self.attacked & (self.closest <= self.radius)
        return inside | (self.attacked & ~self.deployed_ok)

    @property
    def ratio(self) -> np.ndarray:
        """certified radius / closest attack distance (NaN where nothing was found)."""
        closest = self.closest
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(np.isfinite(closest) & (closest > 0), self.radius / closest, np.nan)


def attack_certificate(
    model: torch.nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    radius: np.ndarray,
    *,
    budget: AttackBudget = AttackBudget(),
    seed: int = 0,
    loaded: LoadedModel | None = None,
) -> CampaignResult:
    """Attack every ball ``B(x[n], radius[n])`` (``labels`` = the certified classes).

    ``loaded`` (optional) enables the float32 onnxruntime check of PGD's worst points.
    """
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    yt = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    radius = np.asarray(radius, dtype=np.float64)
    generator = torch.Generator().manual_seed(seed)
    n = len(xt)
    distances = {name: np.full(n, np.inf) for name in ("pgd", "random", "deepfool", "minimal")}
    deployed_ok = np.ones(n, dtype=bool)
    idx = np.flatnonzero((radius > 0) & np.isfinite(radius))
    if idx.size:
        r = torch.as_tensor(radius[idx])
        worst = _pgd(model, xt[idx], yt[idx], r, budget, generator, distances["pgd"], idx)
        found = random_search(
            model, xt[idx], yt[idx], r, norm="l2", samples=budget.random_samples,
            generator=generator,
        )  # fmt: skip
        distances["random"][idx] = found.distance.numpy()
        if loaded is not None:
            deployed_ok[idx] = deployed_predictions(loaded, worst) == labels[idx]
    fool = deepfool(model, xt, yt, norm="l2", max_iter=budget.deepfool_iter)
    distances["deepfool"] = fool.distance.numpy()
    if budget.minimal is not None:
        minimal = minimal_adversarial(
            model, xt, yt, norm="l2", config=budget.minimal, generator=generator
        )
        distances["minimal"] = minimal.distance
    return CampaignResult(radius, distances, deployed_ok)


def _pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    radius: torch.Tensor,
    budget: AttackBudget,
    generator: torch.Generator,
    out: np.ndarray,
    idx: np.ndarray,
) -> np.ndarray:
    """PGD in the balls; writes distances into ``out[idx]``; returns the worst points."""
    result = pgd(
        model,
        x,
        y,
        radius,
        norm="l2",
        steps=budget.pgd_steps,
        restarts=budget.pgd_restarts,
        step_size=0.1 * radius,
        generator=generator,
    )
    out[idx] = result.distance.numpy()
    return result.x_adv.numpy()


def deployed_predictions(loaded: LoadedModel, x: np.ndarray) -> np.ndarray:
    """Labels the deployed model (onnxruntime, the file's own precision) gives ``x``."""
    batch = np.asarray(x).reshape(len(x), *loaded.graph.input_shape)
    return np.asarray(predict(onnxruntime_logits(loaded, batch)), dtype=np.int64)
