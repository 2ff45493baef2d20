"""The quantizer side of partitioned stores: options, stored lists' checks, indexes and state.

Shared by the quantizers with a ``partitions`` option (binary and 4-bit PQ; the kernels, k-means
and the probe are in ``_ivf``), so their options read and fail alike and their partitioned scans
are built one way (:class:`PartitionedQuantizer`).

``partitions="auto"`` (the default) leaves the choice to the store: a quantizer alone has no
lists, and a store (``Collection``) gives it lists (:meth:`PartitionedQuantizer.with_partitions`)
in the add or ``compact()`` whose live rows reach :data:`AUTO_PARTITION_ROWS`
(:func:`auto_partition_count` lists). Why a size: each at the multiplier its calibration chose
for recall 0.99, the partitioned scan lost to the full scan on 100k real sentences (1.03-1.1x
the time), was even at 200k (0.97-1.04x real, 0.95x synthetic; PQ 0.67x / 0.90x at 199k), and
ran 1.6x faster at 1M synthetic rows (``benchmarks/measure_auto_partitions.py``,
``results/auto_partitions.json``, ``results/ivf.json``).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.errors import ConfigurationError, InvalidInputError
from langchain_vq.quantization._common import state_array
from langchain_vq.quantization._ivf import (
    MAX_PARTITIONS,
    MIN_ROWS_PER_PARTITION,
    IVFFastScan,
    ListProjection,
    ProbedScan,
    _centroid_scores,
    assign_partitions,
    choose_nprobe,
    default_nprobe,
    joined_ivf_scan,
    project_lists,
    train_partitions,
)
from langchain_vq.quantization.base import Quantizer
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    from typing_extensions import Self

    from langchain_vq.code_blocks import StoredCodes
    from langchain_vq.quantization._fast_scan import FastScanCache, JoinedFastScan


#: The ``partitions`` value that leaves lists to the store (also spelled None).
AUTO = "auto"
#: Live rows from which a store with ``partitions="auto"`` keeps lists: the add (or ``compact()``)
#: that reaches it trains them and assigns every row.
AUTO_PARTITION_ROWS = 200_000
#: Lists a store trains when it crosses :data:`AUTO_PARTITION_ROWS` (fewer if its training
#: sample holds fewer than 39 rows per list).
AUTO_PARTITIONS = 1024


def auto_partition_count(training_rows: int) -> int:
    """Lists an "auto" store trains on ``training_rows`` sampled rows: :data:`AUTO_PARTITIONS`, or fewer.

    One count for every size from the threshold on: the lists a store trains when it crosses
    the threshold keep serving it as it grows (``compact()`` trains them again).
    """
    return max(1, min(AUTO_PARTITIONS, training_rows // MIN_ROWS_PER_PARTITION))


def is_auto(partitions: object) -> bool:
    """Whether a ``partitions`` option leaves the lists to the store (``"auto"`` or None)."""
    return partitions is None or (isinstance(partitions, str) and partitions.lower() == AUTO)


def check_partition_options(partitions: object, nprobe: object) -> tuple[int, int | None, bool]:
    """``(partitions, nprobe, auto)`` checked; ``nprobe`` None means "choose it at training".

    ``"auto"`` (or None) is 0 lists with ``auto`` True: the store adds lists once it is large.

    Raises:
        InvalidInputError: ``partitions`` is neither ``"auto"`` nor an integer in ``[0, 65536]``,
            ``nprobe`` is given without a number of partitions, or is not in ``[1, partitions]``.
    """
    if is_auto(partitions):
        if nprobe is not None:
            msg = (
                f"nprobe={nprobe!r} was given without a number of partitions (partitions={partitions!r}: "
                "the store chooses lists and nprobe once it is large); give partitions a number "
                "too, or drop nprobe."
            )
            raise InvalidInputError(msg)
        return 0, None, True
    if isinstance(partitions, str):
        msg = (
            f"partitions={partitions!r} is not a partition option; expected 'auto' (the default: "
            "the store partitions its rows once it is large), 0 (always scan every code) or a "
            "number of lists such as 1024."
        )
        raise InvalidInputError(msg)
    count = check_int(
        partitions,
        "partitions",
        minimum=0,
        maximum=MAX_PARTITIONS,
        fix="Use 0 to scan every code, or about sqrt(rows), e.g. 1024 for 1M rows.",
    )
    if nprobe is None:
        return count, None, False
    if not count:
        msg = f"nprobe={nprobe!r} was given without partitions; set partitions > 0 or drop nprobe."
        raise InvalidInputError(msg)
    nprobe = check_int(nprobe, "nprobe", maximum=count, fix=f"Probe between 1 and all {count} lists.")
    return count, nprobe, False


def stored_lists(codes: StoredCodes, partitions: int) -> npt.NDArray[np.integer[Any]]:
    """``codes.lists``, checked to hold one list in ``[0, partitions)`` per code row.

    Raises:
        InvalidInputError: The lists have another length or name a list past the last.
    """
    lists = codes.lists
    assert lists is not None  # noqa: S101 - only codes with lists are searched by partition
    if lists.shape != (codes.shape[0],) or (lists.size and int(lists.max()) >= partitions):
        top = int(lists.max()) if lists.size else None
        msg = (
            f"Stored lists are {lists.dtype}{list(lists.shape)} with largest {top}, expected "
            f"one list in [0, {partitions}) per code row ({codes.shape[0]}). Assign rows with "
            "this quantizer's assign()."
        )
        raise InvalidInputError(msg)
    return lists


class PartitionedQuantizer(Quantizer):
    """A quantizer with a ``partitions`` option: its lists' indexes, ``nprobe`` and saved centroids.

    Subclasses set ``partitions``, ``nprobe``, ``auto_partitions`` and an ``_ivf_scans`` cache
    in ``__init__``, ``partition_centroids_`` when fitted, say which 4-bit codebooks their codes
    index (:meth:`_fine_codebooks`) and whether their settings have a partitioned scan
    (:attr:`can_partition`). :meth:`fit` and :meth:`with_partitions` then find the centroids'
    principal axes (``_ivf.project_lists``), and rows are assigned on them
    (``partition_projection_``); a state saved before projections existed has none, and its
    rows keep being assigned by scoring every centroid in full, as its stored lists were.
    """

    partitions: int
    nprobe: int | None
    #: Whether ``fit`` chooses ``nprobe`` (none given).
    _choose_nprobe: bool
    #: ``partitions="auto"``: no lists of its own; a store adds them once it is large.
    auto_partitions: bool
    partition_centroids_: npt.NDArray[np.float32]
    #: The axes rows are assigned on (``_ivf.ListProjection``); None: every centroid is scored in
    #: full (few lists, or a state saved before projections existed).
    partition_projection_: ListProjection | None = None
    _ivf_scans: FastScanCache[IVFFastScan]

    @abstractmethod
    def _fine_codebooks(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp] | None]:
        """``(codebooks [sub-codes, 16, sub-dim], dimension order or None)`` of the stored codes."""

    def fit(self, x: npt.ArrayLike) -> Self:
        """Learn the state (``Quantizer.fit``); with ``partitions``, also the axes rows are assigned on."""
        self.partition_projection_ = None
        super().fit(x)
        if self.partitions:
            # The axes choose_nprobe assigned the training rows on (derived alike).
            self.partition_projection_ = project_lists(self.partition_centroids_, self.metric)
        return self

    @property
    def partitioned(self) -> bool:
        """With ``partitions``: rows get a list to store with their codes."""
        return self.partitions > 0

    @property
    @abstractmethod
    def can_partition(self) -> bool:
        """Whether these settings have a partitioned scan (a store may give "auto" ones lists)."""

    def with_partitions(self, x: npt.ArrayLike, partitions: int) -> Self:
        """A copy of this fitted quantizer with ``partitions`` k-means lists trained on ``x``.

        The codes stay the same (the partitioned scan reads them through the same 4-bit
        codebooks as the full scan), so a store adding lists re-encodes nothing: it assigns
        each row its list. ``nprobe`` is chosen on ``x`` as ``fit`` chooses it
        (``_ivf.choose_nprobe``). The copy's config names the count (``partitions=N``).

        Raises:
            ConfigurationError: These settings have no partitioned scan, or the quantizer is
                already partitioned.
            InvalidInputError: ``partitions`` is out of range, or ``x`` holds fewer than 39
                rows per list.
        """
        self._check_fitted()
        if not self.can_partition or self.partitioned:
            msg = (
                f"with_partitions() needs an unpartitioned {type(self).__name__} whose settings "
                f"have a partitioned scan; this one has partitions={self.partitions} and "
                f"config {self.get_config()}. Build it with partitions='auto' and fast_scan / nbits=4."
            )
            raise ConfigurationError(msg)
        x = self._check_vectors(x)
        count, _, _ = check_partition_options(partitions, None)
        if count < 1 or x.shape[0] < count * MIN_ROWS_PER_PARTITION:
            msg = (
                f"with_partitions() got {x.shape[0]} training rows for partitions={partitions!r}; "
                f"expected at least 1 list and {MIN_ROWS_PER_PARTITION} rows per list. Pass more "
                "rows or ask for fewer lists."
            )
            raise InvalidInputError(msg)
        config = self.get_config()
        config.pop("name")
        dim = config.pop("dim")
        copy = type(self)(dim, **{**config, "partitions": count, "nprobe": None})
        centroids = train_partitions(x, count, self.metric)
        state = {**self.get_state(), "partition_centroids": centroids}
        projection = project_lists(centroids, self.metric)  # the axes choose_nprobe assigns on
        if projection is not None:
            state["partition_projection"] = projection.axes
        copy.set_state(state)
        copy.nprobe = choose_nprobe(x, centroids, self.metric, projection=projection or "flat")
        return copy

    def assign(self, x: npt.ArrayLike) -> npt.NDArray[np.uint16]:
        """``uint16[n]``: the list of each vector of ``x`` (its nearest partition centroid).

        Computed from the float vectors when rows are encoded and stored with their codes
        (``StoredCodes.lists``), so searches never reassign.

        Raises:
            ConfigurationError: The quantizer has no partitions.
        """
        if not self.partitions:
            msg = f"assign() needs a {type(self).__name__} with partitions > 0; this one has none."
            raise ConfigurationError(msg)
        self._check_fitted()
        vectors = self._check_vectors(x)
        projection = self.partition_projection_
        if projection is None:
            return assign_partitions(self.partition_centroids_, vectors, self.metric, "flat")
        return assign_partitions(self.partition_centroids_, vectors, self.metric, projection)

    def with_nprobe(self, nprobe: int) -> Self:
        """A copy of this partitioned quantizer that probes ``nprobe`` lists per query.

        Lists, codes and every learned array stay the same, so a store can commit the copy in
        place of its quantizer (``Collection``'s :data:`~langchain_vq.collection.SettingsHook`)
        without touching a row: ``choose_nprobe`` measured the lists on the training sample's
        neighbours, and a calibration on the grown store may find that they cap recall
        (``VQVectorStore._measure``). Whether ``nprobe`` may change (the user's is kept) is the
        store's decision; the copy's config names the new one.

        Raises:
            ConfigurationError: The quantizer has no partitions.
            InvalidInputError: ``nprobe`` is not in ``[1, partitions]``.
        """
        if not self.partitions:
            msg = f"with_nprobe() needs a {type(self).__name__} with partitions > 0; this one has none."
            raise ConfigurationError(msg)
        self._check_fitted()
        count = self.partitions
        nprobe = check_int(nprobe, "nprobe", maximum=count, fix=f"Probe between 1 and all {count} lists.")
        config = self.get_config()
        config.pop("name")
        dim = config.pop("dim")
        copy = type(self)(dim, **{**config, "nprobe": nprobe})
        return copy.set_state(self.get_state())

    def list_ranks(self, queries: npt.ArrayLike, lists: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``int64[n, j]``: the rank of list ``lists[i, j]`` in query ``i``'s probe order; -1 stays -1.

        Rank 0 is the list a query probes first, so ``nprobe`` lists hold the rows whose list
        ranks below ``nprobe``: with each true neighbour's stored list, the share of a query's
        neighbours that ``nprobe`` lists can return at all, whatever the candidates asked. A
        list's rank is the number of lists scoring above it for the query (ties: those of lower
        number), as ``_ivf.neighbour_list_ranks`` counts for ``choose_nprobe``.

        Raises:
            ConfigurationError: The quantizer has no partitions.
            InvalidInputError: ``lists`` is not ``[n, j]`` for ``n`` queries, or names a list
                past the last.
        """
        if not self.partitions:
            msg = f"list_ranks() needs a {type(self).__name__} with partitions > 0; this one has none."
            raise ConfigurationError(msg)
        self._check_fitted()
        q = self._check_vectors(queries)
        wanted = np.asarray(lists, dtype=np.int64)
        if (
            wanted.ndim != 2
            or wanted.shape[0] != q.shape[0]
            or (wanted.size and wanted.max() >= self.partitions)
        ):
            msg = (
                f"list_ranks() got lists of shape {list(wanted.shape)} for {q.shape[0]} queries; "
                f"expected [{q.shape[0]}, j] of list numbers below {self.partitions} (-1: none)."
            )
            raise InvalidInputError(msg)
        scores = _centroid_scores(q, self.partition_centroids_, self.metric)  # [n, lists]
        ranks = np.full(wanted.shape, -1, dtype=np.int64)
        numbers = np.arange(self.partitions)
        for i in range(q.shape[0]):  # [j, lists] at a time: bounded temporaries
            known = wanted[i] >= 0
            own_lists = wanted[i][known]
            own = scores[i][own_lists]
            ahead = (scores[i][None, :] > own[:, None]) | (
                (scores[i][None, :] == own[:, None]) & (numbers[None, :] < own_lists[:, None])
            )
            ranks[i][known] = ahead.sum(axis=1)
        return ranks

    @property
    def lists_probed(self) -> int:
        """Lists a query probes: ``nprobe``, or the default of a hand-made config without one."""
        return self._nprobe_now()

    def _nprobe_now(self) -> int:
        """Lists probed per query: ``nprobe``, or a default for a hand-made config without one."""
        return self.nprobe or default_nprobe(self.partitions)

    def ranked_candidates(self, arrays: Sequence[StoredCodes]) -> int:
        """Every row, or with lists the fewest rows that any ``nprobe`` lists of ``arrays`` hold.

        A query whose probed lists hold fewer rows than a search asks for gets every list
        (``_ivf.probe``), a larger set than the probed lists' best rows at a smaller count; below
        the fewest rows any ``nprobe`` lists hold no query does. Arrays that are all listed are
        probed as one joined index (a store's segments), others one by one.
        """
        rows = super().ranked_candidates(arrays)
        listed = [codes for codes in arrays if codes.lists is not None]
        nprobe = self._nprobe_now()
        if not rows or not self.partitioned or not listed or nprobe >= self.partitions:
            return rows
        joined = len(arrays) > 1 and len(listed) == len(arrays)
        groups = [listed] if joined else [[codes] for codes in listed]
        held = []
        for group in groups:
            lists = [stored_lists(codes, self.partitions) for codes in group]
            counts = np.bincount(np.concatenate(lists), minlength=self.partitions)
            held.append(int(np.sort(counts)[:nprobe].sum()))
        return min(rows, *held)

    def _build_ivf(self, codes: StoredCodes) -> IVFFastScan:
        lists = stored_lists(codes, self.partitions)
        fine, order = self._fine_codebooks()
        return IVFFastScan(codes, lists, self.partition_centroids_, fine, self.metric, order)

    def _build_joined_ivf(self, arrays: Sequence[StoredCodes]) -> ProbedScan:
        for codes in arrays:
            stored_lists(codes, self.partitions)
        fine, order = self._fine_codebooks()
        return joined_ivf_scan(arrays, self.partition_centroids_, fine, self.metric, order)

    def _joined_partitioned(self, arrays: list[StoredCodes]) -> JoinedFastScan | None:
        """The joined partitioned scan of arrays that all carry lists; None when some do not.

        Arrays some of which have lists and some not (an external build) are searched one by one.
        """
        if not all(a.lists is not None for a in arrays):
            return None
        joined = self._ivf_scans.get_joined(arrays, self._build_joined_ivf, padded=False)
        assert isinstance(joined.index, ProbedScan)  # noqa: S101 - built by _build_joined_ivf
        joined.index.nprobe = self._nprobe_now()
        return joined

    def get_state(self) -> dict[str, npt.NDArray[Any]]:
        """The learned arrays; with ``partitions`` the lists' centroids and assignment axes.

        ``partition_centroids``, and when rows are assigned on principal axes
        ``partition_projection`` (``float32[dim, axes]``).
        """
        state = super().get_state()
        if self.partitions:
            state["partition_centroids"] = self.partition_centroids_.copy()
            if self.partition_projection_ is not None:
                state["partition_projection"] = self.partition_projection_.axes.copy()
        return state

    def set_state(self, state: dict[str, npt.NDArray[Any]]) -> Self:
        """Restore ``get_state`` output; with ``partitions`` it must hold the lists' centroids.

        A state without ``partition_projection`` (saved before projections existed) assigns rows
        by scoring every centroid in full, as its stored lists were assigned.

        Raises:
            ConfigurationError: An array is missing, of another shape, or not finite.
        """
        centroids, projection = None, None
        if self.partitions:
            owner = type(self).__name__
            shape = (self.partitions, self.dim)
            centroids = state_array(state, "partition_centroids", shape, np.float32, owner)
            if "partition_projection" in state:
                axes = np.asarray(state["partition_projection"])
                count = axes.shape[1] if axes.ndim == 2 and 0 < axes.shape[1] <= self.dim else 0
                shape = (self.dim, count or self.dim)
                projection = ListProjection(
                    state_array(state, "partition_projection", shape, np.float32, owner)
                )
        super().set_state(state)
        if centroids is not None:
            self.partition_centroids_ = centroids
            self.partition_projection_ = projection
        return self
