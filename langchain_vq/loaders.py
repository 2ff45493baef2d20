"""Load ``.txt``, ``.md`` and ``.jsonl`` files (and folders of them) into chunked ``Document``s.

Every chunk gets a stable id made of its file's resolved path and its index in that file
(``/abs/path/notes.md#3``), so indexing the same files again replaces rows instead of adding
duplicates. Loading reads, decodes and splits every file before returning, so a caller that
writes only afterwards never commits part of a bad batch.

.. code-block:: python

    from langchain_vq.loaders import load_sources

    sources = load_sources(["docs/", "notes.txt"], chunk_size=1000, chunk_overlap=100)
    chunks = [doc for source in sources for doc in source.chunks]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from langchain_vq.errors import (
    BinarySourceError,
    EmptySourceError,
    InvalidSourceError,
    SourceNotFoundError,
    UnreadableSourceError,
    UnsupportedSourceError,
)
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from langchain_text_splitters import TextSplitter

#: File types the loader reads (lower-case suffixes).
SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".jsonl")
_MARKDOWN = (".md", ".markdown")
#: Characters per chunk, and characters shared by neighbouring chunks. 1,000 characters is about
#: 250 word pieces, the input limit of all-MiniLM-L6-v2.
DEFAULT_CHUNK_SIZE = 1000
DEFAULT_CHUNK_OVERLAP = 100
#: Bytes inspected for NUL bytes, the mark of a binary file.
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class SourceFile:
    """One loaded file: its path, the ``source`` string used in ids and metadata, its chunks."""

    path: Path
    source: str
    chunks: tuple[Document, ...]


def chunk_id(source: str, index: int) -> str:
    """The stable id of chunk ``index`` of the file ``source``."""
    return f"{source}#{index}"


def source_name(path: str | os.PathLike[str]) -> str:
    """The ``source`` string of a file: its absolute, symlink-free path."""
    return Path(path).resolve().as_posix()


def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Supported files named by ``paths`` (files, or folders searched recursively), deduplicated.

    Raises:
        SourceNotFoundError: a path does not exist.
        UnreadableSourceError: a folder cannot be listed.
        UnsupportedSourceError: a file named directly has an unsupported type.
        EmptySourceError: a folder holds no supported file, or ``paths`` is empty.
    """
    found: dict[Path, None] = {}
    given = list(paths)
    if not given:
        msg = f"No paths given; pass files ({', '.join(SUPPORTED_SUFFIXES)}) or folders holding them."
        raise EmptySourceError(msg)
    for raw in given:
        path = Path(raw)
        if not path.exists():
            kind = "Broken symbolic link" if path.is_symlink() else "Path"
            msg = f"{kind} {raw} does not exist; pass an existing file or folder."
            raise SourceNotFoundError(msg, path=str(raw))
        if path.is_dir():
            files = _folder_files(path)
            found.update(dict.fromkeys(files))
        elif path.suffix.lower() in SUPPORTED_SUFFIXES:
            found[path.resolve()] = None
        else:
            msg = (
                f"File {raw} has type {path.suffix or '(no suffix)'!r}; expected one of "
                f"{', '.join(SUPPORTED_SUFFIXES)}. Convert it to text or rename it if it is text."
            )
            raise UnsupportedSourceError(msg, path=str(raw))
    return list(found)


def _folder_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    skipped = 0

    def fail(exc: OSError) -> None:
        msg = f"Folder {exc.filename or folder} cannot be read ({exc.strerror}); check its permissions."
        raise UnreadableSourceError(msg, path=str(exc.filename or folder)) from exc

    for root, dirs, names in os.walk(folder, onerror=fail):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in SUPPORTED_SUFFIXES:
                files.append(Path(root, name).resolve())
            else:
                skipped += 1
    if not files:
        other = f" ({skipped} file(s) of other types were skipped)" if skipped else ""
        msg = (
            f"Folder {folder} holds no {', '.join(SUPPORTED_SUFFIXES)} files{other}; "
            "pass a folder with text files in it."
        )
        raise EmptySourceError(msg, path=str(folder))
    return files


def read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped).

    Raises:
        UnreadableSourceError: the file cannot be opened or read.
        BinarySourceError: the file holds NUL bytes or is not valid UTF-8.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"File {path} cannot be read ({exc.strerror or exc}); check its permissions."
        raise UnreadableSourceError(msg, path=str(path)) from exc
    if b"\x00" in data[:_SNIFF_BYTES]:
        msg = f"File {path} is binary (it holds NUL bytes), not text; remove it or pass text files only."
        raise BinarySourceError(msg, path=str(path))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = (
            f"File {path} is not UTF-8 text (invalid byte at offset {exc.start}); it is binary or "
            "in another encoding. Convert it to UTF-8 or leave it out."
        )
        raise BinarySourceError(msg, path=str(path)) from exc


def load_file(path: Path) -> list[Document]:
    """The documents of one file, before splitting: one per ``.txt``/``.md``, one per ``.jsonl`` line."""
    text = read_text(path)
    source = source_name(path)
    if path.suffix.lower() == ".jsonl":
        return _jsonl_documents(text, path, source)
    metadata: dict[str, Any] = {"source": source}
    title = _markdown_title(text) if path.suffix.lower() in _MARKDOWN else None
    metadata["title"] = title or path.stem
    return [Document(page_content=text, metadata=metadata)] if text.strip() else []


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def _jsonl_documents(text: str, path: Path, source: str) -> list[Document]:
    docs = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"Line {where} is not valid JSON ({exc.msg}); expected one JSON object per line."
            raise InvalidSourceError(msg, path=str(path)) from exc
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            msg = (
                f"Line {where} has no string 'text' field; expected objects like "
                '{"text": "...", "id": "...", "title": "...", "metadata": {...}}.'
            )
            raise InvalidSourceError(msg, path=str(path))
        metadata: dict[str, Any] = {}
        extra = record.get("metadata")
        if extra is not None and not isinstance(extra, dict):
            msg = f"Line {where}: 'metadata' is {type(extra).__name__}, expected an object."
            raise InvalidSourceError(msg, path=str(path))
        metadata.update(extra or {})
        metadata.update({k: v for k, v in record.items() if k not in {"text", "id", "metadata"}})
        if record.get("id") is not None:
            metadata["record_id"] = str(record["id"])
        metadata.update({"source": source, "line": line_no})
        if record["text"].strip():
            docs.append(Document(page_content=record["text"], metadata=metadata))
    return docs


def make_splitter(
    suffix: str, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
) -> TextSplitter:
    """A ``RecursiveCharacterTextSplitter`` for the file type (Markdown splits at headings first)."""
    check_chunking(chunk_size, chunk_overlap)
    from langchain_text_splitters import Language, RecursiveCharacterTextSplitter

    if suffix.lower() in _MARKDOWN:
        return RecursiveCharacterTextSplitter.from_language(
            Language.MARKDOWN, chunk_size=chunk_size, chunk_overlap=chunk_overlap
        )
    return RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def check_chunking(chunk_size: object, chunk_overlap: object) -> None:
    """Raise ``InvalidInputError`` unless ``0 <= chunk_overlap < chunk_size``."""
    size = check_int(chunk_size, "chunk_size", fix="It counts characters per chunk.")
    check_int(
        chunk_overlap,
        "chunk_overlap",
        minimum=0,
        maximum=size - 1,
        fix=f"Neighbouring chunks must share fewer characters than a chunk holds ({size}).",
    )


def split_file(
    path: Path, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
) -> SourceFile:
    """Load and split one file into chunks with stable ids and ``chunk`` metadata."""
    splitter = make_splitter(path.suffix, chunk_size, chunk_overlap)
    source = source_name(path)
    pieces = [p for p in splitter.split_documents(load_file(path)) if p.page_content.strip()]
    chunks = tuple(
        Document(id=chunk_id(source, i), page_content=p.page_content, metadata={**p.metadata, "chunk": i})
        for i, p in enumerate(pieces)
    )
    return SourceFile(path=path, source=source, chunks=chunks)


def load_sources(
    paths: Sequence[str | os.PathLike[str]],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
) -> list[SourceFile]:
    """Find, read and split every file under ``paths``; raises before returning anything on error.

    A file with no text gives a ``SourceFile`` with no chunks (so indexing it removes its old
    chunks). Errors are ``langchain_vq.errors.SourceError`` subclasses naming the file.
    """
    check_chunking(chunk_size, chunk_overlap)
    return [split_file(path, chunk_size, chunk_overlap) for path in find_files(paths)]
