"""The collection: rows, versions and the quantizer, in memory or in a store directory.

This layer sits between the LangChain adapter (``vectorstore.py``) and the storage and search
layers. It validates rows, applies adds, upserts and deletes as new immutable versions, decides
when the quantizer is trained, evaluates metadata filters into per-segment row masks, opens a
store with the settings it was created with, and turns search hits back into rows. It knows nothing of
``Document`` or embeddings models, so it can be tested and reused (CLI, Ray shards) on its own.
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from langchain_vq.arrays import array_of, bool_array
from langchain_vq.errors import (
    ConfigurationError,
    CorruptStoreError,
    DimensionMismatchError,
    InvalidInputError,
)
from langchain_vq.merge_policy import MergePolicy, SegmentSize, plan_merges
from langchain_vq.quantization import (
    _partitions,
    make_quantizer,
    normalize_quantization,
    quantizer_from_config,
)
from langchain_vq.quantization._partitions import (
    PartitionedQuantizer,
    check_partition_options,
    is_auto,
    stored_lists,
)
from langchain_vq.quantization.base import as_float_matrix
from langchain_vq.quantization.precision import (
    CODES_ONLY,
    DEFAULT_PRECISION,
    LEGACY_PRECISION,
    VectorCodec,
    float_rows,
    normalize_precision,
)
from langchain_vq.search import Hits, SegmentView, search_segments
from langchain_vq.storage import Manifest, Segment, SegmentEntry, StoreDirectory, build_segment
from langchain_vq.storage.metadata import check_metadatas
from langchain_vq.storage.rows import take_rows
from langchain_vq.storage.schema import LIST_COLUMN, PARTITION_COLUMN
from langchain_vq.storage.segment import grouped_table, list_order, merge_segments, moved_rows
from langchain_vq.validation import check_k

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    import numpy.typing as npt

    from langchain_vq.filters import Filter
    from langchain_vq.quantization.base import Quantizer
    from langchain_vq.storage.fs import FileOps
    from langchain_vq.storage.manifest import FileEntry

logger = logging.getLogger(__name__)

MetricName = Literal["cosine", "dot", "l2"]
METRICS: dict[str, MetricName] = {
    "cosine": "cosine",
    "cos": "cosine",
    "dot": "dot",
    "ip": "dot",
    "inner_product": "dot",
    "max_inner_product": "dot",
    "l2": "l2",
    "euclidean": "l2",
}
#: Rows per segment written by one add; larger adds are split.
SEGMENT_MAX_ROWS = 1 << 20
#: Which segments an add merges in its commit (``merge_policy``): O(log n) segments after many adds.
MERGE_POLICY = MergePolicy(max_rows=SEGMENT_MAX_ROWS)
#: Row keys (``sample_rows``, ``search_keys``): segment index << ROW_KEY_SHIFT | row offset.
ROW_KEY_SHIFT = 40
_ROW_MASK = (1 << ROW_KEY_SHIFT) - 1
#: Vectors sampled to train a quantizer.
TRAIN_SAMPLE = 100_000
#: Stored vectors read back at a time to assign a segment's rows their lists (25 MB float32 at
#: 384 dims). Under glibc's largest mmap threshold (32 MB), so blocks after the first reuse the
#: heap instead of fresh pages the kernel must zero; and a multiple of ``_ivf``'s assignment
#: block, so rows are assigned in the same blocks as before (65,536: 100 MB fresh a block).
_ASSIGN_READ_ROWS = 16_384
#: Rows a grouped add encodes at a time (:func:`_encoded_in_order`): 6 MB of float32 at 384 dims.
_ENCODE_BLOCK_ROWS = 4096
#: Seconds a superseded version (and its files) survives ``compact``, for readers opening it.
CLEANUP_GRACE_SECONDS = 60.0
#: Times a reader retries opening the newest version when cleanup removed files under it.
_LOAD_ATTEMPTS = 5
#: ``settings`` key of the build ids committed by ``commit_segments`` (newest last), and how many are kept.
BUILDS_SETTING = "builds"
MAX_BUILDS_KEPT = 256
#: Settings of a new collection whose config leaves them unset.
DEFAULT_METRIC: MetricName = "cosine"
DEFAULT_QUANTIZATION = "binary"
#: Prefix of the int8 rescoring ranges' arrays in the quantizer state file.
_CODEC_PREFIX = "rescore."


def normalize_metric(metric: str) -> MetricName:
    """Map metric aliases onto ``"cosine"``, ``"dot"`` or ``"l2"``."""
    key = metric.lower() if isinstance(metric, str) else metric
    if key not in METRICS:
        msg = f"Unknown metric {metric!r}; expected one of 'cosine', 'dot', 'l2'."
        raise ConfigurationError(msg)
    return METRICS[key]


@dataclass(frozen=True)
class Row:
    """One stored row, as returned to callers."""

    id: str
    text: str
    metadata: dict[str, Any]
    score: float | None = None
    vector: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class Snapshot:
    """One immutable version of the collection; searches read it without locks."""

    version: int
    dim: int | None
    views: tuple[SegmentView, ...] = ()
    quantizer: Quantizer | None = None
    manifest: Manifest | None = None
    #: Store-level settings saved with the version (e.g. a recall calibration).
    settings: dict[str, Any] = field(default_factory=dict)
    #: How segments encoded by ``quantizer`` store their rescoring vectors (None: codes only).
    codec: VectorCodec | None = None

    @cached_property
    def live_rows(self) -> int:
        """Rows not deleted (a version never changes: counted once)."""
        return sum(v.live_count for v in self.views)


@dataclass(frozen=True)
class StagedChange:
    """What a :data:`SettingsHook` commits with the staged version: settings, and maybe a quantizer.

    ``quantizer`` replaces the staged version's quantizer when it only searches differently
    (a :class:`~langchain_vq.quantization._partitions.PartitionedQuantizer` copy with another
    ``nprobe``, ``with_nprobe``): same kind, same config but ``nprobe``, same learned arrays,
    so every stored code and list stays valid. Its state is written with the commit, so readers
    see the old quantizer or the new one with its settings, never a mix, and a reopened store
    uses the new one.
    """

    settings: dict[str, Any]
    quantizer: Quantizer | None = None


#: Called by a write (``add``, ``compact``, ``update_settings``) under the write lock with the
#: current version and the version about to be committed (``staged``, searchable through
#: ``sample_rows`` / ``search_keys``); the settings it returns (a dict, or a
#: :class:`StagedChange` that may also replace the quantizer's ``nprobe``) are committed in the
#: same commit, so a reader never sees the new rows without them. The store calibrates its
#: ``rescore_multiplier`` here.
SettingsHook = Callable[[Snapshot, Snapshot], "dict[str, Any] | StagedChange | None"]


@dataclass(frozen=True)
class CollectionConfig:
    """Settings fixed when a collection is created, and checked when it is reopened.

    A field left None means "the store's own setting" when a store is reopened, and the default
    (``DEFAULT_METRIC``, ``DEFAULT_QUANTIZATION``, no options) when one is created. The
    collection fills them from the manifest it opens, so reopening reads no file twice.
    """

    metric: str | None = None
    quantization: str | None = None
    quantizer_options: dict[str, Any] | None = None
    embedding_model: str | None = None
    #: Rescoring vectors: ``"float32"``, ``"float16"``, ``"int8"``, or ``"none"`` (codes only).
    rescore_precision: str | None = None

    def normalized(self) -> CollectionConfig:
        """The same request with aliases mapped to canonical names (raises on unknown ones)."""
        precision = self.rescore_precision
        return replace(
            self,
            metric=None if self.metric is None else normalize_metric(self.metric),
            quantization=(
                None if self.quantization is None else normalize_quantization(self.quantization) or "none"
            ),
            rescore_precision=None if precision is None else normalize_precision(precision) or CODES_ONLY,
        )


class Collection:
    """Rows with float vectors and quantized codes, as a sequence of committed versions."""

    def __init__(
        self,
        config: CollectionConfig | None = None,
        path: str | os.PathLike[str] | None = None,
        *,
        lock_timeout: float | None = 10.0,
        fs: FileOps | None = None,
    ) -> None:
        """Create an in-memory collection, or create or reopen the store at ``path``.

        Settings ``config`` leaves unset are taken from the store when it exists (read with the
        manifest the collection opens, retried if cleanup races it), else from the defaults.

        Raises:
            ConfigurationError: An unknown setting, or one that differs from the store's.
        """
        self._requested = (config or CollectionConfig()).normalized()
        quantization = self._requested.quantization or DEFAULT_QUANTIZATION
        #: The settings in effect: the request with every unset field filled.
        self.config = CollectionConfig(
            metric=self._requested.metric or DEFAULT_METRIC,
            quantization=quantization,
            quantizer_options=dict(self._requested.quantizer_options or {}),
            embedding_model=self._requested.embedding_model,
            rescore_precision=self._requested.rescore_precision
            or (LEGACY_PRECISION if quantization == "none" else DEFAULT_PRECISION),
        )
        _check_precision(self.config)
        _check_partition_options(self._requested)
        self.lock_timeout = lock_timeout
        self._mutex = threading.RLock()
        self._segments: dict[str, Segment] = {}  # open segments by name, reused across versions
        # ``fs``: the file operations writes go through (tests pass doubles from tests/reliability/faults.py).
        self.directory = StoreDirectory(path, fs) if path is not None else None
        if self.directory is None:
            self._snapshot = Snapshot(version=0, dim=None)
        elif self.directory.exists():
            self._snapshot = self._load_newest()
        else:
            manifest = Manifest(
                version=0,
                dim=None,
                metric=self.metric,
                quantization=self._quantization_entry(),
                embedding_model=self.config.embedding_model,
            )
            if self.directory.create(manifest):
                self._snapshot = Snapshot(version=0, dim=None, manifest=manifest)
            else:  # another process created the store at the same moment
                self._snapshot = self._load_newest()

    # -- reading state -----------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        """The version searches currently read."""
        return self._snapshot

    @property
    def metric(self) -> MetricName:
        """``"cosine"``, ``"dot"`` or ``"l2"``: the store's, or the default for a new one."""
        return normalize_metric(self.config.metric or DEFAULT_METRIC)

    @property
    def quantization(self) -> str:
        """``"binary"``, ``"int8"``, ``"pq"`` or ``"none"`` (exact search)."""
        return self.config.quantization or DEFAULT_QUANTIZATION

    @property
    def quantizer_options(self) -> dict[str, Any]:
        """Keyword options the quantizer is trained with."""
        return dict(self.config.quantizer_options or {})

    @property
    def rescore_precision(self) -> str:
        """``"float32"``, ``"float16"``, ``"int8"`` or ``"none"`` (a codes-only store)."""
        return self.config.rescore_precision or DEFAULT_PRECISION

    @property
    def kind(self) -> Literal["ip", "l2"]:
        """The similarity the engine ranks by."""
        return "l2" if self.metric == "l2" else "ip"

    def _quantization_entry(self) -> dict[str, Any]:
        return {
            "name": self.quantization,
            "options": self.quantizer_options,
            "rescore_precision": self.rescore_precision,
        }

    def _codec(self, dim: int) -> VectorCodec | None:
        """An unfitted codec of this collection's rescoring precision (None for codes only)."""
        if self.rescore_precision == CODES_ONLY:
            return None
        return VectorCodec(self.rescore_precision, dim, metric=self.kind)

    def _template(self, dim: int) -> Quantizer | None:
        """An unfitted quantizer of this collection's settings (None for exact search)."""
        if self.quantization == "none":
            return None
        return make_quantizer(self.quantization, dim, metric=self.kind, **self.quantizer_options)

    @property
    def auto_partitions(self) -> bool:
        """Whether the store chooses lists itself: its options leave ``partitions`` unset or "auto".

        Stores written before the option existed have no ``partitions`` in their options: they
        are "auto" too, and get lists on the add that finds them large enough.
        """
        return is_auto(self.quantizer_options.get("partitions"))

    def _partitions_due(
        self, quantizer: Quantizer | None, live_rows: int, views: Sequence[SegmentView] = ()
    ) -> bool:
        """Whether an "auto" store's quantizer gets lists now (``_partitions.AUTO_PARTITION_ROWS``).

        Only quantizers whose settings have a partitioned scan, not partitioned yet, and only
        when every live row has a stored vector to be assigned from (a codes-only store keeps
        the full scan).
        """
        return (
            isinstance(quantizer, PartitionedQuantizer)
            and not quantizer.partitioned
            and quantizer.can_partition
            and self.auto_partitions
            and live_rows >= _partitions.AUTO_PARTITION_ROWS
            and all(v.segment.has_vectors for v in views if v.live_count)
        )

    def _auto_partitioned(
        self,
        quantizer: Quantizer,
        sample: npt.NDArray[np.float32],
        live_rows: int,
        views: Sequence[SegmentView] = (),
    ) -> Quantizer:
        """``quantizer``, with lists trained on ``sample`` when :meth:`_partitions_due`."""
        if not self._partitions_due(quantizer, live_rows, views):
            return quantizer
        assert isinstance(quantizer, PartitionedQuantizer)  # noqa: S101 - checked by _partitions_due
        return quantizer.with_partitions(sample, _partitions.auto_partition_count(sample.shape[0]))

    def _load(self, manifest: Manifest) -> Snapshot:
        """Open the files of ``manifest``, checking them against the creation settings."""
        assert self.directory is not None  # noqa: S101
        self._adopt(manifest)
        quantizer = codec = None
        current = getattr(self, "_snapshot", None)
        if (
            current is not None
            and current.manifest is not None
            and manifest.quantizer_state is not None
            and current.manifest.quantizer_state == manifest.quantizer_state
        ):
            quantizer, codec = current.quantizer, current.codec  # same state: keep objects and caches
        elif manifest.quantizer_state is not None:
            config, state = self.directory.read_quantizer_state(manifest.quantizer_state)
            try:
                quantizer = quantizer_from_config(config, state)
                codec = self._codec(quantizer.dim)
                if codec is not None and codec.precision == "int8":
                    codec.set_state(
                        {k[len(_CODEC_PREFIX) :]: v for k, v in state.items() if k.startswith(_CODEC_PREFIX)}
                    )
            except (InvalidInputError, ConfigurationError) as exc:
                path = str(self.directory.path / manifest.quantizer_state.file)
                msg = f"Quantizer state {path} does not match its config ({exc}); it is damaged."
                raise CorruptStoreError(msg, path) from exc
        views = []
        for entry in manifest.segments:
            segment = self._segments.get(entry.name)
            if segment is None:
                segment = self.directory.read_segment(
                    entry, manifest.dim or 0, quantizer.code_size if quantizer else None
                )
            views.append(SegmentView(segment, self.directory.read_deletions(entry)))
        self._segments = {v.segment.name: v.segment for v in views}
        return Snapshot(
            manifest.version, manifest.dim, tuple(views), quantizer, manifest, dict(manifest.settings), codec
        )

    def _adopt(self, manifest: Manifest) -> None:
        """Check the requested settings against the store's and fill the unset ones from it."""
        stored = manifest.quantization or {}
        requested = self._requested
        if requested.metric is not None and manifest.metric != requested.metric:
            msg = (
                f"The store at {self.directory.path if self.directory else ''} uses metric "
                f"{manifest.metric!r}, but {requested.metric!r} was requested. Reopen it with "
                f"metric={manifest.metric!r} (or leave metric unset), or create a new store."
            )
            raise ConfigurationError(msg)
        if requested.quantization is not None and stored.get("name") != requested.quantization:
            msg = (
                f"The store uses quantization {stored.get('name')!r}, but "
                f"{requested.quantization!r} was requested. Reopen it without quantization= "
                "(it is read from the store) or build a new store with the other setting."
            )
            raise ConfigurationError(msg)
        precision = stored.get("rescore_precision", LEGACY_PRECISION)
        if requested.rescore_precision is not None and requested.rescore_precision != precision:
            msg = (
                f"The store keeps its rescoring vectors at precision {precision!r}, but "
                f"{requested.rescore_precision!r} was requested ('none' is a codes-only store, "
                "which rescore=False asks for). Reopen it without rescore_precision or rescore "
                "(they are read from the store), or build a new store with the other setting."
            )
            raise ConfigurationError(msg)
        options = requested.quantizer_options
        self.config = CollectionConfig(
            metric=manifest.metric,
            quantization=stored.get("name") or "none",
            quantizer_options=dict(stored.get("options") or {}) if options is None else dict(options),
            embedding_model=requested.embedding_model,
            rescore_precision=precision,
        )

    def _load_newest(self, current: int | None = None) -> Snapshot:
        """Open the newest version (None if it is ``current``), retrying if cleanup raced us.

        Cleanup keeps a superseded version's files for a grace period; a reader that stalled
        longer than that between reading a manifest and opening its files finds one missing.
        It then opens the newer version instead; damage of the newest version is raised.
        """
        assert self.directory is not None  # noqa: S101
        for _ in range(_LOAD_ATTEMPTS):
            newest = self.directory.latest_version()
            if newest == current:
                return self._snapshot
            try:
                return self._load(self.directory.read_manifest(newest))
            except CorruptStoreError:
                if self.directory.latest_version() == newest:
                    raise
        return self._load(self.directory.read_manifest())

    def refresh(self) -> bool:
        """Pick up versions committed by other writers; True if the version changed."""
        if self.directory is None:
            return False
        with self._mutex:
            before = self._snapshot.version
            self._snapshot = self._load_newest(current=before)
            return self._snapshot.version != before

    # -- validation --------------------------------------------------------------------------
    def check_vectors(self, vectors: npt.ArrayLike, what: str = "vectors") -> npt.NDArray[np.float32]:
        """Vectors as ``float32[n, dim]`` (normalized for cosine), or a typed error."""
        try:
            arr = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            msg = f"{what} must be numeric arrays of shape [n, dim]; could not convert: {exc}."
            raise InvalidInputError(msg) from exc
        dim = self._snapshot.dim
        if dim is None:
            if arr.ndim != 2 or arr.shape[1] == 0:
                msg = f"{what} must have shape [n, dim] with dim >= 1, got {list(arr.shape)}."
                raise InvalidInputError(msg)
            dim = arr.shape[1]
        try:
            out = as_float_matrix(arr, dim, what)
        except DimensionMismatchError as exc:
            msg = (
                f"{what} have dimension {arr.shape[-1] if arr.ndim else 0}, but this store holds "
                f"{dim}-dimensional vectors. Use the embedding model the store was built with, "
                "or create a new store for the other model."
            )
            raise DimensionMismatchError(msg) from exc
        if self.metric == "cosine":
            norms = np.linalg.norm(out, axis=1, keepdims=True)  # [n, 1]
            # A new float32 array (the caller's stays untouched), without a second cast copy.
            out = np.divide(out, np.where(norms == 0, 1, norms), dtype=np.float32)
        return np.ascontiguousarray(out)

    @staticmethod
    def check_metadatas(metadatas: Sequence[dict[str, Any] | None]) -> None:
        """A typed error naming the row, key and type of the first metadata value not storable."""
        check_metadatas(metadatas)

    # -- writes ------------------------------------------------------------------------------
    def add(
        self,
        ids: Sequence[str],
        texts: Sequence[str],
        metadatas: Sequence[dict[str, Any] | None],
        vectors: npt.NDArray[np.float32],
        *,
        settings_for: SettingsHook | None = None,
    ) -> None:
        """Add or replace rows in one commit; metadata becomes typed columns (format 2).

        A metadata value that cannot be stored raises ``InvalidInputError`` while the segments are
        built, before the commit: nothing is written. Callers with costly work before ``add``
        (embedding) check first with ``check_metadatas``. ``settings_for`` (see
        :data:`SettingsHook`) may add settings measured on the new version to the same commit.
        """
        if len(ids) == 0:
            return
        with self._writing() as current:
            dim = current.dim if current.dim is not None else vectors.shape[1]
            replaced = self._rows_of(current, list(ids))
            views = [
                SegmentView(v.segment, _union(v.deleted, replaced.get(i)))
                for i, v in enumerate(current.views)
            ]
            quantizer, codec = current.quantizer, current.codec
            total = sum(v.live_count for v in views) + len(ids)
            if quantizer is None:
                template = self._template(dim)
                if template is not None and total >= template.min_train_size:
                    sample = _sample_vectors([v for v in views if v.live_count], vectors, TRAIN_SAMPLE)
                    quantizer = self._auto_partitioned(template.fit(sample), sample, total, views)
                    codec = self._codec(dim)
                    codec = codec.fit(sample) if codec is not None else None
                    views = [_encoded_view(v, quantizer, codec) for v in views]
            elif self._partitions_due(quantizer, total, views):
                # The add that crosses the size: lists for every row, in this commit, codes kept.
                sample = _sample_vectors([v for v in views if v.live_count], vectors, TRAIN_SAMPLE)
                quantizer = self._auto_partitioned(quantizer, sample, total, views)
                views = [v for v in (_with_assigned_lists(v, quantizer) for v in views) if v.live_count]
            for start in range(0, len(ids), SEGMENT_MAX_ROWS):
                stop = start + SEGMENT_MAX_ROWS
                segment = build_segment(
                    uuid.uuid4().hex, ids[start:stop], texts[start:stop], metadatas[start:stop], None, None
                )
                views.append(_encoded_view(SegmentView(segment), quantizer, codec, vectors[start:stop]))
            views = _apply_merge_policy(views, quantizer)
            settings, quantizer = _staged_settings(settings_for, current, dim, views, quantizer, codec)
            self._publish(current, dim, views, quantizer, settings, codec=codec)

    def commit_segments(
        self,
        entries: Sequence[SegmentEntry],
        dim: int,
        quantizer: Quantizer | None,
        *,
        codec: VectorCodec | None = None,
        build_id: str | None = None,
    ) -> bool:
        """Commit segment files that other processes wrote into this store, as one new version.

        For distributed builds (``langchain_vq.ray``): workers write ``_segments/`` files with
        ``StoreDirectory.write_segment``; this opens and checks them, deletes the live rows
        their ids replace (upsert), and publishes them through the usual commit protocol.
        ``quantizer`` must be the store's own quantizer object when it has one (codes must
        compare), or the one the segments were encoded with when it has none (existing segments
        are then re-encoded in the same commit, as ``add`` does); ``codec`` likewise (the
        rescoring precision the segments' vectors were stored at). A ``build_id`` already listed
        in the settings means that build was committed before: nothing happens and False is
        returned, so a rerun after a crash commits once. With no entries, only the build id is
        committed (a shard that got no rows).

        Raises:
            ConfigurationError: The store has another quantizer (trained meanwhile) or dimension.
            InvalidInputError: An id occurs twice among the new segments.
            CorruptStoreError: A segment file does not match its entry.
        """
        if self.directory is None:
            msg = "commit_segments needs a store on disk; in-memory collections use add()."
            raise InvalidInputError(msg)
        with self._writing() as current:
            if build_id is not None and build_id in (current.settings.get(BUILDS_SETTING) or {}):
                return False
            if not entries:  # no rows for this store (a shard): still record the build, once
                if build_id is None:
                    return False
                settings = _with_build(current, build_id)
                self._publish(
                    current, current.dim, list(current.views), current.quantizer, settings, current.codec
                )
                return True
            self._check_external(current, dim, quantizer)
            if current.quantizer is not None and codec is not current.codec:
                msg = "The segments' rescoring codec is not the store's; run the build again."
                raise ConfigurationError(msg)
            code_size = quantizer.code_size if quantizer is not None else None
            new_views = []
            for entry in entries:
                if entry.has_codes != (quantizer is not None):
                    msg = f"Segment {entry.name}: has_codes={entry.has_codes} but quantizer={quantizer!r}."
                    raise ConfigurationError(msg)
                new_views.append(SegmentView(self.directory.read_segment(entry, dim, code_size)))
            new_ids = pa.chunked_array([v.segment.ids for v in new_views], pa.string()).combine_chunks()
            if len(pc.unique(new_ids)) != len(new_ids):
                counts = pc.value_counts(new_ids).to_pylist()
                twice = [c["values"] for c in counts if c["counts"] > 1][:5]
                msg = f"Ids occur more than once in one build: {twice}. Give every row its own id."
                raise InvalidInputError(msg)
            replaced = self._rows_of(current, new_ids.to_pylist())
            views = [
                SegmentView(v.segment, _union(v.deleted, replaced.get(i)))
                for i, v in enumerate(current.views)
            ]
            if quantizer is not None and current.quantizer is None:
                views = [_encoded_view(v, quantizer, codec) for v in views]
            new_settings = None if build_id is None else _with_build(current, build_id)
            views = [v for v in views if v.live_count] + new_views
            self._publish(
                current,
                dim,
                views,
                quantizer,
                new_settings,
                codec=codec,
                written={e.name: e.data for e in entries},
            )
            return True

    def _check_external(self, current: Snapshot, dim: int, quantizer: Quantizer | None) -> None:
        """Externally encoded segments fit this store: its dimension, and its quantizer if any."""
        if current.dim is not None and dim != current.dim:
            msg = (
                f"The new segments hold {dim}-dimensional vectors, but the store at "
                f"{self.directory.path if self.directory else ''} holds {current.dim}-dimensional "
                "ones. Build with the store's embedding model, or into a new store."
            )
            raise ConfigurationError(msg)
        if current.quantizer is not None and quantizer is not current.quantizer:
            msg = (
                f"The store at {self.directory.path if self.directory else ''} has a quantizer other "
                "than the one these segments were encoded with (it was trained while they were "
                "written). Run the build again: it then encodes with the store's quantizer."
            )
            raise ConfigurationError(msg)

    def delete(self, ids: Sequence[str] | None = None, *, filter: Filter | None = None) -> int:  # noqa: A002
        """Delete rows by id and/or metadata filter, on the newest version; returns how many.

        With neither, every row is deleted; with both, the given ids that match the filter.
        Missing ids are ignored.
        """
        if ids is not None and len(ids) == 0:
            return 0
        wanted = None if ids is None else array_of(list(ids), pa.string())
        with self._writing() as current:
            views = []
            for view in current.views:
                mask = filter.mask(view.segment) if filter is not None else None
                if wanted is not None:
                    rows = view.segment.rows_of_ids(wanted)
                    rows = rows if mask is None else rows[mask[rows]]
                else:
                    rows = np.arange(view.segment.rows) if mask is None else np.flatnonzero(mask)
                views.append(SegmentView(view.segment, _union(view.deleted, rows.astype(np.int64))))
            count = current.live_rows - sum(v.live_count for v in views)
            if count:
                views = [v for v in views if v.live_count]
                self._publish(current, current.dim, views, current.quantizer, codec=current.codec)
            return count

    def update_settings(
        self, changes: dict[str, Any] | None = None, *, settings_for: SettingsHook | None = None
    ) -> bool:
        """Commit a new version whose rows are unchanged and whose settings include ``changes``.

        ``settings_for`` (instead of ``changes``) measures them under the write lock, on the
        newest version, as in :meth:`add`; it may also replace the quantizer's ``nprobe``
        (:class:`StagedChange`). Returns whether a version was committed (not when the hook
        returns nothing).

        Raises:
            InvalidInputError: Both or neither of ``changes`` and ``settings_for`` are given.
        """
        if (changes is None) == (settings_for is None):
            found = "neither" if changes is None else "both"
            msg = (
                f"update_settings() got {found} of changes and settings_for; it takes exactly one: "
                "changes (a dict of settings) or settings_for (a hook measuring them)."
            )
            raise InvalidInputError(msg)
        with self._writing() as current:
            quantizer = current.quantizer
            if settings_for is None:
                assert changes is not None  # noqa: S101 - checked above
                settings: dict[str, Any] | None = {**current.settings, **changes}
            else:
                views = list(current.views)
                settings, quantizer = _staged_settings(
                    settings_for, current, current.dim, views, quantizer, current.codec
                )
                if settings is None:
                    return False
            self._publish(current, current.dim, list(current.views), quantizer, settings, current.codec)
            return True

    def compact(self, *, settings_for: SettingsHook | None = None) -> None:
        """Rewrite live rows into fresh segments, retrain the quantizer, drop unused files.

        The quantizer (and int8 rescoring ranges) are retrained from the stored vectors, read
        back as float32 (float16 and int8 rows are their reconstruction). A codes-only store has
        no vectors to retrain from: its compaction merges the live rows and their codes and drops
        deleted rows, keeping the quantizer it has. ``settings_for`` as in :meth:`add`: settings
        measured on the compacted version are committed with it.
        """
        with self._writing() as current:
            live = [v for v in current.views if v.live_count]
            quantizer, codec = None, None
            views: list[SegmentView] = []
            if live and not all(v.segment.has_vectors for v in live):  # codes only: merge, keep quantizer
                quantizer, codec = current.quantizer, current.codec
                parts = [Segment(v.segment.name, _live_table(v, drop=())) for v in live]
                merged = merge_segments(uuid.uuid4().hex, parts)
                views.extend(
                    SegmentView(merged.sliced(uuid.uuid4().hex, start, SEGMENT_MAX_ROWS))
                    for start in range(0, merged.rows, SEGMENT_MAX_ROWS)
                )
            elif live:
                vectors = np.concatenate([_live_vectors(v) for v in live])
                if current.dim is not None:
                    template = self._template(current.dim)
                    if template is not None and vectors.shape[0] >= template.min_train_size:
                        sample = _sample_vectors([], vectors, TRAIN_SAMPLE)
                        quantizer = self._auto_partitioned(template.fit(sample), sample, vectors.shape[0])
                        codec = self._codec(current.dim)
                        codec = codec.fit(sample) if codec is not None else None
                parts = [Segment(v.segment.name, _live_table(v)) for v in live]
                merged = merge_segments(uuid.uuid4().hex, parts, codes=False).table
                for start in range(0, merged.num_rows, SEGMENT_MAX_ROWS):
                    segment = Segment(uuid.uuid4().hex, merged.slice(start, SEGMENT_MAX_ROWS))
                    chunk = vectors[start : start + SEGMENT_MAX_ROWS]
                    views.append(_encoded_view(SegmentView(segment), quantizer, codec, chunk))
            settings, quantizer = _staged_settings(
                settings_for, current, current.dim, views, quantizer, codec
            )
            self._publish(current, current.dim, views, quantizer, settings, codec=codec, cleanup=True)

    def verify(self) -> list[str]:
        """Every problem found in the files of the current version (checksums included)."""
        if self.directory is None or self._snapshot.manifest is None:
            return []
        problems = self.directory.verify(self._snapshot.manifest)
        if problems:  # damaged files: their ids may not even decode
            return problems
        seen: set[str] = set()
        for view in self._snapshot.views:
            live_ids = (
                view.segment.ids.filter(bool_array(view.live_mask))
                if view.live_mask is not None
                else view.segment.ids
            )
            ids = live_ids.to_pylist()
            duplicates = seen.intersection(ids)
            if duplicates or len(set(ids)) != len(ids):
                problems.append(f"segment {view.segment.name}: duplicate live ids {sorted(duplicates)[:3]}")
            seen.update(ids)
        return problems

    # -- reads -------------------------------------------------------------------------------
    def live_ids(self) -> list[str]:
        """Ids of every live row of the current version, segment by segment."""
        out: list[str] = []
        for view in self._snapshot.views:
            ids = view.segment.ids
            if view.live_mask is not None:
                ids = ids.filter(bool_array(view.live_mask))
            out.extend(ids.to_pylist())
        return out

    def get(self, ids: Sequence[str]) -> list[Row]:
        """Rows with these ids, in the order asked; missing ids are skipped."""
        snapshot = self._snapshot
        found: dict[str, Row] = {}
        for index, rows in self._rows_of(snapshot, list(ids)).items():
            ids_, texts, metadatas = snapshot.views[index].segment.records(rows)
            for id_, text, meta in zip(ids_, texts, metadatas, strict=True):
                found[id_] = Row(id_, text, meta)
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
        """The ``k`` best live rows matching ``filter`` for each query vector, best first.

        Queries are checked (and normalized for cosine) here; an empty collection returns no
        rows without looking at them. The filter is evaluated per segment of the version
        searched, into the row masks the engine skips rows by.
        """
        k = check_k(k)
        snapshot = self._snapshot  # one version for the whole search
        if snapshot.live_rows == 0:
            return [[] for _ in range(np.shape(queries)[0])]
        checked = self.check_vectors(queries, "query embedding")
        masks: list[npt.NDArray[np.bool_] | None] | None = None
        if filter is not None:
            masks = [filter.mask(v.segment) for v in snapshot.views]
        hits = search_segments(
            list(snapshot.views),
            checked,
            min(k, snapshot.live_rows),
            kind=self.kind,
            quantizer=snapshot.quantizer,
            rescore=rescore,
            rescore_multiplier=rescore_multiplier,
            masks=masks,
        )
        return self._rows_of_hits(snapshot, hits, with_vectors=with_vectors)

    # -- measuring recall --------------------------------------------------------------------
    def sample_rows(
        self, n: int, *, seed: int = 0, snapshot: Snapshot | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Row keys ``[m]`` and float32 vectors ``[m, dim]`` of ``m = min(n, live rows)`` live rows.

        Drawn uniformly without replacement (seeded), in key order. A row key
        (``segment index << 40 | row offset``) names a row of one snapshot, so recall can be
        measured on keys without reading ids. ``snapshot`` defaults to the current version.
        """
        snapshot = self._snapshot if snapshot is None else snapshot
        live = [
            (np.int64(index) << ROW_KEY_SHIFT)
            + (np.arange(v.segment.rows) if v.live_mask is None else np.flatnonzero(v.live_mask))
            for index, v in enumerate(snapshot.views)
        ]
        keys = np.concatenate(live) if live else np.empty(0, dtype=np.int64)  # [live_rows]
        if keys.size > n:
            keys = np.sort(np.random.default_rng(seed).choice(keys, size=n, replace=False))
        vectors = np.empty((keys.size, snapshot.dim or 0), dtype=np.float32)
        segments = keys >> ROW_KEY_SHIFT
        for index in np.unique(segments).tolist():
            where = segments == index
            vectors[where] = self._vectors_of(
                snapshot, snapshot.views[index].segment, keys[where] & _ROW_MASK
            )
        return keys, vectors

    def search_keys(
        self,
        queries: npt.ArrayLike,
        k: int,
        *,
        exact: bool = False,
        rescore: bool = True,
        rescore_multiplier: int = 1,
        exclude: npt.NDArray[np.int64] | None = None,
        snapshot: Snapshot | None = None,
    ) -> npt.NDArray[np.int64]:
        """Row keys ``[n_queries, k]`` of the best live rows per query, best first (-1: none left).

        For measuring recall (``calibration``, ``evaluation``): ``exact`` ranks every live row by
        its float vector (the ground truth); otherwise the store's two-stage search runs as
        :meth:`search` does. ``exclude[i]``, a row key from :meth:`sample_rows` (or -1), is
        hidden from query ``i``: a stored row used as a query is not its own neighbour. The
        exact search drops it from ``k + 1`` results; the two-stage search masks it, one query
        per engine call, so the others still get exactly ``k * rescore_multiplier`` candidates.
        ``snapshot`` defaults to the current version (a writer passes the version it is about to
        commit).
        """
        k = check_k(k)
        snapshot = self._snapshot if snapshot is None else snapshot
        checked = self.check_vectors(queries, "query vectors")
        out = np.full((checked.shape[0], k), -1, dtype=np.int64)
        views = list(snapshot.views)
        quantizer = None if exact else snapshot.quantizer
        if snapshot.live_rows == 0:
            return out
        if exact and not all(v.segment.has_vectors for v in views if v.live_count):
            msg = (
                "This is a codes-only store (rescore=False): it keeps no vectors, so there is no "
                "exact search to measure recall against. Measure recall on a store with rescoring "
                "vectors (rescore_precision='float16' or 'float32'), or on held-out data."
            )
            raise ConfigurationError(msg)
        if exclude is not None and not exact:
            for i, (vector, key) in enumerate(zip(checked, exclude.tolist(), strict=True)):
                hits = search_segments(
                    views,
                    vector[None, :],
                    k,
                    kind=self.kind,
                    quantizer=quantizer,
                    rescore=rescore,
                    rescore_multiplier=rescore_multiplier,
                    masks=_masks_without(views, key),
                )
                out[i] = _row_keys(hits)[0]
            return out
        extra = 0 if exclude is None else 1
        chunk = 256 if exact else 64  # queries per call: bounds the [queries, rows] score blocks
        for start in range(0, checked.shape[0], chunk):
            hits = search_segments(
                views,
                checked[start : start + chunk],
                k + extra,
                kind=self.kind,
                quantizer=quantizer,
                rescore=rescore,
                rescore_multiplier=rescore_multiplier,
            )
            keys = _row_keys(hits)
            if exclude is None:
                out[start : start + chunk] = keys
                continue
            for j, row in enumerate(keys):
                kept = row[row != exclude[start + j]][:k]
                out[start + j, : kept.size] = kept
        return out

    def candidate_keys(
        self,
        queries: npt.NDArray[np.float32],
        n: int,
        *,
        exclude: npt.NDArray[np.int64] | None = None,
        snapshot: Snapshot | None = None,
    ) -> npt.NDArray[np.int64]:
        """Row keys ``[n_queries, n]`` of the code scan's best candidates, best code score first.

        For calibration: the order in which the two-stage search pools candidates before
        rescoring, so those of a smaller count are a prefix when the quantizer
        ``ranks_candidates_by_one_score``. Every segment with codes is scanned, however few its
        rows (the search itself scans one exactly when it has no more live rows than
        candidates); rows of segments without codes never appear. ``exclude`` hides a sampled
        query's own row as in :meth:`search_keys`. -1 marks places no row filled.
        """
        snapshot = self._snapshot if snapshot is None else snapshot
        views = list(snapshot.views)
        out = np.full((queries.shape[0], n), -1, dtype=np.int64)
        for i, vector in enumerate(queries):
            hits = search_segments(
                views,
                vector[None, :],
                n,
                kind=self.kind,
                quantizer=snapshot.quantizer,
                rescore=False,
                masks=None if exclude is None else _masks_without(views, int(exclude[i])),
                candidates_only=True,
            )
            out[i] = _row_keys(hits)[0]
        return out

    def list_ranks(
        self,
        queries: npt.NDArray[np.float32],
        keys: npt.NDArray[np.int64],
        *,
        snapshot: Snapshot | None = None,
    ) -> npt.NDArray[np.int64]:
        """``int64[n, j]``: the probe rank of the list holding row ``keys[i, j]`` for query ``i``.

        For telling lists that cap recall from codes that need more candidates: with ``keys``
        a query's exact top k (:meth:`search_keys`), ``nprobe`` lists can return the rows ranked
        below ``nprobe`` and no others (``PartitionedQuantizer.list_ranks``). Rows of segments
        without lists (scanned in full) rank 0; -1 keys stay -1.

        Raises:
            ConfigurationError: The version's quantizer has no lists.
        """
        snapshot = self._snapshot if snapshot is None else snapshot
        quantizer = snapshot.quantizer
        if not isinstance(quantizer, PartitionedQuantizer) or not quantizer.partitioned:
            msg = f"list_ranks() needs a store whose quantizer has lists; this one has {quantizer!r}."
            raise ConfigurationError(msg)
        keys = np.asarray(keys, dtype=np.int64)
        lists = np.full(keys.shape, -1, dtype=np.int64)
        unlisted = np.zeros(keys.shape, dtype=bool)
        segments = np.where(keys >= 0, keys >> ROW_KEY_SHIFT, -1)
        for index in np.unique(segments[segments >= 0]).tolist():
            where = segments == index
            stored = snapshot.views[index].segment.stored_codes
            if stored is None or stored.lists is None:
                unlisted |= where
                continue
            lists[where] = stored_lists(stored, quantizer.partitions)[keys[where] & _ROW_MASK]
        ranks = quantizer.list_ranks(queries, lists)
        ranks[unlisted] = 0
        return ranks

    @property
    def nprobe_given(self) -> bool:
        """Whether the user chose ``nprobe`` (the options asked now, or those the store was created with).

        Only an ``nprobe`` chosen at training may be raised by the store (``StagedChange``).
        """
        stored = self._snapshot.manifest.quantization if self._snapshot.manifest is not None else None
        created = (stored or {}).get("options") or {}
        return "nprobe" in self.quantizer_options or "nprobe" in created

    def ranked_candidates(self, snapshot: Snapshot | None = None) -> int:
        """Up to how many candidates per query :meth:`candidate_keys` ranks as searches pool them.

        Below this count, the candidates a search at ``n`` pools are the first ``n`` of
        :meth:`candidate_keys` (ties ordered by key); 0 when the quantizer does not rank by one
        score (``Quantizer.ranked_candidates`` over the segments' codes).
        """
        snapshot = self._snapshot if snapshot is None else snapshot
        arrays = [v.segment.stored_codes for v in snapshot.views if v.segment.stored_codes is not None]
        if snapshot.quantizer is None or not arrays:
            return 0
        return snapshot.quantizer.ranked_candidates(arrays)

    def _rows_of_hits(self, snapshot: Snapshot, hits: Hits, *, with_vectors: bool) -> list[list[Row]]:
        """Rows of the hits, per query best first; ties in score keep segment, then rank, order.

        Each segment's hits (of all queries) are read in one ``Segment.records`` call. The hits
        are grouped in Python, not by numpy calls, each slow on the caches a query's code scan
        has just flushed: one query's hits in 4 segments took 186 against 332 us (load 7); a
        batch of 1,000 queries 46 against 30 ms.
        """
        segments, rows, scores = hits.segments.tolist(), hits.rows.tolist(), hits.scores.tolist()
        places: dict[int, list[tuple[int, int]]] = {}  # segment index -> (query, rank), in order
        for query, of_query in enumerate(segments):
            for rank, index in enumerate(of_query):
                if index >= 0:
                    places.setdefault(index, []).append((query, rank))
        results: list[list[Row]] = [[] for _ in segments]
        for index in sorted(places):
            at = places[index]
            segment = snapshot.views[index].segment
            picked = np.array([rows[query][rank] for query, rank in at], dtype=np.int64)
            ids, texts, metadatas = segment.records(picked)
            vectors = self._vectors_of(snapshot, segment, picked) if with_vectors else None
            for j, (query, rank) in enumerate(at):
                vector = vectors[j] if vectors is not None else None
                results[query].append(Row(ids[j], texts[j], metadatas[j], scores[query][rank], vector))
        for row_list in results:
            row_list.sort(key=lambda r: -r.score if r.score is not None else math.inf)
        return results

    @staticmethod
    def _vectors_of(
        snapshot: Snapshot, segment: Segment, rows: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """Float32 vectors of ``rows``: stored ones decoded, or the codes' reconstruction (codes only)."""
        if segment.has_vectors:
            return np.array(float_rows(segment, rows), dtype=np.float32)
        assert snapshot.quantizer is not None  # noqa: S101 - a codes-only segment has codes
        assert segment.stored_codes is not None  # noqa: S101
        return snapshot.quantizer.decode(segment.stored_codes.take(rows))

    @staticmethod
    def _rows_of(snapshot: Snapshot, ids: list[str]) -> dict[int, npt.NDArray[np.int64]]:
        """Live row offsets per segment index for ``ids``."""
        if not ids:
            return {}
        wanted = array_of(ids, pa.string())  # not pa.array: it imports pandas
        found = {}
        for index, view in enumerate(snapshot.views):
            rows = view.segment.rows_of_ids(wanted)
            if view.live_mask is not None:
                rows = rows[view.live_mask[rows]]
            if rows.size:
                found[index] = rows
        return found

    # -- commit ------------------------------------------------------------------------------
    def _writing(self) -> _WriteContext:
        return _WriteContext(self)

    def _publish(
        self,
        current: Snapshot,
        dim: int | None,
        views: list[SegmentView],
        quantizer: Quantizer | None,
        settings: dict[str, Any] | None = None,
        codec: VectorCodec | None = None,
        written: dict[str, FileEntry] | None = None,
        *,
        cleanup: bool = False,
    ) -> None:
        """Commit ``views`` as the next version (writing only what changed) and switch to it.

        ``written``: files of new segments that are already on disk (``commit_segments``), by name.
        Files the new version no longer lists are then cleaned up (``cleanup``: always, also
        leftovers of failed commits).
        """
        version = current.version + 1
        settings = current.settings if settings is None else settings
        if self.directory is None:
            self._snapshot = Snapshot(version, dim, tuple(views), quantizer, settings=settings, codec=codec)
            return
        old = current.manifest
        assert old is not None  # noqa: S101
        old_entries = {s.name: s for s in old.segments}
        quantizer_entry = old.quantizer_state
        if quantizer is not current.quantizer:
            quantizer_entry = None
            if quantizer is not None:
                state = dict(quantizer.get_state())
                if codec is not None:  # int8 rescoring ranges travel with the quantizer they came with
                    state.update({_CODEC_PREFIX + k: v for k, v in codec.get_state().items()})
                quantizer_entry = self.directory.write_quantizer_state(quantizer.get_config(), state)
        entries = []
        for view in views:
            previous = old_entries.get(view.segment.name)
            if previous is not None:
                data = previous.data
            elif written is not None and view.segment.name in written:
                data = written[view.segment.name]
            else:
                blocked = quantizer is not None and quantizer.blocked_codes
                data = self.directory.write_segment(view.segment, blocked_codes=blocked)
            deletions = previous.deletions if previous and previous.deleted == view.deleted.size else None
            if view.deleted.size and deletions is None:
                deletions = self.directory.write_deletions(view.segment.name, version, view.deleted)
            entries.append(
                SegmentEntry(
                    name=view.segment.name,
                    rows=view.segment.rows,
                    data=data,
                    has_codes=view.segment.has_codes,
                    deleted=int(view.deleted.size),
                    deletions=deletions,
                    vectors=view.segment.precision,
                )
            )
        manifest = old.next(
            dim=dim,
            segments=tuple(entries),
            quantizer_state=quantizer_entry,
            embedding_model=old.embedding_model or self.config.embedding_model,
            settings=settings,
        )
        self.directory.commit(manifest)
        # Re-open new segments memory-mapped, so their floats leave the heap.
        self._snapshot = self._load(manifest)
        if cleanup or {f.file for f in old.files()} - {f.file for f in manifest.files()}:
            # A merge, compaction, retraining or new deletion file superseded files: remove those
            # no reader may still be opening (older than the grace period), so the disk holds
            # about one copy of the store, not every rewrite of it.
            self.directory.cleanup(manifest, CLEANUP_GRACE_SECONDS)


class _WriteContext:
    """Holds the in-process mutex and the store's file lock, on the newest version."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self._lock_cm: Any = None

    def __enter__(self) -> Snapshot:
        c = self.collection
        c._mutex.acquire()  # noqa: SLF001
        try:
            if c.directory is not None:
                self._lock_cm = c.directory.lock.hold(c.lock_timeout)
                self._lock_cm.__enter__()
                c.refresh()
        except BaseException:
            c._mutex.release()  # noqa: SLF001
            raise
        return c.snapshot

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is not None and self.collection.directory is not None:
                self.collection.directory.discard_uncommitted()  # files of the failed commit
            if self._lock_cm is not None:
                self._lock_cm.__exit__(*exc)
        finally:
            self.collection._mutex.release()  # noqa: SLF001


def _staged_settings(
    settings_for: SettingsHook | None,
    current: Snapshot,
    dim: int | None,
    views: list[SegmentView],
    quantizer: Quantizer | None,
    codec: VectorCodec | None,
) -> tuple[dict[str, Any] | None, Quantizer | None]:
    """The settings and quantizer to commit with ``views``: as staged, updated by ``settings_for``.

    Raises:
        ConfigurationError: The hook's replacement quantizer would not search the staged codes
            as they are (:func:`_check_replacement`).
    """
    if settings_for is None:
        return None, quantizer
    staged = Snapshot(
        current.version + 1, dim, tuple(views), quantizer, settings=current.settings, codec=codec
    )
    changes = settings_for(current, staged)
    if isinstance(changes, StagedChange):
        if changes.quantizer is not None and changes.quantizer is not quantizer:
            _check_replacement(quantizer, changes.quantizer)
            quantizer = changes.quantizer
        changes = changes.settings
    return ({**current.settings, **changes} if changes else None), quantizer


def _check_replacement(staged: Quantizer | None, replacement: Quantizer) -> None:
    """A replacement quantizer differs from the staged one in ``nprobe`` only, so no code or list changes.

    Raises:
        ConfigurationError: Another kind, another setting than ``nprobe``, or other learned arrays.
    """
    problem = None
    if staged is None or type(replacement) is not type(staged) or not staged.partitioned:
        problem = f"a {type(replacement).__name__} in place of {staged!r}, which has no lists"
    else:
        old, new = staged.get_config(), replacement.get_config()
        changed = sorted(key for key in {*old, *new} if key != "nprobe" and old.get(key) != new.get(key))
        old_state, new_state = staged.get_state(), replacement.get_state()
        if changed:
            problem = f"other settings {changed}"
        elif old_state.keys() != new_state.keys() or not all(
            np.array_equal(old_state[key], new_state[key]) for key in old_state
        ):
            problem = "other learned arrays"
    if problem is not None:
        msg = (
            f"A settings hook may replace the quantizer only by a copy with another nprobe "
            f"(PartitionedQuantizer.with_nprobe); got {problem}. Return the staged quantizer's "
            "with_nprobe() copy, or no quantizer."
        )
        raise ConfigurationError(msg)


def _masks_without(views: list[SegmentView], key: int) -> list[npt.NDArray[np.bool_] | None] | None:
    """Engine masks hiding the row ``key`` (a sampled query's own row); None for -1."""
    if key < 0:
        return None
    index = key >> ROW_KEY_SHIFT
    masks: list[npt.NDArray[np.bool_] | None] = [None] * len(views)
    mask = np.ones(views[index].segment.rows, dtype=bool)
    mask[key & _ROW_MASK] = False
    masks[index] = mask
    return masks


def _row_keys(hits: Hits) -> npt.NDArray[np.int64]:
    """Row keys ``[n, k]`` of engine hits; -1 where the engine padded."""
    return np.where(hits.segments >= 0, (hits.segments << ROW_KEY_SHIFT) + hits.rows, -1)


def _with_build(current: Snapshot, build_id: str) -> dict[str, Any]:
    """``current``'s settings with ``build_id`` recorded as committed by the next version."""
    builds = {**(current.settings.get(BUILDS_SETTING) or {}), build_id: current.version + 1}
    return {**current.settings, BUILDS_SETTING: dict(list(builds.items())[-MAX_BUILDS_KEPT:])}


def _union(deleted: npt.NDArray[np.int64], more: npt.NDArray[np.int64] | None) -> npt.NDArray[np.int64]:
    if more is None or more.size == 0:
        return deleted
    return np.union1d(deleted, more).astype(np.int64)


def _live_vectors(view: SegmentView) -> npt.NDArray[np.float32]:
    """The live rows' vectors as float32 (float16 and int8 rows are decoded)."""
    mask = view.live_mask
    return float_rows(view.segment, None if mask is None else np.flatnonzero(mask))


def _live_table(
    view: SegmentView, drop: tuple[str, ...] = ("vector", "codes", PARTITION_COLUMN, LIST_COLUMN)
) -> pa.Table:
    """The live rows of a segment, without the ``drop`` columns (re-encoded by the caller).

    Codes kept are row-major, with a list per row (``Segment.row_lists_table``): a filter of
    blocked codes would mix the rows of a block, and Arrow cannot filter list runs; merges
    regroup the rows by list.
    """
    table = view.segment.row_lists_table() if "codes" not in drop else view.segment.table
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table if view.live_mask is None else table.filter(bool_array(view.live_mask))


def _apply_merge_policy(views: list[SegmentView], quantizer: Quantizer | None = None) -> list[SegmentView]:
    """The views after the merges ``MERGE_POLICY`` plans, each merged segment where its first part was.

    Merges run inside the add's commit: the new version lists the merged segments instead of
    their parts in one manifest switch, so a crash leaves the previous version and readers keep
    searching the one they hold. Parts share one quantizer, so their codes are concatenated,
    not re-encoded; only live rows are kept. A merge left with no live rows is dropped. With a
    partitioning ``quantizer``, parts whose rows have no lists yet (written by an external build)
    are assigned from their stored vectors, so the merged segment keeps its lists.
    """
    groups = plan_merges([SegmentSize(v.segment.rows, int(v.deleted.size)) for v in views], MERGE_POLICY)
    if not groups:
        return views
    replaced: dict[int, SegmentView | None] = {}
    for group in groups:
        parts = [Segment(views[i].segment.name, _live_table(views[i], drop=())) for i in group]
        if quantizer is not None and quantizer.partitioned:
            parts = [_with_lists(part, quantizer) for part in parts]
        merged = merge_segments(uuid.uuid4().hex, parts)
        replaced.update(dict.fromkeys(group))
        replaced[group[0]] = SegmentView(merged) if merged.rows else None
    out = []
    for i, view in enumerate(views):
        if i not in replaced:
            out.append(view)
        elif (merged_view := replaced[i]) is not None:
            out.append(merged_view)
    return out


def _with_lists(part: Segment, quantizer: Quantizer) -> Segment:
    """``part`` with its rows' lists, assigned from its vectors when it has codes but no lists."""
    if part.lists is not None or part.codes is None or not part.has_vectors:
        return part
    return part.with_grouped_codes(part.codes, _assigned_lists(part, quantizer))[0]


def _sample_vectors(
    views: list[SegmentView], extra: npt.NDArray[np.float32], limit: int
) -> npt.NDArray[np.float32]:
    """Up to ``limit`` vectors drawn evenly (seeded) from live rows of ``views`` plus ``extra``.

    Only the sampled rows of ``views`` are read and decoded (a 200k-row store crossing the
    partitions threshold reads 100k rows, not all of them as float32).
    """
    lives = [np.arange(v.segment.rows) if v.live_mask is None else np.flatnonzero(v.live_mask) for v in views]
    sizes = [rows.size for rows in lives] + [extra.shape[0]]
    total = sum(sizes)
    if total <= limit:
        return np.ascontiguousarray(np.concatenate([_live_vectors(v) for v in views] + [extra]))
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(total, size=limit, replace=False))
    out, offset = [], 0
    for i, size in enumerate(sizes):
        local = picks[(picks >= offset) & (picks < offset + size)] - offset
        out.append(extra[local] if i == len(views) else float_rows(views[i].segment, lives[i][local]))
        offset += size
    return np.ascontiguousarray(np.concatenate(out))


def _with_assigned_lists(view: SegmentView, quantizer: Quantizer) -> SegmentView:
    """The view's live rows in a new segment (files are immutable), grouped by their lists.

    Each row's list is assigned from its stored vector (:func:`_assigned_lists`); codes are
    kept as they are. The segment is rewritten anyway, so deleted rows are dropped, not
    carried: its row numbers change, and no deletion has to be renumbered.
    """
    segment = view.segment
    if segment.codes is None:
        return view
    live = np.arange(segment.rows) if view.live_mask is None else np.flatnonzero(view.live_mask)
    table = _live_table(view, drop=())
    return SegmentView(
        Segment(uuid.uuid4().hex, grouped_table(table, _assigned_lists(segment, quantizer, live))[0])
    )


def _assigned_lists(
    segment: Segment, quantizer: Quantizer, rows: npt.NDArray[np.int64] | None = None
) -> npt.NDArray[np.uint16]:
    """The list of each of ``rows`` (all rows if None), from its stored vector.

    Read back a block of rows at a time: bounded float32 temporaries.
    """
    rows = np.arange(segment.rows) if rows is None else rows
    lists = np.empty(rows.size, np.uint16)
    for start in range(0, rows.size, _ASSIGN_READ_ROWS):
        stop = min(rows.size, start + _ASSIGN_READ_ROWS)
        lists[start:stop] = quantizer.assign(float_rows(segment, rows[start:stop]))
    return lists


def _encoded_view(
    view: SegmentView,
    quantizer: Quantizer | None,
    codec: VectorCodec | None,
    floats: npt.NDArray[np.float32] | None = None,
) -> SegmentView:
    """The view's segment encoded (:func:`_encoded`), its deletions following rows that moved."""
    segment, order = _encoded(view.segment, quantizer, codec, floats)
    return SegmentView(segment, moved_rows(view.deleted, order))


def _encoded(
    segment: Segment,
    quantizer: Quantizer | None,
    codec: VectorCodec | None,
    floats: npt.NDArray[np.float32] | None = None,
) -> tuple[Segment, npt.NDArray[np.int64] | None]:
    """The segment's rows with vectors and codes as ``quantizer`` and ``codec`` store them.

    ``floats`` are its rows as float32 (read back from the segment when not given). Before the
    quantizer is trained, vectors stay float32 and are searched exactly. A partitioning quantizer
    also gives each row its list, stored with the codes, so no search ever reassigns rows, and
    the rows are grouped by list (``storage.schema``): returned with the order they were taken
    in (None: unmoved), for ``moved_rows``. The result has a new name: files are immutable.
    """
    floats = float_rows(segment) if floats is None else floats
    order = None
    if quantizer is None:
        encoded = segment.with_vectors(floats)
    else:
        lists = quantizer.assign(floats) if quantizer.partitioned else None
        order = None if lists is None else list_order(lists)
        if order is not None:  # the rows grouped: encoded in list order, a block at a time
            assert lists is not None  # noqa: S101
            coded = ("vector", "codes", PARTITION_COLUMN, LIST_COLUMN)
            kept = [c for c in segment.table.column_names if c not in coded]
            segment = Segment(segment.name, take_rows(segment.table.select(kept), order))
            stored, codes = _encoded_in_order(floats, order, quantizer, codec)
            lists = lists[order]
        else:
            stored = None if codec is None else codec.encode(floats)
            codes = quantizer.encode(floats)
        encoded = segment.with_vectors(stored, None if codec is None else codec.field_metadata())
        encoded = encoded.with_codes(codes, lists)
    return Segment(uuid.uuid4().hex, encoded.table), order


def _encoded_in_order(
    floats: npt.NDArray[np.float32],
    order: npt.NDArray[np.int64],
    quantizer: Quantizer,
    codec: VectorCodec | None,
) -> tuple[npt.NDArray[Any] | None, npt.NDArray[np.uint8]]:
    """Stored vectors and codes of ``floats[order]``, encoded a block of rows at a time.

    Encoding is row by row, so the result is that of encoding the reordered rows at once; but
    no reordered float32 copy of all the rows is made (154 MB of fresh pages for 100k x 384,
    zeroed by the kernel on first write), only one small block, reused. Encoding 100k rows into
    a 200k-row store at load 3-5, four alternating runs: 0.54-0.55 s CPU (system 0.01) against
    0.53-0.86 s (system up to 0.29).
    """
    rows = order.size
    stored = None if codec is None else np.empty((rows, floats.shape[1]), codec.dtype)
    codes = np.empty((rows, quantizer.code_size), np.uint8)
    block = np.empty((min(rows, _ENCODE_BLOCK_ROWS), floats.shape[1]), np.float32)
    for start in range(0, rows, _ENCODE_BLOCK_ROWS):
        picked = order[start : start + _ENCODE_BLOCK_ROWS]
        taken = np.take(floats, picked, axis=0, out=block[: picked.size])
        if stored is not None and codec is not None:
            stored[start : start + picked.size] = codec.encode(taken)
        codes[start : start + picked.size] = quantizer.encode(taken)
    return stored, codes


def _check_partition_options(requested: CollectionConfig) -> None:
    """Requested ``partitions`` / ``nprobe`` options, checked when the store opens, not when trained.

    So a bad value fails before an application embeds its first batch (the other quantizer
    options are checked when the quantizer is built).
    """
    options = requested.quantizer_options or {}
    if requested.quantization in (None, "binary", "pq") and ("partitions" in options or "nprobe" in options):
        check_partition_options(options.get("partitions"), options.get("nprobe"))


def _check_precision(config: CollectionConfig) -> None:
    """Exact search (quantization "none") searches its vectors: they stay float32."""
    if config.quantization == "none" and config.rescore_precision != LEGACY_PRECISION:
        msg = (
            f"rescore_precision={config.rescore_precision!r} needs quantized codes, but quantization "
            "is 'none' (exact float32 search over the stored vectors). Leave rescore_precision unset, "
            "or choose quantization='binary', 'int8' or 'pq'."
        )
        raise ConfigurationError(msg)
