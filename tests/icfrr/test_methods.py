"""icfrr.methods: the adapter between registry keys/parameters and the baseline functions.

The wiring is tested against recording fakes put in place of ``icfrr.baselines``
(the keywords each function receives, which matrices are loaded and how often);
the ranking against a brute-force sort and the engine's own iteration 0. The
real baselines are called where they are installed.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

import icfrr
from icfrr import methods
from icfrr.methods import MethodInputs, apply_method, method_keywords, ranking_from_distances
from icfrr.registry import METHODS, method

Q, G, D = 5, 9, 4


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    fq = rng.normal(size=(Q, D)).astype(np.float32)
    fg = rng.normal(size=(G, D)).astype(np.float32)
    fq /= np.linalg.norm(fq, axis=1, keepdims=True)
    fg /= np.linalg.norm(fg, axis=1, keepdims=True)
    qg = np.linalg.norm(fq[:, None] - fg[None], axis=2).astype(np.float32)
    gg = np.linalg.norm(fg[:, None] - fg[None], axis=2).astype(np.float32)
    qq = np.linalg.norm(fq[:, None] - fq[None], axis=2).astype(np.float32)
    return qg, gg, qq, fq, fg


class Loader:
    """A matrix loader that counts its calls (and can refuse to be called)."""

    def __init__(self, matrix: np.ndarray | None) -> None:
        self.matrix, self.calls = matrix, 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        if self.matrix is None:
            raise AssertionError("this matrix must not be loaded")
        return self.matrix


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple, dict]]:
    """Replace every baseline function by a fake that records its arguments."""
    seen: list[tuple[str, tuple, dict]] = []

    def fake(name: str):
        def fn(qg, gg, *rest, **kw):
            seen.append((name, (qg, gg, *rest), kw))
            return qg + 0.5 * np.arange(qg.shape[1], dtype=qg.dtype)[::-1]   # reverses near ties
        return fn

    monkeypatch.setattr(methods, "baseline_function", fake)
    return seen


def test_keywords_per_method_and_matrices_loaded_once(calls) -> None:
    qg, gg, qq, fq, fg = _problem()
    gl, ql = Loader(gg), Loader(qq)
    inputs = MethodInputs(qg, gg=gl, qq=ql)
    apply_method("k_reciprocal", inputs, {"k1": 4, "k2": 2, "lambda_value": 0.5})
    apply_method("ecn", inputs, {"t": 2, "q": 3, "k": 5})
    name, args, kw = calls[0]
    assert name == "k_reciprocal" and kw == {"k1": 4, "k2": 2, "lambda_value": 0.5}
    assert args[0] is qg and args[1] is gg and args[2] is qq
    name, args, kw = calls[1]
    assert name == "ecn" and kw == {"t": 2, "q": 3, "k": 5} and args[2] is qq
    assert (gl.calls, ql.calls) == (1, 1)        # kept between configurations
    inputs.release()
    apply_method("ecn", inputs, {})
    assert (gl.calls, ql.calls) == (2, 2)
    assert calls[2][2] == {"t": 3, "q": 8, "k": 25}  # the registry's defaults


def test_query_expansion_family_uses_features_without_gg(calls) -> None:
    qg, gg, qq, fq, fg = _problem()
    with_features = MethodInputs(qg, gg=Loader(None), qq=Loader(None), fq=fq, fg=fg)
    apply_method("alpha_qe", with_features, {"qe_n": 3, "qe_alpha": 2.0})
    apply_method("dba", with_features, {"dba_n": 4, "dba_alpha": 1.0})
    apply_method("dba+alpha_qe", with_features,
                 {"dba_n": 4, "dba_alpha": 1.0, "qe_n": 2, "qe_alpha": 3.0})
    assert [(c[0], c[2]) for c in calls] == [
        ("alpha_qe", {"qe_n": 3, "qe_alpha": 2.0, "fq": fq, "fg": fg}),
        ("dba", {"dba_n": 4, "dba_alpha": 1.0, "fq": fq, "fg": fg}),
        ("dba_alpha_qe", {"dba_n": 4, "dba_alpha": 1.0, "qe_n": 2, "qe_alpha": 3.0, "fq": fq, "fg": fg})]
    assert all(c[1][1] is None and len(c[1]) == 2 for c in calls)  # no gg, no qq
    calls.clear()
    gl = Loader(gg)
    apply_method("alpha_qe", MethodInputs(qg, gg=gl), {"qe_n": 3, "qe_alpha": 2.0})
    assert calls[0][1][1] is gg and calls[0][2] == {"qe_n": 3, "qe_alpha": 2.0} and gl.calls == 1


def test_every_single_shot_method_takes_its_registry_parameters_as_keywords() -> None:
    import inspect

    for m in METHODS:
        if m.iterative:
            continue
        for name in filter(None, (m.function, m.streamed)):
            try:
                fn = methods.baseline_function(name)
            except (ImportError, AttributeError):
                pytest.skip(f"icfrr.baselines.{name} is not installed in this branch")
            keywords = set(inspect.signature(fn).parameters)
            assert {p.name for p in m.params} <= keywords, (m.key, name, keywords)


def test_a_function_named_with_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("fake_toy_methods")
    mod.toy = lambda *a, **k: "toy"
    monkeypatch.setitem(sys.modules, "fake_toy_methods", mod)
    assert methods.baseline_function("fake_toy_methods:toy") is mod.toy


@pytest.mark.parametrize("key, params, message", [
    ("icfrr", {}, "not a single-shot method"),
    ("bm25", {}, "unknown method 'bm25'"),
    ("k_reciprocal", {"k3": 1}, "k_reciprocal has no parameter k3"),
    ("k_reciprocal", {"k1": 0}, "--k1 values must be >= 1"),
    ("k_reciprocal", {"lambda_value": 1.5}, "--lambda-value values must be <= 1"),
    ("alpha_qe", {"qe_alpha": -1.0}, "--qe-alpha values must be finite and >= 0"),
    ("dba", {"dba_alpha": float("nan")}, "--dba-alpha values must be finite"),
])
def test_bad_key_or_parameters(calls, key: str, params: dict, message: str) -> None:
    qg, gg, qq, *_ = _problem()
    with pytest.raises(ValueError, match=message):
        apply_method(key, MethodInputs(qg, gg=Loader(gg), qq=Loader(qq)), params)
    assert calls == []


def test_outputs_torch_to_numpy_and_shapes_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    qg, gg, qq, *_ = _problem()
    monkeypatch.setattr(methods, "baseline_function",
                        lambda name: lambda qg, gg, qq, **kw: torch.from_numpy(qg) * 2)
    out = apply_method("ecn", MethodInputs(qg, gg=lambda: gg, qq=lambda: qq), {})
    assert isinstance(out, np.ndarray) and np.array_equal(out, qg * 2)
    monkeypatch.setattr(methods, "baseline_function", lambda name: lambda qg, gg, qq, **kw: qg[:, :3])
    with pytest.raises(ValueError, match=r"returned distances of shape \[5, 3\], expected \[5, 9\]"):
        apply_method("ecn", MethodInputs(qg, gg=lambda: gg, qq=lambda: qq), {})
    with pytest.raises(ValueError, match=r"qq distances are \[5, 4\], expected \[5, 5\]"):
        apply_method("ecn", MethodInputs(qg, gg=lambda: gg, qq=lambda: qq[:, :4]), {})
    with pytest.raises(ValueError, match="no qq distances were given"):
        apply_method("ecn", MethodInputs(qg, gg=lambda: gg), {})


def test_function_found_in_package_or_its_module(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = types.ModuleType("fake_baselines")
    pkg.__path__ = []
    sub = types.ModuleType("fake_baselines.ecn")

    def ecn(*a, **k):
        return "from module"

    def dba(*a, **k):
        return "from package"

    sub.ecn = ecn
    pkg.ecn = sub             # `import fake_baselines.ecn` binds the module on the package
    pkg.dba = dba
    monkeypatch.setitem(sys.modules, "fake_baselines", pkg)
    monkeypatch.setitem(sys.modules, "fake_baselines.ecn", sub)
    monkeypatch.setattr(methods, "BASELINES_PACKAGE", "fake_baselines")
    assert methods.baseline_function("ecn") is ecn
    assert methods.baseline_function("dba") is dba
    del pkg.ecn
    assert methods.baseline_function("ecn") is ecn


def test_method_keywords_casts_to_registry_kinds() -> None:
    kw = method_keywords("k_reciprocal", {"k1": np.int64(7), "lambda_value": 1})
    assert kw == {"k1": 7, "k2": 6, "lambda_value": 1.0}
    assert type(kw["k1"]) is int and type(kw["lambda_value"]) is float
    assert methods.needs("alpha_qe", MethodInputs(np.zeros((1, 2)), fq=np.zeros((1, 2)),
                                                  fg=np.zeros((2, 2)))) == ()
    assert methods.needs("k_reciprocal", MethodInputs(np.zeros((1, 2)))) == ("gg", "qq")
    assert method("dba").needs_qq is False


# ------------------------------------------------------------------------------ rankings


def _brute_ranking(d: np.ndarray) -> np.ndarray:
    return np.array([sorted(range(d.shape[1]), key=lambda j: (d[q, j], j)) for q in range(d.shape[0])])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ranking_ascending_ties_by_index(dtype) -> None:
    rng = np.random.default_rng(3)
    d = rng.integers(0, 4, size=(7, 30)).astype(dtype)       # many ties
    d[2] = 1.0                                                # one row all tied
    ranking, ordered = ranking_from_distances(d, chunk=3)
    assert np.array_equal(ranking, _brute_ranking(d))
    assert ordered.dtype == dtype
    assert np.array_equal(ordered, np.take_along_axis(d, ranking, axis=1))


def test_float64_near_ties_keep_their_order() -> None:
    d = np.array([[1.0 + 1e-12, 1.0, 2.0]])                   # equal in float32
    assert ranking_from_distances(d)[0].tolist() == [[1, 0, 2]]
    assert ranking_from_distances(d.astype(np.float32))[0].tolist() == [[0, 1, 2]]


def test_ranking_equals_engine_iteration_0() -> None:
    qg, gg, *_ = _problem(5)
    qg[1, 3] = qg[1, 4]                                       # a tie
    engine = icfrr.rerank(qg, gg, kg=3, kq=3, n_iter=0, device="cpu")[0].numpy()
    assert np.array_equal(ranking_from_distances(qg)[0], engine)


def test_ranking_refuses_nan_and_non_matrices() -> None:
    with pytest.raises(ValueError, match="NaN"):
        ranking_from_distances(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\[Q, G\]"):
        ranking_from_distances(np.zeros(3))


# --------------------------------------------------------------- the real baselines, once merged


@pytest.mark.parametrize("key", [m.key for m in METHODS if not m.iterative])
def test_real_baselines_through_the_adapter(key: str) -> None:
    function = method(key).function
    try:
        fn = methods.baseline_function(function)
    except (ImportError, AttributeError):
        pytest.skip(f"icfrr.baselines.{function} is not installed in this branch")
    qg, gg, qq, fq, fg = _problem(7)
    params = {p.name: p.default[0] for p in method(key).params}
    if key in ("k_reciprocal", "ecn"):
        params |= {"k1": 3, "k2": 2} if key == "k_reciprocal" else {"k": 4}
        direct = fn(qg, gg, qq, **method_keywords(key, params))
    else:
        params = {k: (3 if k.endswith("_n") else v) for k, v in params.items()}
        direct = fn(qg, None, fq=fq, fg=fg, **method_keywords(key, params))
    out = apply_method(key, MethodInputs(qg, gg=lambda: gg, qq=lambda: qq, fq=fq, fg=fg), params)
    assert out.shape == (Q, G) and np.isfinite(out).all()
    assert np.array_equal(out, np.asarray(direct))


def test_streams_by_budget_only_with_features_and_when_there_are_no_whole_distances() -> None:
    qg, gg, qq, fq, fg = _problem()
    with_features = MethodInputs(qg=qg, gg=Loader(None), qq=Loader(None), fq=fq, fg=fg)
    without = MethodInputs(qg=qg, gg=Loader(gg), qq=Loader(qq))
    assert not methods.streams("k_reciprocal", with_features)                      # no budget: dense
    assert not methods.streams("k_reciprocal", with_features, 4 * Q * G)           # fits the budget
    assert methods.streams("k_reciprocal", with_features, 4 * Q * G - 1)
    assert not methods.streams("k_reciprocal", without, 0)                         # no features: dense
    assert methods.streams("ecn", MethodInputs(qg=None, fq=fq, fg=fg))
    with pytest.raises(ValueError, match="whole"):
        apply_method("alpha_qe", MethodInputs(qg=None, fq=fq, fg=fg), {})
    with pytest.raises(ValueError, match="features"):
        methods.method_chunks("dba", without, {})


def test_method_chunks_call_the_streamed_form_with_the_registry_keywords() -> None:
    _, _, _, fq, fg = _problem()
    inputs = MethodInputs(qg=None, fq=fq, fg=fg)
    got = np.concatenate([d for _, d in methods.method_chunks("alpha_qe", inputs, {"qe_n": 2, "qe_alpha": 1.0},
                                                              chunk_bytes=1)])
    want = icfrr.baselines.alpha_qe(None, None, fq=fq, fg=fg, qe_n=2, qe_alpha=1.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    assert inputs.shape == (Q, G)
