"""How many neighbours a gallery graph keeps: 512 (or KG) up to 174,762 items, fewer above, never below KG."""

from __future__ import annotations

from store.artifacts import GRAPH_SPARE_BYTES, MIN_GRAPH_K, graph_k


def test_galleries_up_to_the_budget_keep_512_neighbours():
    limit = GRAPH_SPARE_BYTES // (12 * MIN_GRAPH_K)
    assert limit == 174_762
    assert graph_k(limit, 64) == MIN_GRAPH_K and graph_k(54_151, 16) == MIN_GRAPH_K


def test_a_million_items_keep_what_a_gibibyte_holds_but_never_fewer_than_asked():
    assert graph_k(1_000_000, 64) == GRAPH_SPARE_BYTES // (12 * 1_000_000) == 89
    assert 12 * 1_000_000 * graph_k(1_000_000, 64) <= GRAPH_SPARE_BYTES
    assert graph_k(1_000_000, 256) == 256
    assert graph_k(limit := 174_763, 8) < MIN_GRAPH_K and graph_k(limit, 8) > 8
