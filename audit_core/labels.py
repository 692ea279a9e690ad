"""Decision rule shared by every analysis and attack.

A model with K >= 2 outputs predicts ``argmax``; a model with a single output is a
binary classifier that predicts class 1 where the output (a logit) is > 0.
"""

from __future__ import annotations

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


def num_classes(num_outputs: int) -> int:
    """Number of classes of a model with ``num_outputs`` logits."""
    return 2 if num_outputs == 1 else num_outputs


def predict(logits: Array) -> Array:
    """Predicted labels of a batch of logits ``(N, K)``."""
    if logits.shape[1] == 1:
        positive = logits[:, 0] > 0
        return positive.long() if isinstance(logits, torch.Tensor) else positive.astype(np.int64)
    return logits.argmax(1)


def margin(logits: Array, labels: Array) -> Array:
    """Classification margin: true-class logit minus the best other logit.

    Positive where the sample is classified as ``labels``, negative where it is
    misclassified. For a single-logit binary model the margin is ``s * logit``
    with ``s = +1`` for class 1 and ``-1`` for class 0.
    """
    if isinstance(logits, torch.Tensor):
        return _margin_torch(logits, labels)
    return _margin_torch(torch.as_tensor(logits), torch.as_tensor(labels)).numpy()


def _margin_torch(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    labels = labels.long()
    if logits.shape[1] == 1:
        sign = 2.0 * labels.to(logits.dtype) - 1.0
        return sign * logits[:, 0]
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(1)
