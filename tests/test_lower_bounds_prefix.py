"""Layer prefixes as feature extractors (``audit_plugins.lower_bounds.prefix``): the row
space of an affine prefix, the search-size limit of ReLU chains.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit_plugins.lower_bounds.prefix import (
    AFFINE,
    CARRIED,
    INPUT,
    RELU,
    _chain_search_size,
    build_prefixes,
    row_space,
    search_size,
)
from lower_bounds_nets import make_small_net


@pytest.fixture(scope="module")
def small_net(tmp_path_factory):
    """A 6-10-8-2 ReLU MLP, its graph and 8 + 8 random points."""
    return make_small_net(tmp_path_factory.mktemp("lb"))


def test_row_space_drops_zero_singular_values() -> None:
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(9, 3)) @ rng.normal(size=(3, 12))
    basis = row_space(weight)
    assert basis.shape == (3, 12)
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-9)
    np.testing.assert_allclose(weight @ basis.T @ basis, weight, atol=1e-9)


def test_relu_chains_above_the_search_limit_only_carry_collisions(small_net) -> None:
    graph, *_ = small_net
    full = build_prefixes(graph, 10**8)
    sizes = [search_size(p.blocks) for p in full if p.kind == RELU]
    assert sizes == sorted(sizes) and sizes[0] == 10 * 6  # 10 neurons x rank 6
    # decided from the node shapes before composing, with the same value
    assert sizes == [_chain_search_size(graph, p.node) for p in full if p.kind == RELU]
    limited = build_prefixes(graph, 10**8, max_search=sizes[0])
    assert [p.kind for p in limited] == [INPUT, AFFINE, RELU, CARRIED, CARRIED]
    assert "max_search_size" in limited[-1].note
