"""langchain_vq: a LangChain vector store with quantized codes in RAM and float vectors on disk.

The LangChain classes are imported on first use: a process that only needs the storage layer
(a Ray build worker, a shard actor) does not pay for ``langchain_core`` (about 2 s of CPU per
process; docs/architecture.md, "Distributed build").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from langchain_vq._lazy import lazy_attributes
from langchain_vq.errors import (
    CommitConflictError,
    ConfigurationError,
    CorruptStoreError,
    DimensionMismatchError,
    InvalidFilterError,
    InvalidInputError,
    MissingDependencyError,
    NotAStoreError,
    NotFittedError,
    StoreError,
    StoreLockedError,
    StoreWriteError,
    UnsupportedFormatError,
    VQError,
)

if TYPE_CHECKING:
    from langchain_vq.retriever import VQRetriever
    from langchain_vq.self_query import VQTranslator
    from langchain_vq.vectorstore import VQVectorStore

_LAZY = {
    "VQRetriever": "langchain_vq.retriever",
    "VQTranslator": "langchain_vq.self_query",
    "VQVectorStore": "langchain_vq.vectorstore",
}


__getattr__ = lazy_attributes(__name__, _LAZY)  # imports on first use


__all__ = [
    "CommitConflictError",
    "ConfigurationError",
    "CorruptStoreError",
    "DimensionMismatchError",
    "InvalidFilterError",
    "InvalidInputError",
    "MissingDependencyError",
    "NotAStoreError",
    "NotFittedError",
    "StoreError",
    "StoreLockedError",
    "StoreWriteError",
    "UnsupportedFormatError",
    "VQError",
    "VQRetriever",
    "VQTranslator",
    "VQVectorStore",
]
