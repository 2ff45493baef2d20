"""Bring a store up to date with loaded files: upsert changed chunks, delete chunks that went away.

Chunk ids are ``<source>#<index>`` (see ``loaders.chunk_id``), so re-indexing a file compares
its chunks with the rows of the same ids: unchanged chunks are left alone (not even embedded),
changed and new ones are embedded and upserted in one commit, and stale rows are deleted in a
second commit. Which rows are stale is the ``cleanup`` mode, named as in LangChain's indexing API:

* ``"incremental"`` (default): chunks of the indexed files past their new end (a file that got
  shorter, or emptied).
* ``"full"``: every row whose id is not a chunk of this run, e.g. the chunks of files deleted
  since the last run. Index all of the store's folders in one run with it: rows of anything not
  loaded in this run (other folders, documents added through the API) are deleted too.
* ``None``: nothing is deleted.

.. code-block:: python

    from langchain_vq.indexing import index_sources
    from langchain_vq.loaders import load_sources

    result = index_sources(store, load_sources(["docs/"]))
    print(result.added, result.updated, result.unchanged, result.deleted)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from langchain_vq.errors import EmptySourceError, InvalidInputError
from langchain_vq.loaders import chunk_id

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import numpy.typing as npt
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings

    from langchain_vq.loaders import SourceFile
    from langchain_vq.vectorstore import VQVectorStore

#: Ids probed per lookup when searching for chunks past the new end of a file.
_PROBE = 64
#: What indexing deletes besides upserting (see the module docstring).
Cleanup = Literal["incremental", "full"] | None
CLEANUP_MODES: tuple[Cleanup, ...] = ("incremental", "full", None)


@dataclass(frozen=True)
class IndexPlan:
    """What indexing will write: chunks to embed and upsert, and ids to delete."""

    upsert: tuple[Document, ...]
    delete: tuple[str, ...]
    added: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class IndexResult:
    """Counts of one indexing run."""

    files: int
    chunks: int
    added: int
    updated: int
    unchanged: int
    deleted: int
    rows: int  # live rows in the store afterwards


def plan_index(
    store: VQVectorStore, sources: Sequence[SourceFile], cleanup: Cleanup = "incremental"
) -> IndexPlan:
    """Compare ``sources`` with the store's rows (reads only)."""
    _check_cleanup(cleanup)
    chunks = [doc for src in sources for doc in src.chunks]
    existing = {doc.id: doc for doc in store.get_by_ids([c.id for c in chunks if c.id])}
    upsert, added, unchanged = [], 0, 0
    for chunk in chunks:
        old = existing.get(chunk.id)
        if old is None:
            added += 1
            upsert.append(chunk)
        elif old.page_content != chunk.page_content or old.metadata != chunk.metadata:
            upsert.append(chunk)
        else:
            unchanged += 1
    if cleanup == "full":
        keep = {c.id for c in chunks}
        stale = [i for i in store.collection.live_ids() if i not in keep]
    else:
        stale = _stale_ids(store, sources) if cleanup == "incremental" else []
    return IndexPlan(
        upsert=tuple(upsert),
        delete=tuple(stale),
        added=added,
        updated=len(upsert) - added,
        unchanged=unchanged,
    )


def _check_cleanup(cleanup: object) -> None:
    if cleanup not in CLEANUP_MODES:
        msg = f"cleanup must be 'incremental', 'full' or None, got {cleanup!r}."
        raise InvalidInputError(msg)


def _stale_ids(store: VQVectorStore, sources: Sequence[SourceFile]) -> list[str]:
    """Ids ``<source>#<i>`` for ``i`` past each file's new chunk count that the store holds.

    Chunks of a file are numbered 0..n-1 and indexing always removes those past the end, so the
    stored ids of a file are contiguous: probing stops at the first block that is not full.
    """
    stale: list[str] = []
    frontier = {src.source: len(src.chunks) for src in sources}
    while frontier:
        probe = [chunk_id(s, i) for s, start in frontier.items() for i in range(start, start + _PROBE)]
        found = {doc.id for doc in store.get_by_ids(probe)}
        stale.extend(i for i in probe if i in found)
        full = {
            s
            for s, start in frontier.items()
            if all(chunk_id(s, i) in found for i in range(start, start + _PROBE))
        }
        frontier = {s: start + _PROBE for s, start in frontier.items() if s in full}
    return stale


def embed_texts(embeddings: Embeddings, texts: list[str]) -> npt.NDArray[np.float32]:
    """``float32[n, dim]`` document vectors (the array fast path when the model has one)."""
    encode = getattr(embeddings, "encode", None)
    if callable(encode):
        return np.asarray(encode(texts), dtype=np.float32)
    return np.asarray(embeddings.embed_documents(texts), dtype=np.float32)


def apply_plan(store: VQVectorStore, plan: IndexPlan, vectors: Any = None) -> int:
    """Write ``plan``: one upsert commit, then one delete commit; returns rows deleted."""
    if plan.upsert:
        texts = [d.page_content for d in plan.upsert]
        if vectors is None:
            vectors = embed_texts(store.embeddings, texts)
        ids = [str(d.id) for d in plan.upsert]  # loaders always set ids
        store.add_embeddings(texts, vectors, [dict(d.metadata) for d in plan.upsert], ids)
    if plan.delete:
        store.delete(list(plan.delete))
    return len(plan.delete)


def index_sources(
    store: VQVectorStore, sources: Sequence[SourceFile], cleanup: Cleanup = "incremental"
) -> IndexResult:
    """Upsert the changed chunks of ``sources`` and delete the rows ``cleanup`` calls stale.

    Everything that can fail on input (reading, embedding) happens before the first write.
    """
    plan = plan_index(store, sources, cleanup)
    vectors = embed_texts(store.embeddings, [d.page_content for d in plan.upsert]) if plan.upsert else None
    deleted = apply_plan(store, plan, vectors)
    return IndexResult(
        files=len(sources),
        chunks=sum(len(s.chunks) for s in sources),
        added=plan.added,
        updated=plan.updated,
        unchanged=plan.unchanged,
        deleted=deleted,
        rows=len(store),
    )


def index_path(
    path: str | os.PathLike[str],
    embeddings: Embeddings,
    sources: Sequence[SourceFile],
    cleanup: Cleanup = "incremental",
    **store_kwargs: Any,
) -> tuple[VQVectorStore, IndexResult]:
    """Index ``sources`` into the store at ``path``, creating it only once the vectors exist.

    A new store is created after its chunks were embedded, so a failure (bad model, interrupt)
    leaves no empty store behind; an existing store is planned against, then written.
    """
    from langchain_vq.storage import StoreDirectory
    from langchain_vq.vectorstore import VQVectorStore

    _check_cleanup(cleanup)
    if StoreDirectory(path).exists():
        store = VQVectorStore(embeddings, path, **store_kwargs)
        return store, index_sources(store, sources, cleanup)
    chunks = tuple(doc for src in sources for doc in src.chunks)
    if not chunks:
        names = ", ".join(str(s.path) for s in sources[:3])
        msg = (
            f"The given files ({names}{', ...' if len(sources) > 3 else ''}) hold no text; nothing to index."
        )
        raise EmptySourceError(msg)
    vectors = embed_texts(embeddings, [d.page_content for d in chunks])
    store = VQVectorStore(embeddings, path, **store_kwargs)
    plan = IndexPlan(upsert=chunks, delete=(), added=len(chunks), updated=0, unchanged=0)
    apply_plan(store, plan, vectors)
    return store, IndexResult(
        files=len(sources),
        chunks=len(chunks),
        added=len(chunks),
        updated=0,
        unchanged=0,
        deleted=0,
        rows=len(store),
    )
