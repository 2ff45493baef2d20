"""langchain_vq: a LangChain vector store with quantized codes in RAM and float vectors on disk."""

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
from langchain_vq.retriever import VQRetriever
from langchain_vq.self_query import VQTranslator
from langchain_vq.vectorstore import VQVectorStore

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
