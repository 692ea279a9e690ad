"""A ReLU prefix as a chain of composed affine blocks (plain numpy, cheap to import).

Worker processes of the collision descent import only this module, ``descent`` and the
package's ``__init__`` (hook and Config), so that they start quickly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Block:
    """One affine map ``x -> weight @ x + bias`` on flat vectors, followed by a ReLU or not."""

    weight: np.ndarray
    bias: np.ndarray
    relu: bool


def chain_preactivations(blocks: tuple[Block, ...], x: np.ndarray) -> list[np.ndarray]:
    """Pre-activations ``(N, n_i)`` of every block at the rows of ``x`` (true patterns)."""
    values, h = [], x
    for block in blocks:
        z = h @ block.weight.T + block.bias
        values.append(z)
        h = np.maximum(z, 0.0) if block.relu else z
    return values


_CONTROLLER = None


def one_blas_thread():
    """Context manager limiting BLAS/OpenMP pools to one thread.

    Small LAPACK calls (eigh, svd of tens to hundreds of rows) only slow down with
    more threads, badly so on a busy machine. The controller is created once (at
    first use, when numpy and scipy are loaded): ``threadpool_limits`` rescans the
    loaded libraries at every call, which costs about a millisecond.
    """
    global _CONTROLLER
    from threadpoolctl import ThreadpoolController

    if _CONTROLLER is None:
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)
