"""Every layer type has every rule its kind needs, and each rule agrees with the layer's
forward pass: linear parts and adjoints against dense matrices, interval bounds and
linear relaxations against dense samples, local slopes against finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from audit_core.layers import (
    LAYER_TYPES,
    AffineLayer,
    AvgPool,
    Clip,
    Conv,
    Dense,
    ElementwiseAffine,
    ElementwisePiecewiseLinear,
    HardSigmoid,
    Input,
    Layer,
    LayerKind,
    LeakyRelu,
    MaxPool,
    Pad,
    PRelu,
    Relu,
    Reshape,
    Sigmoid,
    Softmax,
    Sum,
    Tanh,
    Transpose,
    frozen_array,
)
from audit_core.onnx_import import registry

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return frozen_array(RNG.normal(size=shape))


EXAMPLES: dict[type, Callable[[], tuple[Layer, list[tuple[int, ...]]]]] = {
    Input: lambda: (Input((3,)), [(3,)]),
    Dense: lambda: (Dense(_w(4, 5), _w(4)), [(5,)]),
    Conv: lambda: (
        Conv(_w(4, 2, 3, 2), _w(4), (2, 1), (1, 0, 0, 1), (1, 2), 2),
        [(4, 7, 6)],
    ),
    ElementwiseAffine: lambda: (ElementwiseAffine(_w(3, 1), _w(1, 4)), [(3, 1)]),
    Sum: lambda: (Sum((1.5, -2.0)), [(2, 3), (2, 3)]),
    Pad: lambda: (Pad((1, 0, 2, 1), 0.5), [(2, 3, 3)]),
    AvgPool: lambda: (AvgPool((2, 2), (2, 1), (1, 0, 0, 1), False, True), [(2, 5, 4)]),
    Reshape: lambda: (Reshape((6, 2)), [(3, 4)]),
    Transpose: lambda: (Transpose((2, 0, 1)), [(2, 3, 4)]),
    Relu: lambda: (Relu(), [(2, 3)]),
    LeakyRelu: lambda: (LeakyRelu(0.2), [(2, 3)]),
    PRelu: lambda: (PRelu(frozen_array([[0.3], [-0.5]])), [(2, 3)]),
    Clip: lambda: (Clip(-0.5, 1.0), [(2, 3)]),
    HardSigmoid: lambda: (HardSigmoid(-0.7, 0.4), [(2, 3)]),
    MaxPool: lambda: (MaxPool((2, 3), (2, 1), (1, 1, 0, 1), (1, 1), True), [(2, 5, 6)]),
    Sigmoid: lambda: (Sigmoid(), [(4,)]),
    Tanh: lambda: (Tanh(), [(4,)]),
    Softmax: lambda: (Softmax(0), [(4,)]),
}

RULES = {
    LayerKind.INPUT: ("forward", "interval"),
    LayerKind.AFFINE: ("forward", "interval", "linear", "abs_linear", "adjoint"),
    LayerKind.PIECEWISE_LINEAR: ("forward", "interval", "linearize", "backward_bound"),
    LayerKind.NONLINEAR: ("forward", "interval"),
}


INHERITED_RULES = {"interval", "adjoint", "offset"}
"""Rules ``AffineLayer`` implements for every affine layer (from ``linear``/``abs_linear``)."""


def _defines(cls: type, name: str) -> bool:
    """True when ``cls`` has its own ``name`` rule (not a base class's placeholder)."""
    for base in cls.__mro__:
        if name in vars(base):
            if base is Layer:
                return False
            return base is not AffineLayer or name in INHERITED_RULES
    return False


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=lambda c: c.__name__)
def test_every_layer_type_has_every_rule_of_its_kind(cls: type) -> None:
    assert cls in EXAMPLES, f"add an example of {cls.__name__} to this test"
    missing = [rule for rule in RULES[cls.kind] if not _defines(cls, rule)]
    assert not missing, f"{cls.__name__} lacks {missing}"


def test_the_examples_cover_exactly_the_registered_types() -> None:
    assert set(EXAMPLES) == set(LAYER_TYPES)


def _random_inputs(shapes: list[tuple[int, ...]], n: int = 3) -> list[torch.Tensor]:
    return [torch.as_tensor(RNG.normal(size=(n, *s))) for s in shapes]


def _matrix(function: Callable, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """The matrix of a linear function of the concatenated flat inputs."""
    widths = [int(np.prod(s)) for s in shapes]
    columns = []
    for k, width in enumerate(widths):
        for j in range(width):
            inputs = [torch.zeros((1, *s), dtype=torch.float64) for s in shapes]
            inputs[k].view(-1)[j] = 1.0
            columns.append(function(*inputs).reshape(-1).numpy())
    return np.stack(columns, axis=1)


AFFINE = [cls for cls in LAYER_TYPES if cls.kind is LayerKind.AFFINE]
ELEMENTWISE = [cls for cls in LAYER_TYPES if issubclass(cls, ElementwisePiecewiseLinear)]


@pytest.mark.parametrize("cls", AFFINE, ids=lambda c: c.__name__)
def test_affine_rules_agree_with_the_forward_pass(cls: type) -> None:
    layer, shapes = EXAMPLES[cls]()
    x = _random_inputs(shapes)
    offset = layer.offset(shapes, x[0])
    torch.testing.assert_close(layer.linear(*x) + offset, layer.forward(*x))
    matrix = _matrix(layer.linear, shapes)
    np.testing.assert_allclose(_matrix(layer.abs_linear, shapes), np.abs(matrix), atol=1e-12)
    out_width = matrix.shape[0]
    cotangent = torch.as_tensor(RNG.normal(size=(2, out_width)))
    out_shape = layer.forward(*x).shape[1:]
    pulled = layer.adjoint(cotangent.reshape(2, *out_shape), shapes)
    flat = np.concatenate([p.reshape(2, -1).numpy() for p in pulled], axis=1)
    np.testing.assert_allclose(flat, cotangent.numpy() @ matrix, atol=1e-12)


def _dense_samples(bounds: list[tuple[torch.Tensor, torch.Tensor]], count: int = 400):
    return [
        low + (high - low) * torch.as_tensor(RNG.uniform(size=(count, *low.shape[1:])))
        for low, high in bounds
    ]


@pytest.mark.parametrize("cls", LAYER_TYPES, ids=lambda c: c.__name__)
def test_interval_bounds_contain_every_sampled_output(cls: type) -> None:
    layer, shapes = EXAMPLES[cls]()
    centers = _random_inputs(shapes, n=1)
    bounds = [(c - 0.7, c + 0.9) for c in centers]
    low, high = layer.interval(*bounds)
    corners = [(lo, hi) for lo, hi in bounds]
    samples = _dense_samples(corners)
    with torch.no_grad():
        out = layer.forward(*samples)
    assert (out >= low - 1e-12).all() and (out <= high + 1e-12).all()
    # and the bounds are attained by the extreme samples of a monotone map (not vacuous)
    assert (high - low).max() < 1e3


@pytest.mark.parametrize("cls", ELEMENTWISE, ids=lambda c: c.__name__)
def test_relaxations_hold_for_any_lower_slope(cls: type) -> None:
    layer, (shape,) = EXAMPLES[cls]()
    for _ in range(20):
        low = torch.as_tensor(RNG.uniform(-3, 2, size=(1, *shape)))
        high = low + torch.as_tensor(RNG.uniform(0, 4, size=(1, *shape)))
        smallest, largest = layer.slope_range(low, high)
        for mix in (None, 0.0, 0.3, 1.0):
            slope = None if mix is None else smallest + mix * (largest - smallest)
            relax = layer.relaxation(low, high, slope)
            t = torch.linspace(0, 1, 201, dtype=torch.float64).reshape(-1, *[1] * len(shape))
            z = low + t * (high - low)
            f = layer.forward(z)
            assert (relax.lower_slope * z + relax.lower_bias <= f + 1e-12).all()
            assert (relax.upper_slope * z + relax.upper_bias >= f - 1e-12).all()
        kinks = torch.tensor(layer.kinks(), dtype=torch.float64).reshape(-1, 1, *[1] * len(shape))
        stable = ((low >= kinks) | (high < kinks)).all(dim=0)
        relax = layer.relaxation(low, high)
        torch.testing.assert_close(relax.lower_slope[stable], relax.upper_slope[stable])
        torch.testing.assert_close(relax.lower_bias[stable], relax.upper_bias[stable])


def test_relu_relaxation_is_the_crown_triangle() -> None:
    low, high = torch.tensor([[-1.0, -3.0]]), torch.tensor([[3.0, 1.0]])
    relax = Relu().relaxation(low.double(), high.double())
    torch.testing.assert_close(relax.upper_slope, torch.tensor([[0.75, 0.25]]).double())
    torch.testing.assert_close(relax.upper_bias, torch.tensor([[0.75, 0.75]]).double())
    torch.testing.assert_close(relax.lower_slope, torch.tensor([[1.0, 0.0]]).double())
    torch.testing.assert_close(relax.lower_bias, torch.zeros(1, 2).double())


@pytest.mark.parametrize("cls", ELEMENTWISE, ids=lambda c: c.__name__)
def test_local_slope_is_the_derivative_away_from_kinks(cls: type) -> None:
    layer, (shape,) = EXAMPLES[cls]()
    z = torch.as_tensor(RNG.normal(scale=2.0, size=(100, *shape)))
    h = 1e-6
    numeric = (layer.forward(z + h) - layer.forward(z - h)) / (2 * h)
    kinks = torch.tensor(layer.kinks(), dtype=torch.float64).reshape(-1, 1, *[1] * len(shape))
    away = ((z - kinks).abs() > 1e-3).all(dim=0)
    torch.testing.assert_close(layer.local_slope(z)[away], numeric[away], atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [*ELEMENTWISE, MaxPool], ids=lambda c: c.__name__)
def test_backward_bound_is_a_lower_bound_on_dense_samples(cls: type) -> None:
    layer, (shape,) = EXAMPLES[cls]()
    center = torch.as_tensor(RNG.normal(size=(2, *shape)))
    low, high = center - 0.8, center + 0.6
    out_shape = layer.forward(center).shape[1:]
    coefficients = torch.as_tensor(RNG.normal(size=(2, 4, *out_shape)))
    weights, bias = layer.backward_bound(coefficients, (low, high))
    for sample in range(2):
        z = _dense_samples([(low[sample : sample + 1], high[sample : sample + 1])], 2000)[0]
        f = layer.forward(z).reshape(len(z), -1)
        value = f @ coefficients[sample].reshape(4, -1).T
        bound = z.reshape(len(z), -1) @ weights[sample].reshape(4, -1).T + bias[sample]
        assert (value >= bound - 1e-10).all()
        # tight somewhere: at the corners of a stable window the bound is attained or close
        assert (value - bound).min() < 0.5 * (value - bound).max() + 1e-9


def test_maxpool_backward_bound_is_exact_when_one_element_dominates() -> None:
    layer = MaxPool((2,), (2,), (0, 0), (1,), False)
    low = torch.tensor([[[5.0, 0.0, -1.0, 2.0]]]).double()
    high = low + torch.tensor([[[1.0, 1.0, 1.0, 0.5]]]).double()
    coefficients = torch.tensor([[[[1.0, -2.0]]]]).double()
    weights, bias = layer.backward_bound(coefficients, (low, high))
    torch.testing.assert_close(weights, torch.tensor([[[[1.0, 0.0, 0.0, -2.0]]]]).double())
    torch.testing.assert_close(bias, torch.zeros(1, 1).double())


def test_registering_a_second_converter_for_the_same_op_and_opset_fails() -> None:
    registry.load_converters()

    def other(node, builder):  # pragma: no cover - never called
        return []

    with pytest.raises(ValueError, match=r"two converters for ai\.onnx::Relu"):
        registry.converter("Relu", opsets=(13, 13))(other)
    assert registry.find_converter("", "Relu", 13) is not other


def test_every_op_family_module_is_loaded_without_a_list() -> None:
    ops = set(registry.supported_ops())
    assert {"Gemm", "Conv", "Relu", "MaxPool", "Flatten", "Softmax"} <= ops
