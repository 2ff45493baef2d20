"""Stores on disk: reopen in a new process, settings checks, damage, locking, no lost data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import (
    ConfigurationError,
    CorruptStoreError,
    DimensionMismatchError,
    InvalidInputError,
    NotAStoreError,
    StoreLockedError,
    UnsupportedFormatError,
    VQVectorStore,
)
from langchain_vq.storage.directory import VERSIONS, version_file_name
from tests.conftest import REPO_ROOT, clustered_vectors

DIM = 64


def make_store(path: Path, mode: str = "binary", n: int = 1500) -> tuple[VQVectorStore, np.ndarray]:
    x = clustered_vectors(n, DIM)
    store = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, quantization=mode)
    ids = [f"id-{i}" for i in range(n)]
    store.add_embeddings([f"text {i}" for i in range(n)], x, [{"i": i} for i in range(n)], ids)
    store.delete(ids[:10])
    return store, x


def results(store: VQVectorStore, queries: np.ndarray) -> list[list[tuple[str, str, dict, float]]]:
    return [
        [(d.id, d.page_content, d.metadata, round(s, 5)) for d, s in r]
        for r in store.batch_similarity_search_by_vector(queries, k=10)
    ]


@pytest.mark.parametrize("mode", ["binary", "int8", "pq", "none"])
def test_reopen_in_new_process_gives_identical_results(mode, tmp_path) -> None:
    store, _ = make_store(tmp_path / "s", mode)
    queries = clustered_vectors(5, DIM, seed=9)
    np.save(tmp_path / "q.npy", queries)
    expected = results(store, queries)
    script = textwrap.dedent(
        f"""
        import json, sys, numpy as np
        from langchain_core.embeddings import DeterministicFakeEmbedding
        from langchain_vq import VQVectorStore
        store = VQVectorStore(DeterministicFakeEmbedding(size={DIM}), path=sys.argv[1])
        res = store.batch_similarity_search_by_vector(np.load(sys.argv[2]), k=10)
        print(json.dumps([[(d.id, d.page_content, d.metadata, round(s, 5)) for d, s in r] for r in res]))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s"), str(tmp_path / "q.npy")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert json.loads(out.stdout) == [[list(t) for t in r] for r in expected]


def test_reopen_does_not_load_vectors_into_memory(tmp_path) -> None:
    make_store(tmp_path / "s")
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    for view in reopened.collection.snapshot.views:
        vectors = view.segment.vectors
        assert not vectors.flags.owndata  # a view of the memory-mapped file, not a heap copy
        assert vectors.base is not None


def test_reopen_with_other_settings_is_a_clear_error(tmp_path) -> None:
    make_store(tmp_path / "s", "binary")
    with pytest.raises(ConfigurationError, match="metric"):
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", metric="l2")
    with pytest.raises(ConfigurationError, match="quantization"):
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", quantization="pq")
    store = VQVectorStore(DeterministicFakeEmbedding(size=32), path=tmp_path / "s")
    with pytest.raises(DimensionMismatchError, match="64-dimensional"):
        store.add_texts(["x"])
    with pytest.raises(DimensionMismatchError, match="64-dimensional"):
        store.similarity_search("x")


def test_path_that_is_a_file_or_another_format(tmp_path) -> None:
    (tmp_path / "file").write_text("hello")
    with pytest.raises(NotAStoreError, match="is a file"):
        VQVectorStore(DeterministicFakeEmbedding(size=4), path=tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "index.faiss").write_bytes(b"\0" * 10)
    with pytest.raises(NotAStoreError, match="holds no langchain_vq store"):
        VQVectorStore(DeterministicFakeEmbedding(size=4), path=tmp_path / "other")


def test_newer_format_version_is_refused(tmp_path) -> None:
    store, _ = make_store(tmp_path / "s", n=5)
    manifest_path = tmp_path / "s" / VERSIONS / version_file_name(store.collection.snapshot.version)
    body = json.loads(manifest_path.read_text())
    body["format_version"] = 99
    manifest_path.write_text(json.dumps(body))
    with pytest.raises(UnsupportedFormatError, match="version 99"):
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")


def _segment_file(store: VQVectorStore) -> Path:
    entry = store.collection.snapshot.manifest.segments[0]
    return Path(store.path) / entry.data.file


def test_truncated_segment_is_a_typed_error_naming_the_file(tmp_path) -> None:
    store, _ = make_store(tmp_path / "s")
    path = _segment_file(store)
    data = path.read_bytes()
    del store
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError) as info:
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    assert str(path) in str(info.value)


def test_verify_detects_flipped_bytes_in_every_file(tmp_path) -> None:
    store, _ = make_store(tmp_path / "s")
    assert store.verify() == []
    files = [Path(store.path) / e.file for e in store.collection.snapshot.manifest.files()]
    assert len(files) >= 3  # segment, deletions, quantizer state
    rng = np.random.default_rng(0)
    for path in files:
        original = path.read_bytes()
        damaged = bytearray(original)
        pos = int(rng.integers(0, len(damaged)))
        damaged[pos] ^= 0xFF
        path.write_bytes(bytes(damaged))
        problems = store.verify()
        assert any(str(path) in p and "checksum" in p for p in problems), (path, problems)
        path.write_bytes(original)
    assert store.verify() == []


def test_damaged_manifest_is_detected(tmp_path) -> None:
    store, _ = make_store(tmp_path / "s", n=20)
    manifest_path = tmp_path / "s" / VERSIONS / version_file_name(store.collection.snapshot.version)
    text = manifest_path.read_text()
    assert '"rows": 20' in text
    manifest_path.write_text(text.replace('"rows": 20', '"rows": 21'))
    with pytest.raises(CorruptStoreError, match="checksum"):
        VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")


def test_second_writer_gets_locked_error_or_waits(tmp_path) -> None:
    _store, _ = make_store(tmp_path / "s", n=5)
    holder = textwrap.dedent(
        """
        import sys, time
        from langchain_vq.storage import StoreDirectory
        d = StoreDirectory(sys.argv[1])
        with d.lock.hold(timeout=None):
            print("locked", flush=True)
            time.sleep(float(sys.argv[2]))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path / "s"), "3"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        impatient = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", lock_timeout=0)
        with pytest.raises(StoreLockedError, match="locked by another writer"):
            impatient.add_texts(["x"], ids=["x"])
        patient = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s", lock_timeout=60)
        patient.add_texts(["y"], ids=["y"])  # waits for the holder, then commits
        assert [d.id for d in patient.get_by_ids(["x", "y"])] == ["y"]
    finally:
        proc.wait(timeout=60)


def test_two_handles_see_each_others_commits_after_refresh(tmp_path) -> None:
    a = VQVectorStore(DeterministicFakeEmbedding(size=8), path=tmp_path / "s")
    b = VQVectorStore(DeterministicFakeEmbedding(size=8), path=tmp_path / "s")
    a.add_texts(["from a"], ids=["a"])
    b.add_texts(["from b"], ids=["b"])  # a write reloads the newest version first: nothing lost
    assert {d.id for d in b.get_by_ids(["a", "b"])} == {"a", "b"}
    assert a.get_by_ids(["b"]) == []
    assert a.refresh() is True
    assert {d.id for d in a.get_by_ids(["a", "b"])} == {"a", "b"}


def test_failed_calls_lose_nothing(tmp_path) -> None:
    store, x = make_store(tmp_path / "s", n=50)
    version = store.collection.snapshot.version
    before = results(store, x[:3])
    bad_calls = [
        lambda: store.add_embeddings(["a", "b"], x[:2], ids=["dup", "dup"]),
        lambda: store.add_embeddings(["a"], np.full((1, DIM), np.nan)),
        lambda: store.add_embeddings(["a"], x[:1], metadatas=[{"when": object()}]),
        lambda: store.add_embeddings(["a", "b"], x[:1]),
        lambda: store.add_embeddings(["a"], x[:1, :10]),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInputError):
            call()
    assert store.collection.snapshot.version == version
    assert results(store, x[:3]) == before
    reopened = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=tmp_path / "s")
    assert results(reopened, x[:3]) == before


def test_files_are_plain_arrow_and_json_never_pickle(tmp_path) -> None:
    store, _ = make_store(tmp_path / "s")
    for root, _dirs, names in os.walk(store.path):
        for name in names:
            data = (Path(root) / name).read_bytes()
            if name.endswith(".arrow"):
                assert data[:6] == b"ARROW1"
            elif name.endswith(".json"):
                json.loads(data)
            else:
                assert name == "_lock"
    package = REPO_ROOT / "langchain_vq"
    for source in package.rglob("*.py"):
        text = source.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, source


def test_segment_files_are_written_from_the_table_memory(tmp_path) -> None:
    """The IPC bytes of a segment are chunks that share the big column buffers (no second copy of
    the floats), and are byte for byte the file pyarrow writes into one buffer."""
    import pyarrow as pa
    from pyarrow import ipc

    from langchain_vq.storage.segment import build_segment, checksum, serialize_chunks

    n = 12_000  # 12,000 x 384 floats: 18 MB, above the size shared rather than copied
    x = np.random.default_rng(0).random((n, 384), dtype=np.float32)
    segment = build_segment("s", [str(i) for i in range(n)], ["t"] * n, ["{}"] * n, x, None)
    chunks = serialize_chunks(segment.table)
    shared = [c for c in chunks if isinstance(c, memoryview)]
    assert len(shared) == 1
    assert np.frombuffer(shared[0], np.float32).ctypes.data == x.ctypes.data  # the caller's floats
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, segment.table.schema) as writer:
        writer.write_table(segment.table, max_chunksize=n)
    whole = sink.getvalue()
    assert b"".join(chunks) == whole.to_pybytes()
    assert checksum(chunks) == checksum(whole)
    path = tmp_path / "s.arrow"
    path.write_bytes(b"".join(chunks))
    reread = ipc.open_file(pa.memory_map(str(path))).read_all()
    assert reread.equals(segment.table)


def test_store_info_counts_the_bytes_of_every_file_of_the_newest_version(tmp_path) -> None:
    from langchain_vq.storage import store_info

    store, _ = make_store(tmp_path / "s", "int8", n=300)
    info = store_info(tmp_path / "s")
    assert (info["rows"], info["deleted_rows"], info["quantization"], info["dimension"]) == (
        290,
        10,
        "int8",
        DIM,
    )
    assert info["version"] == store.collection.snapshot.version
    on_disk = {
        part: sum(p.stat().st_size for p in (tmp_path / "s" / folder).iterdir())
        for part, folder in (("segments", "_segments"), ("deletions", "_deletions"), ("manifests", VERSIONS))
    }
    assert info["bytes"]["segments"] == on_disk["segments"]  # one version: every file is listed
    assert info["bytes"]["deletions"] == on_disk["deletions"]
    assert info["bytes"]["manifests"] == on_disk["manifests"]
    assert info["versions_kept"] == len(list((tmp_path / "s" / VERSIONS).glob("*.json")))
    assert info["bytes"]["total"] == sum(v for k, v in info["bytes"].items() if k != "total")


def test_store_info_of_a_folder_without_a_store_says_so(tmp_path) -> None:
    from langchain_vq.storage import store_info

    with pytest.raises(NotAStoreError, match="No langchain_vq store"):
        store_info(tmp_path / "absent")
