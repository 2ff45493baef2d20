"""Distributed build: Ray Data embeds and quantizes documents, workers write segments, the driver commits.

The pipeline, for one store or for the shards of a sharded store:

1. ``ray.data`` reads the documents (jsonl, parquet, a folder of text files, or a ``Dataset``).
2. The driver embeds a sample (the first ``train_sample`` rows) and trains the quantizer on it,
   unless every target store already has one; the store's own quantizer is always kept, so new
   codes compare with the old ones.
3. ``map_batches`` with a callable class (an actor pool: the model and quantizers load once per
   actor) embeds each batch, checks and normalizes the vectors as ``Collection.add`` does, routes
   each row to its shard by id hash, and encodes it with that shard's quantizer.
4. :class:`SegmentDatasink` write tasks turn their rows into segments (``build_segment``) and
   write them with ``StoreDirectory.write_segment``: files only, no manifest. A retried task
   writes new files under new names; the files of a failed attempt are never listed, so they
   are orphans that ``compact()``'s cleanup removes.
5. ``on_write_complete`` runs on the driver and makes one commit per store
   (``Collection.commit_segments``): the file lock, the next manifest, ``directory.commit``.
   The build id goes into the manifest's ``settings``, so a rerun with the same id after a crash
   commits only where the first run did not.

Building into an existing store appends; rows whose id is already live replace the old row in the
same commit (upsert). An id twice within one build is an error at commit time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from langchain_vq.collection import BUILDS_SETTING, Collection, CollectionConfig
from langchain_vq.errors import (
    ConfigurationError,
    DimensionMismatchError,
    EmptySourceError,
    InvalidInputError,
    SourceNotFoundError,
)
from langchain_vq.quantization import make_quantizer, quantizer_from_config
from langchain_vq.quantization.precision import VectorCodec
from langchain_vq.ray._common import check_shards_agree, require_ray, shard_of
from langchain_vq.storage import Segment, SegmentEntry, StoreDirectory, build_segment
from langchain_vq.storage.manifest import FileEntry
from langchain_vq.validation import check_id, check_int, check_texts

ray = require_ray()
from ray.data import ActorPoolStrategy, Datasink  # noqa: E402 - after the dependency check

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    import numpy.typing as npt
    from langchain_core.embeddings import Embeddings

    from langchain_vq.quantization.base import Quantizer
    from langchain_vq.storage.fs import FileOps

logger = logging.getLogger(__name__)

#: Rows a write task gathers before it writes a segment (fewer segments search faster).
DEFAULT_ROWS_PER_SEGMENT = 65_536
#: Rows of the sample the driver embeds to train the quantizer.
DEFAULT_TRAIN_SAMPLE = 10_000
#: Column names of the internal pipeline (the user's columns keep theirs).
_VECTOR, _CODES, _SHARD = "__vq_vector", "__vq_codes", "__vq_shard"
_TEXT_SUFFIXES = (".txt", ".md", ".markdown")


@dataclass(frozen=True)
class BuildResult:
    """What a build did: rows written, the version each store is at, and where the time went."""

    build_id: str
    #: False when every store had committed this build id before (nothing was done).
    committed: bool
    rows: int
    #: The version of each target store after the build, in the order given.
    versions: tuple[int, ...]
    segments: int
    sample_seconds: float
    write_seconds: float


def build_store(
    source: Any,
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    embedding: Embeddings | None = None,
    *,
    quantization: str | None = None,
    metric: str | None = None,
    quantizer_options: dict[str, Any] | None = None,
    build_id: str | None = None,
    workers: int = 2,
    num_cpus: float = 0.5,
    threads_per_worker: int | None = None,
    batch_size: int = 256,
    rows_per_segment: int = DEFAULT_ROWS_PER_SEGMENT,
    train_sample: int = DEFAULT_TRAIN_SAMPLE,
    text_column: str = "text",
    id_column: str = "id",
    lock_timeout: float | None = 60.0,
    fs: FileOps | None = None,
) -> BuildResult:
    """Embed, quantize and write ``source`` into the store at ``path`` (or the shards listed) on Ray.

    Args:
        source: A ``ray.data.Dataset``; a ``.jsonl``/``.json`` or ``.parquet`` file or a list of
            them; or a folder (``.parquet`` files in it are read as Parquet, else its ``.txt`` and
            ``.md`` files are split into chunks as ``langchain-vq index`` does). Rows need a
            ``text_column``; an ``id_column`` is optional (ids are generated without it); a
            ``metadata`` column of objects, or else every other column, becomes the metadata
            (null values are dropped).
        path: The store directory, or a list of shard directories (rows routed by id hash,
            one commit per shard).
        embedding: Any LangChain ``Embeddings``; default ``SentenceTransformerEmbeddings()``
            (the ``embeddings`` extra). It is sent to every worker.
        quantization: For a new store (``"binary"`` default, ``"int8"``, ``"pq"``, ``"none"``);
            an existing store keeps its own.
        metric: For a new store (``"cosine"`` default); an existing store keeps its own.
        quantizer_options: Quantizer keyword options for a new store.
        build_id: Identifies this build in the stores' manifests: a rerun with the same id
            commits only where the first run did not. Default: derived from the source files'
            paths, sizes and modification times and the targets (a ``Dataset`` gets a random
            one, so pass your own to make reruns safe).
        workers: Embedding actors (one model each).
        num_cpus: Logical CPUs reserved per actor; fractional so that write tasks and shard
            actors still fit on a small cluster.
        threads_per_worker: Threads of each actor's model (ONNX/OpenVINO intra-op threads,
            torch's thread count, the tokenizer's pool). ``None``: the CPUs the actor reserves,
            rounded down, at least 1, so ``workers`` actors use about ``workers * num_cpus``
            cores instead of each one all of them. Applies to ``SentenceTransformerEmbeddings``
            whose ``num_threads`` is ``None``; a model given its own ``num_threads`` keeps them.
        batch_size: Rows per embedding batch.
        rows_per_segment: Rows a write task gathers per segment file.
        train_sample: Rows the driver embeds to train the quantizer.
        text_column: Column holding the texts.
        id_column: Column holding the ids (optional).
        lock_timeout: Seconds a commit waits for another writer of a store.
        fs: File operations of the writes (fault-injection seam of the tests).

    Raises:
        InvalidInputError: The dataset is empty, lacks ``text_column``, or has an id twice.
        DimensionMismatchError: The embeddings' dimension differs from a store's.
        ConfigurationError: Settings that differ from an existing store's.
        NotAStoreError: A target path holds something that is not a store.
    """
    check_int(workers, "workers")
    check_int(batch_size, "batch_size")
    check_int(rows_per_segment, "rows_per_segment")
    check_int(train_sample, "train_sample")
    if not 0 < num_cpus <= 64:
        msg = f"num_cpus must be a positive number of logical CPUs per actor, got {num_cpus!r}."
        raise InvalidInputError(msg)
    threads = worker_threads(num_cpus, threads_per_worker)
    paths = _target_paths(path)
    embedding = _default_embedding() if embedding is None else embedding
    build_id = build_id or _default_build_id(source, paths)
    config = CollectionConfig(
        metric=metric,
        quantization=quantization,
        quantizer_options=dict(quantizer_options) if quantizer_options else None,
        embedding_model=_model_name(embedding),
    )
    collections = [Collection(config, p, lock_timeout=lock_timeout, fs=fs) for p in paths]
    check_shards_agree(collections, paths)
    if all(build_id in (c.snapshot.settings.get(BUILDS_SETTING) or {}) for c in collections):
        logger.info("Build %s was committed before; nothing to do.", build_id)
        versions = tuple(c.snapshot.version for c in collections)
        return BuildResult(
            build_id,
            committed=False,
            rows=0,
            versions=versions,
            segments=0,
            sample_seconds=0.0,
            write_seconds=0.0,
        )

    started = time.perf_counter()
    dataset = read_source(source, text_column=text_column)
    needs_training = (
        any(c.snapshot.quantizer is None for c in collections) and collections[0].quantization != "none"
    )
    sample_rows = dataset.limit(train_sample if needs_training else 1).take_all()
    if not sample_rows:
        msg = f"The dataset to build from ({_describe(source)}) has no rows; give it at least one document."
        raise InvalidInputError(msg)
    if text_column not in sample_rows[0]:
        msg = (
            f"The dataset has no {text_column!r} column (columns: {sorted(sample_rows[0])}); pass "
            "text_column= naming the column that holds the texts."
        )
        raise InvalidInputError(msg)
    checker = Collection(CollectionConfig(metric=collections[0].metric))
    texts = check_texts([r[text_column] for r in sample_rows])
    vectors = checker.check_vectors(embedding.embed_documents(texts), "embeddings")
    dim = int(vectors.shape[1])
    for collection, shard_path in zip(collections, paths, strict=True):
        if collection.snapshot.dim is not None and collection.snapshot.dim != dim:
            msg = (
                f"The embeddings have dimension {dim}, but the store at {shard_path} holds "
                f"{collection.snapshot.dim}-dimensional vectors. Use the model the store was built "
                "with, or build into a new store."
            )
            raise DimensionMismatchError(msg)
    trained = _train(collections[0], vectors) if needs_training else None
    trained_codec = _train_codec(collections[0], vectors) if trained is not None else None
    quantizers = [c.snapshot.quantizer or trained for c in collections]
    # A store that has its quantizer keeps its codec (rescoring precision); a new one gets the sample's.
    codecs = [c.snapshot.codec if c.snapshot.quantizer is not None else trained_codec for c in collections]
    sample_seconds = time.perf_counter() - started

    sink = SegmentDatasink(
        [str(p) for p in paths],
        rows_per_segment=rows_per_segment,
        text_column=text_column,
        id_column=id_column,
        codecs=[_portable_codec(c, collections[0].kind) for c in codecs],
        blocked_codes=[q is not None and q.blocked_codes for q in quantizers],
        fs=fs,
    )
    sink.bind(collections, dim, quantizers, codecs, build_id)
    embedded = dataset.map_batches(
        EmbedQuantize,
        fn_constructor_kwargs={
            "embedding": _portable(embedding, threads),
            "threads": threads,
            "metric": collections[0].metric,
            "dim": dim,
            "quantizers": [_portable_quantizer(q) for q in quantizers],
            "text_column": text_column,
            "id_column": id_column,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=workers),
        num_cpus=num_cpus,
    )
    started = time.perf_counter()
    embedded.write_datasink(sink, ray_remote_args={"num_cpus": 0.25, "max_retries": 3})
    write_seconds = time.perf_counter() - started
    outcome = sink.outcome
    return BuildResult(
        build_id,
        outcome["committed"],
        outcome["rows"],
        tuple(c.snapshot.version for c in collections),
        outcome["segments"],
        sample_seconds,
        write_seconds,
    )


class EmbedQuantize:
    """The ``map_batches`` callable class: embeds, checks, routes and encodes one batch of rows.

    One instance lives in each actor of the pool, so the model and the quantizers load once per
    actor. Output: the input columns plus the float vector, the code bytes and the shard index.
    """

    def __init__(
        self,
        embedding: Embeddings,
        metric: str,
        dim: int,
        quantizers: list[tuple[dict[str, Any], dict[str, npt.NDArray[Any]]] | None],
        text_column: str,
        id_column: str,
        threads: int = 1,
    ) -> None:
        # The tokenizer's Rust pool ignores OMP_NUM_THREADS and takes every core unless capped.
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        self.embedding = embedding
        self.checker = Collection(CollectionConfig(metric=metric))
        self.dim = dim
        self.quantizers: list[Quantizer | None] = [
            quantizer_from_config(*q) if q is not None else None for q in quantizers
        ]
        self.text_column = text_column
        self.id_column = id_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with ``__vq_vector``, ``__vq_codes``, ``__vq_shard`` (and ids filled in)."""
        texts = check_texts(batch.column(self.text_column).to_pylist())
        if self.id_column in batch.column_names:
            ids = [
                check_id(i, pos) or uuid.uuid4().hex
                for pos, i in enumerate(batch.column(self.id_column).to_pylist())
            ]
            batch = batch.drop_columns([self.id_column])
        else:
            ids = [uuid.uuid4().hex for _ in texts]
        vectors = self.checker.check_vectors(self.embedding.embed_documents(texts), "embeddings")
        if vectors.shape[1] != self.dim:
            msg = f"The model returned {vectors.shape[1]}-dimensional vectors, the build expects {self.dim}."
            raise DimensionMismatchError(msg)
        shards = np.array([shard_of(i, len(self.quantizers)) for i in ids], dtype=np.int32)
        codes: list[bytes | None] = [None] * len(ids)
        for shard, quantizer in enumerate(self.quantizers):
            rows = np.flatnonzero(shards == shard)
            if quantizer is None or rows.size == 0:
                continue
            encoded = quantizer.encode(vectors[rows])  # [rows, code_size]
            for row, code in zip(rows, encoded, strict=True):
                codes[row] = code.tobytes()
        return (
            batch.append_column(self.id_column, pa.array(ids, pa.string()))
            .append_column(
                _VECTOR,
                pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), self.dim),
            )
            .append_column(_CODES, pa.array(codes, pa.binary()))
            .append_column(_SHARD, pa.array(shards, pa.int32()))
        )


class SegmentDatasink(Datasink):
    """Writes rows as segment files of their shard's store; the driver commits them, once per store.

    ``write`` runs in Ray tasks (anywhere in the cluster, so the stores must be on a filesystem
    every node mounts at the same path) and writes only segment files. ``on_write_complete``
    runs on the driver with the entries every successful task returned, and commits them.
    """

    def __init__(
        self,
        paths: list[str],
        *,
        rows_per_segment: int = DEFAULT_ROWS_PER_SEGMENT,
        text_column: str = "text",
        id_column: str = "id",
        codecs: list[tuple[str, int, str, dict[str, Any]] | None] | None = None,
        blocked_codes: list[bool] | None = None,
        fs: FileOps | None = None,
    ) -> None:
        self.paths = paths
        #: Per shard, whether its quantizer keeps codes in the fast-scan block layout.
        self.blocked_codes = blocked_codes or [False] * len(paths)
        #: Per shard, how its rescoring vectors are stored: (precision, dim, kind, state), or None.
        self.codecs = codecs or [None] * len(paths)
        self.text_column = text_column
        self.rows_per_segment = rows_per_segment
        self.id_column = id_column
        self.fs = fs
        self._driver: dict[str, Any] | None = None  # driver-side state, never sent to tasks
        self.outcome: dict[str, Any] = {"committed": False, "rows": 0, "segments": 0}

    def bind(
        self,
        collections: list[Collection],
        dim: int,
        quantizers: list[Quantizer | None],
        codecs: list[VectorCodec | None],
        build_id: str,
    ) -> None:
        """Give the driver's side what it commits with (kept out of what tasks receive)."""
        self._driver = {
            "collections": collections,
            "dim": dim,
            "quantizers": quantizers,
            "codecs": codecs,
            "build_id": build_id,
        }

    def __getstate__(self) -> dict[str, Any]:
        """What write tasks receive: paths and settings, not the driver's open stores."""
        state = dict(self.__dict__)
        state["_driver"] = None
        return state

    @property
    def min_rows_per_write(self) -> int:
        """Rows Ray Data bundles into one ``write`` call: about one segment per task."""
        return self.rows_per_segment

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:  # noqa: ARG002
        """Write this task's rows as one segment per shard (per ``rows_per_segment`` rows)."""
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables, promote_options="permissive")
        shards = table.column(_SHARD).to_numpy()
        written = []
        for shard in np.unique(shards):
            part = table.filter(pa.array(shards == shard))
            directory = StoreDirectory(self.paths[int(shard)], self.fs)
            codec = _codec_from(self.codecs[int(shard)])
            for start in range(0, part.num_rows, self.rows_per_segment):
                piece = part.slice(start, self.rows_per_segment)
                segment = _segment(piece, self.text_column, self.id_column, codec)
                entry = directory.write_segment(segment, blocked_codes=self.blocked_codes[int(shard)])
                written.append(
                    {
                        "shard": int(shard),
                        "name": segment.name,
                        "rows": segment.rows,
                        "has_codes": segment.has_codes,
                        "vectors": segment.precision,
                        "data": asdict(entry),
                    }
                )
        return written

    def on_write_complete(self, write_result: Any) -> None:
        """Commit each store's new segments in one version (on the driver)."""
        if self._driver is None:
            msg = "SegmentDatasink.on_write_complete needs bind() first (build_store does it)."
            raise ConfigurationError(msg)
        returned = [entry for task in write_result.write_returns for entry in task]
        state = self._driver
        committed = False
        for shard, collection in enumerate(state["collections"]):
            entries = [
                SegmentEntry(
                    name=e["name"],
                    rows=e["rows"],
                    data=FileEntry(**e["data"]),
                    has_codes=e["has_codes"],
                    vectors=e["vectors"],
                )
                for e in returned
                if e["shard"] == shard
            ]
            # The store's own quantizer object when it had one: commit_segments checks the identity.
            quantizer = state["quantizers"][shard]
            committed |= collection.commit_segments(
                entries, state["dim"], quantizer, codec=state["codecs"][shard], build_id=state["build_id"]
            )
        self.outcome = {
            "committed": committed,
            "rows": sum(e["rows"] for e in returned),
            "segments": len(returned),
        }


# -- reading ---------------------------------------------------------------------------------
def read_source(source: Any, *, text_column: str = "text") -> Any:
    """A ``ray.data.Dataset`` of documents from a Dataset, jsonl/parquet files, or a folder.

    A folder of text files is listed here and each file is read and split by a Ray task
    (``loaders.split_file``); rows get the loader's stable chunk ids and metadata.

    Raises:
        SourceNotFoundError: A path does not exist.
        EmptySourceError: A folder holds no file the build reads.
        InvalidInputError: Something that is neither a Dataset nor paths.
    """
    if isinstance(source, ray.data.Dataset):
        return source
    paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    if not paths or not all(isinstance(p, Path) for p in paths):
        msg = f"source must be a ray.data.Dataset, a path, or a list of paths; got {source!r}."
        raise InvalidInputError(msg)
    for p in paths:
        if not p.exists():
            msg = f"Source {p} does not exist; pass an existing file or folder."
            raise SourceNotFoundError(msg, path=str(p))
    files = [f for p in paths for f in (sorted(p.rglob("*")) if p.is_dir() else [p]) if f.is_file()]
    kinds = {f.suffix.lower() for f in files}
    strs = [str(f) for f in files]
    if kinds and kinds <= {".jsonl", ".json"}:
        return ray.data.read_json(strs, lines=True)
    if kinds and kinds <= {".parquet"}:
        return ray.data.read_parquet(strs)
    texts = [f for f in files if f.suffix.lower() in _TEXT_SUFFIXES]
    if not texts:
        msg = (
            f"No .jsonl, .parquet, .txt or .md files found in {', '.join(map(str, paths))} (found "
            f"suffixes {sorted(kinds)}). Pass files of one of these kinds, or a ray.data.Dataset."
        )
        raise EmptySourceError(msg, path=str(paths[0]))
    items = ray.data.from_items([{"path": str(f)} for f in texts])
    return items.flat_map(_split_text_file, fn_kwargs={"text_column": text_column})


def _split_text_file(row: dict[str, Any], text_column: str) -> list[dict[str, Any]]:
    """The chunks of one text file as rows (id, text, metadata as JSON text)."""
    from langchain_vq.loaders import split_file

    loaded = split_file(Path(row["path"]))
    return [
        {"id": doc.id, text_column: doc.page_content, "metadata": json.dumps(doc.metadata, sort_keys=True)}
        for doc in loaded.chunks
    ]


# -- helpers ---------------------------------------------------------------------------------
def _segment(table: pa.Table, text_column: str, id_column: str, codec: VectorCodec | None) -> Segment:
    """A segment of the pipeline rows of ``table`` (metadata from ``metadata`` or the other columns).

    Vectors are stored as ``Collection.add`` stores them: float32 before the quantizer is trained,
    then at the store's rescoring precision (``codec``; none for a codes-only store).
    """
    internal = {_VECTOR, _CODES, _SHARD, id_column, text_column}
    ids = table.column(id_column).to_pylist()
    texts = table.column(text_column).to_pylist()
    metadatas = _metadatas(table, [c for c in table.column_names if c not in internal])
    vectors = table.column(_VECTOR).combine_chunks()
    dim = vectors.type.list_size
    flat = np.asarray(vectors.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    codes_column = table.column(_CODES)
    codes = None
    if codes_column.null_count == 0:
        codes = np.frombuffer(b"".join(codes_column.to_pylist()), dtype=np.uint8).reshape(len(ids), -1)
    floats = flat.reshape(-1, dim)
    if codes is None:  # not trained yet: float32, searched exactly
        return build_segment(uuid.uuid4().hex, ids, texts, metadatas, floats, None)
    stored = codec.encode(floats) if codec is not None else None
    meta = codec.field_metadata() if codec is not None else None
    return build_segment(uuid.uuid4().hex, ids, texts, metadatas, stored, codes, vector_metadata=meta)


def _metadatas(table: pa.Table, columns: list[str]) -> list[dict[str, Any] | None]:
    """Metadata dicts: a ``metadata`` column (objects or JSON text) wins over the other columns."""
    if "metadata" in table.column_names:
        values = table.column("metadata").to_pylist()
        return [json.loads(v) if isinstance(v, str) else _without_nulls(v) for v in values]
    if not columns:
        return [None] * table.num_rows
    return [_without_nulls(r) for r in table.select(columns).to_pylist()]


def _without_nulls(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: v for k, v in value.items() if v is not None}


def _target_paths(path: Any) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    paths = [Path(p) for p in path]
    if not paths:
        msg = "path must be a store directory or a non-empty list of shard directories."
        raise InvalidInputError(msg)
    if len({p.resolve() for p in paths}) != len(paths):
        msg = f"Shard paths must differ; got {[str(p) for p in paths]}."
        raise InvalidInputError(msg)
    return paths


def _train(collection: Collection, vectors: npt.NDArray[np.float32]) -> Quantizer | None:
    """A quantizer of the store's settings fitted on the sample (None if it is too small)."""
    template = make_quantizer(
        collection.quantization, vectors.shape[1], metric=collection.kind, **collection.quantizer_options
    )
    if template is None or vectors.shape[0] < template.min_train_size:
        return None
    return template.fit(vectors)


def _train_codec(collection: Collection, vectors: npt.NDArray[np.float32]) -> VectorCodec | None:
    """The store's rescoring codec fitted on the sample (as ``Collection.add`` fits it)."""
    codec = collection._codec(vectors.shape[1])  # noqa: SLF001 - the store's own settings
    return codec.fit(vectors) if codec is not None else None


def _portable_codec(codec: VectorCodec | None, kind: str) -> tuple[str, int, str, dict[str, Any]] | None:
    """The codec as (precision, dim, metric kind, learned arrays): what write tasks rebuild it from."""
    return None if codec is None else (codec.precision, codec.dim, kind, codec.get_state())


def _codec_from(spec: tuple[str, int, str, dict[str, Any]] | None) -> VectorCodec | None:
    if spec is None:
        return None
    precision, dim, kind, state = spec
    return VectorCodec(precision, dim, metric=kind).set_state(state)  # type: ignore[arg-type]


def _portable_quantizer(quantizer: Quantizer | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The quantizer as (config, learned arrays): what workers rebuild it from."""
    return None if quantizer is None else (quantizer.get_config(), quantizer.get_state())


def worker_threads(num_cpus: float, threads_per_worker: int | None = None) -> int:
    """Model threads per build actor: ``threads_per_worker``, else its reserved CPUs rounded down (>= 1)."""
    if threads_per_worker is not None:
        return check_int(
            threads_per_worker, "threads_per_worker", fix="Pass None to use the CPUs each actor reserves."
        )
    return max(1, math.floor(num_cpus))


def _portable(embedding: Embeddings, threads: int) -> Embeddings:
    """The model as workers should receive it: a project model without its loaded runtime.

    A project model without its own ``num_threads`` gets ``threads``. Left to itself it sizes
    its pool from ``OMP_NUM_THREADS``, which Ray sets to the actor's CPUs only when the
    environment does not set it already, so ``workers`` actors could oversubscribe the cores
    (docs/architecture.md, "Distributed build").
    """
    from langchain_vq.embeddings import SentenceTransformerEmbeddings

    if isinstance(embedding, SentenceTransformerEmbeddings):
        return SentenceTransformerEmbeddings(
            embedding.model_name,
            batch_size=embedding.batch_size,
            normalize=embedding.normalize,
            show_progress=False,
            query_prompt=embedding.query_prompt,
            document_prompt=embedding.document_prompt,
            device=embedding.device,
            num_threads=embedding.num_threads if embedding.num_threads is not None else threads,
            backend=embedding.backend,
            cache_dir=embedding.cache_dir,
        )
    return embedding


def _default_embedding() -> Embeddings:
    from langchain_vq.embeddings import SentenceTransformerEmbeddings

    return SentenceTransformerEmbeddings()


def _model_name(embedding: Embeddings) -> str:
    for attr in ("model_name", "model"):
        value = getattr(embedding, attr, None)
        if isinstance(value, str):
            return value
    return type(embedding).__name__


def _default_build_id(source: Any, targets: list[Path]) -> str:
    """A build id from the source files (paths, sizes, times) and targets; random for a Dataset."""
    if isinstance(source, ray.data.Dataset):
        return uuid.uuid4().hex
    paths = [Path(source)] if isinstance(source, (str, os.PathLike)) else [Path(p) for p in source]
    parts = [str(t.resolve()) for t in targets]
    for p in paths:
        files = sorted(p.rglob("*")) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                info = f.stat()
                parts.append(f"{f.resolve()}:{info.st_size}:{info.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _describe(source: Any) -> str:
    return "a ray.data.Dataset" if isinstance(source, ray.data.Dataset) else str(source)


__all__ = ["BuildResult", "EmbedQuantize", "SegmentDatasink", "build_store", "read_source"]
