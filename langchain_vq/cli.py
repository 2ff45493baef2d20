"""The ``langchain-vq`` command: index files, search, inspect, verify, compact, and chat.

.. code-block:: bash

    langchain-vq index stores/docs docs/ notes.txt --chunk-size 1000 --chunk-overlap 100
    langchain-vq search stores/docs "how do I pretty-print JSON?" -k 5
    langchain-vq info stores/docs
    langchain-vq verify stores/docs
    langchain-vq compact stores/docs
    langchain-vq chat stores/docs --question "What does shutil.copytree do?"
    langchain-vq eval stores/docs --modes binary,int8 --target 0.99 --plot eval.png

Expected errors (missing files, damaged stores, bad options) print one line to stderr and exit
with status 1; usage errors exit with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from langchain_vq.calibration import DEFAULT_K, DEFAULT_MULTIPLIERS, DEFAULT_TARGET
from langchain_vq.errors import ConfigurationError, InvalidInputError, NotAStoreError, VQError
from langchain_vq.evaluation.settings import DEFAULT_MAX_ROWS, DEFAULT_TIMED
from langchain_vq.evaluation.settings import DEFAULT_SAMPLE as DEFAULT_EVAL_SAMPLE
from langchain_vq.loaders import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, SUPPORTED_SUFFIXES
from langchain_vq.validation import check_int

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from langchain_vq.storage import StoreDirectory
    from langchain_vq.vectorstore import VQVectorStore

PROG = "langchain-vq"
#: Embedding models loaded by this process, by name (tests and repeated calls share them).
_MODELS: dict[str, Embeddings] = {}


class CommandError(VQError, RuntimeError):
    """A command cannot run as asked (exit status 1)."""


class _NoEmbeddings(Embeddings):
    """Stands in for the model in commands that never embed (verify, compact)."""

    def __init__(self, model_name: str | None) -> None:
        self.model_name = model_name

    def embed_documents(self, texts: list[str]) -> list[list[float]]:  # noqa: ARG002
        msg = "This command does not embed text."
        raise CommandError(msg)

    def embed_query(self, text: str) -> list[float]:  # noqa: ARG002
        msg = "This command does not embed text."
        raise CommandError(msg)


# -- helpers ---------------------------------------------------------------------------------
def _directory(path: str, *, must_exist: bool = True) -> StoreDirectory:
    from langchain_vq.storage import StoreDirectory

    directory = StoreDirectory(path)
    if must_exist and not directory.exists():
        msg = f"No store at {path}; build one with: {PROG} index {path} FILES_OR_FOLDERS"
        raise NotAStoreError(msg)
    return directory


def _recorded_model(directory: StoreDirectory) -> str | None:
    return directory.read_manifest().embedding_model if directory.exists() else None


def get_embeddings(model: str | None, recorded: str | None = None) -> Embeddings:
    """The sentence-transformers model ``model`` (default: the store's, else all-MiniLM-L6-v2)."""
    from langchain_vq.embeddings import DEFAULT_MODEL, DEFAULT_MODEL_ALIASES

    def canonical(name: str) -> str:
        return DEFAULT_MODEL if name in DEFAULT_MODEL_ALIASES else name

    name = canonical(model or recorded or DEFAULT_MODEL)
    if recorded is not None and canonical(recorded) != name:
        msg = (
            f"The store was built with embedding model {recorded!r}, but --model {model!r} was "
            "given. Leave --model out to use the store's model, or index into a new store."
        )
        raise ConfigurationError(msg)
    if name not in _MODELS:
        from langchain_vq.embeddings import SentenceTransformerEmbeddings

        _MODELS[name] = SentenceTransformerEmbeddings(name)
    return _MODELS[name]


def _open(path: str, model: str | None = None, *, embed: bool = True) -> VQVectorStore:
    from langchain_vq.vectorstore import VQVectorStore

    directory = _directory(path)
    recorded = _recorded_model(directory)
    embeddings = get_embeddings(model, recorded) if embed else _NoEmbeddings(recorded)
    return VQVectorStore(embeddings, path)


def _name(embeddings: Embeddings) -> str:
    return str(getattr(embeddings, "model_name", None) or type(embeddings).__name__)


def _label(doc: Any) -> str:
    from langchain_vq.chat import source_label

    return source_label(doc)


def _print(*parts: object) -> None:
    print(*parts)  # noqa: T201


def _say(*parts: object) -> None:
    print(*parts, file=sys.stderr)  # noqa: T201


# -- commands --------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    """Load, split, embed and upsert files; delete chunks that vanished from them."""
    from langchain_vq.indexing import index_path
    from langchain_vq.loaders import load_sources

    sources = load_sources(args.paths, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
    chunks = sum(len(s.chunks) for s in sources)
    directory = _directory(args.store, must_exist=False)
    embeddings = get_embeddings(args.model, _recorded_model(directory))
    if hasattr(embeddings, "show_progress") and sys.stderr.isatty():
        embeddings.show_progress = True
    _say(
        f"Loaded {len(sources)} file(s), {chunks} chunk(s); "
        f"new or changed chunks are embedded with {_name(embeddings)}."
    )
    kwargs = {"quantization": args.quantization} if args.quantization else {}
    if args.rescore_precision:
        kwargs["rescore_precision"] = args.rescore_precision
    cleanup = None if args.cleanup == "none" else args.cleanup
    store, result = index_path(args.store, embeddings, sources, cleanup, **kwargs)
    _print(
        f"Indexed {result.files} file(s), {result.chunks} chunk(s): {result.added} added, "
        f"{result.updated} updated, {result.unchanged} unchanged, {result.deleted} deleted. "
        f"{args.store} holds {result.rows} rows (version {store.collection.snapshot.version})."
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Print the ``k`` chunks most similar to the query, with scores and sources."""
    kwargs: dict[str, Any] = {}
    if args.filter is not None:
        try:
            kwargs["filter"] = json.loads(args.filter)
        except json.JSONDecodeError as exc:
            msg = f"--filter is not valid JSON ({exc.msg} at character {exc.pos}): {args.filter}"
            raise InvalidInputError(msg) from exc
    store = _open(args.store, args.model)
    results = store.similarity_search_with_score(args.query, k=args.k, **kwargs)
    if args.json:
        rows = [
            {
                "rank": n,
                "score": score,
                "id": doc.id,
                "source": _label(doc),
                "text": doc.page_content,
                "metadata": doc.metadata,
            }
            for n, (doc, score) in enumerate(results, 1)
        ]
        _print(json.dumps(rows, ensure_ascii=False, indent=1))
        return 0
    if not results:
        _print("No results (the store is empty).")
    for n, (doc, score) in enumerate(results, 1):
        snippet = " ".join(doc.page_content.split())
        snippet = snippet if len(snippet) <= args.width else snippet[: args.width - 3] + "..."
        _print(f"{n}. {score:.4f}  {_label(doc)}\n   {snippet}")
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def cmd_info(args: argparse.Namespace) -> int:
    """Describe the store without loading a model."""
    info = _directory(args.store).info()
    if args.json:
        _print(json.dumps(info, indent=1))
        return 0
    options = f" {info['quantizer_options']}" if info["quantizer_options"] else ""
    trained = "trained" if info["quantizer_trained"] else "not trained yet (exact search)"
    sizes = info["bytes"]
    lines = [
        f"store            {info['path']}",
        f"rows             {info['rows']} live ({info['deleted_rows']} deleted, awaiting compact)",
        f"segments         {info['segments']}",
        f"dimension        {info['dimension']}  metric {info['metric']}",
        f"quantization     {info['quantization']}{options}, {trained}",
        f"rescore vectors  {info['rescore_precision']}",
        f"embedding model  {info['embedding_model']}",
        (
            f"version          {info['version']} ({info['versions_kept']} manifest(s) kept; "
            f"format {info['format_version']})"
        ),
        "bytes            "
        + ", ".join(
            f"{part} {_human(sizes[part])}"
            for part in ("segments", "deletions", "quantizer_state", "manifests")
        )
        + f"; total {_human(sizes['total'])}",
    ]
    _print("\n".join(lines))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every file of the current version; exit 1 if anything is damaged."""
    store = _open(args.store, embed=False)
    problems = store.verify()
    for problem in problems:
        _say(f"{PROG}: damaged: {problem}")
    if problems:
        _say(f"{PROG}: error: {len(problems)} problem(s) in {args.store}")
        return 1
    _print(
        f"OK: {args.store} version {store.collection.snapshot.version}, {len(store)} rows, "
        "all files match their checksums."
    )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Merge segments, drop deleted rows, retrain the quantizer, remove unused files."""
    before = _directory(args.store).info()
    store = _open(args.store, embed=False)
    store.compact()
    after = _directory(args.store).info()
    _print(
        f"Compacted {args.store}: {before['segments']} -> {after['segments']} segment(s), "
        f"{after['rows']} rows, {_human(before['bytes']['total'])} -> {_human(after['bytes']['total'])} "
        f"(version {after['version']})."
    )
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    """Answer questions from the store, extractively or with ``--llm``."""
    from langchain_vq.chat import (
        ExtractiveAnswerer,
        answer_question,
        build_rag_chain_with_sources,
        chat_loop,
        load_chat_model,
    )

    llm = load_chat_model(args.llm) if args.llm else None
    store = _open(args.store, args.model)
    model = llm if llm is not None else ExtractiveAnswerer(store.embeddings)
    chain = build_rag_chain_with_sources(store.as_retriever(search_kwargs={"k": args.k}), model)
    if args.question is not None:
        answer_question(chain, args.question, extractive=llm is None)
    else:
        chat_loop(chain, extractive=llm is None)
    return 0


def _load_queries(path: str, store: VQVectorStore, model: str | None) -> Any:
    """Query vectors from ``.npy`` (``[n, dim]``) or ``.jsonl`` (vectors, or texts to embed)."""
    from pathlib import Path

    import numpy as np

    file = Path(path)
    if not file.is_file():
        msg = f"--queries file {path} not found."
        raise InvalidInputError(msg)
    if file.suffix == ".npy":
        try:
            return np.load(file, allow_pickle=False)
        except ValueError as exc:
            msg = f"--queries {path} is not a readable .npy array ({exc})."
            raise InvalidInputError(msg) from exc
    if file.suffix != ".jsonl":
        msg = f"--queries {path}: expected a .npy array [n, dim] or a .jsonl file, got {file.suffix!r}."
        raise InvalidInputError(msg)
    vectors, texts = _read_jsonl(file)
    if texts and vectors:
        msg = f"--queries {path} mixes vectors and texts; use one kind per file."
        raise InvalidInputError(msg)
    if texts:
        embeddings = get_embeddings(model, store.collection.config.embedding_model)
        return embeddings.embed_documents(texts)
    return vectors


def _read_jsonl(file: Any) -> tuple[list[Any], list[str]]:
    """Vectors and texts of a ``.jsonl`` query file (one JSON value per line)."""
    path = str(file)
    vectors: list[Any] = []
    texts: list[str] = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"--queries {path} line {number} is not JSON ({exc.msg})."
            raise InvalidInputError(msg) from exc
        if isinstance(item, dict):
            item = next((item[key] for key in ("vector", "embedding", "text", "query") if key in item), None)
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, list):
            vectors.append(item)
        else:
            msg = (
                f"--queries {path} line {number}: expected a list of numbers, a string, or an object "
                'with "vector", "embedding", "text" or "query".'
            )
            raise InvalidInputError(msg)
    return vectors, texts


def _parse_list(text: str, name: str, cast: type) -> list[Any]:
    try:
        values = [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        msg = f"{name} expects a comma-separated list, got {text!r}."
        raise InvalidInputError(msg) from exc
    if not values:
        msg = f"{name} is empty."
        raise InvalidInputError(msg)
    return values


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure recall@k and latency of search settings on the store's own data; recommend one."""
    from langchain_vq.evaluation.report import format_table, plot_evaluation
    from langchain_vq.evaluation.settings import evaluate_settings

    store = _open(args.store, embed=False)
    queries = _load_queries(args.queries, store, args.model) if args.queries else None
    modes = _parse_list(args.modes, "--modes", str) if args.modes else None
    multipliers = (
        _parse_list(args.multipliers, "--multipliers", int) if args.multipliers else DEFAULT_MULTIPLIERS
    )
    if not args.json and sys.stderr.isatty():
        source = f"queries from {args.queries}" if args.queries else f"{args.sample} sampled stored rows"
        _say(f"Measuring {args.store} ({len(store)} rows) with {source}...")
    evaluation = evaluate_settings(
        store,
        queries=queries,
        k=args.k,
        target=args.target,
        sample=args.sample,
        modes=modes,
        multipliers=multipliers,
        timed=args.timed,
        max_rows=args.max_rows,
        seed=args.seed,
    )
    if args.plot:
        plot_evaluation(evaluation, args.plot)
    if args.json:
        _print(json.dumps(evaluation.to_dict(), indent=1))
    else:
        _print(format_table(evaluation))
        if args.plot:
            _print(f"wrote {args.plot}")
    return 0


# -- parser ----------------------------------------------------------------------------------
def _integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: the text as an integer >= ``minimum`` (checked by ``check_int``)."""

    def parse(text: str) -> int:
        try:
            return check_int(int(text), "the value", minimum=minimum)
        except ValueError as exc:  # int() of a non-number, or InvalidInputError (a ValueError)
            msg = f"expected an integer >= {minimum}, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from exc

    return parse


_positive = _integer(1)
_non_negative = _integer(0)


def _command(
    sub: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    *,
    help: str,  # noqa: A002 - argparse's name
    description: str,
    store_help: str = "store folder",
) -> argparse.ArgumentParser:
    """A sub-command ``name`` whose first argument is the store folder and which runs ``func``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=description)
    parser.add_argument("store", help=store_help)
    parser.set_defaults(func=func)
    return parser


def _add_eval_parser(sub: Any, model_help: str) -> None:
    """The ``eval`` sub-command's arguments."""
    p = _command(
        sub,
        "eval",
        cmd_eval,
        help="measure recall@k and latency of search settings on a store; recommend one",
        description=(
            "Measure recall@k against exact float search, and single-query latency, for each "
            "quantization x rescore_multiplier on the store's own data, and recommend the smallest "
            "multiplier (and the fastest setting) reaching --target. Queries are sampled stored rows "
            "(each excluding itself from the truth and the search) unless --queries is given. "
            "Quantizations other than the store's are measured on an in-memory copy."
        ),
    )
    p.add_argument(
        "--queries",
        default=None,
        metavar="FILE",
        help=".npy array [n, dim] of query vectors, or .jsonl of vectors or texts (texts are embedded)",
    )
    p.add_argument("-k", type=_positive, default=DEFAULT_K, help="results per query (default %(default)s)")
    p.add_argument(
        "--target", type=float, default=DEFAULT_TARGET, help="recall@k to reach (default %(default)s)"
    )
    p.add_argument(
        "--sample",
        type=_positive,
        default=DEFAULT_EVAL_SAMPLE,
        help="stored rows sampled as queries (default %(default)s)",
    )
    p.add_argument(
        "--modes",
        default=None,
        metavar="LIST",
        help="quantizations to measure, e.g. binary,int8,pq,none (default: the store's own)",
    )
    p.add_argument(
        "--multipliers",
        default=None,
        metavar="LIST",
        help="rescore_multiplier values (default: the store's calibration range, "
        + ",".join(map(str, DEFAULT_MULTIPLIERS))
        + ")",
    )
    p.add_argument(
        "--timed",
        type=_positive,
        default=DEFAULT_TIMED,
        help="single queries timed per setting (default %(default)s)",
    )
    p.add_argument(
        "--max-rows",
        type=_positive,
        default=DEFAULT_MAX_ROWS,
        help="rows copied into memory for other quantizations (default %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample (default %(default)s)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a recall-vs-latency plot")
    p.add_argument("--model", default=None, help=model_help + "; only for text queries")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Index text files into a langchain-vq store, search it, and chat with it (offline).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    model_help = "sentence-transformers model name or folder (default: the store's, else all-MiniLM-L6-v2)"

    p = _command(
        sub,
        "index",
        cmd_index,
        store_help="store folder (created if absent)",
        help="load, split, embed and upsert files into a store",
        description=(
            f"Load {', '.join(SUPPORTED_SUFFIXES)} files (folders are searched recursively), split them "
            "into chunks, embed the new or changed ones and upsert them. Chunk ids are the file path plus "
            "the chunk number, so indexing again never duplicates; chunks past a file's new end are "
            "deleted. Every file is read before anything is written."
        ),
    )
    p.add_argument(
        "--cleanup",
        choices=("incremental", "full", "none"),
        default="incremental",
        help=(
            "which rows to delete: 'incremental' (default) the chunks past a file's new end; 'full' "
            "every row that is not a chunk of this run, e.g. of deleted files (index all of the "
            "store's folders at once); 'none' nothing"
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders to index")
    p.add_argument(
        "--chunk-size",
        type=_positive,
        default=DEFAULT_CHUNK_SIZE,
        help="characters per chunk (default %(default)s)",
    )
    p.add_argument(
        "--chunk-overlap",
        type=_non_negative,
        default=DEFAULT_CHUNK_OVERLAP,
        help="characters shared by neighbouring chunks (default %(default)s)",
    )
    p.add_argument(
        "--quantization",
        default=None,
        help="binary (default), int8, pq or none; only when creating the store (it is recorded)",
    )
    p.add_argument(
        "--rescore-precision",
        default=None,
        help=(
            "rescoring vectors: float16 (default), float32, int8, or none (codes only, the "
            "smallest store); only when creating the store (it is recorded)"
        ),
    )
    p.add_argument("--model", default=None, help=model_help)

    p = _command(
        sub,
        "search",
        cmd_search,
        help="print the chunks most similar to a query",
        description="Print the k chunks most similar to QUERY with their scores and sources.",
    )
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=_positive, default=5, help="results to print (default %(default)s)")
    p.add_argument(
        "--filter",
        default=None,
        metavar="JSON",
        help="metadata filter as JSON, passed to the store as filter=",
    )
    p.add_argument("--model", default=None, help=model_help)
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--width",
        type=_positive,
        default=160,
        help="characters of text shown per result (default %(default)s)",
    )

    p = _command(
        sub,
        "info",
        cmd_info,
        help="rows, segments, bytes, quantization, model and versions of a store",
        description=(
            "Describe a store: rows, segments, bytes per part, quantization, embedding model and "
            "versions. Loads no model."
        ),
    )
    p.add_argument("--json", action="store_true", help="print the description as JSON")

    p = _command(
        sub,
        "verify",
        cmd_verify,
        help="check every file of a store against its checksum",
        description=(
            "Check every file of the store's current version against the size and checksum in its "
            "manifest. Exits with status 1 if anything is damaged."
        ),
    )

    p = _command(
        sub,
        "compact",
        cmd_compact,
        help="merge segments, drop deleted rows, retrain the quantizer",
        description=(
            "Rewrite the live rows into fresh segments, retrain the quantizer on them, and remove "
            "files no version needs any more."
        ),
    )

    p = _command(
        sub,
        "chat",
        cmd_chat,
        help="answer questions from a store, citing sources",
        description=(
            "Answer questions from the store's passages, citing them. Without --llm the answer is "
            "extractive (the most relevant sentences, quoted; offline). With --llm provider:model "
            "the passages go to that chat model through langchain's init_chat_model."
        ),
    )
    p.add_argument("--question", "-q", default=None, help="ask one question and exit (default: interactive)")
    p.add_argument(
        "--llm",
        default=None,
        metavar="PROVIDER:MODEL",
        help="e.g. openai:gpt-4o-mini or ollama:llama3.1 (needs langchain and the provider's package)",
    )
    p.add_argument(
        "-k", type=_positive, default=4, help="passages retrieved per question (default %(default)s)"
    )
    p.add_argument("--model", default=None, help=model_help)

    _add_eval_parser(sub, model_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (VQError, ImportError) as exc:
        _say(f"{PROG}: error: {exc}")
        return 1
    except OSError as exc:  # a file-system problem outside the typed errors (disk full, permissions)
        _say(f"{PROG}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
