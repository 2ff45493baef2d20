"""One hierarchy of typed errors.

Every class is also a built-in (``ValueError``, ``KeyError``, ``OSError``) so callers that
already catch those keep working. Messages say what was found, what was expected, and the fix.

Which class a mistake raises (one rule, whatever function or constructor it is passed to):

* A **value** that is wrong in itself raises :class:`InvalidInputError`: its type, range, shape
  or syntax (``k=0``, ``rescore_multiplier=0``, ``recall_target=1.5``, ``chunk_size=0``,
  PQ ``m`` above the dimension, a malformed filter, a NaN vector), or two arguments of one call
  that contradict each other (``rescore_multiplier`` together with ``recall_target``).
  Subclasses narrow it (:class:`DimensionMismatchError`, :class:`InvalidFilterError`).
* A **name** of a component that is not available, or a **setting that disagrees with what it
  meets**, raises :class:`ConfigurationError`: an unknown quantization, metric, quantizer
  option, evaluation mode, embedding model or chat model; reopening a store with another
  metric or quantization than it was created with; a saved quantizer state that does not fit
  its config; an embedding model other than the store's.
* Problems of files raise :class:`StoreError` (the store) or :class:`SourceError` (documents to
  load) subclasses; using a quantizer before ``fit`` raises :class:`NotFittedError`; an optional
  package that is not installed raises :class:`MissingDependencyError` naming the extra.

Both :class:`InvalidInputError` and :class:`ConfigurationError` are ``ValueError``s, so
``except ValueError`` catches either.
"""

from __future__ import annotations


class VQError(Exception):
    """Base class of every error raised by langchain_vq."""


class InvalidInputError(VQError, ValueError):
    """A value is wrong in itself: type, range, shape or syntax (``k <= 0``, a bad vector...)."""


class DimensionMismatchError(InvalidInputError):
    """A vector's dimension differs from the store's dimension."""


class InvalidFilterError(InvalidInputError):
    """A metadata filter is malformed; ``where`` names the offending part (e.g. ``$or[1].year``)."""

    def __init__(self, message: str, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


class ConfigurationError(VQError, ValueError):
    """An unknown component name, or a setting that disagrees with the store or state it meets."""


class MissingDependencyError(VQError, ImportError):
    """An optional package is not installed; ``extra`` names the langchain-vq extra that brings it."""

    def __init__(self, message: str, *, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


class NotFittedError(VQError, RuntimeError):
    """A quantizer was used before ``fit`` gave it its learned state."""


class StoreError(VQError, OSError):
    """A problem with a store on disk."""


class NotAStoreError(StoreError):
    """The path exists but is not a langchain_vq store (a file, or another format)."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock."""


class CommitConflictError(StoreError):
    """Another writer committed the version this writer tried to commit."""


class CorruptStoreError(StoreError):
    """A file of the store is damaged, missing, or fails its checksum."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreWriteError(StoreError):
    """A store file could not be written (disk full, permission denied, I/O error).

    The store stays at its previous version; ``errno`` and ``filename`` are those of the failed
    operation, so callers can still test ``exc.errno == errno.ENOSPC``.
    """

    def __init__(self, message: str, path: str | None = None, errno: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.filename = path
        self.errno = errno

    def __str__(self) -> str:
        """The message alone (``OSError`` would prefix ``[Errno n]`` once ``errno`` is set)."""
        return str(self.args[0])


class ShardUnavailableError(StoreError):
    """A shard of a sharded store did not answer in time, or failed after its retries."""


class UnsupportedFormatError(StoreError):
    """The store was written by a newer, unknown format version."""


class SourceError(VQError, OSError):
    """A document source (a file or folder given to a loader) cannot be loaded."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SourceNotFoundError(SourceError, FileNotFoundError):
    """A file or folder to load does not exist."""


class UnreadableSourceError(SourceError, PermissionError):
    """A file or folder to load exists but cannot be read (permissions, I/O error)."""


class BinarySourceError(SourceError):
    """A file to load holds binary data, not UTF-8 text."""


class EmptySourceError(SourceError):
    """A folder to load holds no file of a supported type."""


class UnsupportedSourceError(SourceError):
    """A file to load has a type the loader does not read (see ``loaders.SUPPORTED_SUFFIXES``)."""


class InvalidSourceError(SourceError):
    """A file to load is text but malformed (e.g. a ``.jsonl`` line that is not a JSON object)."""
