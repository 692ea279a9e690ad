"""Attacks as a shared service: one minimal-norm search per (model, norm), cached.

Several analyses need attack upper bounds on the same samples (the attack
analysis, the certificate gap); the service runs the search once per model and
norm, with the run's one attack budget (the ``[attacks]`` table,
``audit_core.attack_budget``), and hands every analysis the same verified result:
``ctx.attacks.minimal("l2")``.

Importing this module loads no torch: the budget can be validated and listed
(``audit plugins``) without the attacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from audit_core.attack_budget import ATTACKS_TABLE, MinimalAttackConfig
from audit_core.config import Parameter, build_table, table_parameters

if TYPE_CHECKING:
    from audit_core.attacks import MinimalAdversarial
    from audit_core.data import AuditData
    from audit_core.model import AuditedModel

PUSHES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
"""Relative lengthenings of ``x_adv - x`` tried when the deployed model (onnxruntime,
float32) still gives the label at a point the float64 search left on the boundary."""


def attack_config(values: dict[str, Any], where: str) -> MinimalAttackConfig:
    """The run's attack budget from the ``[attacks]`` table (file and ``-o attacks.KEY``);
    unknown keys, wrong types and out-of-range values are usage errors."""
    owner = f"table {ATTACKS_TABLE!r}"
    return build_table(MinimalAttackConfig, values, where, ATTACKS_TABLE, owner)


def attack_parameters() -> tuple[Parameter, ...]:
    """The keys of the ``[attacks]`` table with their defaults and meaning."""
    return table_parameters(MinimalAttackConfig)


class AttackService:
    """Minimal-norm adversarial search on one model's torch module, with a cache.

    ``config`` is the run's budget: every analysis gets the same search per norm.
    ``searches`` counts the searches actually run (the rest came from the cache).
    """

    def __init__(
        self,
        model: AuditedModel,
        data: AuditData | None,
        seed: int,
        config: MinimalAttackConfig | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.seed = seed
        self.config = config or MinimalAttackConfig()
        self.budget = self.config.effective(model.forward_macs)
        """The budget the searches run with (``effort`` resolved for this model)."""
        self.searches = 0
        self._cache: dict[str, MinimalAdversarial] = {}

    def minimal(
        self, norm: str, progress: Callable[[int], None] | None = None
    ) -> MinimalAdversarial:
        """Smallest verified adversarial distance per audit sample in ``norm`` (cached).

        ``progress`` gets the cumulative work units done (see ``work_units``); it is called
        with the total at the end also when the result came from the cache.
        """
        if self.data is None:
            raise ValueError("attacks need audit data")
        if norm not in self._cache:
            self._cache[norm] = self._deployed(self._search(norm, progress))
            self.searches += 1
        if progress is not None:
            progress(self.work_units())
        return self._cache[norm]

    def work_units(self) -> int:
        """Work units of one search on the audit samples (for ``Progress.total``)."""
        return self.budget.work_units(0 if self.data is None else len(self.data))

    def cached(self, norm: str) -> bool:
        return norm in self._cache

    def _search(self, norm: str, progress: Callable[[int], None] | None) -> MinimalAdversarial:
        import torch

        from audit_core.attacks import minimal_adversarial
        from audit_core.torch_module import Float32Logits

        module = self.model.module
        return minimal_adversarial(
            Float32Logits(module) if self.budget.float32 else module,
            torch.as_tensor(self.data.x, dtype=torch.float64),
            torch.as_tensor(self.data.y, dtype=torch.int64),
            norm=norm,
            config=self.budget,
            lower=self.data.lower,
            upper=self.data.upper,
            generator=torch.Generator().manual_seed(self.seed),
            progress=progress,
        )

    def _deployed(self, result: MinimalAdversarial) -> MinimalAdversarial:
        """Keep only examples that also fool the deployed model (onnxruntime, float32).

        The search stops within ~1e-10 of the decision boundary in float64, where the
        float32 runtime can still give the label: such points are pushed a little further
        along ``x_adv - x`` (``PUSHES``, staying in the input bounds, re-verified on both)
        or dropped. Samples misclassified from the start (distance 0) are kept as they are.
        """
        from audit_core.attacks import numpy_distance

        data = self.data
        x, x_adv = data.x.astype(np.float64), result.x_adv.copy()
        distance, labels = result.distance.copy(), result.adv_label.copy()
        todo = np.flatnonzero(result.found & (result.distance > 0))
        fooled = np.zeros(len(x), dtype=bool)
        fooled[todo] = self._fools(x_adv[todo], data.y[todo])[0]
        for push in PUSHES:
            rest = todo[~fooled[todo]]
            if rest.size == 0:
                break
            pushed = np.clip(x[rest] + (1 + push) * (x_adv[rest] - x[rest]), data.lower, data.upper)
            ok, predicted = self._fools(pushed, data.y[rest])
            moved = rest[ok]
            x_adv[moved], fooled[moved], labels[moved] = pushed[ok], True, predicted[ok]
            distance[moved] = numpy_distance(pushed[ok], x[moved], result.norm)
        dropped = np.zeros(len(x), dtype=bool)
        dropped[todo] = ~fooled[todo]
        keep = dropped.reshape(-1, *[1] * (x.ndim - 1))
        return dataclasses.replace(
            result,
            distance=np.where(dropped, np.inf, distance),
            x_adv=np.where(keep, x, x_adv),
            found=result.found & ~dropped,
            adv_label=np.where(dropped, -1, labels),
        )

    def _fools(self, points: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where both the float64 module and onnxruntime predict something other than
        ``labels``, and the float64 module's prediction."""
        import torch

        from audit_core.labels import predict

        if len(points) == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
        with torch.no_grad():
            ours = predict(self.model.module(torch.as_tensor(points, dtype=torch.float64)).numpy())
        deployed = predict(self.model.runtime.logits(points))
        return (ours != labels) & (deployed != labels), ours
