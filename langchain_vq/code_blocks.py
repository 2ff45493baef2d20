"""Codes in FAISS's 4-bit fast-scan layout: blocks of 32 rows, interleaved nibble by nibble.

FAISS's fast-scan kernels (``IndexPQFastScan``) read codes in blocks of 32 rows. Within a block,
code byte ``b`` of all 32 rows takes 32 bytes: the first 16 hold the low nibbles, the last 16 the
high nibbles, rows ``PERM[j]`` and ``PERM[j] + 16`` sharing byte ``j`` (FAISS's
``pq4_pack_codes``, reproduced here byte for byte and checked against it in the tests).

Building that layout from row-major codes is a pass over every code: 0.1-0.3 s at 1M rows, which
a new process paid on its first query. So a segment of a fast-scan store keeps its codes on disk
in this layout ("blocked"), in exactly the bytes row-major codes take: the full blocks first,
then the rows of the last, partial block as they are. Opening such a segment for search is one
copy of the file's bytes into FAISS; row-major codes, when a slower path needs them, are unpacked
on demand (:class:`StoredCodes`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

#: Rows per fast-scan block (FAISS's ``bbs``).
BLOCK_ROWS = 32
#: Field-metadata key of a stored ``codes`` column, and its value for the blocked layout.
LAYOUT_KEY = b"langchain_vq.codes_layout"
BLOCKED = b"blocks32"
#: Row of a block whose nibbles sit at place ``j`` of the 16 (and row ``PERM[j] + 16``).
_PERM = np.array([0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15])
#: Place ``j`` of row ``s % 16`` within its 16 (the inverse of ``_PERM``).
_PLACE = np.argsort(_PERM)


def pack_blocks(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Row-major ``uint8[n, B]`` codes in the block layout, padded with zero rows to 32.

    Returns ``uint8[ceil(n / 32) * 32 * B]``, the bytes FAISS's ``IndexPQFastScan.codes`` holds.
    """
    n, width = codes.shape
    padded_rows = -(-n // BLOCK_ROWS) * BLOCK_ROWS
    if padded_rows != n:
        codes = np.concatenate([codes, np.zeros((padded_rows - n, width), np.uint8)])
    rows = codes.reshape(-1, BLOCK_ROWS, width)
    first, second = rows[:, _PERM, :], rows[:, _PERM + 16, :]  # [blocks, 16, B] each
    out = np.empty((rows.shape[0], width, 2, 16), np.uint8)
    out[:, :, 0, :] = ((first & 15) | (second << 4)).transpose(0, 2, 1)
    out[:, :, 1, :] = ((first >> 4) | (second & 0xF0)).transpose(0, 2, 1)
    return out.reshape(-1)


def unpack_blocks(blocks: npt.NDArray[np.uint8], rows: int, width: int) -> npt.NDArray[np.uint8]:
    """The first ``rows`` row-major codes of ``width`` bytes held by ``blocks`` (inverse of packing)."""
    packed = blocks.reshape(-1, width, 2, 16)
    low, high = packed[:, :, 0, :], packed[:, :, 1, :]  # [blocks, B, 16]
    out = np.empty((packed.shape[0], BLOCK_ROWS, width), np.uint8)
    out[:, _PERM, :] = ((low & 15) | (high << 4)).transpose(0, 2, 1)
    out[:, _PERM + 16, :] = ((low >> 4) | (high & 0xF0)).transpose(0, 2, 1)
    return out.reshape(-1, width)[:rows]


def to_blocked(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """``uint8[n, B]`` as stored blocked: the full blocks packed, then the last rows as they are."""
    full = codes.shape[0] // BLOCK_ROWS * BLOCK_ROWS
    stored = np.empty_like(codes)
    stored[:full] = pack_blocks(codes[:full]).reshape(full, codes.shape[1])
    stored[full:] = codes[full:]
    return stored


class StoredCodes:
    """A segment's codes as stored, row-major or blocked, read without unpacking where possible.

    Rows of blocked codes are gathered from the blocks (a selective filter's rows, codes-only
    rescoring): about 1 us per row, against 0.2 us from row-major codes
    (``benchmarks/measure_code_blocks.py``). So the first
    gather also starts unpacking all rows in a background thread (0.1 s per 1M rows, then
    48 MB per 1M 384-dim rows of RAM), and later gathers read that copy once it is there. Both
    give the same bytes, so what a search returns never depends on which one served it.

    Args:
        stored: ``uint8[n, B]``, the stored bytes (a zero-copy view of the file).
        blocked: Whether ``stored`` is in the blocked layout (see the module docstring).
        lists: ``uint16[n]``, each row's partition (inverted-file list) when the quantizer
            partitions rows and they were assigned (``partitions=`` of the binary or PQ
            quantizer), else None: such codes are scanned in full. A format-3 segment's rows
            are grouped by list, so its lists are sorted (expanded from the stored runs, see
            ``Segment.lists``) and its lists are packed without a sort.
    """

    def __init__(
        self,
        stored: npt.NDArray[np.uint8],
        *,
        blocked: bool = False,
        lists: npt.NDArray[np.uint16] | None = None,
    ) -> None:
        self.stored = stored
        self.blocked = blocked
        self.lists = lists
        self._unpacked: npt.NDArray[np.uint8] | None = None if blocked else stored
        self._unpacking: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, code bytes)``, as for row-major codes."""
        return self.stored.shape[0], self.stored.shape[1]

    @property
    def _full_rows(self) -> int:
        return self.stored.shape[0] // BLOCK_ROWS * BLOCK_ROWS

    @property
    def row_major(self) -> npt.NDArray[np.uint8]:
        """Row-major codes: the stored view itself, or all rows unpacked (once)."""
        unpacked = self._unpacked
        if unpacked is not None:
            return unpacked
        with self._lock:
            thread = self._unpacking
        if thread is not None:
            thread.join()
        if self._unpacked is None:  # no thread started, or it failed (its error is raised here)
            self._unpack()
        assert self._unpacked is not None  # noqa: S101 - set by _unpack
        return self._unpacked

    def _unpack(self) -> None:
        self._unpacked = self.unpacked()

    def unpacked(self) -> npt.NDArray[np.uint8]:
        """Row-major codes for one use: the kept copy if there is one, else a new one that is not kept.

        Building a partitioned index reads every row once; keeping that copy (as
        :attr:`row_major` does) would hold 48 MB per 1M 384-dim rows beside the index's own.
        """
        if self._unpacked is not None:
            return self._unpacked
        full, width = self._full_rows, self.stored.shape[1]
        out = np.empty_like(self.stored)
        out[:full] = unpack_blocks(self.stored[:full].reshape(-1), full, width)
        out[full:] = self.stored[full:]
        return out

    def take(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """Row-major codes of ``rows`` (any order), gathered without unpacking the rest."""
        rows = np.asarray(rows, dtype=np.int64)
        unpacked = self._unpacked
        if unpacked is not None:
            return unpacked[rows]
        with self._lock:
            if self._unpacking is None:  # later gathers will read the unpacked copy
                self._unpacking = threading.Thread(target=self._unpack, name="unpack-codes", daemon=True)
                self._unpacking.start()
        width, full = self.stored.shape[1], self._full_rows
        out = np.empty((rows.size, width), np.uint8)
        tail = rows >= full
        out[tail] = self.stored[rows[tail]]
        packed = rows[~tail]
        slot = packed % BLOCK_ROWS
        place = _PLACE[slot % 16]
        # Byte b of a row: its low nibble at [block, b, place], its high one at [block, b, place + 16]
        # (of the row's half: the low nibbles of those bytes for slots 0-15, the high ones above).
        blocks = self.stored[:full].reshape(-1, width, BLOCK_ROWS)
        low, high = blocks[packed // BLOCK_ROWS, :, place], blocks[packed // BLOCK_ROWS, :, place + 16]
        upper = slot >= 16
        low[upper] >>= 4
        high[upper] >>= 4
        out[~tail] = (low & 15) | (high << 4)
        return out

    def block_bytes(self) -> int:
        """Bytes of the block layout: rows padded to a multiple of 32, times the code bytes."""
        return -(-self.stored.shape[0] // BLOCK_ROWS) * BLOCK_ROWS * self.stored.shape[1]

    def blocks(
        self, width: int | None = None, out: npt.NDArray[np.uint8] | None = None
    ) -> npt.NDArray[np.uint8]:
        """The codes in FAISS's block layout, over their first ``width`` bytes.

        Written into ``out`` when given (FAISS's own buffer: one copy of blocked codes, no
        temporary), else into a new array. ``width`` below the stored bytes (padding FAISS does
        not read) is only possible for row-major codes.
        """
        stored_width = self.stored.shape[1]
        width = stored_width if width is None else width
        if not self.blocked:
            packed = pack_blocks(np.ascontiguousarray(self.stored[:, :width]))
            if out is None:
                return packed
            out[:] = packed
            return out
        if width != stored_width:
            msg = f"Blocked codes hold {stored_width} bytes per row; cannot read {width}."
            raise ValueError(msg)
        full = self._full_rows
        out = np.empty(self.block_bytes(), np.uint8) if out is None else out
        out[: full * width] = self.stored[:full].reshape(-1)
        out[full * width :] = pack_blocks(np.ascontiguousarray(self.stored[full:]))
        return out
