"""Typed, immutable layers of a ``LayerGraph``: one class per layer type, holding every
rule about it (forward pass, linear part, linearisation, interval and linear bounds).

``LAYER_TYPES`` lists every concrete type; ``tests/test_layers.py`` checks that each
has every rule its kind needs.
"""

from audit_core.layers.activation import (
    Clip,
    ElementwisePiecewiseLinear,
    HardSigmoid,
    LeakyRelu,
    PRelu,
    Relaxation,
    Relu,
)
from audit_core.layers.affine import (
    AvgPool,
    Conv,
    Dense,
    ElementwiseAffine,
    Pad,
    Reshape,
    Sum,
    Transpose,
)
from audit_core.layers.base import (
    AffineLayer,
    Bounds,
    Input,
    Layer,
    LayerKind,
    ceil_mode_keep,
    crop_spatial,
    frozen_array,
    pad_spatial,
)
from audit_core.layers.pooling import MaxPool
from audit_core.layers.smooth import Sigmoid, Softmax, Tanh

LAYER_TYPES: tuple[type[Layer], ...] = (
    Input,
    Dense,
    Conv,
    ElementwiseAffine,
    Sum,
    Pad,
    AvgPool,
    Reshape,
    Transpose,
    Relu,
    LeakyRelu,
    PRelu,
    Clip,
    HardSigmoid,
    MaxPool,
    Sigmoid,
    Tanh,
    Softmax,
)

__all__ = [
    "LAYER_TYPES",
    "AffineLayer",
    "AvgPool",
    "Bounds",
    "Clip",
    "Conv",
    "Dense",
    "ElementwiseAffine",
    "ElementwisePiecewiseLinear",
    "HardSigmoid",
    "Input",
    "Layer",
    "LayerKind",
    "LeakyRelu",
    "MaxPool",
    "PRelu",
    "Pad",
    "Relaxation",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sum",
    "Tanh",
    "Transpose",
    "ceil_mode_keep",
    "crop_spatial",
    "frozen_array",
    "pad_spatial",
]
