"""Projected gradient ascent with Adam steps for the bound parameters (alphas in
[0, 1], betas >= 0). Kingma & Ba (2015) in a few lines: ``torch.optim`` imports
torch's compiler stack (about 4 s) on first use, more than a whole quick audit."""

from __future__ import annotations

from collections.abc import Iterable

import torch

Tensor = torch.Tensor


class Ascent:
    """Adam on ``groups`` of (tensors, learning rate, lower clamp, upper clamp); the rates
    shrink by ``decay`` each step."""

    def __init__(
        self,
        groups: Iterable[tuple[list[Tensor], float, float | None, float | None]],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        decay: float = 1.0,
    ) -> None:
        self.groups = [(list(params), rate, low, high) for params, rate, low, high in groups]
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.decay = decay
        self.steps = 0
        self.moments: dict[int, tuple[Tensor, Tensor]] = {}

    def ascend(self, objective: Tensor) -> None:
        """One step up the gradient of ``objective`` (a scalar), then the projection."""
        params = [p for group in self.groups for p in group[0]]
        if not params or not objective.requires_grad:  # nothing to optimise (no kinks)
            return
        grads = torch.autograd.grad(objective, params, allow_unused=True)
        self.steps += 1
        grad_of = dict(zip(map(id, params), grads, strict=True))
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        with torch.no_grad():
            for group, rate, low, high in self.groups:
                for param in group:
                    grad = grad_of[id(param)]
                    if grad is None:
                        continue
                    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
                    first, second = self.moments.get(
                        id(param), (torch.zeros_like(param), torch.zeros_like(param))
                    )
                    first.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
                    second.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
                    self.moments[id(param)] = (first, second)
                    step = (first / correction1) / ((second / correction2).sqrt() + self.eps)
                    param.add_(step, alpha=rate * self.decay ** (self.steps - 1))
                    if low is not None or high is not None:
                        param.clamp_(min=low, max=high)
