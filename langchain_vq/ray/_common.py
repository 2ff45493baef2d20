"""What the Ray modules share: importing Ray, routing rows to shards, checking shards agree."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, NoReturn

from langchain_vq.errors import ConfigurationError, MissingDependencyError

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from langchain_vq.collection import Collection

#: The extra that installs Ray.
RAY_EXTRA = "ray"


def require_ray() -> Any:
    """The ``ray`` module with Ray Data, or ``MissingDependencyError`` naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        _missing(exc)
    return ray


def require_ray_core() -> Any:
    """The ``ray`` module without Ray Data (shard actors need no more; importing it costs seconds)."""
    try:
        import ray
    except ImportError as exc:
        _missing(exc)
    return ray


def _missing(exc: ImportError) -> NoReturn:
    msg = (
        f"langchain_vq.ray needs Ray Data, which is not installed ({exc}). "
        f'Install it with: pip install "langchain-vq[{RAY_EXTRA}]"'
    )
    raise MissingDependencyError(msg, extra=RAY_EXTRA) from exc


def shard_of(row_id: str, shards: int) -> int:
    """The shard a row id belongs to: a stable hash (BLAKE2b, 64 bits) of its UTF-8 bytes, mod ``shards``.

    Stable across processes and Python versions (unlike ``hash()``), so every driver and worker
    routes an id to the same shard. Changing the number of shards changes the routing: a sharded
    store keeps its shard count for life.
    """
    digest = hashlib.blake2b(row_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def check_shards_agree(collections: Sequence[Collection], paths: Sequence[str | os.PathLike[str]]) -> None:
    """All shards of one store hold vectors of one dimension and share metric and quantization.

    Raises:
        ConfigurationError: naming the shard that differs and what the others use.
    """
    first, where = collections[0], paths[0]
    dims = {str(p): c.snapshot.dim for c, p in zip(collections, paths, strict=True)}
    if len({d for d in dims.values() if d is not None}) > 1:
        msg = (
            f"The shards hold vectors of different dimensions: {dims}. Every shard of one "
            "store must hold one model's vectors; rebuild the odd shard or leave it out."
        )
        raise ConfigurationError(msg)
    for collection, p in zip(collections, paths, strict=True):
        if (collection.metric, collection.quantization) != (first.metric, first.quantization):
            msg = (
                f"Shard {p} uses metric {collection.metric!r} and quantization "
                f"{collection.quantization!r}, but shard {where} uses {first.metric!r} and "
                f"{first.quantization!r}. The shards of one store must share their settings."
            )
            raise ConfigurationError(msg)
