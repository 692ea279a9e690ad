"""Torch modules of the zoo's models (training side; the ONNX side is ``onnx_export``)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn


def mlp(sizes: list[int]) -> nn.Sequential:
    """Fully connected ReLU net ``sizes[0] -> ... -> sizes[-1]`` (no activation at the end)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        if i > 0:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    """The ``nn.Linear`` layers of an :func:`mlp`, in order."""
    return [m for m in model if isinstance(m, nn.Linear)]


class DigitsCNN(nn.Module):
    """Conv(1->8, 3x3, pad 1) -> ReLU -> MaxPool 2x2 -> Flatten -> Linear(128 -> 10)."""

    def __init__(self, channels: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.fc = nn.Linear(channels * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(torch.relu(self.conv(x)), kernel_size=2, stride=2)
        return self.fc(torch.flatten(h, 1))


class DigitsResNet(nn.Module):
    """Stem conv-BN-ReLU, one residual block (conv-BN-ReLU-conv-BN + skip), ReLU,
    AveragePool 2x2, Flatten, Linear(128 -> 10). Convolutions before BN have no bias."""

    def __init__(self, channels: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem_bn(self.stem(x)))
        r = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(h)))))
        h = torch.relu(h + r)
        h = nn.functional.avg_pool2d(h, kernel_size=2, stride=2)
        return self.fc(torch.flatten(h, 1))


class NonnegTwoLayer(nn.Module):
    """f(x) - a with f(x) = v^T relu(W x + b), v = softplus(u) >= 0 and a fixed a > 0.

    The class R' of Charles et al. 2019, Sec. 5 (Lemma 14): label 1 iff f(x) > a.
    """

    def __init__(self, n_in: int, width: int, threshold: float) -> None:
        super().__init__()
        if threshold <= 0:
            raise ValueError("the threshold a of class R' must be positive")
        self.hidden = nn.Linear(n_in, width)
        self.u = nn.Parameter(torch.zeros(width))
        self.threshold = threshold

    def output_weights(self) -> torch.Tensor:
        """The nonnegative output weights v = softplus(u)."""
        return nn.functional.softplus(self.u)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.hidden(x)) @ self.output_weights()
        return (f - self.threshold).unsqueeze(1)
