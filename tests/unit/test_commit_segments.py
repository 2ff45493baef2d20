"""Collection.commit_segments: segments written by other processes, committed through the protocol."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import numpy as np
import pytest

from langchain_vq.collection import BUILDS_SETTING, Collection, CollectionConfig
from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.storage import SegmentEntry, StoreDirectory, build_segment
from tests.conftest import clustered_vectors

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_vq.quantization.base import Quantizer
    from langchain_vq.quantization.precision import VectorCodec

DIM = 24


def written(
    path: Path,
    ids: list[str],
    vectors: np.ndarray,
    quantizer: Quantizer | None,
    codec: VectorCodec | None = None,
) -> SegmentEntry:
    """What a build worker does: build a segment and write its file, without any manifest."""
    codes = quantizer.encode(vectors) if quantizer is not None else None
    stored = codec.encode(vectors) if codec is not None else vectors
    meta = codec.field_metadata() if codec is not None else None
    texts, metadatas = [f"text {i}" for i in ids], [{"i": i} for i in ids]
    segment = build_segment(uuid.uuid4().hex, ids, texts, metadatas, stored, codes, vector_metadata=meta)
    entry = StoreDirectory(path).write_segment(segment)
    return SegmentEntry(
        name=segment.name,
        rows=segment.rows,
        data=entry,
        has_codes=codes is not None,
        vectors=segment.precision,
    )


def normalized(n: int, seed: int) -> np.ndarray:
    v = clustered_vectors(n, DIM, seed=seed)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def test_commit_appends_upserts_and_records_the_build_once(tmp_path: Path) -> None:
    store = Collection(CollectionConfig(quantization="int8"), tmp_path)
    old = normalized(200, 0)
    store.add([f"r{i}" for i in range(200)], ["old"] * 200, [None] * 200, old)
    quantizer, codec = store.snapshot.quantizer, store.snapshot.codec
    assert quantizer is not None
    assert codec is not None  # float16 rescoring vectors: the default of a quantized store
    new_ids = [f"r{i}" for i in range(150, 250)]
    new = normalized(100, 1)
    entries = [
        written(tmp_path, new_ids[:60], new[:60], quantizer, codec),
        written(tmp_path, new_ids[60:], new[60:], quantizer, codec),
    ]
    version = store.snapshot.version

    assert store.commit_segments(entries, DIM, quantizer, codec=codec, build_id="b1")
    assert store.snapshot.version == version + 1
    assert store.snapshot.live_rows == 250  # 150 kept, 50 replaced, 50 new
    assert store.verify() == []
    assert store.get(["r10", "r160"])[0].text == "old"
    assert store.get(["r160"])[0].text == "text r160"
    assert store.snapshot.settings[BUILDS_SETTING] == {"b1": version + 1}
    assert store.snapshot.quantizer is quantizer

    assert not store.commit_segments(entries, DIM, quantizer, codec=codec, build_id="b1")  # a rerun: nothing
    assert store.snapshot.version == version + 1
    reopened = Collection(path=tmp_path)
    assert reopened.snapshot.live_rows == 250
    hit = reopened.search(new[70:71], 1)[0][0]
    assert hit.id == "r220"


def test_a_first_quantizer_re_encodes_the_existing_rows(tmp_path: Path) -> None:
    store = Collection(CollectionConfig(quantization="binary"), tmp_path)
    store.add(["a", "b"], ["x", "y"], [None, None], normalized(2, 0))
    assert store.snapshot.quantizer is None
    template = Collection(CollectionConfig(quantization="binary"))
    quantizer, codec = template._template(DIM), template._codec(DIM)
    assert quantizer is not None
    assert codec is not None
    vectors = normalized(300, 1)
    quantizer, codec = quantizer.fit(vectors), codec.fit(vectors)
    entry = written(tmp_path, [f"n{i}" for i in range(300)], vectors, quantizer, codec)
    assert store.commit_segments([entry], DIM, quantizer, codec=codec)
    assert store.snapshot.quantizer is not None
    assert all(v.segment.codes is not None for v in store.snapshot.views)
    assert {v.segment.precision for v in store.snapshot.views} == {"float16"}
    assert Collection(path=tmp_path).snapshot.live_rows == 302


def test_mismatches_are_typed_errors_and_commit_nothing(tmp_path: Path) -> None:
    store = Collection(CollectionConfig(quantization="int8"), tmp_path)
    store.add([f"r{i}" for i in range(200)], ["t"] * 200, [None] * 200, normalized(200, 0))
    version = store.snapshot.version
    other = Collection(CollectionConfig(quantization="int8"))
    other.add([f"r{i}" for i in range(200)], ["t"] * 200, [None] * 200, normalized(200, 5))
    foreign = other.snapshot.quantizer
    assert foreign is not None
    with pytest.raises(ConfigurationError, match="quantizer other than"):
        store.commit_segments([written(tmp_path, ["z"], normalized(1, 2), foreign)], DIM, foreign)
    mine, codec = store.snapshot.quantizer, store.snapshot.codec
    assert mine is not None
    with pytest.raises(ConfigurationError, match="16-dimensional"):
        store.commit_segments(
            [written(tmp_path, ["z"], normalized(1, 2), mine, codec)], 16, mine, codec=codec
        )
    with pytest.raises(ConfigurationError, match="codec"):
        store.commit_segments([written(tmp_path, ["z"], normalized(1, 2), mine)], DIM, mine)
    twice = [
        written(tmp_path, ["dup", "x"], normalized(2, 3), mine, codec),
        written(tmp_path, ["dup"], normalized(1, 4), mine, codec),
    ]
    with pytest.raises(InvalidInputError, match="dup"):
        store.commit_segments(twice, DIM, mine, codec=codec)
    assert StoreDirectory(tmp_path).latest_version() == version
    with pytest.raises(InvalidInputError, match="store on disk"):
        Collection().commit_segments([], DIM, None)


def test_no_entries_records_the_build_only(tmp_path: Path) -> None:
    store = Collection(path=tmp_path)
    assert not store.commit_segments([], DIM, None)  # nothing to commit, no build id
    assert store.commit_segments([], DIM, None, build_id="empty-shard")
    assert not store.commit_segments([], DIM, None, build_id="empty-shard")
    assert store.snapshot.version == 1
    assert store.snapshot.live_rows == 0
