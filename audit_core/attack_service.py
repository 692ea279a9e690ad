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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from audit_core.attack_budget import ATTACKS_TABLE, MinimalAttackConfig
from audit_core.config import build_table
from audit_core.executor import Executor, Shared, batches
from audit_core.memory import attack_need

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


MIN_BATCH = 8
"""Fewest samples per batch of the search when samples are few (smaller batches waste the
batched tensors; larger ones leave workers idle: ``executor.batches``)."""


class AttackService:
    """Minimal-norm adversarial search on one model's torch module, with a cache.

    ``config`` is the run's budget: every analysis gets the same search per norm.
    ``searches`` counts the searches actually run (the rest came from the cache). The
    samples are searched in batches through the run's executor (``batches``), each batch
    with its own seed derived from the run's seed and the batch's index: the result does
    not depend on the executor or the number of workers.
    """

    def __init__(
        self,
        model: AuditedModel,
        data: AuditData | None,
        seed: int,
        config: MinimalAttackConfig | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.seed = seed
        self.config = config or MinimalAttackConfig()
        self.budget = self.config.effective(model.forward_macs)
        """The budget the searches run with (``preset`` resolved for this model)."""
        self.executor = executor or Executor(1)
        self.searches = 0
        self._cache: dict[str, MinimalAdversarial] = {}
        self._shared: Shared | None = None

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
            self._cache[norm] = self._search(norm, progress)
            self.searches += 1
        if progress is not None:
            progress(self.work_units())
        return self._cache[norm]

    def work_units(self) -> int:
        """Work units of one search on the audit samples (for ``Progress.total``)."""
        return self.budget.work_units(0 if self.data is None else len(self.data))

    def cached(self, norm: str) -> bool:
        return norm in self._cache

    def results(self) -> dict[str, MinimalAdversarial]:
        """The searches done so far, by norm."""
        return dict(self._cache)

    def adopt(self, results: dict[str, MinimalAdversarial]) -> None:
        """Cache searches this service's copy in another process ran (an isolated
        analysis's, ``audit_core.isolation``), as if they had run here."""
        for norm, result in results.items():
            if norm not in self._cache:
                self._cache[norm] = result
                self.searches += 1

    def batches(self) -> list[range]:
        """The samples' batches: at most ``batch_size`` and the memory budget allow, and
        about ``executor.TARGET_BATCHES`` of them when the samples are few."""
        count = len(self.data)
        per_sample = attack_need(self.model, self.config).bytes
        cap = self.executor.batch_items(per_sample, maximum=self.config.batch_size)
        return batches(count, cap, MIN_BATCH)

    def _search(self, norm: str, progress: Callable[[int], None] | None) -> MinimalAdversarial:
        if self._shared is None:
            data = self.data
            state = _SearchData(self.model, data.x, data.y, data.lower, data.upper)
            self._shared = self.executor.share(state)
        batches = self.batches()
        units = [
            _Batch(norm, self.budget, index, part.start, part.stop, batch_seed(self.seed, index))
            for index, part in enumerate(batches)
        ]
        meter = _Cumulative(progress, self.budget.work_units(1))
        parts = self.executor.map(
            search_batch,
            units,
            shared=self._shared,
            progress=meter,
            weights=[len(b) for b in batches],
        )
        return _joined(parts, norm, self.data.x)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of a search: from the run's seed and the index only."""
    return int(np.random.default_rng([seed, index]).integers(2**62))


@dataclass(frozen=True)
class _SearchData:
    """What every batch of a service's searches reads (shipped once per worker)."""

    model: AuditedModel
    x: np.ndarray
    y: np.ndarray
    lower: float
    upper: float


@dataclass(frozen=True)
class _Batch:
    norm: str
    config: MinimalAttackConfig
    index: int
    start: int
    stop: int
    seed: int


class _Cumulative:
    """``progress(samples finished)`` increments -> cumulative work units."""

    def __init__(self, callback: Callable[[int], None] | None, per_sample: int) -> None:
        self.callback, self.per_sample, self.done = callback, per_sample, 0

    def __call__(self, samples: float) -> None:
        self.done += int(samples) * self.per_sample
        if self.callback is not None:
            self.callback(self.done)


def search_batch(state: _SearchData, batch: _Batch) -> MinimalAdversarial:
    """One batch of the minimal-norm search, with its own seed, checked on the deployed
    model (a unit of the executor)."""
    import torch

    from audit_core import attacks
    from audit_core.torch_module import Float32Logits

    rows = slice(batch.start, batch.stop)
    x, y = state.x[rows], state.y[rows]
    module = state.model.module
    result = attacks.minimal_adversarial(
        Float32Logits(module) if batch.config.float32 else module,
        torch.as_tensor(x, dtype=torch.float64),
        torch.as_tensor(y, dtype=torch.int64),
        norm=batch.norm,
        config=batch.config,
        lower=state.lower,
        upper=state.upper,
        generator=torch.Generator().manual_seed(batch.seed),
    )
    return deployed(state.model, x, y, state.lower, state.upper, result)


def _joined(parts: list[MinimalAdversarial], norm: str, x: np.ndarray) -> MinimalAdversarial:
    from audit_core.attacks import MinimalAdversarial

    if not parts:
        return MinimalAdversarial(
            np.zeros(0), x.astype(np.float64), np.zeros(0, bool), np.zeros(0, np.int64), norm
        )
    return MinimalAdversarial(
        distance=np.concatenate([p.distance for p in parts]),
        x_adv=np.concatenate([p.x_adv for p in parts]),
        found=np.concatenate([p.found for p in parts]),
        adv_label=np.concatenate([p.adv_label for p in parts]),
        norm=norm,
    )


def deployed(
    model: AuditedModel,
    x: np.ndarray,
    y: np.ndarray,
    lower: float,
    upper: float,
    result: MinimalAdversarial,
) -> MinimalAdversarial:
    """Keep only examples that also fool the deployed model (onnxruntime, float32).

    The search stops within ~1e-10 of the decision boundary in float64, where the
    float32 runtime can still give the label: such points are pushed a little further
    along ``x_adv - x`` (``PUSHES``, staying in the input bounds, re-verified on both)
    or dropped. Samples misclassified from the start (distance 0) are kept as they are.
    """
    from audit_core.attacks import numpy_distance

    x, x_adv = x.astype(np.float64), result.x_adv.copy()
    distance, labels = result.distance.copy(), result.adv_label.copy()
    todo = np.flatnonzero(result.found & (result.distance > 0))
    fooled = np.zeros(len(x), dtype=bool)
    fooled[todo] = _fools(model, x_adv[todo], y[todo])[0]
    for push in PUSHES:
        rest = todo[~fooled[todo]]
        if rest.size == 0:
            break
        pushed = np.clip(x[rest] + (1 + push) * (x_adv[rest] - x[rest]), lower, upper)
        ok, predicted = _fools(model, pushed, y[rest])
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


def _fools(
    model: AuditedModel, points: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where both the float64 module and onnxruntime predict something other than
    ``labels``, and the float64 module's prediction."""
    import torch

    from audit_core.labels import predict

    if len(points) == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    with torch.no_grad():
        ours = predict(model.module(torch.as_tensor(points, dtype=torch.float64)).numpy())
    deployed = predict(model.runtime.logits(points))
    return (ours != labels) & (deployed != labels), ours
