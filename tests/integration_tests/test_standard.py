"""The langchain-tests standard suites against VQVectorStore, on disk and in memory, every mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests, VectorStoreIntegrationTests

from langchain_vq import VQRetriever, VQVectorStore

if TYPE_CHECKING:
    from collections.abc import Generator
    from pathlib import Path


@pytest.fixture(params=["binary", "int8", "pq", "none"])
def quantization(request: pytest.FixtureRequest) -> str:
    return request.param


class TestInMemory(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, quantization: str) -> Generator[VQVectorStore, None, None]:  # type: ignore[override]
        return VQVectorStore(self.get_embeddings(), quantization=quantization)


class TestOnDisk(VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, quantization: str, tmp_path: Path) -> Generator[VQVectorStore, None, None]:  # type: ignore[override]
        return VQVectorStore(self.get_embeddings(), path=tmp_path / "store", quantization=quantization)


class TestOnDiskReopened(VectorStoreIntegrationTests):
    """The store is created by one handle and used through a second one opened on the same path."""

    @pytest.fixture
    def vectorstore(self, quantization: str, tmp_path: Path) -> Generator[VQVectorStore, None, None]:  # type: ignore[override]
        VQVectorStore(self.get_embeddings(), path=tmp_path / "store", quantization=quantization)
        return VQVectorStore(self.get_embeddings(), path=tmp_path / "store")


def _filled_store() -> VQVectorStore:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    store = VQVectorStore(DeterministicFakeEmbedding(size=16))
    store.add_texts([f"passage {i} about vectors" for i in range(20)], [{"i": i} for i in range(20)])
    return store


class TestRetriever(RetrieversIntegrationTests):
    """The retriever standard suite against VQRetriever (k as a constructor and invoke argument)."""

    @property
    def retriever_constructor(self) -> type[VQRetriever]:
        return VQRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"vectorstore": _filled_store(), "filter": {"i": {"$gte": 0}}}

    @property
    def retriever_query_example(self) -> str:
        return "vectors"
