"""ONNX Runtime and OpenVINO inference for sentence-transformers models: export once, cache, run fast.

The ONNX and OpenVINO backends of ``SentenceTransformerEmbeddings`` live here. The model is
exported locally from the weights that torch loads (nothing is downloaded), its graph fused by
ONNX Runtime's transformer optimizer, and for ``onnx-int8`` dynamically quantized (int8 weights
per output channel, activations quantized at run time). ``openvino-int8`` keeps the plain graph
(OpenVINO fuses it itself) with int8 weights per output channel, and OpenVINO quantizes the
activations at run time. The export is checked against torch before it is kept, then cached
under :func:`cache_root`::

    <cache root>/onnx/<model>-<key>/<backend>/model.onnx, tokenizer.json, manifest.json

``manifest.json`` is written last and records each file's size and SHA-256, so a cache whose
files are missing, truncated or altered is rebuilt instead of used. Running a cached export
needs only ``onnxruntime`` and ``tokenizers`` (the OpenVINO backends also ``openvino``);
exporting also needs torch, sentence-transformers and ``onnx``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from langchain_vq.errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt

logger = logging.getLogger(__name__)

#: Backends implemented here. ``openvino`` compiles the float32 ``onnx`` export with OpenVINO.
ONNX_BACKENDS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
#: Environment variable that moves the cache (default: ``$XDG_CACHE_HOME/langchain_vq`` or
#: ``~/.cache/langchain_vq``).
CACHE_ENV = "LANGCHAIN_VQ_CACHE"
#: Bumped whenever the export recipe changes, so old caches are not reused.
EXPORT_VERSION = 1
#: Smallest cosine between an export's and torch's embeddings of the probe texts that is
#: accepted. Measured on SciFact abstracts and short sentences (benchmarks/bench_embeddings.py):
#: float32 ONNX agrees to 1.0000 (min > 0.99999); onnx-int8 has mean 0.993, min 0.97;
#: openvino-int8 mean 0.9987, min 0.994.
EXPORT_MIN_COSINE = {"onnx": 0.9999, "onnx-int8": 0.95, "openvino-int8": 0.98}
#: Activations of ``openvino-int8`` are quantized at run time in groups of this many values of a
#: row (one scale per group and token). 128 was best in a one-off probe on SciFact chunks
#: (AVX-512 VNNI EPYC, one thread; bench_embeddings.py measures the chosen one): 32.7 chunks/s at
#: cosine 0.9988 to float32, against 30.6 / 0.9990 with 64, 33.8 / 0.9975 with 384, and 24.0 with
#: OpenVINO's default of 32 (no faster than bfloat16 weights).
OPENVINO_INT8_GROUP = 128
_PROBES = (
    "The cat sits on the mat.",
    "shutil.copytree copies an entire directory tree rooted at src to a directory named dst.",
    "Protein folding " * 200,  # longer than any model's limit: checks truncation
    "a",
)
_MODEL_FILE = "model.onnx"
_TOKENIZER_FILE = "tokenizer.json"
_MANIFEST_FILE = "manifest.json"
_POOLING_MODES = ("mean", "cls", "max")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where exported models are cached: ``cache_dir``, else ``$LANGCHAIN_VQ_CACHE``, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "langchain_vq"


def export_dir(model_name: str, source: str, backend: str, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache folder of ``backend``'s export of the model loaded from ``source``.

    The key covers the model (name, and for a local folder its config and weight-file sizes),
    the export recipe and the onnxruntime version, whose fused operators the graph uses.
    """
    import onnxruntime

    fingerprint: dict[str, Any] = {
        "model": model_name,
        "export_version": EXPORT_VERSION,
        "onnxruntime": onnxruntime.__version__,
    }
    folder = Path(source)
    if folder.is_dir():
        fingerprint["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
        config = folder / "config.json"
        fingerprint["config"] = config.read_text(encoding="utf-8") if config.is_file() else None
    key = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name.rstrip("/").split("/")[-1])[:60] or "model"
    return cache_root(cache_dir) / "onnx" / f"{slug}-{key}" / backend


@dataclass(frozen=True)
class ExportInfo:
    """What running an export needs besides the graph: pooling, limits, inputs."""

    backend: str
    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    input_names: tuple[str, ...]
    pad_id: int
    pad_token: str


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_export(folder: Path) -> ExportInfo | None:
    """The export in ``folder`` if it is complete and intact; ``None`` if absent or damaged."""
    try:
        manifest = json.loads((folder / _MANIFEST_FILE).read_text(encoding="utf-8"))
        if set(manifest["files"]) != {_MODEL_FILE, _TOKENIZER_FILE}:
            return None
        for name, meta in manifest["files"].items():
            path = folder / name
            if path.stat().st_size != meta["size"] or _sha256(path) != meta["sha256"]:
                return None
        info = manifest["info"]
        return ExportInfo(**{**info, "input_names": tuple(info["input_names"])})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ensure_export(
    model_name: str, source: str, backend: str, cache_dir: str | os.PathLike[str] | None, load_torch: Any
) -> tuple[Path, ExportInfo]:
    """The cached export of ``backend``, made now (with one log message) if absent or damaged.

    ``load_torch`` returns the sentence-transformers model; it is called only when exporting.
    """
    folder = export_dir(model_name, source, backend, cache_dir)
    info = read_export(folder)
    if info is not None:
        return folder, info
    damaged = folder.exists()
    started = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    base = folder.parent / "onnx"
    base_info = read_export(base) if backend == "onnx-int8" else None
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".export-") as tmp:
        work = Path(tmp)
        model = load_torch()
        if base_info is None:  # OpenVINO fuses the plain graph itself, and int8 weights need MatMuls
            info = _export_float(model, work, backend, fuse=backend != "openvino-int8")
        else:  # quantize the cached float32 export instead of exporting again
            shutil.copyfile(base / _MODEL_FILE, work / "float.onnx")
            shutil.copyfile(base / _TOKENIZER_FILE, work / _TOKENIZER_FILE)
            info = ExportInfo(**{**base_info.__dict__, "backend": backend})
        final = work / _MODEL_FILE
        if backend == "onnx-int8":
            _quantize(work / "float.onnx", final)
        elif backend == "openvino-int8":
            _quantize_weights(work / "float.onnx", final)
        else:
            (work / "float.onnx").replace(final)
        _check_against_torch(model, final, work / _TOKENIZER_FILE, info)
        _install(work, folder, info)
    logger.warning(
        "%s %s as %s in %.0f s (once; reused from now on): %s",
        "Rebuilt the damaged ONNX export of" if damaged else "Exported",
        model_name,
        backend,
        time.perf_counter() - started,
        folder,
    )
    return folder, info


def _install(work: Path, folder: Path, info: ExportInfo) -> None:
    """Move the files into ``folder`` one by one, then write the manifest that makes them valid."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / _MANIFEST_FILE).unlink(missing_ok=True)
    files = {}
    for name in (_MODEL_FILE, _TOKENIZER_FILE):
        files[name] = {"size": (work / name).stat().st_size, "sha256": _sha256(work / name)}
        (work / name).replace(folder / name)
    manifest = {"files": files, "info": {**info.__dict__, "input_names": list(info.input_names)}}
    tmp = folder / f".{_MANIFEST_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    tmp.replace(folder / _MANIFEST_FILE)


def _describe(model: Any, backend: str) -> ExportInfo:
    """Pooling and tokenizer settings of a Transformer + Pooling (+ Normalize) model."""
    modules = [type(m).__name__ for m in model]
    unsupported = (
        f"backend={backend!r} runs models made of Transformer, Pooling (mean, cls or max) and "
        f"optionally Normalize; this one has {modules}. Use backend='torch' for it."
    )
    if modules[:2] != ["Transformer", "Pooling"] or modules[2:] not in ([], ["Normalize"]):
        raise ConfigurationError(unsupported)
    transformer, pooling = model[0], model[1]
    mode = pooling.pooling_mode
    tokenizer: Any = getattr(transformer, "tokenizer", None)
    if mode not in _POOLING_MODES or not pooling.include_prompt or not getattr(tokenizer, "is_fast", False):
        raise ConfigurationError(unsupported)
    sample = tokenizer(["a", "b c"], padding=True)
    return ExportInfo(
        backend=backend,
        dimension=int(model.get_embedding_dimension()),
        max_seq_length=int(model.max_seq_length),
        pooling=str(mode),
        normalize=modules[2:] == ["Normalize"],
        input_names=tuple(k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample),
        pad_id=int(tokenizer.pad_token_id or 0),
        pad_token=str(tokenizer.pad_token or "[PAD]"),
    )


def _export_float(model: Any, work: Path, backend: str, *, fuse: bool = True) -> ExportInfo:
    """Export the transformer to ``work/float.onnx`` (float32, fused if ``fuse``); save its tokenizer."""
    import torch

    info = _describe(model, backend)
    transformer = model[0]
    tokenizer = transformer.tokenizer
    tokenizer.backend_tokenizer.save(str(work / _TOKENIZER_FILE))
    auto_model = transformer.auto_model.train(mode=False)  # inference mode (dropout off)
    with contextlib.suppress(AttributeError, ValueError):
        auto_model.set_attn_implementation("eager")  # a plain graph that onnxruntime's optimizer fuses

    names = info.input_names

    class _Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = auto_model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs, strict=True))).last_hidden_state

    sample = tokenizer(
        ["hello world", "a somewhat longer second sentence"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "sequence"} for name in (*names, "last_hidden_state")}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer chatter about shapes that the checks below cover
        torch.onnx.export(
            _Hidden(),
            tuple(sample[n] for n in names),
            str(work / "raw.onnx"),
            input_names=list(names),
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    if fuse:
        _fuse(work / "raw.onnx", work / "float.onnx", auto_model.config)
    else:
        (work / "raw.onnx").replace(work / "float.onnx")
    return info


def _fuse(source: Path, target: Path, config: Any) -> None:
    """Fuse attention, layer norm and GELU with onnxruntime's transformer optimizer (BERT-like only)."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = getattr(config, "model_type", "")
    if model_type not in {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"}:
        source.replace(target)
        return
    fused = optimize_model(
        str(source),
        model_type="bert",
        num_heads=int(getattr(config, "num_attention_heads", 0)),
        hidden_size=int(getattr(config, "hidden_size", 0)),
        opt_level=0,
    )
    fused.save_model_to_file(str(target))


def _quantize(source: Path, target: Path) -> None:
    """Dynamic int8: weights per output channel (per-tensor loses too much: cosine 0.94)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    advice = _DropAdvice()
    root.addFilter(advice)  # the quantizer logs generic advice to the root logger; one message is ours
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(advice)


def _quantize_weights(source: Path, target: Path) -> None:
    """Int8 weights, symmetric per output column, for every MatMul by a constant matrix.

    Each such weight becomes ``DequantizeLinear(int8, scale)``: OpenVINO's CPU plugin runs
    these as int8 matrix products and quantizes the activations at run time
    (``OPENVINO_INT8_GROUP``); everything else (attention, layer norms) stays floating point.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        tensor = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if tensor is not None and len(tensor.dims) == 2:
            w = numpy_helper.to_array(tensor).astype(np.float32)  # [in, out]
            scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127  # [out]
            q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
            name = tensor.name
            graph.initializer.remove(tensor)
            del weights[name]
            graph.initializer.extend(
                [
                    numpy_helper.from_array(q, f"{name}_int8"),
                    numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                ]
            )
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_int8", f"{name}_scale"],
                    [f"{name}_dequantized"],
                    axis=1,
                    name=f"{name}_dequantize",
                )
            )
            node.input[1] = f"{name}_dequantized"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(target))


class _DropAdvice(logging.Filter):
    """Drops onnxruntime's "consider pre-processing" advice (our graph is already optimized)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _check_against_torch(model: Any, path: Path, tokenizer_path: Path, info: ExportInfo) -> None:
    """Refuse an export whose embeddings of the probe texts drift from torch's."""
    expected = model.encode(list(_PROBES), normalize_embeddings=True, convert_to_numpy=True)
    runner = encoder_class(info.backend)(path, tokenizer_path, info, num_threads=1)
    got = runner.encode(list(_PROBES), normalize_embeddings=True)
    cosine = (np.asarray(expected, dtype=np.float32) * got).sum(axis=1)  # [n_probes]
    floor = EXPORT_MIN_COSINE[info.backend]
    if not np.all(cosine >= floor):
        msg = (
            f"The {info.backend} export disagrees with torch (cosine {cosine.min():.4f} on a probe "
            f"text, expected >= {floor}). Use backend='torch' for this model."
        )
        raise ConfigurationError(msg)


class OnnxEncoder:
    """Runs an exported model: tokenize, onnxruntime forward, pool, normalize.

    It answers the subset of ``SentenceTransformer``'s interface that
    ``SentenceTransformerEmbeddings`` uses (``encode``, ``get_embedding_dimension``).
    """

    def __init__(self, model_path: Path, tokenizer_path: Path, info: ExportInfo, *, num_threads: int) -> None:
        from tokenizers import Tokenizer

        self.info = info
        self.num_threads = num_threads
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.enable_truncation(max_length=info.max_seq_length)
        self.tokenizer.enable_padding(pad_id=info.pad_id, pad_token=info.pad_token)
        self.session: Any = None
        self._open(model_path)

    def _open(self, model_path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads  # all cores on one batch
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

    def _run(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        return self.session.run(None, feeds)[0]  # type: ignore[no-any-return]

    def get_embedding_dimension(self) -> int:
        """Length of the vectors this model returns."""
        return self.info.dimension

    def _forward(self, texts: list[str]) -> npt.NDArray[np.float32]:
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)  # [batch, seq]
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)  # [batch, seq]
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.info.input_names:
            feeds["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
        hidden = self._run(feeds)  # [batch, seq, dim]
        if self.info.pooling == "cls":
            return np.ascontiguousarray(hidden[:, 0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)  # [batch, seq, 1]
        if self.info.pooling == "max":
            return np.where(weights > 0, hidden, -1e9).max(axis=1).astype(np.float32)
        return ((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)).astype(np.float32)

    def encode(
        self,
        texts: Sequence[str],
        *,
        prompt: str | None = None,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = False,
        **_: Any,
    ) -> npt.NDArray[np.float32]:
        """``float32[len(texts), dimension]``, batched by length so padding is small."""
        texts = [prompt + t for t in texts] if prompt else list(texts)
        out = np.empty((len(texts), self.info.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # longest first, like torch's encode
        with _progress(len(texts), show_progress_bar) as bar:
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                out[rows] = self._forward([texts[i] for i in rows])
                bar(len(rows))
        if normalize_embeddings or self.info.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


class OpenVinoEncoder(OnnxEncoder):
    """The float32 ONNX export compiled by OpenVINO's CPU plugin instead of run by onnxruntime.

    Inference stays float32 (``INFERENCE_PRECISION_HINT``): on a CPU with bfloat16 units
    (AVX-512 BF16, AMX) the plugin's default is bfloat16, which made this backend's
    embeddings drift from float32 torch (mean cosine 0.999987 on an AVX-512 EPYC, against
    at least 0.99999 on AVX2 and for onnxruntime).
    """

    def _open(self, model_path: Path) -> None:
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_NUM_THREADS": self.num_threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.session = core.compile_model(core.read_model(str(model_path)), "CPU", config)

    def _run(self, feeds: dict[str, npt.NDArray[np.int64]]) -> npt.NDArray[np.float32]:
        return np.asarray(self.session(feeds)[0], dtype=np.float32)


class OpenVinoInt8Encoder(OpenVinoEncoder):
    """The ``openvino-int8`` export (int8 weights) compiled by OpenVINO's CPU plugin.

    The plugin quantizes each activation row at run time in groups of ``OPENVINO_INT8_GROUP``
    values and multiplies in int8 (AVX-512 VNNI, AVX-VNNI); the rest runs in the plugin's
    default precision, bfloat16 on CPUs with bfloat16 units (+20% chunks/s on an AVX-512 EPYC
    against float32, at no measurable cost next to the int8 error), else float32.
    """

    def _open(self, model_path: Path) -> None:
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_NUM_THREADS": self.num_threads,
            "PERFORMANCE_HINT": "LATENCY",
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": OPENVINO_INT8_GROUP,
        }
        self.session = core.compile_model(core.read_model(str(model_path)), "CPU", config)


def encoder_class(backend: str) -> type[OnnxEncoder]:
    """The runner of ``backend``'s export (``openvino`` runs the ``onnx`` export)."""
    return {"openvino": OpenVinoEncoder, "openvino-int8": OpenVinoInt8Encoder}.get(backend, OnnxEncoder)


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[Any]:
    """A tqdm bar like sentence-transformers' (``Batches``), or a no-op."""
    if not show:
        yield lambda _n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc="Embedding", unit="text") as bar:
        yield bar.update
