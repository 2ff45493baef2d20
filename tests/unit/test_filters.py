"""Metadata filters: property test against a brute-force reference, errors, starvation, retriever."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.runnables import ConfigurableField

from langchain_vq import InvalidFilterError, VQVectorStore
from langchain_vq.retriever import VQRetriever
from tests.conftest import clustered_vectors

MISSING = object()


# -- a reference implementation of the documented semantics, one row at a time --------------
def _kind(value: object) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):  # naive and aware datetimes never compare
        return "naive datetime" if value.utcoffset() is None else "aware datetime"
    if isinstance(value, dt.date):
        return "date"
    return None


def _get(meta: dict, path: str) -> object:
    value: object = meta
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return MISSING if value is None or isinstance(value, dict) else value


def _eq(value: object, operand: object) -> bool:
    return _kind(value) is not None and _kind(value) == _kind(operand) and value == operand


def _field(value: object, op: str, operand: Any) -> bool:
    if op == "$exists":
        return (value is not MISSING) == operand
    if value is MISSING:
        return False
    if op == "$eq":
        return _eq(value, operand)
    if op == "$ne":
        return not _eq(value, operand)
    if op == "$in":
        return any(_eq(value, o) for o in operand)
    if op == "$nin":
        return not any(_eq(value, o) for o in operand)
    if op == "$contains":
        return isinstance(value, list) and any(_eq(v, operand) for v in value)
    if _kind(value) is None or _kind(value) != _kind(operand):
        return False
    return {
        "$gt": value > operand,
        "$gte": value >= operand,
        "$lt": value < operand,
        "$lte": value <= operand,
    }[op]


def reference_match(meta: dict, spec: dict) -> bool:
    for key, cond in spec.items():
        if key == "$and":
            ok = all(reference_match(meta, c) for c in cond)
        elif key == "$or":
            ok = any(reference_match(meta, c) for c in cond)
        elif key == "$not":
            ok = not reference_match(meta, cond)
        elif isinstance(cond, dict):
            ok = all(_field(_get(meta, key), op, operand) for op, operand in cond.items())
        else:
            ok = _field(_get(meta, key), "$eq", cond)
        if not ok:
            return False
    return True


# -- strategies ------------------------------------------------------------------------------
scalars = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([-1.5, 0.0, 0.5, 2.25]),
    st.sampled_from(["a", "b", "B", "é", ""]),
    st.booleans(),
)
values = st.one_of(scalars, st.none(), st.lists(scalars, max_size=3))
metadata = st.fixed_dictionaries(
    {},
    optional={
        "x": values,
        "y": values,
        "tags": st.lists(st.sampled_from(["a", "b", "c"]), max_size=3),
        "nested": st.fixed_dictionaries({}, optional={"z": values}),
    },
)
fields = st.sampled_from(["x", "y", "tags", "nested.z", "absent"])
conditions = st.one_of(
    scalars,
    st.dictionaries(
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$contains"]),
        scalars,
        min_size=1,
        max_size=2,
    ).filter(
        lambda d: (
            not any(
                op in d and isinstance(v, bool) for op, v in d.items() if op in {"$gt", "$gte", "$lt", "$lte"}
            )
        )
    ),
    st.fixed_dictionaries({"$in": st.lists(scalars, max_size=3)}),
    st.fixed_dictionaries({"$nin": st.lists(scalars, max_size=3)}),
    st.fixed_dictionaries({"$exists": st.booleans()}),
)
leaf_filters = st.dictionaries(fields, conditions, min_size=1, max_size=2)
filters = st.recursive(
    leaf_filters,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"$and": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$or": st.lists(inner, min_size=1, max_size=3)}),
        st.fixed_dictionaries({"$not": inner}),
    ),
    max_leaves=6,
)

DIM = 16
N_ROWS = 300  # above every quantizer's training threshold, so code scans run under the mask
VECTORS = clustered_vectors(N_ROWS, DIM, seed=5)
QUERY = clustered_vectors(1, DIM, seed=6)[0]
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(drawn=st.lists(metadata, max_size=20), seed=st.integers(0, 2**32 - 1), spec=filters)
def test_filter_matches_equal_reference(drawn, seed, spec) -> None:
    """Random metadata and random filters: the store matches exactly the rows the reference does.

    Rows come from hypothesis (shrinkable) plus a seeded generator that mixes present, missing,
    null, list and nested values of every type in one segment.
    """
    rng = np.random.default_rng(seed)
    metas = drawn + [_random_metadata(rng) for _ in range(20)]
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization="none")
    ids = [str(i) for i in range(len(metas))]
    store.add_embeddings(ids, VECTORS[: len(metas)], metadatas=metas, ids=ids)
    stored = [json.loads(json.dumps(m)) for m in metas]
    matching = [i for i, m in enumerate(stored) if reference_match(m, spec)]
    everything = store.similarity_search_by_vector(QUERY.tolist(), k=len(metas), filter=spec)
    assert sorted(int(d.id) for d in everything) == matching


def _random_metadata(rng: np.random.Generator) -> dict:
    pool: list[object] = [-3, -1, 0, 2, 3, -1.5, 0.5, 2.25, "a", "b", "B", "é", "", True, False, None]

    def value() -> object:
        if rng.random() < 0.2:
            return [pool[i] for i in rng.integers(0, len(pool) - 1, rng.integers(0, 4))]
        return pool[rng.integers(0, len(pool))]

    meta: dict = {}
    for key in ("x", "y"):
        if rng.random() < 0.7:
            meta[key] = value()
    if rng.random() < 0.5:
        meta["tags"] = [str(t) for t in rng.choice(["a", "b", "c"], rng.integers(0, 4))]
    if rng.random() < 0.5:
        meta["nested"] = {"z": value()} if rng.random() < 0.8 else {}
    return meta


@pytest.fixture(scope="module", params=["binary", "int8", "pq", "none"])
def filled_store(request) -> tuple[VQVectorStore, list[dict]]:
    metas = [_random_metadata(np.random.default_rng(i)) for i in range(N_ROWS)]
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), quantization=request.param)
    ids = [str(i) for i in range(N_ROWS)]
    store.add_embeddings(ids, VECTORS, metadatas=metas, ids=ids)
    assert (store.collection.snapshot.quantizer is None) == (request.param == "none")
    return store, [json.loads(json.dumps(m)) for m in metas]


@SETTINGS
@given(spec=filters)
def test_filtered_search_equals_brute_force(filled_store, spec) -> None:
    """Every mode, code scans under the mask: never starved, ranked like exact search."""
    store, stored = filled_store
    matching = [i for i, m in enumerate(stored) if reference_match(m, spec)]
    everything = store.similarity_search_by_vector(QUERY.tolist(), k=N_ROWS, filter=spec)
    assert sorted(int(d.id) for d in everything) == matching
    ranked = sorted(matching, key=lambda i: -float(VECTORS[i] @ QUERY))[:10]
    top = [int(d.id) for d in store.similarity_search_by_vector(QUERY.tolist(), k=10, filter=spec)]
    assert len(top) == min(10, len(matching))
    assert set(top) <= set(matching)
    assert len(set(top) & set(ranked)) >= 0.9 * len(ranked)  # the recall bound of the defaults
    exhaustive = store.similarity_search_by_vector(
        QUERY.tolist(), k=10, filter=spec, rescore_multiplier=N_ROWS
    )
    assert [int(d.id) for d in exhaustive] == ranked


def test_selective_filter_on_a_large_store_is_never_starved() -> None:
    n = 20_000
    x = clustered_vectors(n, 64, seed=11)
    metas = [{"bucket": i % 1000, "rare": i in (17, 4242, 19999)} for i in range(n)]
    store = VQVectorStore(DeterministicFakeEmbedding(size=64), quantization="binary")
    store.add_embeddings([str(i) for i in range(n)], x, metadatas=metas, ids=[str(i) for i in range(n)])
    query = x[5000]
    assert {d.id for d in store.similarity_search_by_vector(query.tolist(), k=10, filter={"rare": True})} == {
        "17",
        "4242",
        "19999",
    }
    in_bucket = [i for i in range(n) if i % 1000 == 7]
    expected = sorted(in_bucket, key=lambda i: -float(x[i] @ query))[:10]
    got = [int(d.id) for d in store.similarity_search_by_vector(query.tolist(), k=10, filter={"bucket": 7})]
    assert got == expected
    half = store.similarity_search_by_vector(query.tolist(), k=10, filter={"bucket": {"$lt": 500}})
    assert len(half) == 10
    assert all(d.metadata["bucket"] < 500 for d in half)


def test_type_semantics() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8), quantization="none")
    metas = [{"v": 1}, {"v": "1"}, {"v": True}, {"v": None}, {}, {"v": [1, "1"]}, {"v": 2.0}]
    store.add_texts([str(i) for i in range(len(metas))], metas, ids=[str(i) for i in range(len(metas))])

    def ids(spec: dict) -> list[str]:
        return sorted(d.id for d in store.similarity_search("q", k=10, filter=spec))

    assert ids({"v": 1}) == ["0"]  # not the string "1", not True
    assert ids({"v": "1"}) == ["1"]
    assert ids({"v": True}) == ["2"]  # booleans are not numbers
    assert ids({"v": {"$gt": 0}}) == ["0", "6"]  # strings never order against numbers
    assert ids({"v": {"$gt": "0"}}) == ["1"]
    assert ids({"v": {"$exists": False}}) == ["3", "4"]  # null counts as missing
    assert ids({"v": {"$ne": 1}}) == ["1", "2", "5", "6"]  # missing never matches $ne
    assert ids({"v": {"$contains": "1"}}) == ["5"]
    assert ids({"$not": {"v": 1}}) == ["1", "2", "3", "4", "5", "6"]


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"$gt": 1}, "$gt"),
        ({"a": {"$regex": "x"}}, "a.$regex"),
        ({"$or": [{"a": 1}, ["b"]]}, "$or[1]"),
        ({"$and": {"a": 1}}, "$and"),
        ({"a": {"$in": 3}}, "a.$in"),
        ({"a": {"$gt": [1]}}, "a.$gt"),
        ({"a": {"$gt": True}}, "a.$gt"),
        ({"a": {"$exists": "yes"}}, "a.$exists"),
        ({"a": None}, "a"),
        ({"a": {"b": 1}}, "a.b"),
        ({}, "filter"),
        (["a"], "filter"),
    ],
)
def test_malformed_filters_name_the_offending_part(spec, where) -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["x"], [{"a": 1}])
    with pytest.raises(InvalidFilterError) as info:
        store.similarity_search("x", filter=spec)
    assert info.value.where == where
    assert where in str(info.value)


def test_deeply_nested_filter_is_a_typed_error() -> None:
    spec: dict = {"a": 1}
    for _ in range(200):
        spec = {"$not": spec}
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts(["x"], [{"a": 1}])
    with pytest.raises(InvalidFilterError, match="deeper than"):
        store.similarity_search("x", filter=spec)


@pytest.mark.parametrize("on_disk", [False, True])
def test_filter_everywhere(on_disk, tmp_path) -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8), path=tmp_path / "s" if on_disk else None)
    metas = [{"lang": "en" if i % 2 else "de", "i": i} for i in range(20)]
    store.add_texts([f"t{i}" for i in range(20)], metas, ids=[str(i) for i in range(20)])
    en = {"lang": "en"}
    assert all(d.metadata["lang"] == "en" for d in store.similarity_search("t", k=20, filter=en))
    assert all(d.metadata["lang"] == "en" for d, _ in store.similarity_search_with_score("t", k=5, filter=en))
    pairs = store.similarity_search_with_relevance_scores("t", k=5, filter=en)
    assert all(d.metadata["lang"] == "en" for d, _ in pairs)
    mmr = store.max_marginal_relevance_search("t", k=3, fetch_k=10, filter=en)
    assert len(mmr) == 3 and all(d.metadata["lang"] == "en" for d in mmr)
    assert all(d.metadata["lang"] == "en" for d in store.as_retriever(filter=en, k=4).invoke("t"))
    store.delete(filter={"lang": "de", "i": {"$lt": 10}})
    assert len(store) == 15
    store.delete(["1", "2", "13"], filter={"i": {"$gt": 10}})  # only ids that also match
    assert sorted(d.id for d in store.get_by_ids(["1", "2", "13"])) == ["1"]
    store.similarity_search("t", filter=lambda doc: doc.metadata["i"] > 17)
    assert {d.id for d in store.similarity_search("t", k=20, filter=lambda doc: doc.metadata["i"] > 17)} == {
        "18",
        "19",
    }


async def test_filter_in_async_methods() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    await store.aadd_texts(["a", "b"], [{"k": 1}, {"k": 2}], ids=["a", "b"])
    assert [d.id for d in await store.asimilarity_search("a", k=2, filter={"k": 2})] == ["b"]
    assert [d.id for d in await store.as_retriever(filter={"k": 1}).ainvoke("b")] == ["a"]


def test_retriever_knobs_are_typed_and_configurable() -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_texts([f"t{i}" for i in range(10)], [{"i": i} for i in range(10)])
    retriever = store.as_retriever(search_kwargs={"k": 2})
    assert isinstance(retriever, VQRetriever)
    assert retriever.k == 2
    assert len(retriever.invoke("t1")) == 2
    assert len(retriever.invoke("t1", k=5)) == 5
    configurable = retriever.configurable_fields(
        k=ConfigurableField(id="k"), filter=ConfigurableField(id="filter")
    )
    docs = configurable.invoke("t", config={"configurable": {"k": 3, "filter": {"i": {"$gte": 8}}}})
    assert sorted(d.metadata["i"] for d in docs) == [8, 9]
    threshold = store.as_retriever(search_type="similarity_score_threshold", score_threshold=0.999)
    assert [d.page_content for d in threshold.invoke("t3")] == ["t3"]
    mmr = store.as_retriever(search_type="mmr", k=3, fetch_k=6, lambda_mult=0.2)
    assert len(mmr.invoke("t3")) == 3
    with pytest.raises(ValueError, match="score_threshold"):
        store.as_retriever(search_type="similarity_score_threshold")
    with pytest.raises(ValueError):
        store.as_retriever(search_type="nearest")
