"""``VQVectorStore``: the LangChain adapter over a quantized, persistent collection.

Documents, ids, embeddings, relevance scores and recall calibration live here; rows, versions,
store settings and filters live in :class:`~langchain_vq.collection.Collection`, below it.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from typing_extensions import override

from langchain_vq.calibration import (
    DEFAULT_CONFIDENCE_Z,
    DEFAULT_K,
    DEFAULT_MARGIN,
    DEFAULT_MAX_SAMPLE,
    DEFAULT_REFINE,
    DEFAULT_SAMPLE,
    DEFAULT_TARGET,
    POOLED_Z,
    Calibration,
    _meets,
    _standard_error,
    calibrate_multiplier,
    comparable,
    needs_calibration,
    pooled,
    query_set,
    with_growth,
)
from langchain_vq.collection import Collection, CollectionConfig, Row, Snapshot, StagedChange
from langchain_vq.errors import InvalidInputError
from langchain_vq.filters import compile_filter
from langchain_vq.quantization._partitions import PartitionedQuantizer
from langchain_vq.quantization.precision import CODES_ONLY, normalize_precision
from langchain_vq.retriever import VQRetriever
from langchain_vq.search import maximal_marginal_relevance
from langchain_vq.validation import (
    check_flag,
    check_fraction,
    check_id,
    check_k,
    check_multiplier,
    check_texts,
)

if TYPE_CHECKING:
    import os
    from collections.abc import Callable, Iterable, Sequence

    import numpy.typing as npt
    from langchain_core.embeddings import Embeddings
    from typing_extensions import Self

    from langchain_vq.quantization.base import Quantizer

logger = logging.getLogger(__name__)

#: Where calibration starts its walk, and the multiplier of a store not calibrated yet (written by
#: an older version or by handles with a fixed multiplier). Measured on 49k real sentence
#: embeddings (benchmarks/measure_quantizer_defaults.py; 4-bit PQ: benchmarks/measure_fast_scan.py):
#: the smallest multiplier whose recall@10 against exact float search is >= 0.99 there; larger
#: stores need more, which calibration finds.
DEFAULT_RESCORE_MULTIPLIER = {"binary": 16, "int8": 2, "pq": 16, "none": 1}


class VQVectorStore(VectorStore):
    """A LangChain vector store with quantized codes in RAM and float vectors on disk.

    Search scans compact codes (binary: 1 bit per dimension, int8, or product quantization) to
    find ``k * rescore_multiplier`` candidates, then rescores them exactly with the float
    vectors, read from memory-mapped Arrow files. Quality stays at float level; memory and scan
    cost stay at code level.

    Setup:
        .. code-block:: bash

            pip install langchain-vq

    Instantiate:
        .. code-block:: python

            from langchain_core.embeddings import DeterministicFakeEmbedding
            from langchain_vq import VQVectorStore

            store = VQVectorStore(DeterministicFakeEmbedding(size=64), path="my_store")
            # path=None keeps the store in memory; a path creates or reopens a store.

    Add:
        .. code-block:: python

            ids = store.add_texts(["foo", "bar"], metadatas=[{"n": 1}, {"n": 2}], ids=["a", "b"])
            store.add_embeddings(["baz"], np.ones((1, 64), dtype=np.float32), ids=["c"])

    Delete:
        .. code-block:: python

            store.delete(["a"])

    Search:
        .. code-block:: python

            docs = store.similarity_search("bar", k=1)

    Search with score:
        .. code-block:: python

            pairs = store.similarity_search_with_score("bar", k=1)  # metric units
            pairs = store.similarity_search_with_relevance_scores("bar", k=1)  # in [0, 1]
            # cosine: cos clipped to [0, 1]; dot: logistic(inner product); l2: 1 / (1 + distance)

    Async:
        .. code-block:: python

            docs = await store.asimilarity_search("bar", k=1)

    Use as retriever:
        .. code-block:: python

            retriever = store.as_retriever(search_kwargs={"k": 4})
            retriever.invoke("bar")

    Scores from ``similarity_search_with_score`` follow the metric: cosine similarity for
    ``"cosine"``, inner product for ``"dot"`` (higher is more similar), Euclidean distance for
    ``"l2"`` (lower is more similar).
    """

    def __init__(
        self,
        embedding: Embeddings,
        path: str | os.PathLike[str] | None = None,
        *,
        quantization: str | None = None,
        rescore: bool | None = None,
        rescore_precision: str | None = None,
        rescore_multiplier: int | Literal["auto"] | None = None,
        recall_target: float | None = None,
        metric: str | None = None,
        lock_timeout: float | None = 10.0,
        quantizer_options: dict[str, Any] | None = None,
    ) -> None:
        """Create an empty store, or reopen the store at ``path``.

        Args:
            embedding: Embeddings model used for texts and queries.
            path: Directory of the store; ``None`` keeps it in memory.
            quantization: ``"binary"`` (default), ``"int8"``, ``"pq"`` or ``"none"``. Read from
                the store when reopening; a different value there is an error.
            rescore: ``False`` makes a codes-only store: no rescoring vectors are kept, so it is
                as small as its codes, and results are ranked by the codes alone (no
                calibration: the multiplier means nothing there). Unset: the store's own (a new
                store rescores).
            rescore_precision: How the rescoring vectors are kept: ``"float16"`` (default of new
                quantized stores: half the bytes, same recall), ``"float32"``, or ``"int8"``
                (a quarter, 0.005-0.01 lower recall@10). Read from the store when reopening;
                a different value there is an error. Exact search (``quantization="none"``)
                keeps float32.
            rescore_multiplier: Candidates per result from the code scan, fixed. Default
                (None, or ``"auto"``): calibrated for ``recall_target``.
            recall_target: Recall@10 against exact float search that the store keeps (default
                0.99, unless the store was calibrated for another target). Unless a
                ``rescore_multiplier`` is given, the store measures the smallest multiplier
                reaching it (plus ``calibration.DEFAULT_MARGIN``, and with the measured recall's
                lower bound ``calibration.DEFAULT_CONFIDENCE_Z`` standard errors down at least
                the target; later calibrations on the same quantizer pool with the previous
                one, ``calibration.pooled``) on a sample of its own rows
                when the quantizer is trained, whenever its live rows have grown by
                ``calibration.RECALIBRATE_GROWTH`` since the last measurement, and on
                ``compact()``, and commits the result with the add or compaction it was
                measured on. A reopened store uses the saved calibration.
            metric: ``"cosine"`` (default), ``"dot"`` or ``"l2"``. Read from the store when
                reopening; a different value there is an error.
            lock_timeout: Seconds a write waits for another writer process; 0 fails at once,
                ``None`` waits forever.
            quantizer_options: Extra keyword arguments for the quantizer (e.g. ``{"m": 48}``).
                ``partitions`` (binary and 4-bit PQ): ``"auto"`` (the default) partitions the
                rows into k-means lists once the store holds 200,000 live rows, in the add or
                ``compact()`` that gets there, so a query scans a few lists instead of every
                code; ``0`` always scans every code; a number trains that many lists from the
                start. Left unset when reopening, the store's own apply.
        """
        self.embedding = embedding
        if rescore is not None and check_flag(rescore, "rescore") is False:
            if rescore_precision is not None and normalize_precision(rescore_precision) is not None:
                msg = (
                    f"Got rescore=False (a codes-only store) and rescore_precision={rescore_precision!r} "
                    "(rescoring vectors); pass one of them."
                )
                raise InvalidInputError(msg)
            rescore_precision = CODES_ONLY
        if rescore_multiplier == "auto":
            rescore_multiplier = None
        if recall_target is not None and rescore_multiplier is not None:
            msg = (
                f"Got both rescore_multiplier={rescore_multiplier!r} and recall_target={recall_target!r}; "
                "pass one: a fixed multiplier, or a recall target the store calibrates for."
            )
            raise InvalidInputError(msg)
        self.recall_target = None if recall_target is None else check_fraction(recall_target, "recall_target")
        fixed = None if rescore_multiplier is None else check_multiplier(rescore_multiplier)
        # Unset settings (None) are read from the store when it exists, inside Collection.
        config = CollectionConfig(
            metric=metric or None,
            quantization=quantization or None,
            quantizer_options=dict(quantizer_options) if quantizer_options else None,
            embedding_model=_model_name(embedding),
            rescore_precision=rescore_precision,
        )
        self._collection = Collection(config, path, lock_timeout=lock_timeout)
        self._fixed_multiplier = (
            DEFAULT_RESCORE_MULTIPLIER[self._collection.quantization] if fixed is None else fixed
        )
        if fixed is None and self.recall_target is None and self.rescore:
            saved = self._collection.snapshot.settings.get("calibration")
            # Reopened: keep the target the store was calibrated for; else the default one.
            self.recall_target = float(saved["target"]) if saved else DEFAULT_TARGET

    # -- properties --------------------------------------------------------------------------
    @property
    def rescore(self) -> bool:
        """Whether candidates are rescored: False only for a codes-only store."""
        return self._collection.rescore_precision != CODES_ONLY

    @property
    def rescore_multiplier(self) -> int:
        """Candidates per result: the calibrated one under ``recall_target``, else the fixed one.

        A calibrated multiplier grows with the rows added since it was measured
        (:meth:`~langchain_vq.calibration.Calibration.multiplier_for`), so recall holds between
        calibrations too.
        """
        calibration = self.calibration
        if calibration is None:
            return self._fixed_multiplier
        return calibration.multiplier_for(self._collection.snapshot.live_rows)

    @property
    def calibration(self) -> Calibration | None:
        """The saved calibration for this store's ``recall_target``, if one was measured."""
        if self.recall_target is None:
            return None
        return _saved_calibration(self._collection.snapshot, self.recall_target)

    def calibrate(self, *, force: bool = True) -> Calibration | None:
        """Measure the smallest multiplier reaching ``recall_target`` now, and save it.

        Adds and ``compact()`` keep the calibration up to date by themselves; this is for a
        store written by another version, or by handles with a fixed ``rescore_multiplier``.
        Without ``force`` it measures only when :func:`~langchain_vq.calibration.needs_calibration`
        says so. It measures under the write lock, on the newest version, and commits what it
        measured (with more ``nprobe`` when the lists cap recall, as an add's calibration).
        Returns the calibration in use (None without a target, or while the store searches
        exactly because its quantizer is not trained).
        """
        snapshot = self._collection.snapshot
        if self.recall_target is None or not self.rescore or snapshot.quantizer is None:
            return None
        measured: list[Calibration] = []

        def settings_for(current: Snapshot, staged: Snapshot) -> StagedChange | None:
            assert self.recall_target is not None  # noqa: S101 - checked above
            previous = _saved_calibration(current, self.recall_target)
            if staged.quantizer is None or (
                not force and not needs_calibration(previous, current, staged, self.recall_target)
            ):
                return None
            new_quantizer = staged.quantizer is not current.quantizer
            calibration, quantizer = self._measure(previous, staged, new_quantizer=new_quantizer)
            measured.append(calibration)
            return StagedChange({"calibration": calibration.to_dict()}, quantizer)

        self._collection.update_settings(settings_for=settings_for)
        return measured[0] if measured else self.calibration

    def _calibration_settings(self, current: Snapshot, staged: Snapshot) -> StagedChange | None:
        """The calibration to commit with ``staged`` (an add or compaction), when one is due.

        With it, the quantizer to commit: a copy probing more lists when its lists cap recall
        (:meth:`_measure`).
        """
        if self.recall_target is None or not self.rescore:  # fixed multiplier, or codes only
            return None
        previous = _saved_calibration(current, self.recall_target)
        if not needs_calibration(previous, current, staged, self.recall_target):
            return None
        # Every calibration walks both ways from the last answer: one that was high by the noise
        # of its sample comes down at the next (walking up only kept it, and growth raised it).
        new_quantizer = staged.quantizer is not current.quantizer
        calibration, quantizer = self._measure(previous, staged, new_quantizer=new_quantizer)
        return StagedChange({"calibration": calibration.to_dict()}, quantizer)

    def _measure(
        self, previous: Calibration | None, snapshot: Snapshot, *, new_quantizer: bool = False
    ) -> tuple[Calibration, Quantizer | None]:
        """Calibrate on ``snapshot``; when its lists cap recall, on a copy probing more of them.

        Returns the calibration and the quantizer to commit with it: ``snapshot``'s, or a copy
        with more ``nprobe`` (``PartitionedQuantizer.with_nprobe``; the collection writes its
        state with the commit). A calibration that misses its goal has two causes: the code scan
        needs more candidates than the largest multiplier (more lists would only slow every
        query), or the probed lists do not hold the neighbours, so no multiplier can reach the
        goal. :meth:`_probe_for` tells them apart on the sampled queries' true neighbours.
        An ``nprobe`` the user gave is never changed. A ``new_quantizer`` (trained by this
        commit), or one probing more lists, is not pooled with the previous calibration.
        """
        assert self.recall_target is not None  # noqa: S101 - callers check
        # Start the walk where the answer probably is: the last calibration, else the default.
        start = previous.multiplier if previous is not None else self._fixed_multiplier
        # A comparable previous calibration (same quantizer) is pooled with this one, whose own
        # sample then needs a smaller lower bound (calibration.POOLED_Z).
        pool = not new_quantizer and comparable(previous, snapshot.live_rows, self.recall_target)
        z = POOLED_Z if pool else DEFAULT_CONFIDENCE_Z
        calibration = self._walk(snapshot, start, z)
        quantizer = snapshot.quantizer
        ranks = None  # the sampled queries' neighbours' list ranks: measured once, when needed
        while not calibration.met and self._may_probe_more(quantizer):
            assert isinstance(quantizer, PartitionedQuantizer)  # noqa: S101 - checked by _may_probe_more
            if ranks is None:
                ranks = self._neighbour_list_ranks(snapshot)
            nprobe = _probe_for(ranks, quantizer, calibration)
            if nprobe is None:  # the lists hold the neighbours: the codes need more candidates
                break
            quantizer = quantizer.with_nprobe(nprobe)
            snapshot = replace(snapshot, quantizer=quantizer)
            # More lists probed: the previous calibration no longer predicts this one.
            pool, z = False, DEFAULT_CONFIDENCE_Z
            calibration = self._walk(snapshot, start, z)
        if pool:
            calibration = pooled(calibration, previous)
        # The growth exponent served until the next calibration, from this one and the last.
        calibration = with_growth(calibration, previous)
        if not calibration.met:
            logger.warning(
                "recall_target=%s is not reached on this store: recall@%d is %.4f at the largest "
                "rescore_multiplier tried (%d); searches use that multiplier. Lower the target, "
                "or use a quantization with more bits (int8).",
                self.recall_target,
                DEFAULT_K,
                calibration.recall_by_multiplier[calibration.multiplier],
                calibration.multiplier,
            )
        return calibration, quantizer

    def _may_probe_more(self, quantizer: Quantizer | None) -> bool:
        """Whether the store may raise ``quantizer``'s ``nprobe``: lists, not all probed, not the user's."""
        return (
            isinstance(quantizer, PartitionedQuantizer)
            and quantizer.partitioned
            and quantizer.lists_probed < quantizer.partitions
            and not self._collection.nprobe_given
        )

    def _neighbour_list_ranks(self, snapshot: Snapshot) -> npt.NDArray[np.int64]:
        """``[queries, k]``: the probe rank of each true neighbour's list, for the calibration's queries.

        The same sampled rows (seed 0) as the calibration, each hidden from its own neighbours;
        one exact pass, spent only when a calibration missed its goal.
        """
        qs = query_set(self._collection, None, DEFAULT_SAMPLE, 0, snapshot=snapshot)
        truth = self._collection.search_keys(
            qs.vectors, DEFAULT_K, exact=True, exclude=qs.keys, snapshot=snapshot
        )
        return self._collection.list_ranks(qs.vectors, truth, snapshot=snapshot)

    def _walk(self, snapshot: Snapshot, start: int, z: float) -> Calibration:
        """The store's calibration rule with lower bound ``z``, walking both ways from ``start``."""
        assert self.recall_target is not None  # noqa: S101 - callers check
        return calibrate_multiplier(
            self._collection,
            target=self.recall_target,
            margin=DEFAULT_MARGIN,
            z=z,
            max_sample=DEFAULT_MAX_SAMPLE,
            early_stop=True,
            start=start,
            descend=True,
            refine=DEFAULT_REFINE,
            snapshot=snapshot,
        )

    @property
    @override
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def collection(self) -> Collection:
        """The underlying collection (rows, versions, quantizer)."""
        return self._collection

    @property
    def path(self) -> str | None:
        """Directory of the store, or None when in memory."""
        directory = self._collection.directory
        return str(directory.path) if directory is not None else None

    def __len__(self) -> int:
        """Number of live documents."""
        return self._collection.snapshot.live_rows

    # -- adding ------------------------------------------------------------------------------
    @override
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        checked, checked_metadatas, final_ids = _rows(texts, metadatas, ids)
        vectors = self.embedding.embed_documents(checked) if checked else []
        return self._add(checked, checked_metadatas, final_ids, vectors)

    @override
    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        checked, checked_metadatas, final_ids = _rows(texts, metadatas, ids)
        vectors = await self.embedding.aembed_documents(checked) if checked else []
        return await run_in_executor(None, self._add, checked, checked_metadatas, final_ids, vectors)

    # add_documents / aadd_documents: LangChain's own, which take the documents' ids and call
    # add_texts / aadd_texts above.

    def add_embeddings(
        self,
        texts: Iterable[str],
        embeddings: npt.ArrayLike,
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str] | None = None,
    ) -> list[str]:
        """Add precomputed vectors (``[n, dim]`` array) with their texts; the fast path.

        Rows whose id already exists replace the old row (upsert), in the same commit.
        """
        return self._add(*_rows(texts, metadatas, ids), embeddings)

    def _add(
        self,
        texts: list[str],
        metadatas: list[dict[str, Any] | None],
        ids: list[str],
        vectors: npt.ArrayLike,
    ) -> list[str]:
        if not texts:
            return []
        matrix = self._collection.check_vectors(vectors, "embeddings")
        if matrix.shape[0] != len(texts):
            msg = f"Got {matrix.shape[0]} embeddings for {len(texts)} texts; pass one per text."
            raise InvalidInputError(msg)
        self._collection.add(ids, texts, metadatas, matrix, settings_for=self._calibration_settings)
        return ids

    # -- deleting and getting ----------------------------------------------------------------
    @override
    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        """Delete documents by id and/or ``filter=``; missing ids are ignored.

        With neither ids nor a filter, every document is deleted (LangChain's contract). With
        both, only the given ids that also match the filter are deleted.
        """
        filter_spec = kwargs.pop("filter", None)
        if kwargs:
            msg = f"Unexpected delete arguments {sorted(kwargs)}; supported: ids, filter."
            raise InvalidInputError(msg)
        checked = None
        if ids is not None:
            checked = [check_id(i, pos) for pos, i in enumerate(ids)]
            if None in checked:
                msg = f"ids[{checked.index(None)}] is None; delete() takes the ids of stored documents."
                raise InvalidInputError(msg)
        compiled = compile_filter(filter_spec)
        self._collection.delete(checked, filter=compiled)  # type: ignore[arg-type]  # no None left
        return True

    @override
    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool:
        return await run_in_executor(None, self.delete, ids, **kwargs)

    @override
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        wanted = [i for i in ids if isinstance(i, str)]
        return [_document(row) for row in self._collection.get(wanted)]

    @override
    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        return await run_in_executor(None, self.get_by_ids, ids)

    # -- searching ---------------------------------------------------------------------------
    def _search(
        self,
        vectors: npt.ArrayLike,
        k: int,
        *,
        rescore_multiplier: int | None = None,
        filter: Any = None,  # noqa: A002 - LangChain's name
        with_vectors: bool = False,
        **kwargs: Any,
    ) -> list[list[Row]]:
        k = check_k(k)
        _reject_unknown(kwargs)
        compiled = compile_filter(filter)
        multiplier = (
            self.rescore_multiplier if rescore_multiplier is None else check_multiplier(rescore_multiplier)
        )
        return self._collection.search(
            vectors,
            k,
            rescore=self.rescore,
            rescore_multiplier=multiplier,
            filter=compiled,
            with_vectors=with_vectors,
        )

    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float] | npt.ArrayLike, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents most similar to ``embedding`` with scores in metric units."""
        rows = self._search(np.asarray(embedding, dtype=np.float32).reshape(1, -1), k, **kwargs)[0]
        return self._scored(rows)

    def batch_similarity_search_by_vector(
        self, embeddings: npt.ArrayLike, k: int = 4, **kwargs: Any
    ) -> list[list[tuple[Document, float]]]:
        """Search many query vectors (``[n, dim]``) in one pass; scores in metric units."""
        return [self._scored(rows) for rows in self._search(embeddings, k, **kwargs)]

    @override
    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    @override
    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        return await run_in_executor(None, self.similarity_search_by_vector, embedding, k, **kwargs)

    @override
    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        check_k(k)
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, **kwargs)

    @override
    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        check_k(k)
        vector = await self.embedding.aembed_query(query)
        return await run_in_executor(None, self.similarity_search_with_score_by_vector, vector, k, **kwargs)

    @override
    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    @override
    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    @override
    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Metric score -> relevance in [0, 1], higher is more relevant.

        - cosine: the cosine similarity itself, clipped to [0, 1] (as LangChain's own cosine
          relevance, Chroma and Qdrant): ``score_threshold=0.5`` means cos >= 0.5, and
          opposite or unrelated vectors score 0;
        - dot: the logistic function of the inner product, 0.5 at 0;
        - l2: ``1 / (1 + distance)``, 1 for an identical vector.
        """
        metric = self._collection.metric
        if metric == "cosine":
            return lambda s: min(1.0, max(0.0, s))
        if metric == "dot":
            return lambda s: 1.0 / (1.0 + math.exp(-s)) if s > -700 else 0.0
        return lambda d: 1.0 / (1.0 + d)

    def _scored(self, rows: list[Row]) -> list[tuple[Document, float]]:
        """Documents with the scores users see: engine similarity, or distance for l2."""
        l2 = self._collection.metric == "l2"  # once per query, not per row
        return [(_document(r), _metric_score(r.score, l2=l2)) for r in rows]

    # -- MMR ---------------------------------------------------------------------------------
    @override
    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        k = check_k(k)
        fetch_k = max(check_k(fetch_k, "fetch_k"), k)
        if not 0.0 <= lambda_mult <= 1.0:
            msg = (
                f"lambda_mult must lie in [0, 1], got {lambda_mult!r} "
                "(1 = relevance only, 0 = diversity only)."
            )
            raise InvalidInputError(msg)
        rows = self._search([embedding], fetch_k, with_vectors=True, **kwargs)[0]
        if not rows:
            return []
        query = self._collection.check_vectors([embedding], "query embedding")[0]
        vectors = np.stack([r.vector for r in rows if r.vector is not None])
        chosen = maximal_marginal_relevance(query, vectors, k, lambda_mult)
        return [_document(rows[i]) for i in chosen]

    @override
    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        return await run_in_executor(
            None, self.max_marginal_relevance_search_by_vector, embedding, k, fetch_k, lambda_mult, **kwargs
        )

    @override
    def max_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, **kwargs
        )

    @override
    async def amax_marginal_relevance_search(
        self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5, **kwargs: Any
    ) -> list[Document]:
        vector = await self.embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, **kwargs)

    # -- retriever ---------------------------------------------------------------------------
    @override
    def as_retriever(self, **kwargs: Any) -> VQRetriever:
        """A :class:`VQRetriever` over this store.

        Accepts LangChain's ``search_type`` and ``search_kwargs`` as well as the typed knobs
        directly: ``k``, ``filter``, ``rescore_multiplier``, ``score_threshold``, ``fetch_k``,
        ``lambda_mult``.
        """
        tags = kwargs.pop("tags", None) or [*self._get_retriever_tags()]
        return VQRetriever(vectorstore=self, tags=tags, **kwargs)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    @override
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> Self:
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    # afrom_texts: LangChain's own, which runs from_texts in an executor, so that opening the
    # store's files and taking its lock stay off the event loop too.

    # -- maintenance -------------------------------------------------------------------------
    def compact(self) -> None:
        """Merge segments, drop deleted rows, retrain the quantizer, remove unused files.

        Unless ``rescore_multiplier`` is fixed, the multiplier is calibrated again for the new
        quantizer, in the same commit.
        """
        self._collection.compact(settings_for=self._calibration_settings)

    def verify(self) -> list[str]:
        """Check every file of the current version against its checksum; returns problems."""
        return self._collection.verify()

    def refresh(self) -> bool:
        """Pick up versions committed by other processes; True if something changed."""
        return self._collection.refresh()


# -- helpers ---------------------------------------------------------------------------------
def _rows(
    texts: Iterable[str],
    metadatas: Sequence[dict[str, Any]] | None,
    ids: Sequence[str | None] | None,
) -> tuple[list[str], list[dict[str, Any] | None], list[str]]:
    """Checked texts, metadata dicts, and ids (generated where None) for one add call."""
    texts = check_texts(texts)
    n = len(texts)
    if metadatas is not None and len(metadatas) != n:
        msg = f"Got {len(metadatas)} metadatas for {n} texts; pass one metadata dict per text."
        raise InvalidInputError(msg)
    if ids is not None and len(ids) != n:
        msg = f"Got {len(ids)} ids for {n} texts; pass one id per text (or None to generate)."
        raise InvalidInputError(msg)
    checked_metadatas: list[dict[str, Any] | None] = list(metadatas) if metadatas is not None else [None] * n
    Collection.check_metadatas(checked_metadatas)  # before the texts are embedded
    checked = [check_id(i, pos) for pos, i in enumerate(ids)] if ids is not None else [None] * n
    final = [i if i is not None else uuid.uuid4().hex for i in checked]
    if len(set(final)) != n:
        dupes = sorted({i for i in final if final.count(i) > 1})[:5]
        msg = f"Duplicate ids within one call: {dupes}. Each id may appear once per call."
        raise InvalidInputError(msg)
    return texts, checked_metadatas, final


#: Of the misses a calibration's goal allows (``1 - goal``), the share the probed lists may cause
#: when the store raises ``nprobe``; the codes keep the rest, so a finite multiplier can meet the
#: goal. Half: with the goal 0.993, lists holding 0.9965 of the sampled queries' neighbours.
LIST_MISS_SHARE = 0.5


def _probe_for(
    ranks: npt.NDArray[np.int64], quantizer: PartitionedQuantizer, calibration: Calibration
) -> int | None:
    """The ``nprobe`` to measure again with, or None when the probed lists do not cap recall.

    ``ranks``: each sampled query's true neighbours' list ranks (-1: none). The lists cap recall
    when the share of each query's neighbours that ``nprobe`` lists hold, taken as if it were a
    recall (no multiplier finds more), fails the calibration's own rule (its goal, and ``z``
    standard errors above its target): then no multiplier can meet it. The answer is then the
    fewest lists holding ``1 - LIST_MISS_SHARE * (1 - goal)`` of the neighbours that pass the
    rule, at least one more than now (every list when none does).
    """
    nprobe, count = quantizer.lists_probed, quantizer.partitions
    valid = ranks >= 0
    asked = valid.sum(axis=1)
    queries = asked > 0
    if not queries.any():
        return None
    # held[i, p]: neighbours of query i in its first p lists, for every p at once.
    held = np.zeros((ranks.shape[0], count + 1), dtype=np.int64)
    rows = np.broadcast_to(np.arange(ranks.shape[0])[:, None], ranks.shape)
    np.add.at(held, (rows[valid], ranks[valid] + 1), 1)
    held = np.cumsum(held, axis=1)[queries] / asked[queries, None]  # [queries, nprobe 0..count]

    def covers(p: int, goal: float) -> bool:
        per_query = held[:, p].tolist()
        mean = float(np.mean(per_query))
        error = _standard_error(per_query, calibration.k)
        return mean >= goal and _meets(mean, error, calibration.target, calibration.goal, calibration.z)

    if covers(nprobe, calibration.goal):
        return None
    headroom = 1.0 - LIST_MISS_SHARE * (1.0 - calibration.goal)
    return next((p for p in range(nprobe + 1, count) if covers(p, headroom)), count)


def _saved_calibration(snapshot: Snapshot, target: float) -> Calibration | None:
    """The calibration saved with ``snapshot``, if it was measured for ``target``."""
    saved = snapshot.settings.get("calibration")
    if not saved or saved.get("target") != target:
        return None
    return Calibration.from_dict(saved)


def _model_name(embedding: Embeddings) -> str | None:
    for attr in ("model_name", "model"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str):
            return value
    return type(embedding).__name__


def _reject_unknown(kwargs: dict[str, Any]) -> None:
    if kwargs:
        msg = f"Unexpected search arguments {sorted(kwargs)}; supported: k, filter, rescore_multiplier."
        raise InvalidInputError(msg)


def _metric_score(similarity: float | None, *, l2: bool) -> float:
    """Engine similarity -> the score users see (distance for l2)."""
    s = float(similarity if similarity is not None else -math.inf)
    return math.sqrt(max(-s, 0.0)) if l2 else s


def _document(row: Row) -> Document:
    # The validating constructor: pydantic 2.13's ``model_construct`` is Python code filling
    # each default, 15 us a Document against 7 us here (10 per query: 0.08 ms).
    return Document(id=row.id, page_content=row.text, metadata=row.metadata)
