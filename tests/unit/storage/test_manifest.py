"""Manifests: JSON round trip, the checksum over their content, and typed errors for damage."""

from __future__ import annotations

import json

import pytest

from langchain_vq.errors import CorruptStoreError, UnsupportedFormatError
from langchain_vq.storage.manifest import FileEntry, Manifest, SegmentEntry, _body_checksum
from langchain_vq.storage.schema import FORMAT_NAME, FORMAT_VERSION

SOURCE = "store/_versions/00000000000000000007.json"


def entry(name: str, size: int = 100) -> FileEntry:
    return FileEntry(file=f"_segments/{name}.arrow", bytes=size, checksum="crc32:0000abcd")


def sample() -> Manifest:
    """A manifest using every field: two segments (one with deletions), quantizer, settings."""
    return Manifest(
        version=7,
        dim=384,
        metric="cosine",
        quantization={"name": "pq", "options": {"m": 48}},
        quantizer_state=FileEntry("_quantizers/q.arrow", 4096, "crc32:12345678"),
        embedding_model="sentence-transformers/all-MiniLM-L6-v2",
        segments=(
            SegmentEntry("a", rows=1000, data=entry("a", 5000), has_codes=True),
            SegmentEntry(
                "b",
                rows=20,
                data=entry("b"),
                has_codes=False,
                deleted=3,
                deletions=FileEntry("_deletions/b-7-0000aaaa.arrow", 64, "crc32:00000001"),
            ),
        ),
        settings={"calibration": {"target": 0.99, "multiplier": 8}},
    )


def rewritten(manifest: Manifest, change) -> bytes:
    """The manifest's JSON after ``change(body)``, with a checksum that matches the change."""
    body = json.loads(manifest.to_json())
    body.pop("checksum")
    change(body)
    body["checksum"] = _body_checksum(body)
    return json.dumps(body).encode()


def test_round_trip_keeps_every_field() -> None:
    manifest = sample()
    assert Manifest.from_json(manifest.to_json(), SOURCE) == manifest
    empty = Manifest(version=0, dim=None, metric="l2", quantization=None)
    assert Manifest.from_json(empty.to_json(), SOURCE) == empty


def test_json_is_canonical_and_names_its_format() -> None:
    body = json.loads(sample().to_json())
    assert body["format"] == FORMAT_NAME
    assert body["format_version"] == FORMAT_VERSION
    assert body["checksum"].startswith("crc32:") and len(body["checksum"]) == len("crc32:") + 8
    assert sample().to_json() == sample().to_json()  # same content, same bytes


def test_live_rows_files_and_next() -> None:
    manifest = sample()
    assert manifest.live_rows == 1000 + 20 - 3
    assert [f.file for f in manifest.files()] == [
        "_quantizers/q.arrow",
        "_segments/a.arrow",
        "_segments/b.arrow",
        "_deletions/b-7-0000aaaa.arrow",
    ]
    following = manifest.next(segments=manifest.segments[:1])
    assert following.version == 8 and following.live_rows == 1000
    assert following.metric == manifest.metric and manifest.version == 7  # the original is unchanged


def test_a_changed_byte_fails_the_checksum() -> None:
    data = sample().to_json().replace(b'"rows": 1000', b'"rows": 1001')
    with pytest.raises(CorruptStoreError, match="fails its checksum") as caught:
        Manifest.from_json(data, SOURCE)
    assert caught.value.path == SOURCE


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe", b""])
def test_text_that_is_not_json_is_damage(data: bytes) -> None:
    with pytest.raises(CorruptStoreError, match="not valid JSON"):
        Manifest.from_json(data, SOURCE)


@pytest.mark.parametrize("data", [b"[]", b'{"version": 1}', b'{"format": "lancedb"}'])
def test_json_of_another_kind_is_not_a_manifest(data: bytes) -> None:
    with pytest.raises(CorruptStoreError, match=f"not a {FORMAT_NAME} manifest"):
        Manifest.from_json(data, SOURCE)


def test_a_newer_format_version_asks_for_an_upgrade() -> None:
    data = rewritten(sample(), lambda body: body.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(UnsupportedFormatError, match="Upgrade langchain-vq"):
        Manifest.from_json(data, SOURCE)


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body.pop("segments"),
        lambda body: body.update(unknown_field=1),
        lambda body: body["segments"][0].pop("data"),
        lambda body: body["segments"][1]["deletions"].update(extra=2),
        lambda body: body.update(quantizer_state={"file": "x"}),
    ],
    ids=["no segments", "unknown field", "segment without data", "odd deletions", "odd quantizer"],
)
def test_missing_or_unexpected_fields_are_damage(change) -> None:
    data = rewritten(sample(), change)
    with pytest.raises(CorruptStoreError, match="missing or unexpected field") as caught:
        Manifest.from_json(data, SOURCE)
    assert caught.value.path == SOURCE
