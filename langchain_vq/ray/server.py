"""The shard actor: one store served by a long-lived Ray actor process, and the calls it answers.

Kept apart from ``sharded`` (the driver's side) so that an actor process imports only Ray's core,
NumPy and the store: not ``ray.data`` or ``langchain_core``, which ``sharded`` needs for the
LangChain store. Each new shard actor imports this module, so what it pulls in is paid once per
actor start (and per restart): about 2 s less CPU per actor than importing ``sharded``.
"""

from __future__ import annotations

import math
import os
import threading
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from langchain_vq.collection import Collection, CollectionConfig, Row
from langchain_vq.ray._common import require_ray_core

ray = require_ray_core()

if TYPE_CHECKING:
    import numpy.typing as npt

    from langchain_vq.filters import Filter


class ShardServer:
    """One shard: a ``Collection`` opened once in a long-lived actor process.

    Every call names the shard it means (``path``): a server switched to another shard
    (``open``) and then restarted by Ray comes back on the path it was started with, and the
    next call moves it back to the right one instead of answering from the wrong store.

    A compiled graph (``fanout``) runs its searches in a thread of the actor beside the one that
    serves normal calls: a lock keeps one call at a time, as an actor without a graph does.
    """

    def __init__(self, path: str, config: CollectionConfig, lock_timeout: float | None) -> None:
        self._lock = threading.Lock()
        self.path = path
        self.lock_timeout = lock_timeout
        self.collection = Collection(config, path, lock_timeout=lock_timeout)

    def open(self, path: str, config: CollectionConfig, lock_timeout: float | None) -> str:
        """Serve another store from now on (a running server is reused instead of a new process)."""
        with self._lock:
            self.collection = Collection(config, path, lock_timeout=lock_timeout)
            self.path, self.lock_timeout = path, lock_timeout
        return path

    def _at(self, path: str) -> Collection:
        if path != self.path:  # restarted after a switch: reopen the shard the caller means
            self.collection = Collection(None, path, lock_timeout=self.lock_timeout)
            self.path = path
        return self.collection

    def search(self, request: tuple[Any, ...]) -> tuple[Any, ...]:
        """This shard's top ``k`` per query, rescored with its own floats, as flat columns.

        ``request`` holds a ``SearchRequest``'s fields and the answer a ``ShardHits``'s, as plain
        tuples: Ray serializes a plain tuple faster than a named one (module docstring).
        """
        request = SearchRequest(*request)
        queries = np.frombuffer(request.queries, dtype=np.float32).reshape(request.n_queries, -1)
        with self._lock:
            found = self._at(request.path).search(
                queries,
                request.k,
                rescore=request.rescore,
                rescore_multiplier=request.rescore_multiplier,
                filter=request.filter,
                with_vectors=request.with_vectors,
            )
        return tuple(ShardHits.of(found, with_vectors=request.with_vectors))

    def add(
        self,
        path: str,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any] | None],
        vectors: npt.NDArray[np.float32],
    ) -> int:
        """Upsert rows (checked and normalized by the caller); returns the live rows after."""
        with self._lock:
            collection = self._at(path)
            collection.add(ids, texts, metadatas, vectors)
            return collection.snapshot.live_rows

    def delete(self, path: str, ids: list[str] | None, filter: Filter | None) -> int:  # noqa: A002
        """Delete by ids and/or filter; returns how many rows were deleted."""
        with self._lock:
            return self._at(path).delete(ids, filter=filter)

    def get(self, path: str, ids: list[str]) -> list[Row]:
        """Rows of these ids that live in this shard."""
        with self._lock:
            return self._at(path).get(ids)

    def status(self, path: str) -> dict[str, Any]:
        """Version, live rows and dimension of the version this actor reads."""
        with self._lock:
            snapshot = self._at(path).snapshot
        return {"version": snapshot.version, "rows": snapshot.live_rows, "dim": snapshot.dim}

    def refresh(self, path: str) -> bool:
        """Pick up versions committed by others (a build, another driver)."""
        with self._lock:
            return self._at(path).refresh()

    def compact(self, path: str) -> None:
        """Compact this shard."""
        with self._lock:
            self._at(path).compact()

    def verify(self, path: str) -> list[str]:
        """Problems found in this shard's files."""
        with self._lock:
            return self._at(path).verify()

    def pid(self) -> int:
        """The actor's process id (tests kill it)."""
        return os.getpid()


class SearchRequest(NamedTuple):
    """One search call to a shard, as a single argument (Ray serializes each argument apart)."""

    path: str
    #: The checked queries, ``float32[n_queries, dim]`` as raw bytes.
    queries: bytes
    n_queries: int
    k: int
    rescore: bool
    rescore_multiplier: int
    filter: Filter | None
    with_vectors: bool


class ShardHits(NamedTuple):
    """A shard's answer to a ``SearchRequest``: per-query hit counts and flat columns, best first."""

    #: Hits per query; the columns hold query 0's hits, then query 1's, ... Plain lists, not
    #: arrays: a NumPy array in a small return costs Ray about 0.3 ms more per call.
    counts: list[int]
    #: The rescored scores, as ``Row.score`` holds them.
    scores: list[float]
    ids: list[str]
    texts: list[str]
    metadatas: list[dict[str, Any]]
    #: ``float32[total, dim]`` when asked for, else None.
    vectors: npt.NDArray[np.float32] | None

    @classmethod
    def of(cls, found: list[list[Row]], *, with_vectors: bool) -> ShardHits:
        """Flatten ``Collection.search``'s rows, keeping each query's order."""
        rows = [row for hits in found for row in hits]
        vectors = None
        if with_vectors:
            vectors = (
                np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
                if rows
                else np.empty((0, 0), dtype=np.float32)
            )
        return cls(
            counts=[len(hits) for hits in found],
            scores=[float(r.score) if r.score is not None else -math.inf for r in rows],
            ids=[r.id for r in rows],
            texts=[r.text for r in rows],
            metadatas=[r.metadata for r in rows],
            vectors=vectors,
        )


def start_server(
    path: str,
    config: CollectionConfig | None = None,
    lock_timeout: float | None = 10.0,
    num_cpus: float = 0.25,
    max_restarts: int = 3,
    max_task_retries: int = 3,
) -> Any:
    """A new ``ShardServer`` actor for the store at ``path``: restarted on failure, calls retried."""
    actor = ray.remote(ShardServer).options(
        num_cpus=num_cpus, max_restarts=max_restarts, max_task_retries=max_task_retries
    )
    return actor.remote(path, config or CollectionConfig(), lock_timeout)


__all__ = ["SearchRequest", "ShardHits", "ShardServer", "start_server"]
