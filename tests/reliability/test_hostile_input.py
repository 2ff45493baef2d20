"""Hostile input: a catalogue of bad calls with their typed errors, path escapes, fuzzing, no pickle.

Each catalogue entry is either rejected with the named typed error (and the store is unchanged)
or a documented acceptance (it works, and what it stores reads back unchanged).
"""

from __future__ import annotations

import ast
import functools
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import (
    CorruptStoreError,
    DimensionMismatchError,
    InvalidFilterError,
    InvalidInputError,
    NotAStoreError,
    VQVectorStore,
)
from langchain_vq.storage import StoreDirectory
from tests.conftest import REPO_ROOT
from tests.reliability._common import DIM, LONG, live_rows, open_store, vectors_for

if TYPE_CHECKING:
    from collections.abc import Callable

V = vectors_for(["q"])[0].tolist()


def _deep_filter(levels: int) -> dict[str, Any]:
    return functools.reduce(lambda inner, _: {"$and": [inner]}, range(levels - 1), {"g": 1})


def _deep_dict(levels: int) -> dict[str, Any]:
    return functools.reduce(lambda inner, _: {"a": inner}, range(levels), {})


def _add(
    store: VQVectorStore, text: object = "x", vector: object = None, meta: object = None, id_: object = "new"
) -> list[str]:
    vectors = vectors_for(["new"]) if vector is None else vector
    return store.add_embeddings([text], vectors, None if meta is None else [meta], [id_])  # type: ignore[list-item]


#: (name, call, expected error) -- the error class, or None for a documented acceptance.
CATALOGUE: list[tuple[str, Callable[[VQVectorStore], object], type[Exception] | None]] = [
    (
        "vector of the wrong dimension",
        lambda s: _add(s, vector=np.ones((1, DIM + 1))),
        DimensionMismatchError,
    ),
    (
        "query of the wrong dimension",
        lambda s: s.similarity_search_by_vector([1.0] * 3),
        DimensionMismatchError,
    ),
    ("NaN in a vector", lambda s: _add(s, vector=np.full((1, DIM), np.nan)), InvalidInputError),
    ("inf in a vector", lambda s: _add(s, vector=np.full((1, DIM), np.inf)), InvalidInputError),
    ("NaN in a query", lambda s: s.similarity_search_by_vector([float("nan")] * DIM), InvalidInputError),
    ("strings as a vector", lambda s: _add(s, vector=[["a"] * DIM]), InvalidInputError),
    (
        "ragged vectors",
        lambda s: s.add_embeddings(["a", "b"], [[1.0] * DIM, [1.0] * (DIM - 1)]),
        InvalidInputError,
    ),
    (
        "fewer vectors than texts",
        lambda s: s.add_embeddings(["a", "b"], vectors_for(["a"])),
        InvalidInputError,
    ),
    ("a 10 MB text (accepted)", lambda s: _add(s, text="x" * 10_000_000, id_="huge"), None),
    ("an empty text (accepted)", lambda s: _add(s, text="", id_="empty"), None),
    ("a text with a lone surrogate", lambda s: _add(s, text="a\ud800b"), InvalidInputError),
    ("a text that is bytes", lambda s: _add(s, text=b"abc"), InvalidInputError),
    ("texts given as one string", lambda s: s.add_texts("abc"), InvalidInputError),
    ("a text that is None", lambda s: s.add_texts([None]), InvalidInputError),  # type: ignore[list-item]
    ("metadata with an object()", lambda s: _add(s, meta={"a": object()}), InvalidInputError),
    ("metadata with a set", lambda s: _add(s, meta={"a": {1, 2}}), InvalidInputError),
    ("metadata with bytes", lambda s: _add(s, meta={"a": b"x"}), InvalidInputError),
    ("metadata with NaN", lambda s: _add(s, meta={"a": float("nan")}), InvalidInputError),
    ("metadata with an int key", lambda s: _add(s, meta={1: "a"}), InvalidInputError),
    ("metadata with a nested int key", lambda s: _add(s, meta={"a": [{"b": {2: 1}}]}), InvalidInputError),
    ("metadata nested 5,000 levels", lambda s: _add(s, meta=_deep_dict(5000)), InvalidInputError),
    ("metadata with a lone surrogate", lambda s: _add(s, meta={"a": "\udc80"}), InvalidInputError),
    ("metadata that is a list", lambda s: _add(s, meta=["a"]), InvalidInputError),
    (
        "metadata with 10k keys (accepted)",
        lambda s: _add(s, meta={f"k{i}": i for i in range(10_000)}, id_="wide"),
        None,
    ),
    ("id of type int", lambda s: _add(s, id_=1), InvalidInputError),
    ("id of type float", lambda s: _add(s, id_=1.5), InvalidInputError),
    ("id of type bytes", lambda s: _add(s, id_=b"x"), InvalidInputError),
    ("id of type tuple", lambda s: _add(s, id_=("a",)), InvalidInputError),
    ("empty id", lambda s: _add(s, id_=""), InvalidInputError),
    ("id with a lone surrogate", lambda s: _add(s, id_="\ud800"), InvalidInputError),
    ("id None (accepted: generated)", lambda s: _add(s, id_=None), None),
    ("id of 100k characters (accepted)", lambda s: _add(s, id_="i" * 100_000), None),
    (
        "duplicate ids in one call",
        lambda s: s.add_embeddings(["a", "b"], vectors_for(["a", "b"]), None, ["d", "d"]),
        InvalidInputError,
    ),
    ("delete with an int id", lambda s: s.delete([1]), InvalidInputError),  # type: ignore[list-item]
    ("delete with a None id", lambda s: s.delete([None]), InvalidInputError),  # type: ignore[list-item]
    ("get_by_ids with odd ids (accepted: skipped)", lambda s: s.get_by_ids([1, None, b"x", ""]), None),  # type: ignore[list-item]
    ("k = 0", lambda s: s.similarity_search_by_vector(V, k=0), InvalidInputError),
    ("k = -1", lambda s: s.similarity_search_by_vector(V, k=-1), InvalidInputError),
    ("k = 2.5", lambda s: s.similarity_search_by_vector(V, k=2.5), InvalidInputError),  # type: ignore[arg-type]
    ("k = True", lambda s: s.similarity_search_by_vector(V, k=True), InvalidInputError),
    ("k = '3'", lambda s: s.similarity_search_by_vector(V, k="3"), InvalidInputError),  # type: ignore[arg-type]
    ("k = 10**9 (accepted: all rows)", lambda s: s.similarity_search_by_vector(V, k=10**9), None),
    ("fetch_k = -1", lambda s: s.max_marginal_relevance_search_by_vector(V, fetch_k=-1), InvalidInputError),
    (
        "lambda_mult = 2",
        lambda s: s.max_marginal_relevance_search_by_vector(V, lambda_mult=2),
        InvalidInputError,
    ),
    (
        "rescore_multiplier = 0",
        lambda s: s.similarity_search_by_vector(V, rescore_multiplier=0),
        InvalidInputError,
    ),
    (
        "unknown search argument",
        lambda s: s.similarity_search_by_vector(V, fliter={"g": 1}),
        InvalidInputError,
    ),
    (
        "filter 100 levels deep (accepted)",
        lambda s: s.similarity_search_by_vector(V, filter=_deep_filter(100)),
        None,
    ),
    (
        "filter 200 levels deep",
        lambda s: s.similarity_search_by_vector(V, filter=_deep_filter(200)),
        InvalidFilterError,
    ),
    (
        "filter 100,000 levels deep",
        lambda s: s.similarity_search_by_vector(V, filter=_deep_filter(100_000)),
        InvalidFilterError,
    ),
    ("filter as a string", lambda s: s.similarity_search_by_vector(V, filter="g == 1"), InvalidFilterError),
    (
        "filter with an unknown operator",
        lambda s: s.similarity_search_by_vector(V, filter={"g": {"$regex": "."}}),
        InvalidFilterError,
    ),
    (
        "filter comparing with a dict",
        lambda s: s.similarity_search_by_vector(V, filter={"g": {"$gt": {}}}),
        InvalidFilterError,
    ),
]


@pytest.fixture
def store(tmp_path) -> VQVectorStore:
    s = open_store(tmp_path / "s")
    ids = [f"d{i}" for i in range(100)]
    s.add_embeddings([f"text {i}" for i in ids], vectors_for(ids), [{"g": i % 3} for i in range(100)], ids)
    return s


def run_catalogue(store: VQVectorStore) -> dict[str, int]:
    """Run every catalogue entry; returns counts of rejected and accepted inputs."""
    counts = {"rejected": 0, "accepted": 0}
    for name, call, expected in CATALOGUE:
        before = store.collection.snapshot.version
        if expected is None:
            call(store)
            counts["accepted"] += 1
            continue
        with pytest.raises(expected) as info:
            call(store)
        assert str(info.value), name
        assert store.collection.snapshot.version == before, f"{name}: a rejected call committed"
        counts["rejected"] += 1
    assert store.verify() == []
    return counts


def test_catalogue_of_bad_inputs(store) -> None:
    counts = run_catalogue(store)
    assert counts["rejected"] == sum(1 for *_, e in CATALOGUE if e is not None)
    # The accepted oddities read back exactly.
    docs = {d.id: d for d in store.get_by_ids(["huge", "empty", "wide", "i" * 100_000])}
    assert len(docs["huge"].page_content) == 10_000_000
    assert docs["empty"].page_content == ""
    assert len(docs["wide"].metadata) == 10_000
    assert "i" * 100_000 in docs
    assert len(store.similarity_search_by_vector(V, k=10**9)) == len(store)
    assert [d.id for d in store.similarity_search_by_vector(V, k=500, filter={"k9999": 9999})] == ["wide"]


# -- paths that try to escape the store ------------------------------------------------------
def test_symlinked_store_directory_is_rejected(store, tmp_path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "s")
    with pytest.raises(NotAStoreError, match="symbolic link"):
        open_store(link)


def test_symlinked_store_folder_is_rejected(store, tmp_path) -> None:
    outside = tmp_path / "outside"
    shutil.move(tmp_path / "s" / "_segments", outside)
    (tmp_path / "s" / "_segments").symlink_to(outside)
    with pytest.raises(NotAStoreError, match="symbolic link"):
        open_store(tmp_path / "s")


def test_symlinked_file_inside_segments_is_rejected(store, tmp_path) -> None:
    entry = store.collection.snapshot.manifest.segments[0].data
    inside = tmp_path / "s" / entry.file
    outside = tmp_path / "stolen.arrow"
    shutil.move(inside, outside)
    inside.symlink_to(outside)  # same bytes, so only the link itself can give it away
    with pytest.raises(CorruptStoreError, match="symbolic link") as info:
        open_store(tmp_path / "s")
    assert info.value.path == str(inside)
    assert any(
        "symbolic link" in p
        for p in StoreDirectory(tmp_path / "s").verify(store.collection.snapshot.manifest)
    )


@pytest.mark.parametrize(
    "forged", ["../../etc/passwd", "/etc/passwd", "_segments/../../x.arrow", "_segments/a/b.arrow"]
)
def test_manifest_listing_a_file_outside_the_store_is_rejected(store, tmp_path, forged) -> None:
    version = store.collection.snapshot.version
    path = tmp_path / "s" / "_versions" / f"{version:020d}.json"
    body = json.loads(path.read_text())
    body["segments"][0]["data"]["file"] = forged
    body.pop("checksum")
    from langchain_vq.storage.manifest import _body_checksum

    body["checksum"] = _body_checksum(dict(body))
    path.write_text(json.dumps(body))
    with pytest.raises(CorruptStoreError, match="not a data file inside the store"):
        open_store(tmp_path / "s")


def test_dot_dot_in_the_callers_own_path_is_accepted(store, tmp_path) -> None:
    """Documented acceptance: the path the caller passes is the caller's choice (``..`` included);
    what is refused is anything *inside* the store that leads out of it."""
    roundabout = tmp_path / "s" / ".." / "s"
    assert len(open_store(roundabout)) == len(store)


# -- no pickle, marshal, shelve or eval anywhere in the package ------------------------------
_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib"}
_FORBIDDEN_CALLS = {"eval", "exec", "__import__", "read_pickle", "to_pickle", "loads_pickle"}


def scan_package_for_unsafe_loading(package: Path) -> list[str]:
    """Every import of a pickle-like module, eval/exec call, or ``allow_pickle=True`` found."""
    findings = []
    for source in sorted(package.rglob("*.py")):
        tree = ast.parse(source.read_text(), str(source))
        for node in ast.walk(tree):
            where = f"{source.relative_to(package.parent)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                findings += [
                    f"{where}: import {a.name}"
                    for a in node.names
                    if a.name.split(".")[0] in _FORBIDDEN_MODULES
                ]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
                findings.append(f"{where}: from {node.module} import")
            elif isinstance(node, ast.Call):
                func = node.func
                name = (
                    func.id
                    if isinstance(func, ast.Name)
                    else func.attr
                    if isinstance(func, ast.Attribute)
                    else ""
                )
                if name in _FORBIDDEN_CALLS:
                    findings.append(f"{where}: call {name}()")
                for kw in node.keywords:
                    unsafe = isinstance(kw.value, ast.Constant) and (
                        (kw.arg == "allow_pickle" and kw.value.value is True)
                        or (kw.arg == "weights_only" and kw.value.value is False)
                    )
                    if unsafe:
                        findings.append(f"{where}: {kw.arg}={kw.value.value}")
    return findings


def test_no_pickle_marshal_shelve_or_eval_in_the_package() -> None:
    assert scan_package_for_unsafe_loading(REPO_ROOT / "langchain_vq") == []


def test_scan_catches_unsafe_code(tmp_path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "bad.py").write_text(
        "import pickle\nfrom marshal import loads\nimport numpy as np\n"
        "eval('1')\nnp.load('x', allow_pickle=True)\n"
    )
    assert len(scan_package_for_unsafe_loading(package)) == 4


# -- hypothesis: the public API against a model ----------------------------------------------
IDS = st.sampled_from([f"id{i}" for i in range(30)])


class StoreMachine(RuleBasedStateMachine):
    """Random add / upsert / delete / get / search / compact / reopen against a dict model."""

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, tuple[str, dict[str, Any], str]] = {}  # id -> (text, metadata, salt)
        self.serial = 0

    @initialize(persist=st.booleans())
    def create(self, persist: bool) -> None:
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="vq-fuzz-") if persist else None
        self.path = str(Path(self.dir) / "s") if self.dir else None
        self.store = (
            open_store(self.path)
            if self.path
            else VQVectorStore(
                DeterministicFakeEmbedding(size=DIM),
                quantization="binary",
            )
        )

    def teardown(self) -> None:
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        ids=st.lists(IDS, min_size=1, max_size=12, unique=True),
        group=st.integers(0, 3),
        text=st.text(max_size=20),
    )
    def add(self, ids: list[str], group: int, text: str) -> None:
        self.serial += 1
        salt = str(self.serial)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            with pytest.raises(InvalidInputError):
                self.store.add_embeddings([text] * len(ids), vectors_for(ids, salt), None, ids)
            return
        metas = [{"g": group, "id": i} for i in ids]
        assert self.store.add_embeddings([text] * len(ids), vectors_for(ids, salt), metas, ids) == ids
        for i, meta in zip(ids, metas, strict=True):
            self.model[i] = (text, meta, salt)

    @rule(ids=st.lists(IDS, max_size=8))
    def delete(self, ids: list[str]) -> None:
        self.store.delete(ids)
        for i in ids:
            self.model.pop(i, None)

    @rule(group=st.integers(0, 3))
    def delete_by_filter(self, group: int) -> None:
        self.store.delete(filter={"g": group})
        self.model = {k: v for k, v in self.model.items() if v[1]["g"] != group}

    @rule(ids=st.lists(IDS, max_size=8))
    def get_by_ids(self, ids: list[str]) -> None:
        got = self.store.get_by_ids(ids)
        expected = [i for i in dict.fromkeys(ids) if i in self.model]
        assert [d.id for d in got] == expected
        for d in got:
            assert (d.page_content, d.metadata) == self.model[d.id][:2]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def search_finds_an_exact_vector(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(self.model)))
        vector = vectors_for([target], self.model[target][2])[0].tolist()
        found = self.store.similarity_search_by_vector(vector, k=1)
        assert [d.id for d in found] == [target]

    @rule(group=st.integers(0, 3), k=st.integers(1, 50))
    def filtered_search_returns_exactly_the_matching_rows(self, group: int, k: int) -> None:
        found = self.store.similarity_search_by_vector(V, k=k, filter={"g": group})
        matching = {i for i, v in self.model.items() if v[1]["g"] == group}
        assert len(found) == min(k, len(matching))
        assert {d.id for d in found} <= matching
        found_all = self.store.similarity_search_by_vector(V, k=100, filter={"g": group})
        assert {d.id for d in found_all} == matching

    @rule()
    def compact(self) -> None:
        self.store.compact()

    @precondition(lambda self: self.path is not None)
    @rule()
    def reopen(self) -> None:
        self.store = open_store(self.path)

    @invariant()
    def same_rows(self) -> None:
        if hasattr(self, "store"):
            assert len(self.store) == len(self.model)
            assert live_rows(self.store.collection) == {k: v[0] for k, v in self.model.items()}


StoreMachine.TestCase.settings = settings(
    max_examples=300 if LONG else 25,
    stateful_step_count=40 if LONG else 20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_store_against_a_model = StoreMachine.TestCase


@settings(max_examples=500 if LONG else 60, deadline=None)
@given(
    meta=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(max_size=3),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=3)
        ),
        max_leaves=10,
    )
)
def test_any_metadata_is_stored_exactly_or_rejected_with_a_typed_error(meta: object) -> None:
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM))
    wrapped = {"m": meta}
    try:
        store.add_embeddings(["t"], vectors_for(["t"]), [wrapped], ["t"])
    except InvalidInputError:
        return
    (doc,) = store.get_by_ids(["t"])
    assert json.dumps(doc.metadata, sort_keys=True) == json.dumps(
        json.loads(json.dumps(wrapped)), sort_keys=True
    )
