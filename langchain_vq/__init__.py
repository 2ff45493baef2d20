"""langchain_vq: a LangChain vector store with quantized codes in RAM and float vectors on disk."""

from langchain_vq.errors import (
    CommitConflictError,
    ConfigurationError,
    CorruptStoreError,
    DimensionMismatchError,
    InvalidInputError,
    NotAStoreError,
    NotFittedError,
    StoreError,
    StoreLockedError,
    UnsupportedFormatError,
    VQError,
)
from langchain_vq.vectorstore import VQVectorStore

__all__ = [
    "CommitConflictError",
    "ConfigurationError",
    "CorruptStoreError",
    "DimensionMismatchError",
    "InvalidInputError",
    "NotAStoreError",
    "NotFittedError",
    "StoreError",
    "StoreLockedError",
    "UnsupportedFormatError",
    "VQError",
    "VQVectorStore",
]
