"""Sharded search: N normal stores, one long-lived Ray actor each, and a LangChain store on top.

Rows are routed to a shard by a stable hash of their id (``shard_of``), so ``add``, ``delete``
and ``get_by_ids`` touch only the shards that hold those ids. A query fans out to every shard as
one call per shard (a batch of queries is one call too); each shard scans its codes and rescores
its own candidates with its floats, and the driver merges the shards' top ``k`` by the rescored
scores. Since each shard rescores its own ``k * rescore_multiplier`` candidates, a sharded store
rescores at least the candidates one store holding all the rows would: with exact search the
answers are identical, with quantized search they are the same or better.

A query call carries one argument (the fields of a ``SearchRequest``, the queries as raw float32
bytes) and returns flat columns (the fields of a ``ShardHits``: scores, ids, texts, metadata), not
row objects: Ray serializes each argument of a call apart, and a single query's fan-out cost is
mostly this per-call overhead. Both travel as plain tuples: a named tuple cost about 0.1 ms more
per call (docs/architecture.md, "Sharded search").
Searches go through a Ray compiled graph over the actors (``fanout``), which cuts that per-call
overhead to a fraction; normal calls remain whenever the graph cannot answer.

The actor class, ``ShardServer``, lives in ``server``, which imports neither ``ray.data`` nor
``langchain_core``: each actor start (and restart) imports that module only.

Each actor restarts when its process dies (``max_restarts``) and calls are retried on the
restarted actor (``max_task_retries``). That is safe because every call is idempotent: searches
and reads do not write, an add is an upsert by id, a delete of deleted ids does nothing. Every
``ray.get`` has a timeout; a shard that does not answer raises ``ShardUnavailableError``.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from langchain_vq.collection import Collection, CollectionConfig, Row
from langchain_vq.errors import (
    DimensionMismatchError,
    InvalidInputError,
    NotAStoreError,
    ShardUnavailableError,
)
from langchain_vq.quantization.precision import CODES_ONLY
from langchain_vq.ray._common import check_shards_agree, require_ray, shard_of
from langchain_vq.ray.fanout import IDLE_TEARDOWN, CompiledFanout
from langchain_vq.ray.server import SearchRequest, ShardHits, ShardServer, start_server
from langchain_vq.storage import StoreDirectory
from langchain_vq.validation import check_int, check_k, check_multiplier
from langchain_vq.vectorstore import DEFAULT_RESCORE_MULTIPLIER, VQVectorStore

ray = require_ray()

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt
    from langchain_core.embeddings import Embeddings

    from langchain_vq.calibration import Calibration
    from langchain_vq.filters import Filter

logger = logging.getLogger(__name__)

#: Seconds a call to a shard may take, retries and an actor restart included.
DEFAULT_CALL_TIMEOUT = 120.0


def shard_paths(root: str | os.PathLike[str], shards: int) -> list[Path]:
    """The conventional shard directories of a sharded store: ``<root>/shard-00000`` and on."""
    check_int(shards, "shards")
    return [Path(root) / f"shard-{i:05d}" for i in range(shards)]


@dataclass(frozen=True)
class ShardedSnapshot:
    """What ``VQVectorStore`` reads of a collection's state, summed over the shards."""

    live_rows: int
    dim: int | None
    settings: dict[str, Any] = field(default_factory=dict)
    quantizer: None = None  # per shard, not shared: calibration does not apply


class ShardedCollection:
    """The ``Collection`` methods ``VQVectorStore`` uses, fanned out to one actor per shard.

    The shard list's length and order define the routing: reopen a sharded store with the same
    paths in the same order (``shard_paths`` gives the conventional ones).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        config: CollectionConfig | None = None,
        *,
        lock_timeout: float | None = 10.0,
        num_cpus: float = 0.25,
        max_restarts: int = 3,
        max_task_retries: int = 3,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        servers: Sequence[Any] | None = None,
        compiled_graph: bool = True,
        graph_idle_timeout: float | None = IDLE_TEARDOWN,
    ) -> None:
        """Open (or create) every shard here, check they agree, then start one actor per shard.

        ``servers``: running ``ShardServer`` actors to serve the shards instead of new ones (one
        per path; starting an actor imports this package, seconds on a busy machine). They are
        switched to these paths and left running by ``close()``.

        ``compiled_graph``: searches go through one Ray compiled graph over the actors (``fanout``:
        far less per-call overhead), with normal calls whenever the graph cannot answer; False
        makes normal calls only. ``graph_idle_timeout``: seconds without a search after which the
        graph is torn down, since its idle actors poll (about a third of a core each); the next
        search compiles it again. None keeps it until ``close()``.

        Raises:
            NotAStoreError: A shard path holds something that is not a store.
            ConfigurationError: Shards differ in dimension, metric or quantization.
        """
        if graph_idle_timeout is not None and not graph_idle_timeout > 0:
            msg = (
                f"graph_idle_timeout must be a positive number of seconds or None; got "
                f"{graph_idle_timeout!r}. Pass e.g. {IDLE_TEARDOWN:g}, or None to keep the graph."
            )
            raise InvalidInputError(msg)
        self.paths = [Path(p) for p in paths]
        self._names = [str(p) for p in self.paths]  # as the actors name their shards
        self._fanout: CompiledFanout | None = None
        if not self.paths:
            msg = "A sharded store needs at least one shard path."
            raise InvalidInputError(msg)
        if len({p.resolve() for p in self.paths}) != len(self.paths):
            msg = f"Shard paths must differ; got {[str(p) for p in self.paths]}."
            raise InvalidInputError(msg)
        for p in self.paths:
            if p.exists() and not p.is_dir():
                msg = f"Shard path {p} is a file, expected a store directory (or a new path)."
                raise NotAStoreError(msg)
            StoreDirectory(p).exists()  # raises NotAStoreError for anything else
        # Opening each shard here creates new ones with the same settings and reads the others'.
        opened = [Collection(config, p, lock_timeout=lock_timeout) for p in self.paths]
        self._check_agree(opened)
        first = opened[0]
        self.config = first.config
        self._rescore_precision = first.rescore_precision
        self._dim = next((c.snapshot.dim for c in opened if c.snapshot.dim is not None), None)
        self.call_timeout = float(call_timeout)
        self._checker = Collection(CollectionConfig(metric=first.metric))
        del opened
        if servers is not None:
            if len(servers) != len(self.paths):
                msg = f"Got {len(servers)} servers for {len(self.paths)} shard paths; pass one per shard."
                raise InvalidInputError(msg)
            self.actors = list(servers)
            self._owned = False
            self._gather(
                [
                    a.open.remote(str(p), self.config, lock_timeout)
                    for a, p in zip(self.actors, self.paths, strict=True)
                ]
            )
        else:
            self._owned = True
            self.actors = [
                start_server(str(p), self.config, lock_timeout, num_cpus, max_restarts, max_task_retries)
                for p in self.paths
            ]
        self._fanout = (
            CompiledFanout(self.actors, self.call_timeout, graph_idle_timeout) if compiled_graph else None
        )

    def _check_agree(self, opened: list[Collection]) -> None:
        check_shards_agree(opened, self.paths)

    # -- what VQVectorStore reads ------------------------------------------------------------
    @property
    def metric(self) -> Literal["cosine", "dot", "l2"]:
        """The shards' metric."""
        return self._checker.metric

    @property
    def quantization(self) -> str:
        """The shards' quantization."""
        return self.config.quantization or "binary"

    @property
    def rescore_precision(self) -> str:
        """The shards' rescoring precision (``"none"``: codes only)."""
        return self._rescore_precision

    @property
    def directory(self) -> None:
        """No single directory: see ``paths``."""
        return

    @property
    def compiled(self) -> bool:
        """Whether searches currently go through a compiled graph (``fanout``), not normal calls."""
        return self._fanout is not None and self._fanout.compiled

    def wait_compiled(self, timeout: float = DEFAULT_CALL_TIMEOUT) -> bool:
        """Wait for a compile in progress (a search starts one); whether searches now use the graph."""
        return self._fanout is not None and self._fanout.wait_compiled(timeout)

    @property
    def snapshot(self) -> ShardedSnapshot:
        """Live rows and dimension over all shards (one status call per shard)."""
        status = self._gather([a.status.remote(p) for a, p in self._served()])
        dims = {s["dim"] for s in status if s["dim"] is not None}
        if dims:
            self._dim = dims.pop()
        return ShardedSnapshot(live_rows=sum(s["rows"] for s in status), dim=self._dim)

    def check_vectors(self, vectors: npt.ArrayLike, what: str = "vectors") -> npt.NDArray[np.float32]:
        """Vectors as ``float32[n, dim]`` (normalized for cosine), checked against the shards' dim."""
        checked = self._checker.check_vectors(vectors, what)
        if self._dim is not None and checked.shape[1] != self._dim:
            msg = (
                f"{what} have dimension {checked.shape[1]}, but this sharded store holds "
                f"{self._dim}-dimensional vectors. Use the embedding model the store was built "
                "with, or create a new store for the other model."
            )
            raise DimensionMismatchError(msg)
        return checked

    # -- writes ------------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any] | None],
        vectors: npt.NDArray[np.float32],
        *,
        settings_for: object = None,  # noqa: ARG002 - see below
    ) -> None:
        """Upsert rows, each into the shard of its id (one commit per shard touched).

        ``settings_for`` is ``Collection.add``'s calibration hook; a sharded store has no
        store-level calibration (each shard has its own quantizer, and ``ShardedVQVectorStore``
        has no ``recall_target``), so it is not called.
        """
        if len(ids) == 0:
            return
        groups = self._route(ids)
        calls = [
            self.actors[shard].add.remote(
                str(self.paths[shard]),
                [ids[i] for i in rows],
                [texts[i] for i in rows],
                [metadatas[i] for i in rows],
                vectors[rows],
            )
            for shard, rows in groups.items()
        ]
        self._gather(calls)
        if self._dim is None:
            self._dim = int(vectors.shape[1])

    def delete(self, ids: Sequence[str] | None = None, *, filter: Filter | None = None) -> int:  # noqa: A002
        """Delete by id (routed) and/or filter (every shard); returns how many rows went."""
        if ids is not None:
            if len(ids) == 0:
                return 0
            calls = [
                self.actors[shard].delete.remote(str(self.paths[shard]), [ids[i] for i in rows], filter)
                for shard, rows in self._route(ids).items()
            ]
        else:
            calls = [a.delete.remote(p, None, filter) for a, p in self._served()]
        return sum(self._gather(calls))

    def compact(self, *, settings_for: object = None) -> None:  # noqa: ARG002 - as in add
        """Compact every shard (in parallel); ``settings_for`` is not called (see ``add``)."""
        self._gather([a.compact.remote(p) for a, p in self._served()])

    def refresh(self) -> bool:
        """Every shard picks up versions committed by others; True if any changed."""
        return any(self._gather([a.refresh.remote(p) for a, p in self._served()]))

    def verify(self) -> list[str]:
        """Problems found in any shard's files, prefixed with the shard's path."""
        found = self._gather([a.verify.remote(p) for a, p in self._served()])
        return [
            f"{p}: {problem}" for p, problems in zip(self.paths, found, strict=True) for problem in problems
        ]

    # -- reads -------------------------------------------------------------------------------
    def get(self, ids: Sequence[str]) -> list[Row]:
        """Rows with these ids, in the order asked; missing ids are skipped."""
        groups = self._route(ids)
        calls = [
            self.actors[shard].get.remote(str(self.paths[shard]), [ids[i] for i in rows])
            for shard, rows in groups.items()
        ]
        found = {row.id: row for rows in self._gather(calls) for row in rows}
        return [found[i] for i in dict.fromkeys(ids) if i in found]

    def search(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        rescore: bool = True,
        rescore_multiplier: int = 1,
        filter: Filter | None = None,  # noqa: A002 - LangChain's name
        with_vectors: bool = False,
    ) -> list[list[Row]]:
        """The ``k`` best rows per query over all shards: one graph run (or call per shard), a merge."""
        k = check_k(k)
        # Shape and dimension errors before any fan-out; the shards get the checked queries.
        matrix = self.check_vectors(np.asarray(queries, dtype=np.float32), "query embedding")
        payload = np.ascontiguousarray(matrix, dtype=np.float32).tobytes()
        count = int(matrix.shape[0])
        requests = [
            (p, payload, count, k, rescore, rescore_multiplier, filter, with_vectors) for p in self._names
        ]
        per_shard = None
        if self._fanout is not None:
            with self._typed_errors():
                per_shard = self._fanout.search(requests)
        if per_shard is None:  # no graph (yet), or it failed: normal calls, retried by Ray
            per_shard = self._gather([a.search.remote(r) for a, r in zip(self.actors, requests, strict=True)])
        shard_hits = [ShardHits(*hits) for hits in per_shard]
        if with_vectors:  # a graph's arrays may view its channel's buffer, reused by the next search
            shard_hits = [
                h._replace(vectors=None if h.vectors is None else np.array(h.vectors)) for h in shard_hits
            ]
        return merge_hits(shard_hits, k)

    # -- plumbing ----------------------------------------------------------------------------
    def _served(self) -> list[tuple[Any, str]]:
        """(actor, the path of the shard it serves), in routing order."""
        return [(a, str(p)) for a, p in zip(self.actors, self.paths, strict=True)]

    def _route(self, ids: Sequence[str]) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for pos, row_id in enumerate(ids):
            groups.setdefault(shard_of(row_id, len(self.actors)), []).append(pos)
        return groups

    def _gather(self, calls: list[Any]) -> list[Any]:
        """``ray.get`` with the call timeout; a shard that does not answer is a typed error."""
        with self._typed_errors():
            return ray.get(calls, timeout=self.call_timeout)

    @contextlib.contextmanager
    def _typed_errors(self) -> Iterator[None]:
        """Ray's timeout and dead-actor errors as ``ShardUnavailableError``."""
        try:
            yield
        except ray.exceptions.GetTimeoutError as exc:
            msg = (
                f"A shard did not answer within {self.call_timeout:g} s (shards: "
                f"{[str(p) for p in self.paths]}). Check the Ray cluster (ray status) and retry."
            )
            raise ShardUnavailableError(msg) from exc
        except ray.exceptions.RayActorError as exc:
            msg = (
                f"A shard actor died and could not be restarted ({exc}). Check its logs and the "
                "shard's store (verify()), then reopen the sharded store."
            )
            raise ShardUnavailableError(msg) from exc

    def close(self) -> None:
        """Stop the shard actors this object started (the stores stay on disk); end the graph."""
        if self._fanout is not None:  # first: actors left running can then join another graph
            self._fanout.close()
            self._fanout = None
        if self._owned:
            for actor in self.actors:
                ray.kill(actor)
        self.actors = []


def merge_top_k(lists: Sequence[Sequence[Row]], k: int) -> list[Row]:
    """The ``k`` best rows of several best-first lists, by score (ties: the earlier shard first)."""
    pooled = [row for rows in lists for row in rows]
    pooled.sort(key=lambda r: -(r.score if r.score is not None else -np.inf))
    return pooled[:k]


def merge_hits(per_shard: Sequence[ShardHits], k: int) -> list[list[Row]]:
    """Per query, the ``k`` best of the shards' hits as rows; the same order as ``merge_top_k``.

    Pooled in shard order and stably sorted by descending score, so ties keep the earlier
    shard first. Plain Python: a query pools a few dozen hits, for which NumPy's per-call cost
    (0.1 ms a query) exceeds the work. Only the ``k`` rows kept become ``Row`` objects.
    """
    if not per_shard:
        return []
    starts = [list(itertools.accumulate(h.counts, initial=0)) for h in per_shard]
    out: list[list[Row]] = []
    for q in range(len(per_shard[0].counts)):
        pooled = [
            (hits.scores[at], hits, at)
            for hits, start in zip(per_shard, starts, strict=True)
            for at in range(start[q], start[q + 1])
        ]
        pooled.sort(key=_descending_score)  # stable: ties keep shard, then rank, order
        out.append(
            [
                Row(
                    hits.ids[at],
                    hits.texts[at],
                    hits.metadatas[at],
                    score,
                    hits.vectors[at] if hits.vectors is not None else None,
                )
                for score, hits, at in pooled[:k]
            ]
        )
    return out


def _descending_score(hit: tuple[float, ShardHits, int]) -> float:
    return -hit[0]


class ShardedVQVectorStore(VQVectorStore):
    """``VQVectorStore`` over a sharded store: drop-in, with rows spread over N shard actors.

    Setup:
        .. code-block:: bash

            pip install "langchain-vq[ray]"

    Instantiate:
        .. code-block:: python

            import ray
            from langchain_vq.ray import ShardedVQVectorStore, shard_paths

            ray.init()  # or ray.init(address="auto") on a cluster
            store = ShardedVQVectorStore(embeddings, shard_paths("my_store", 4))

    Add, delete, search, retriever: as ``VQVectorStore``. ``recall_target`` calibration is not
    available (each shard has its own quantizer); pass ``rescore_multiplier`` instead.
    ``close()`` stops the actors.
    """

    def __init__(
        self,
        embedding: Embeddings,
        paths: Sequence[str | os.PathLike[str]],
        *,
        quantization: str | None = None,
        rescore: bool | None = None,
        rescore_precision: str | None = None,
        rescore_multiplier: int | None = None,
        metric: str | None = None,
        lock_timeout: float | None = 10.0,
        quantizer_options: dict[str, Any] | None = None,
        num_cpus: float = 0.25,
        max_restarts: int = 3,
        max_task_retries: int = 3,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        servers: Sequence[Any] | None = None,
        compiled_graph: bool = True,
        graph_idle_timeout: float | None = IDLE_TEARDOWN,
    ) -> None:
        """Open or create the shards at ``paths`` (order defines routing) and start their actors.

        ``servers``: running ``ShardServer`` actors to reuse; ``compiled_graph``: search through a
        Ray compiled graph, torn down after ``graph_idle_timeout`` idle seconds (see
        ``ShardedCollection``).
        """
        self.embedding = embedding
        if rescore is False:  # a codes-only store, as VQVectorStore(rescore=False)
            rescore_precision = CODES_ONLY
        self.recall_target = None
        fixed = None if rescore_multiplier is None else check_multiplier(rescore_multiplier)
        config = CollectionConfig(
            metric=metric or None,
            quantization=quantization or None,
            quantizer_options=dict(quantizer_options) if quantizer_options else None,
            embedding_model=getattr(embedding, "model_name", None) or type(embedding).__name__,
            rescore_precision=rescore_precision,
        )
        self._collection = ShardedCollection(  # type: ignore[assignment]  # duck-typed Collection
            paths,
            config,
            lock_timeout=lock_timeout,
            num_cpus=num_cpus,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            call_timeout=call_timeout,
            servers=servers,
            compiled_graph=compiled_graph,
            graph_idle_timeout=graph_idle_timeout,
        )
        self._fixed_multiplier = (
            DEFAULT_RESCORE_MULTIPLIER[self._collection.quantization] if fixed is None else fixed
        )

    @property
    def sharded(self) -> ShardedCollection:
        """The shards and their actors."""
        return self._collection  # type: ignore[return-value]

    @property
    def calibration(self) -> Calibration | None:
        """Always None: calibration needs one quantizer, and each shard has its own."""
        return None

    def calibrate(self, *, force: bool = True) -> Calibration | None:  # noqa: ARG002
        """Not available on a sharded store (see ``calibration``); returns None."""
        return None

    @property
    def path(self) -> str | None:
        """None: a sharded store has one directory per shard (``paths``)."""
        return None

    @property
    def paths(self) -> list[str]:
        """The shard directories, in routing order."""
        return [str(p) for p in self.sharded.paths]

    def close(self) -> None:
        """Stop the shard actors; the shards stay on disk."""
        self.sharded.close()

    def __del__(self) -> None:
        """Best effort: actors of a forgotten store do not outlive it."""
        try:
            if ray.is_initialized() and getattr(self, "_collection", None) is not None:
                self.sharded.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown, cluster gone
            pass


__all__ = [
    "SearchRequest",
    "ShardHits",
    "ShardServer",
    "ShardedCollection",
    "ShardedVQVectorStore",
    "merge_hits",
    "merge_top_k",
    "shard_paths",
    "start_server",
]
