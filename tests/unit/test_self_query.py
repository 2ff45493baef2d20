"""VQTranslator: every langchain-core comparator and operator, its exact filter dict, and the store."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from typing import Any

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.structured_query import Comparator, Comparison, Operation, Operator, StructuredQuery

from langchain_vq import InvalidFilterError, VQTranslator, VQVectorStore

T = VQTranslator()


def translate(directive: Comparison | Operation) -> dict[str, Any]:
    query, kwargs = T.visit_structured_query(StructuredQuery(query="q", filter=directive))
    assert query == "q"
    return kwargs["filter"]


def cmp(comparator: Comparator, attribute: str, value: Any) -> Comparison:
    return Comparison(comparator=comparator, attribute=attribute, value=value)


# -- the exact dict for every comparator and operator -------------------------------------
@pytest.mark.parametrize(
    ("comparator", "value", "expected"),
    [
        (Comparator.EQ, "scifi", {"genre": {"$eq": "scifi"}}),
        (Comparator.NE, "scifi", {"genre": {"$ne": "scifi"}}),
        (Comparator.GT, 2000, {"genre": {"$gt": 2000}}),
        (Comparator.GTE, 8.3, {"genre": {"$gte": 8.3}}),
        (Comparator.LT, "m", {"genre": {"$lt": "m"}}),
        (Comparator.LTE, 1995, {"genre": {"$lte": 1995}}),
        (Comparator.IN, ["a", "b"], {"genre": {"$in": ["a", "b"]}}),
        (Comparator.NIN, ["a", 1], {"genre": {"$nin": ["a", 1]}}),
        (Comparator.CONTAIN, "ml", {"genre": {"$contains": "ml"}}),
    ],
)
def test_each_comparator_gives_its_filter(comparator: Comparator, value: Any, expected: dict) -> None:
    assert translate(cmp(comparator, "genre", value)) == expected


def test_every_comparator_is_mapped_or_refused() -> None:
    # A comparator added to langchain-core must be decided on here, not silently passed through.
    assert set(T.allowed_comparators or ()) == set(Comparator) - {Comparator.LIKE}
    assert set(T.allowed_operators or ()) == set(Operator)


def test_like_raises_a_typed_error_that_says_what_to_use() -> None:
    with pytest.raises(InvalidFilterError) as info:
        translate(cmp(Comparator.LIKE, "title", "%alien%"))
    message = str(info.value)
    assert "'like'" in message
    assert "no pattern or substring matching" in message
    assert "use eq or in" in message
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working


def test_and_or_not() -> None:
    a, b = cmp(Comparator.EQ, "x", 1), cmp(Comparator.GT, "y", 2)
    fa, fb = {"x": {"$eq": 1}}, {"y": {"$gt": 2}}
    assert translate(Operation(operator=Operator.AND, arguments=[a, b])) == {"$and": [fa, fb]}
    assert translate(Operation(operator=Operator.OR, arguments=[a, b])) == {"$or": [fa, fb]}
    assert translate(Operation(operator=Operator.NOT, arguments=[a])) == {"$not": fa}
    # not(a, b): none may match, as in Qdrant's and Elasticsearch's must_not
    assert translate(Operation(operator=Operator.NOT, arguments=[a, b])) == {"$not": {"$or": [fa, fb]}}


def test_nested_operations() -> None:
    tree = Operation(
        operator=Operator.AND,
        arguments=[
            cmp(Comparator.EQ, "genre", "scifi"),
            Operation(
                operator=Operator.OR,
                arguments=[
                    cmp(Comparator.GT, "year", 2000),
                    Operation(operator=Operator.NOT, arguments=[cmp(Comparator.CONTAIN, "tags", "space")]),
                ],
            ),
        ],
    )
    assert translate(tree) == {
        "$and": [
            {"genre": {"$eq": "scifi"}},
            {"$or": [{"year": {"$gt": 2000}}, {"$not": {"tags": {"$contains": "space"}}}]},
        ]
    }


def test_an_operation_without_arguments_is_refused() -> None:
    with pytest.raises(InvalidFilterError, match=r"and\(\) has no arguments"):
        translate(Operation(operator=Operator.AND, arguments=[]))


def test_no_filter_gives_no_kwargs() -> None:
    assert T.visit_structured_query(StructuredQuery(query="films", filter=None)) == ("films", {})
    assert StructuredQuery(query="films", filter=None).accept(T) == ("films", {})


def test_limit_is_left_to_the_retriever() -> None:
    # SelfQueryRetriever sets k from StructuredQuery.limit itself, as for every translator.
    query = StructuredQuery(query="q", filter=cmp(Comparator.EQ, "x", 1), limit=2)
    assert T.visit_structured_query(query) == ("q", {"filter": {"x": {"$eq": 1}}})


# -- values ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"date": "2024-01-01", "type": "date"}, dt.date(2024, 1, 1)),
        ({"datetime": "2024-01-01T10:30:00", "type": "datetime"}, dt.datetime(2024, 1, 1, 10, 30)),  # noqa: DTZ001
        (
            {"datetime": "2024-01-01T10:30:00+02:00", "type": "datetime"},
            dt.datetime(2024, 1, 1, 8, 30, tzinfo=dt.UTC),
        ),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 1)),
    ],
)
def test_dates_become_dates(value: Any, expected: dt.date) -> None:
    translated = translate(cmp(Comparator.GTE, "released", value))["released"]["$gte"]
    assert translated == expected
    assert type(translated) is type(expected)


def test_dates_inside_in_lists() -> None:
    value = [{"date": "2024-01-01", "type": "date"}, "2024-02-01"]
    assert translate(cmp(Comparator.IN, "d", value)) == {"d": {"$in": [dt.date(2024, 1, 1), "2024-02-01"]}}


def test_a_date_that_is_not_iso_is_a_typed_error() -> None:
    with pytest.raises(InvalidFilterError, match="'01/02/2024' is not an ISO-8601 date"):
        translate(cmp(Comparator.EQ, "d", {"date": "01/02/2024", "type": "date"}))


def test_in_with_one_value_or_a_tuple() -> None:
    assert translate(cmp(Comparator.IN, "g", "a")) == {"g": {"$in": ["a"]}}
    assert translate(cmp(Comparator.NIN, "g", ("a", "b"))) == {"g": {"$nin": ["a", "b"]}}


@pytest.mark.parametrize(
    ("comparison", "fragment"),
    [
        (cmp(Comparator.EQ, "g", ["a", "b"]), "eq takes one value, got a list; use in"),
        (cmp(Comparator.GT, "y", [1]), "gt takes one value, got a list; pass one value"),
        (cmp(Comparator.GT, "y", True), "compares numbers, strings, dates or datetimes, got the boolean"),
        (cmp(Comparator.EQ, "y", None), "$exists"),
        (cmp(Comparator.EQ, "y", float("nan")), "takes a string, number, boolean, date or datetime"),
        (cmp(Comparator.EQ, "y", {"a": 1}), "expected a string, number, boolean, list or a date"),
        (cmp(Comparator.IN, "y", [[1]]), "takes a string, number, boolean, date or datetime"),
        (cmp(Comparator.EQ, "$y", 1), "cannot stand here"),
    ],
)
def test_values_the_store_refuses_fail_at_translation(comparison: Comparison, fragment: str) -> None:
    with pytest.raises(InvalidFilterError) as info:
        translate(comparison)
    message = str(info.value)
    assert fragment in message
    assert message.startswith(f"{comparison.comparator.value}(")  # names the comparison


# -- the produced filters against a real store ------------------------------------------------
DOCS: list[dict[str, Any]] = [
    {"genre": "scifi", "year": 1979, "rating": 8.5, "tags": ["space", "horror"],
     "released": dt.date(1979, 5, 25), "info": {"lang": "en"}},
    {"genre": "comedy", "year": 2001, "rating": 8.3, "tags": ["paris"],
     "released": dt.date(2001, 4, 25), "info": {"lang": "fr"}},
    {"genre": "scifi", "year": 2016, "rating": 7.9, "tags": ["aliens", "language"],
     "released": dt.date(2016, 11, 11), "info": {"lang": "en"}},
    {"genre": "animation", "year": 1995, "tags": [], "released": dt.date(1995, 11, 22)},
    {"year": "2010", "rating": 6.0},  # year as a string, no genre: type semantics
    {"genre": "animation", "year": 2009, "rating": 8.3, "tags": ["balloons"],
     "released": dt.date(2009, 5, 29), "info": {"lang": "en"}},
]  # fmt: skip


def _num(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _str(value: object) -> bool:
    return isinstance(value, str)


# (directive, the same condition evaluated in Python over a document's metadata)
CASES: list[tuple[str, Comparison | Operation, Any]] = [
    ("eq", cmp(Comparator.EQ, "genre", "scifi"), lambda m: m.get("genre") == "scifi"),
    ("eq-string-year", cmp(Comparator.EQ, "year", "2010"), lambda m: m.get("year") == "2010"),
    ("eq-nested", cmp(Comparator.EQ, "info.lang", "fr"), lambda m: m.get("info", {}).get("lang") == "fr"),
    ("ne", cmp(Comparator.NE, "genre", "scifi"), lambda m: "genre" in m and m["genre"] != "scifi"),
    ("gt", cmp(Comparator.GT, "year", 2000), lambda m: _num(m.get("year")) and m["year"] > 2000),
    ("gte", cmp(Comparator.GTE, "rating", 8.3), lambda m: _num(m.get("rating")) and m["rating"] >= 8.3),
    ("lt", cmp(Comparator.LT, "year", 1995), lambda m: _num(m.get("year")) and m["year"] < 1995),
    ("lte", cmp(Comparator.LTE, "year", 1995), lambda m: _num(m.get("year")) and m["year"] <= 1995),
    ("lt-string", cmp(Comparator.LT, "genre", "b"), lambda m: _str(m.get("genre")) and m["genre"] < "b"),
    (
        "in",
        cmp(Comparator.IN, "genre", ["comedy", "animation"]),
        lambda m: m.get("genre") in {"comedy", "animation"},
    ),
    (
        "nin",
        cmp(Comparator.NIN, "genre", ["scifi", "comedy"]),
        lambda m: "genre" in m and m["genre"] not in {"scifi", "comedy"},
    ),
    ("contain", cmp(Comparator.CONTAIN, "tags", "aliens"), lambda m: "aliens" in m.get("tags", [])),
    (
        "date-gte",
        cmp(Comparator.GTE, "released", {"date": "2001-01-01", "type": "date"}),
        lambda m: "released" in m and m["released"] >= dt.date(2001, 1, 1),
    ),
    (
        "date-lt",
        cmp(Comparator.LT, "released", {"date": "2001-04-25", "type": "date"}),
        lambda m: "released" in m and m["released"] < dt.date(2001, 4, 25),
    ),
    (
        "date-eq",
        cmp(Comparator.EQ, "released", dt.date(2001, 4, 25)),
        lambda m: m.get("released") == dt.date(2001, 4, 25),
    ),
    (
        "and",
        Operation(
            operator=Operator.AND,
            arguments=[cmp(Comparator.EQ, "genre", "scifi"), cmp(Comparator.GT, "year", 2000)],
        ),
        lambda m: m.get("genre") == "scifi" and _num(m.get("year")) and m["year"] > 2000,
    ),
    (
        "or",
        Operation(
            operator=Operator.OR,
            arguments=[cmp(Comparator.EQ, "genre", "comedy"), cmp(Comparator.LT, "rating", 7)],
        ),
        lambda m: m.get("genre") == "comedy" or (_num(m.get("rating")) and m["rating"] < 7),
    ),
    (
        "not",  # $not also matches documents without the field
        Operation(operator=Operator.NOT, arguments=[cmp(Comparator.EQ, "genre", "scifi")]),
        lambda m: m.get("genre") != "scifi",
    ),
    (
        "not-many",
        Operation(
            operator=Operator.NOT,
            arguments=[cmp(Comparator.EQ, "genre", "scifi"), cmp(Comparator.CONTAIN, "tags", "paris")],
        ),
        lambda m: not (m.get("genre") == "scifi" or "paris" in m.get("tags", [])),
    ),
    (
        "nested",
        Operation(
            operator=Operator.AND,
            arguments=[
                cmp(Comparator.GTE, "rating", 8),
                Operation(
                    operator=Operator.OR,
                    arguments=[
                        cmp(Comparator.EQ, "info.lang", "fr"),
                        Operation(operator=Operator.NOT, arguments=[cmp(Comparator.LT, "year", 2000)]),
                    ],
                ),
            ],
        ),
        lambda m: (
            _num(m.get("rating"))
            and m["rating"] >= 8
            and (m.get("info", {}).get("lang") == "fr" or not (_num(m.get("year")) and m["year"] < 2000))
        ),
    ),
]


@pytest.fixture(scope="module")
def store() -> VQVectorStore:
    vq = VQVectorStore(DeterministicFakeEmbedding(size=8), quantization="none")
    texts = [json.dumps(m, default=str) for m in DOCS]
    vq.add_texts(texts, metadatas=DOCS, ids=[str(i) for i in range(len(DOCS))])
    return vq


def test_cases_cover_every_mapped_comparator_and_operator() -> None:
    def walk(directive: Comparison | Operation) -> set[Comparator | Operator]:
        if isinstance(directive, Comparison):
            return {directive.comparator}
        return {directive.operator}.union(*(walk(a) for a in directive.arguments))  # type: ignore[arg-type]

    used = set().union(*(walk(directive) for _, directive, _ in CASES))
    assert used == set(T.allowed_comparators or ()) | set(T.allowed_operators or ())


@pytest.mark.parametrize(("directive", "predicate"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_filters_select_the_documents_python_selects(
    store: VQVectorStore, directive: Any, predicate: Any
) -> None:
    expected = {str(i) for i, meta in enumerate(DOCS) if predicate(meta)}
    assert 0 < len(expected) < len(DOCS), "each case must keep some documents and drop others"
    query, kwargs = T.visit_structured_query(StructuredQuery(query="film", filter=directive))
    found = store.similarity_search(query, k=len(DOCS), **kwargs)
    assert {d.id for d in found} == expected


# -- a real SelfQueryRetriever --------------------------------------------------------------
NEEDS_CLASSIC = pytest.mark.skipif(
    importlib.util.find_spec("langchain_classic") is None or importlib.util.find_spec("lark") is None,
    reason="SelfQueryRetriever lives in langchain-classic and parses with lark (both in the test extra)",
)


def _self_query_retriever(store: VQVectorStore, answer: dict[str, Any], *, enable_limit: bool = False) -> Any:
    from langchain_classic.chains.query_constructor.schema import AttributeInfo
    from langchain_classic.retrievers.self_query.base import SelfQueryRetriever
    from langchain_core.language_models import FakeListLLM

    llm = FakeListLLM(responses=[f"```json\n{json.dumps(answer)}\n```"])
    fields = [
        AttributeInfo(name="genre", description="The genre of the film", type="string"),
        AttributeInfo(name="year", description="The year the film came out", type="integer"),
        AttributeInfo(name="rating", description="Rating from 1 to 10", type="float"),
        AttributeInfo(name="tags", description="Keywords of the film", type="list[string]"),
        AttributeInfo(name="released", description="Release date", type="date"),
        AttributeInfo(name="info.lang", description="Original language code", type="string"),  # nested
    ]
    return SelfQueryRetriever.from_llm(
        llm,
        store,
        "Descriptions of films",
        fields,
        structured_query_translator=VQTranslator(),
        search_kwargs={"k": len(DOCS)},
        enable_limit=enable_limit,
    )


@NEEDS_CLASSIC
def test_self_query_retriever_end_to_end(store: VQVectorStore) -> None:
    # The parser reads "2000-01-01" as {"date": "2000-01-01", "type": "date"}: the date path.
    answer = {
        "query": "film",
        "filter": 'and(eq("genre", "scifi"), gte("released", "2000-01-01"), contain("tags", "aliens"))',
    }
    retriever = _self_query_retriever(store, answer)
    docs = retriever.invoke("science fiction films about aliens released after 2000")
    assert [d.id for d in docs] == ["2"]


@NEEDS_CLASSIC
async def test_self_query_retriever_async(store: VQVectorStore) -> None:
    answer = {"query": "film", "filter": 'or(lt("year", 1990), eq("info.lang", "fr"))'}
    docs = await _self_query_retriever(store, answer).ainvoke("old films or French ones")
    assert {d.id for d in docs} == {"0", "1"}


@NEEDS_CLASSIC
def test_self_query_retriever_without_filter(store: VQVectorStore) -> None:
    everything = _self_query_retriever(store, {"query": "film", "filter": "NO_FILTER"})
    assert {d.id for d in everything.invoke("any film")} == {str(i) for i in range(len(DOCS))}


@NEEDS_CLASSIC
def test_self_query_retriever_with_limit(store: VQVectorStore) -> None:
    answer = {"query": "film", "filter": 'in("genre", ["scifi", "animation"])', "limit": 2}
    docs = _self_query_retriever(store, answer, enable_limit=True).invoke("two scifi or animated films")
    assert len(docs) == 2
    assert {d.id for d in docs} <= {"0", "2", "3", "5"}


@NEEDS_CLASSIC
def test_the_prompt_does_not_offer_like(store: VQVectorStore) -> None:
    retriever = _self_query_retriever(store, {"query": "film", "filter": "NO_FILTER"})
    prompt = retriever.query_constructor.first.format(query="films")
    (line,) = [ln for ln in prompt.splitlines() if "`comp` (" in ln]
    offered = line.split("`comp` (")[1].split(")")[0].split(" | ")
    assert set(offered) == {c.value for c in T.allowed_comparators or ()}
    assert "like" not in offered
