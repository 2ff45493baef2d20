"""The langchain-tests standard suite against ShardedVQVectorStore on the local cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from langchain_vq.ray._common import require_ray

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from langchain_vq.ray.sharded import ShardedVQVectorStore


@pytest.mark.usefixtures("ray_cluster")
class TestSharded(VectorStoreIntegrationTests):
    """Two shards, binary codes, every call through the (session's reused) shard actors."""

    @pytest.fixture
    def vectorstore(self, tmp_path: Path, shard_servers: list) -> Iterator[ShardedVQVectorStore]:  # type: ignore[override]
        require_ray()
        from langchain_vq.ray import ShardedVQVectorStore, shard_paths

        store = ShardedVQVectorStore(
            self.get_embeddings(),
            shard_paths(tmp_path / "sharded", 2),
            call_timeout=60,
            servers=shard_servers[:2],
        )
        yield store
        store.close()
