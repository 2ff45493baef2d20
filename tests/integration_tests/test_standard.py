"""The langchain-tests standard suites against VQVectorStore, on disk and in memory, every mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from langchain_vq import VQVectorStore

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
