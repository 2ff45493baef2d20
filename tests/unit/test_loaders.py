"""Loading and splitting files, and indexing them into a store (fake embeddings, no model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq.errors import (
    BinarySourceError,
    EmptySourceError,
    InvalidInputError,
    InvalidSourceError,
    SourceError,
    SourceNotFoundError,
    UnreadableSourceError,
    UnsupportedSourceError,
    VQError,
)
from langchain_vq.indexing import index_path, index_sources, plan_index
from langchain_vq.loaders import chunk_id, find_files, load_sources, source_name

PARAGRAPH = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 4


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def doc_text(paragraphs: int, tag: str) -> str:
    return "\n\n".join(f"{tag} paragraph {i}. {PARAGRAPH}" for i in range(paragraphs))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    write(root / "a.txt", doc_text(6, "alpha"))
    write(root / "b.md", "# Bravo notes\n\n" + doc_text(4, "bravo"))
    write(
        root / "sub" / "c.jsonl",
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "r1", "text": "charlie one. " + PARAGRAPH, "title": "One", "metadata": {"lang": "en"}},
                {"text": "charlie two. " + PARAGRAPH, "year": 2024},
            ]
        )
        + "\n",
    )
    write(root / ".hidden.txt", "hidden")
    write(root / "image.png", "not really an image")
    return root


# -- loading ---------------------------------------------------------------------------------
def test_folder_is_searched_recursively_skipping_hidden_and_other_types(corpus: Path) -> None:
    files = find_files([corpus])
    assert [f.name for f in files] == ["a.txt", "b.md", "c.jsonl"]


def test_same_file_twice_is_loaded_once(corpus: Path) -> None:
    files = find_files([corpus, corpus / "a.txt", str(corpus / "sub" / ".." / "a.txt")])
    assert len(files) == 3


def test_chunks_have_stable_ids_and_metadata(corpus: Path) -> None:
    first = load_sources([corpus], chunk_size=200, chunk_overlap=20)
    again = load_sources([corpus], chunk_size=200, chunk_overlap=20)
    assert [[d.id for d in s.chunks] for s in first] == [[d.id for d in s.chunks] for s in again]
    a = first[0]
    assert a.source == source_name(corpus / "a.txt")
    assert len(a.chunks) > 3
    for i, doc in enumerate(a.chunks):
        assert doc.id == chunk_id(a.source, i) == f"{a.source}#{i}"
        assert doc.metadata["source"] == a.source
        assert doc.metadata["chunk"] == i
        assert doc.metadata["title"] == "a"
        assert len(doc.page_content) <= 200
        assert set(doc.metadata) == {"source", "chunk", "title"}
    assert first[1].chunks[0].metadata["title"] == "Bravo notes"


def test_jsonl_records(corpus: Path) -> None:
    (c,) = load_sources([corpus / "sub" / "c.jsonl"])
    one, two = c.chunks
    assert one.page_content.startswith("charlie one.")
    assert one.metadata["record_id"] == "r1"
    assert one.metadata["title"] == "One"
    assert one.metadata["lang"] == "en"
    assert one.metadata["line"] == 1
    assert two.metadata["year"] == 2024
    assert "record_id" not in two.metadata
    assert [d.id for d in c.chunks] == [f"{c.source}#0", f"{c.source}#1"]


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"title": "no text"}', "no string 'text'"),
        ("[1, 2]", "no string 'text'"),
        ('{"text": "x", "metadata": 3}', "'metadata' is int"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, line: str, fragment: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"text": "fine"}\n' + line + "\n")
    with pytest.raises(InvalidSourceError, match=fragment) as info:
        load_sources([path])
    assert f"{path}:2" in str(info.value)


def test_empty_and_whitespace_files_give_no_chunks(tmp_path: Path) -> None:
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "blank.md", "  \n\n \n")
    assert [len(s.chunks) for s in load_sources([tmp_path])] == [0, 0]


def test_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello there, text with a byte order mark".encode())
    assert load_sources([path])[0].chunks[0].page_content.startswith("hello")


# -- errors ----------------------------------------------------------------------------------
def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match="does not exist") as info:
        load_sources([tmp_path / "nope.txt"])
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, VQError)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(EmptySourceError, match=r"holds no \.txt"):
        load_sources([tmp_path])


def test_folder_of_other_types_says_what_was_skipped(tmp_path: Path) -> None:
    write(tmp_path / "x.pdf", "x")
    with pytest.raises(EmptySourceError, match="1 file"):
        load_sources([tmp_path])


def test_no_paths() -> None:
    with pytest.raises(EmptySourceError):
        load_sources([])


@pytest.mark.parametrize(
    "data", [b"text\x00with a NUL byte", b"\xff\xfe\x00\x01binary", b"latin-1 caf\xe9 text"]
)
def test_binary_or_non_utf8_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "blob.txt"
    path.write_bytes(data)
    with pytest.raises(BinarySourceError, match=r"blob\.txt"):
        load_sources([path])


def test_unsupported_file_named_directly(tmp_path: Path) -> None:
    path = write(tmp_path / "report.pdf", "x")
    with pytest.raises(UnsupportedSourceError, match=r"'\.pdf'"):
        load_sources([path])


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Works as root too: the read itself fails, as it does for a file without read permission."""
    write(tmp_path / "secret.txt", "top secret")
    original = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self.name == "secret.txt":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(UnreadableSourceError, match="cannot be read") as info:
        load_sources([tmp_path])
    assert isinstance(info.value, PermissionError)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.txt", "top secret")
    path.chmod(0)
    try:
        with pytest.raises(UnreadableSourceError):
            load_sources([path])
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (100, 100), (100, -1), (True, 0)])
def test_bad_chunking(tmp_path: Path, size: int, overlap: int) -> None:
    write(tmp_path / "a.txt", "text")
    with pytest.raises(InvalidInputError, match="chunk_"):
        load_sources([tmp_path], chunk_size=size, chunk_overlap=overlap)


def test_every_source_error_is_an_oserror() -> None:
    assert issubclass(SourceError, OSError)
    assert issubclass(SourceError, VQError)


# -- indexing --------------------------------------------------------------------------------
def open_store(path: Path) -> VQVectorStore:
    return VQVectorStore(DeterministicFakeEmbedding(size=32), path)


def snapshot(store: VQVectorStore, sources: list) -> dict[str, str]:
    ids = [chunk_id(s.source, i) for s in sources for i in range(50)]
    return {d.id: d.page_content for d in store.get_by_ids(ids)}


def test_index_twice_keeps_row_count_and_writes_nothing(corpus: Path, tmp_path: Path) -> None:
    sources = load_sources([corpus], chunk_size=200, chunk_overlap=0)
    store = open_store(tmp_path / "store")
    first = index_sources(store, sources)
    assert first.added == first.chunks == first.rows == len(store) > 10
    version = store.collection.snapshot.version
    second = index_sources(store, load_sources([corpus], chunk_size=200, chunk_overlap=0))
    assert (second.added, second.updated, second.deleted, second.unchanged) == (0, 0, 0, first.chunks)
    assert len(store) == first.rows
    assert store.collection.snapshot.version == version  # nothing committed


def test_editing_one_file_changes_only_its_chunks(corpus: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    sources = load_sources([corpus], chunk_size=200, chunk_overlap=0)
    index_sources(store, sources)
    before = snapshot(store, sources)
    b = corpus / "b.md"
    b.write_text(b.read_text().replace("bravo paragraph 2", "BRAVO PARAGRAPH TWO, edited"))
    edited = load_sources([corpus], chunk_size=200, chunk_overlap=0)
    plan = plan_index(store, edited)
    b_source = source_name(b)
    assert plan.upsert
    assert all(d.metadata["source"] == b_source for d in plan.upsert)
    result = index_sources(store, edited)
    after = snapshot(store, edited)
    changed = {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}
    assert changed
    assert all(i.startswith(b_source + "#") for i in changed)
    assert result.rows == len(before)


def test_shrinking_a_file_deletes_its_extra_chunks(corpus: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    a = corpus / "a.txt"
    write(a, doc_text(200, "alpha"))  # > one probe block of chunks
    index_sources(store, load_sources([corpus], chunk_size=200, chunk_overlap=0))
    long_count = len(load_sources([a], chunk_size=200, chunk_overlap=0)[0].chunks)
    assert long_count > 64
    rows_before = len(store)
    write(a, doc_text(2, "alpha"))
    (short,) = load_sources([a], chunk_size=200, chunk_overlap=0)
    result = index_sources(store, [short])
    assert result.deleted == long_count - len(short.chunks)
    assert len(store) == rows_before - result.deleted
    assert store.get_by_ids([chunk_id(short.source, len(short.chunks))]) == []
    # Emptying the file removes all of its chunks.
    write(a, "")
    result = index_sources(store, load_sources([a]))
    assert result.deleted == len(short.chunks)
    assert store.get_by_ids([chunk_id(short.source, 0)]) == []


@pytest.mark.parametrize("cleanup", ["incremental", "full", None])
def test_cleanup_modes_on_a_deleted_file(corpus: Path, tmp_path: Path, cleanup: str | None) -> None:
    store = open_store(tmp_path / "store")
    index_sources(store, load_sources([corpus], chunk_size=200, chunk_overlap=0))
    store.add_texts(["added through the API"], ids=["api-row"])
    b = corpus / "b.md"
    b_chunks = len(load_sources([b], chunk_size=200, chunk_overlap=0)[0].chunks)
    b.unlink()
    a = corpus / "a.txt"
    write(a, doc_text(2, "alpha"))  # shorter: its chunks past the new end are stale in both modes
    rows_before = len(store)
    sources = load_sources([corpus], chunk_size=200, chunk_overlap=0)
    result = index_sources(store, sources, cleanup)  # type: ignore[arg-type]
    ids = set(store.collection.live_ids())
    b_ids = {chunk_id(source_name(b), i) for i in range(b_chunks)}
    wanted = {c.id for s in sources for c in s.chunks}
    assert wanted <= ids
    if cleanup == "full":  # only this run's chunks remain
        assert ids == wanted
        assert result.deleted == rows_before - len(wanted)
    elif cleanup == "incremental":  # the deleted file's chunks and the API row stay
        assert b_ids | {"api-row"} <= ids
        assert ids == wanted | b_ids | {"api-row"}
        assert result.deleted > 0
    else:
        assert result.deleted == 0
        assert len(ids) == rows_before
    assert len(store) == len(ids) == result.rows


def test_live_ids_skip_deleted_rows(tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    store.add_texts([f"t{i}" for i in range(5)], ids=[f"i{i}" for i in range(5)])
    store.add_texts(["u"], ids=["i2"])  # upsert: the old row of i2 is deleted
    store.delete(["i0"])
    assert sorted(store.collection.live_ids()) == ["i1", "i2", "i3", "i4"]


def test_unknown_cleanup_mode_is_a_typed_error(corpus: Path, tmp_path: Path) -> None:
    store = open_store(tmp_path / "store")
    with pytest.raises(InvalidInputError, match="cleanup must be"):
        plan_index(store, load_sources([corpus]), "all")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="cleanup must be"):  # also before a new store exists
        index_path(tmp_path / "new", DeterministicFakeEmbedding(size=8), load_sources([corpus]), "all")  # type: ignore[arg-type]
    assert not (tmp_path / "new").exists()


def test_index_path_creates_no_store_when_nothing_to_index(tmp_path: Path) -> None:
    write(tmp_path / "data" / "empty.txt", "")
    with pytest.raises(EmptySourceError, match="hold no text"):
        index_path(tmp_path / "store", DeterministicFakeEmbedding(size=8), load_sources([tmp_path / "data"]))
    assert not (tmp_path / "store").exists()


def test_index_path_creates_no_store_when_embedding_fails(corpus: Path, tmp_path: Path) -> None:
    class Broken(DeterministicFakeEmbedding):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            msg = "model exploded"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="exploded"):
        index_path(tmp_path / "store", Broken(size=8), load_sources([corpus]))
    assert not (tmp_path / "store").exists()
