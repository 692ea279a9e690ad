"""Graph clean-up after conversion: drop dead nodes, fold affine chains.

Folding ``Conv/Dense -> per-channel scale+shift`` (BatchNormalization, bias
Add, normalisation Mul) into the weights keeps the layer graph close to the
mathematical model the analyses reason about. A fold only happens when the
intermediate value has exactly one consumer, so no branch loses its input.
"""

from __future__ import annotations

from dataclasses import replace

from audit_core.graph import Node
from audit_core.layers import ElementwiseAffine, Layer


def prune(nodes: list[Node], output: int) -> list[Node]:
    """Keep the input and the ancestors of ``output``; renumber so ``output`` is last."""
    keep = {0, output}
    for index in range(output, 0, -1):
        if index in keep:
            keep.update(nodes[index].inputs)
    order = sorted(keep)
    new_index = {old: new for new, old in enumerate(order)}
    return [
        replace(nodes[old], inputs=tuple(new_index[i] for i in nodes[old].inputs)) for old in order
    ]


def fuse_affine(nodes: list[Node]) -> list[Node]:
    """Fold every foldable (linear layer, elementwise affine) pair until none is left."""
    while True:
        pair = _find_foldable(nodes)
        if pair is None:
            return nodes
        first, second = pair
        nodes = _merge(nodes, first, second)


def _find_foldable(nodes: list[Node]) -> tuple[int, int] | None:
    consumers: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        for source in node.inputs:
            consumers.setdefault(source, []).append(index)
    for index, node in enumerate(nodes):
        if not isinstance(node.layer, ElementwiseAffine) or len(node.inputs) != 1:
            continue
        source = node.inputs[0]
        if source == 0 or consumers.get(source) != [index]:
            continue
        if _fold(nodes[source], node) is not None:
            return source, index
    return None


def _merge(nodes: list[Node], first: int, second: int) -> list[Node]:
    fused_layer = _fold(nodes[first], nodes[second])
    fused = replace(
        nodes[first],
        layer=fused_layer,
        shape=nodes[second].shape,
        source=nodes[first].source + nodes[second].source,
        onnx_output=nodes[second].onnx_output,
    )
    result: list[Node] = []
    for index, node in enumerate(nodes):
        if index == second:
            continue
        if index == first:
            node = fused
        inputs = tuple(_renumber(i, first, second) for i in node.inputs)
        result.append(replace(node, inputs=inputs))
    return result


def _renumber(index: int, first: int, second: int) -> int:
    if index == second:
        return first
    return index - 1 if index > second else index


def _fold(producer: Node, affine_node: Node) -> Layer | None:
    """The single layer equal to ``affine_node.layer`` after ``producer.layer``, or None
    (the producer's own ``fold`` rule decides; layers without one never fold)."""
    affine = affine_node.layer
    assert isinstance(affine, ElementwiseAffine)
    fold = getattr(producer.layer, "fold", None)
    if fold is None or affine_node.shape != producer.shape:
        return None
    return fold(affine, affine_node.shape)
