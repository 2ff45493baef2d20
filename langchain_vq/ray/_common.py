"""What the Ray modules share: the import of Ray itself, and routing rows to shards by id."""

from __future__ import annotations

import hashlib
from typing import Any

from langchain_vq.errors import MissingDependencyError

#: The extra that installs Ray.
RAY_EXTRA = "ray"


def require_ray() -> Any:
    """The ``ray`` module, or ``MissingDependencyError`` naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        msg = (
            f"langchain_vq.ray needs Ray Data, which is not installed ({exc}). "
            f'Install it with: pip install "langchain-vq[{RAY_EXTRA}]"'
        )
        raise MissingDependencyError(msg, extra=RAY_EXTRA) from exc
    return ray


def shard_of(row_id: str, shards: int) -> int:
    """The shard a row id belongs to: a stable hash (BLAKE2b, 64 bits) of its UTF-8 bytes, mod ``shards``.

    Stable across processes and Python versions (unlike ``hash()``), so every driver and worker
    routes an id to the same shard. Changing the number of shards changes the routing: a sharded
    store keeps its shard count for life.
    """
    digest = hashlib.blake2b(row_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards
