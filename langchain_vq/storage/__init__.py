"""Storage: Arrow segments, versioned manifests, deletions, the write lock and file checks."""

from langchain_vq.storage.directory import StoreDirectory, store_info
from langchain_vq.storage.fs import FileOps
from langchain_vq.storage.manifest import FileEntry, Manifest, SegmentEntry
from langchain_vq.storage.segment import Segment, build_segment

__all__ = [
    "FileEntry",
    "FileOps",
    "Manifest",
    "Segment",
    "SegmentEntry",
    "StoreDirectory",
    "build_segment",
    "store_info",
]
