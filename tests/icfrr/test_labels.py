"""icfrr.labels: a run's parameter text, label, table order and approximate-graph note, from the registry."""

from __future__ import annotations

from icfrr import labels
from icfrr.registry import METHOD_KEYS, METHODS


def test_params_text() -> None:
    assert labels.params_text("icfrr", {"kg": 8, "kq": 10, "beta": 1.0, "n_iter": 5,
                                        "variant": "reference", "top_n": 10}) == \
        "KG 8, KQ 10, β 1, T 5"
    assert labels.params_text("icfrr", {"kg": 8, "kq": 10, "beta": 0.5, "n_iter": 2,
                                        "variant": "paper"}).endswith("T 2, variant paper")
    assert labels.params_text("dba+alpha_qe", {"dba_n": 5, "dba_alpha": 3, "qe_n": 2,
                                               "qe_alpha": 1, "kg": 0}) == \
        "DBA n 5, DBA α 3, QE n 2, QE α 1"
    assert labels.params_text("mine", {"method": "mine", "z": 2, "a": "x"}) == "a x, z 2"


def test_bookkeeping_keys_are_not_parameters_of_methods_outside_the_registry() -> None:
    params = {"method": "mine", "z": 2, "top_n": 10, "asked_kg": 9, "graph": {"kind": "ivf"},
              "graph_recall_at_kg": 0.9}
    assert labels.params_text("mine", params) == "z 2"


def test_choice_params_sets_an_iterative_methods_iterations() -> None:
    assert labels.choice_params("icfrr", {"kg": 8, "n_iter": 5}, 2) == "KG 8, T 2"
    assert labels.choice_params("k_reciprocal", {"k1": 20}, 1) == "k1 20"


def test_labels_and_order_follow_the_registry() -> None:
    assert [labels.method_label(m.key) for m in METHODS] == [m.label for m in METHODS]
    assert labels.method_label("mine") == "mine"
    keys = ["zz", *reversed(METHOD_KEYS), "aa"]
    assert sorted(keys, key=labels.method_order) == [*METHOD_KEYS, "aa", "zz"]
    assert [labels.is_iterative(m.key) for m in METHODS] == [m.iterative for m in METHODS]
    assert labels.is_iterative("mine") is False


def test_graph_text_names_approximate_graphs_only() -> None:
    assert labels.graph_text({}) == ""
    assert labels.graph_text({"graph": {"kind": "exact", "params": {}}}) == ""
    assert labels.graph_text({"graph": {"kind": "hnsw", "params": {"m": 16}},
                              "graph_recall_at_kg": 0.5}) == "graph hnsw, recall@KG 0.5000"
    assert labels.graph_text({"graph": {"kind": "ivf"}}) == "graph ivf, recall@KG not measured"
    assert labels.graph_text({"knn_index": {"kind": "ivf", "params": {}}, "knn_recall_at_k": 0.875,
                              "knn_recall_k": 20}) == "k-NN index ivf, recall@20 0.8750"
    assert labels.graph_text({"knn_index": {"kind": "hnsw"}}) == "k-NN index hnsw, recall@k not measured"
    assert labels.graph_text({"knn_index": {"kind": "exact"}}) == ""
    # what a shared store may hold: a recall that is not a finite number, a kind that is not a name
    assert labels.graph_text({"graph": {"kind": "ivf"}, "graph_recall_at_kg": float("nan")}) == \
        "graph ivf, recall@KG not measured"
    assert labels.graph_text({"graph": {"kind": "ivf"}, "graph_recall_at_kg": True}) == \
        "graph ivf, recall@KG not measured"
    assert labels.graph_text({"graph": {"kind": 3}, "knn_index": {"kind": "ivf"}, "knn_recall_k": True}) == \
        "k-NN index ivf, recall@k not measured"
    assert labels.approximate_neighbours({"graph": "ivf"}) is None


def test_a_parameters_symbol_comes_from_its_registry_entry() -> None:
    """The compact text names each parameter by its Param.symbol (its name when it has none)."""
    import dataclasses

    from icfrr import registry

    entry = registry.method("k_reciprocal")
    renamed = dataclasses.replace(entry, params=tuple(dataclasses.replace(p, symbol=p.name.upper() + "!")
                                                      for p in entry.params))
    params = {"k1": 20, "k2": 6, "lambda_value": 0.3}
    assert labels.params_text("k_reciprocal", params) == "k1 20, k2 6, λ 0.3"
    original = registry.METHODS
    try:
        registry.METHODS = tuple(renamed if m.key == "k_reciprocal" else m for m in original)
        assert labels.params_text("k_reciprocal", params) == "K1! 20, K2! 6, LAMBDA_VALUE! 0.3"
    finally:
        registry.METHODS = original
