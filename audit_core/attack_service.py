"""Attacks as a shared service: one minimal-norm search per (model, norm), cached.

Several analyses need attack upper bounds on the same samples (the attack
analysis, the certificate gap); the service runs the search once per model and
norm and hands every analysis the same verified result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from audit_core.attacks import MinimalAdversarial, MinimalAttackConfig, minimal_adversarial
from audit_core.data import AuditData
from audit_core.model import AuditedModel


class AttackService:
    """Minimal-norm adversarial search on one model's torch module, with a cache."""

    def __init__(self, model: AuditedModel, data: AuditData | None, seed: int) -> None:
        self.model = model
        self.data = data
        self.seed = seed
        self._cache: dict[tuple[str, MinimalAttackConfig], MinimalAdversarial] = {}

    def minimal(
        self,
        norm: str,
        config: MinimalAttackConfig | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> MinimalAdversarial:
        """Smallest verified adversarial distance per audit sample (cached)."""
        if self.data is None:
            raise ValueError("attacks need audit data")
        config = config or MinimalAttackConfig()
        key = (norm, config)
        if key not in self._cache:
            generator = torch.Generator().manual_seed(self.seed)
            self._cache[key] = minimal_adversarial(
                self.model.module,
                torch.as_tensor(self.data.x, dtype=torch.float64),
                torch.as_tensor(self.data.y, dtype=torch.int64),
                norm=norm,
                config=config,
                lower=self.data.lower,
                upper=self.data.upper,
                generator=generator,
                progress=progress,
            )
        return self._cache[key]

    def cached(self, norm: str, config: MinimalAttackConfig | None = None) -> bool:
        return (norm, config or MinimalAttackConfig()) in self._cache
