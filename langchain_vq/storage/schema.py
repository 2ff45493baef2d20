"""Arrow schemas of the on-disk format, declared in one place.

A segment is one Arrow IPC file holding one record batch::

    id              string                         not null, unique among live rows of a store
    text            string                         not null
    metadata.<key>  the key's type                 format 2: one typed column per metadata key
                                                   (integers: the narrowest of int8 .. int64)
    metadata        string                         format 1: JSON object, not null; format 2: the
                    (format 2: string or null)     tagged-JSON fallback, null for most rows; of
                                                   type null when no row of the segment needs it
    vector          fixed_size_list<T>[dim]        the rescoring vectors at the store's precision:
                                                   float32, float16, or uint8 (int8 levels, with
                                                   the ranges in the field's metadata); absent in
                                                   a codes-only store once its quantizer is fitted
    codes           fixed_size_binary[code_size]   present once the quantizer is fitted
    list            run_end_encoded<int32, uint16> format 3: the rows' inverted-file lists, when
                                                   the quantizer partitions rows (``partitions=``
                                                   of the binary or PQ quantizer). The rows are
                                                   grouped by list, so the column is one run per
                                                   non-empty list, in increasing list order: its
                                                   run ends are the list boundaries (about 6 bytes
                                                   per list, none per row)
    partition       uint16                         older segments (format 2): each row's list, rows
                                                   in any order; still read, and rewritten grouped
                                                   by the next merge or compaction. Segments with
                                                   neither column are scanned in full

Format-2 segment files carry ``SEGMENT_FORMAT_KEY`` in their schema metadata.

Why a run-end-encoded column for the list boundaries rather than offsets in schema metadata:
it is a column of the record batch, so the file's checksum and Arrow's own validation cover it,
its type says what it is to any Arrow reader, and a row operation that forgets it fails loudly
(Arrow cannot filter or take such a column) instead of carrying boundaries that no longer fit
the rows, as copied schema metadata would.

Fixed-size types keep vectors and codes as one contiguous buffer each, so a memory-mapped file is
viewed as ``float32[n, dim]`` and ``uint8[n, code_size]`` without copying.
"""

from __future__ import annotations

import pyarrow as pa

#: Version of the on-disk format. A reader refuses a store written with a newer one. Version 2
#: stores metadata as typed columns; a version-1 store opens as it is, and its first commit
#: writes a version-2 manifest (its old segments stay readable until merged or compacted).
#: Version 3 keeps a partitioned store's rows grouped by list (the ``list`` column). A version-2
#: reader would refuse such a segment as damaged (its schema has a column it does not know), so
#: the version says instead that the store needs a newer library; version-2 stores open as they
#: are and their ``partition`` segments stay readable until merged or compacted.
FORMAT_VERSION = 3
#: Marker written in every manifest so that other JSON files are never mistaken for a store.
FORMAT_NAME = "langchain_vq"

#: Format 2: each metadata key is a column named ``metadata.<key>`` (see ``storage.metadata``);
#: the ``metadata`` column holds, as tagged JSON, only what has no column (null for most rows).
METADATA_PREFIX = "metadata."
FALLBACK_METADATA = "metadata"
#: Types the format-2 fallback column may have: ``null`` when no row of the segment needs it.
FALLBACK_TYPES = (pa.string(), pa.null())
#: Schema-level key of format-2 segment files; its value is the segment's format version.
SEGMENT_FORMAT_KEY = b"langchain_vq.segment_format"

#: Element type of the ``vector`` column per rescoring precision ("none": no column).
VECTOR_TYPES: dict[str, pa.DataType] = {"float32": pa.float32(), "float16": pa.float16(), "int8": pa.uint8()}
#: Field-metadata keys of an int8 ``vector`` column: per-dimension level 0 and step, float32 bytes.
INT8_LO_KEY = b"langchain_vq.int8_lo"
INT8_SCALE_KEY = b"langchain_vq.int8_scale"


def vector_field(
    dim: int, precision: str = "float32", metadata: dict[bytes, bytes] | None = None
) -> pa.Field:
    """The ``vector`` field of ``dim`` values at ``precision`` (``"float32"``, ``"float16"``, ``"int8"``)."""
    item = pa.field("item", VECTOR_TYPES[precision], nullable=False)
    return pa.field("vector", pa.list_(item, dim), nullable=False, metadata=metadata)


def precision_of(field: pa.Field | None) -> str:
    """The rescoring precision a ``vector`` field holds (``"none"`` when there is no field)."""
    if field is None:
        return "none"
    value_type = field.type.value_type
    return next((name for name, t in VECTOR_TYPES.items() if t == value_type), str(value_type))


#: Format 2: the column of each row's partition (inverted-file list), stored beside ``codes``.
PARTITION_COLUMN = "partition"
PARTITION_FIELD = pa.field(PARTITION_COLUMN, pa.uint16(), nullable=False)
#: Format 3: the rows' lists as runs (rows grouped by list), stored beside ``codes``.
LIST_COLUMN = "list"
LIST_FIELD = pa.field(LIST_COLUMN, pa.run_end_encoded(pa.int32(), pa.uint16()), nullable=False)

DELETIONS_SCHEMA = pa.schema([pa.field("row", pa.uint32(), nullable=False)])

QUANTIZER_STATE_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("shape", pa.list_(pa.int64()), nullable=False),
        pa.field("data", pa.large_binary(), nullable=False),
    ]
)


def segment_schema(
    dim: int,
    code_size: int | None,
    metadata_fields: list[pa.Field] | None = None,
    precision: str = "float32",
    vector_metadata: dict[bytes, bytes] | None = None,
    fallback_type: pa.DataType | None = None,
    *,
    partitioned: bool = False,
    grouped: bool = False,
) -> pa.Schema:
    """Schema of a segment with vectors of ``dim`` values and, if given, codes of ``code_size``.

    ``metadata_fields`` (format 2): one field per metadata key, named ``metadata.<key>``; the
    ``metadata`` column then holds only the fallback and may be null, of ``fallback_type``
    (``FALLBACK_TYPES``; string when not given). Without it: format 1, all metadata as one JSON
    object per row. ``precision`` is the ``vector`` column's (format 1 is
    always float32); ``"none"`` leaves the column out. With codes, ``grouped`` adds the ``list``
    column after them (format 3), ``partitioned`` the older ``partition`` column.
    """
    typed = metadata_fields is not None
    fallback = fallback_type if typed and fallback_type is not None else pa.string()
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        *(metadata_fields or []),
        pa.field(FALLBACK_METADATA, fallback, nullable=typed),
    ]
    if precision != "none":
        fields.append(vector_field(dim, precision, vector_metadata))
    if code_size is not None:
        fields.append(pa.field("codes", pa.binary(code_size), nullable=False))
        if grouped:
            fields.append(LIST_FIELD)
        elif partitioned:
            fields.append(PARTITION_FIELD)
    return pa.schema(fields, metadata={SEGMENT_FORMAT_KEY: b"2"} if typed else None)
