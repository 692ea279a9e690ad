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


# --------------------------------------------------------------------------- the evidence

INSIDE_TOLERANCE = 1e-9
"""A point at distance ``<= r (1 + INSIDE_TOLERANCE)`` of a sample lies inside its certified
ball of radius ``r`` (the projection of an attack onto the sphere rounds either way)."""


@dataclass
class Evidence:
    """What a campaign checked: per (claim, attacker) the claims checked and the violations,
    per attacker the attack runs and the adversarial points it verified, and a line per
    violation. Plain dicts: picklable across worker processes and mergeable."""

    claims: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: dict[tuple[str, str], int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    def count(self, claim: str, attacker: str, checked: int, bad: int = 0, detail: str = ""):
        key = (claim, attacker)
        self.claims[key] = self.claims.get(key, 0) + int(checked)
        self.violations[key] = self.violations.get(key, 0) + int(bad)
        if bad and detail:
            self.details.append(detail)

    def ran(self, attacker: str, runs: int, found: int = 0) -> None:
        self.runs[attacker] = self.runs.get(attacker, 0) + int(runs)
        self.found[attacker] = self.found.get(attacker, 0) + int(found)

    def balls(
        self,
        claim: str,
        attacker: str,
        radius: np.ndarray,
        distance: np.ndarray,
        where: str = "",
    ) -> np.ndarray:
        """Count the balls ``radius > 0`` checked against the adversarial ``distance`` found
        by ``attacker`` (inf: none); returns the violations (a point inside a ball)."""
        radius = np.asarray(radius, dtype=np.float64)
        checked = (radius > 0) & np.isfinite(radius) & ~np.isnan(distance)
        bad = checked & (distance <= radius * (1 + INSIDE_TOLERANCE))
        detail = ""
        if bad.any():
            rows = np.flatnonzero(bad)[:5]
            detail = (
                f"{where}: {claim} violated by {attacker} at samples {rows.tolist()}: radius "
                f"{radius[rows].tolist()}, adversarial point at {distance[rows].tolist()}"
            )
        self.count(claim, attacker, checked.sum(), bad.sum(), detail)
        return bad

    def merge(self, other: Evidence) -> None:
        for key, value in other.claims.items():
            self.count(*key, value, other.violations.get(key, 0))
        for key, value in other.runs.items():
            self.ran(key, value, other.found.get(key, 0))
        self.details += other.details

    @property
    def total_violations(self) -> int:
        return sum(self.violations.values())


def flat_distance(points: np.ndarray, x: np.ndarray, norm: str) -> np.ndarray:
    diff = (np.asarray(points, dtype=np.float64) - x).reshape(len(x), -1)
    return np.abs(diff).max(axis=1) if norm == "linf" else np.linalg.norm(diff, axis=1)


def adversarial(model, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 onnx2torch module, onnxruntime float32) misclassify each point: two ``(N,)``
    masks. ``model`` is an ``AuditedModel``."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), *model.graph.input_shape)
    with torch.no_grad():
        ours = model.module(torch.as_tensor(points)).reshape(len(points), -1).numpy()
    deployed = model.runtime.logits(points)
    return predict(ours) != labels, predict(deployed) != labels


def verified_distance(model, x, labels, points, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each point to its sample where the float64 module misclassifies it, and
    where onnxruntime (float32) does (inf elsewhere)."""
    ours, deployed = adversarial(model, points, labels)
    distance = flat_distance(points, x, norm)
    return np.where(ours, distance, np.inf), np.where(deployed, distance, np.inf)


# --------------------------------------------------------------------------- torchattacks

SECOND_ATTACKERS = ("torchattacks PGD-L2", "torchattacks PGD-Linf", "torchattacks DeepFool",
                    "torchattacks CW-L2")  # fmt: skip


def torchattacks_available() -> bool:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return False
    return True


class _Cube(torch.nn.Module):
    """The model seen by torchattacks: inputs ``u`` in ``[0, 1]^D`` shaped ``(n, 1, 1, D)``
    (torchattacks' l2 projection reshapes per-sample factors to 4-D) map to
    ``centre + scale (u - 1/2)``: a cube of side ``scale`` around each sample, an isotropic
    map, so l2 and linf distances scale by ``scale``; a single logit ``z`` becomes the two
    logits ``(0, z)`` (class 1 iff z > 0, the project's rule)."""

    def __init__(self, module, centre: torch.Tensor, scale: torch.Tensor, shape) -> None:
        super().__init__()
        self.module = module
        # torchattacks reads its device from a parameter: models whose weights are buffers
        # (old ONNX exports) have none
        self.anchor = torch.nn.Parameter(torch.zeros(0, dtype=torch.float64))
        self.centre, self.scale, self.shape = centre, scale, tuple(shape)
        self.rows: slice | int = slice(None)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        n = len(u)
        centre = self.centre[self.rows].reshape(n, -1)
        scale = self.scale[self.rows].reshape(n, 1)
        z = centre + scale * (u.reshape(n, -1) - 0.5)
        logits = self.module(z.reshape(n, *self.shape)).reshape(n, -1)
        if logits.shape[1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return logits

    def back(self, u: torch.Tensor) -> np.ndarray:
        """Points of the model's input space (float64)."""
        n = len(u)
        centre = self.centre[self.rows].reshape(n, -1)
        z = centre + self.scale[self.rows].reshape(n, 1) * (u.reshape(n, -1) - 0.5)
        return z.detach().numpy().reshape(n, *self.shape)


@dataclass(frozen=True)
class SecondBudget:
    """torchattacks' settings (PGD: one random start, step 2.5 eps / steps)."""

    pgd_steps: int = 20
    deepfool_steps: int = 20
    cw_steps: int = 100
    cw_c: float = 1.0
    cw_lr: float = 0.05


def torchattacks_points(
    module: torch.nn.Module,
    x: np.ndarray,
    labels: np.ndarray,
    scale: np.ndarray,
    attack: str,
    budget: SecondBudget = SecondBudget(),
    seed: int = 0,
) -> np.ndarray:
    """One torchattacks attack on every sample (``scale > 0``); the points it returns, in
    the model's input space (float64; the sample itself where ``scale`` is 0).

    PGD-L2 / PGD-Linf attack the ball / box of radius ``scale / 2`` (``eps`` 1/2 around
    the cube's centre: the l2 ball is inscribed in the cube, so torchattacks' clipping to
    [0, 1] never cuts it, and the linf box is the cube); DeepFool and CW-L2 are
    minimal-norm attacks searching the whole cube of side ``scale``.
    """
    import torchattacks

    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    rows = np.flatnonzero((scale > 0) & np.isfinite(scale))
    if rows.size == 0:
        return out
    torch.manual_seed(seed)
    shape = x.shape[1:]
    centre = torch.as_tensor(x[rows].reshape(rows.size, -1))
    cube = _Cube(module, centre, torch.as_tensor(np.asarray(scale, dtype=np.float64)[rows]), shape)
    u = torch.full((rows.size, 1, 1, centre.shape[1]), 0.5, dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)[rows])
    steps = budget.pgd_steps
    if attack == "torchattacks PGD-L2":
        runner = torchattacks.PGDL2(cube, eps=0.5, alpha=2.5 * 0.5 / steps, steps=steps)
    elif attack == "torchattacks PGD-Linf":
        runner = torchattacks.PGD(cube, eps=0.5, alpha=2.5 * 0.5 / steps, steps=steps)
    elif attack == "torchattacks CW-L2":
        runner = torchattacks.CW(cube, c=budget.cw_c, steps=budget.cw_steps, lr=budget.cw_lr)
    elif attack == "torchattacks DeepFool":
        runner = torchattacks.DeepFool(cube, steps=budget.deepfool_steps)
    else:
        raise ValueError(attack)
    runner.set_device(torch.device("cpu"))
    if attack == "torchattacks DeepFool":  # sample by sample: its batch is one image
        found = []
        for i in range(rows.size):
            cube.rows = slice(i, i + 1)
            found.append(cube.back(runner(u[i : i + 1], y[i : i + 1])))
        out[rows] = np.concatenate(found)
    else:
        out[rows] = cube.back(runner(u, y))
    return out
