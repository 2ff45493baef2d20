"""Scale-out on Ray (the ``ray`` extra): distributed builds and sharded search over the same format.

* :func:`build_store` (``langchain_vq.ray.build``): Ray Data embeds, quantizes and writes
  segments in parallel; the driver commits each store once.
* :class:`ShardedVQVectorStore` (``langchain_vq.ray.sharded``): N shards, each a normal store,
  served by one Ray actor each (``ShardServer``, ``langchain_vq.ray.server``: light imports, since
  every actor start pays them); the LangChain ``VectorStore`` API on top.

Ray is imported when one of these names is first used; without it they raise
``MissingDependencyError`` naming the extra. ``shard_of`` needs no Ray.
"""

from __future__ import annotations

from langchain_vq._lazy import lazy_attributes
from langchain_vq.ray._common import require_ray, shard_of

_LAZY = {
    "BuildResult": "langchain_vq.ray.build",
    "SegmentDatasink": "langchain_vq.ray.build",
    "build_store": "langchain_vq.ray.build",
    "read_source": "langchain_vq.ray.build",
    "ShardedCollection": "langchain_vq.ray.sharded",
    "ShardedVQVectorStore": "langchain_vq.ray.sharded",
    "shard_paths": "langchain_vq.ray.sharded",
    "start_server": "langchain_vq.ray.server",
}


__getattr__ = lazy_attributes(__name__, _LAZY)  # imports on first use


__all__ = ["require_ray", "shard_of", *_LAZY]  # noqa: PLE0604
