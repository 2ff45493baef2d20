"""SentenceTransformerEmbeddings: the real all-MiniLM-L6-v2 (offline), its backends, plus a fake client."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import socket
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from langchain_vq import VQVectorStore, onnx_backend
from langchain_vq import embeddings as emb_module
from langchain_vq.embeddings import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_MODEL,
    SentenceTransformerEmbeddings,
)
from langchain_vq.errors import ConfigurationError, InvalidInputError, MissingDependencyError

if TYPE_CHECKING:
    from pathlib import Path

pytest.importorskip("sentence_transformers", reason="needs the embeddings extra")

#: Cosine between each backend's embeddings and float32 torch's. Measured by
#: benchmarks/bench_embeddings.py (results/bench_embeddings.json, "cosine_to_float32": SciFact
#: abstracts and short sentences): onnx and openvino agree to > 0.99999; onnx-int8 has mean
#: 0.991-0.993 and min 0.970 (sentences); openvino-int8 mean 0.9987-0.9988 and min 0.9943
#: (sentences), so the bounds below leave a margin for other texts.
MEAN_COSINE = {
    "torch": 0.99999,
    "onnx": 0.99999,
    "onnx-int8": 0.985,
    "openvino": 0.99999,
    "openvino-int8": 0.995,
}
MIN_COSINE = {"torch": 0.99999, "onnx": 0.9999, "onnx-int8": 0.95, "openvino": 0.9999, "openvino-int8": 0.98}
#: Cosine between a text embedded alone and inside a batch: onnx-int8 quantizes activations with
#: one scale per batch tensor, so the neighbours of a text move its vector a little;
#: openvino-int8 quantizes each token's row on its own.
BATCH_COSINE = {
    "torch": 0.99999,
    "onnx": 0.99999,
    "onnx-int8": 0.98,
    "openvino": 0.99999,
    "openvino-int8": 0.999,
}
#: The backends with an export of their own in the cache (openvino compiles onnx's).
EXPORTED = ("onnx", "onnx-int8", "openvino-int8")
AGREEMENT_TEXTS = [
    "The cat sits on the mat.",
    "A kitten rests on a rug.",
    "Stock markets fell sharply today.",
    "shutil.copytree(src, dst) recursively copies an entire directory tree rooted at src.",
    (
        "Background: Vitamin D deficiency is associated with an increased risk of fractures in older "
        "adults. Methods: We conducted a randomized trial of 2,000 participants aged 70 and over, "
        "comparing monthly high-dose cholecalciferol with placebo over three years. Results: The "
        "supplement did not reduce the rate of falls or fractures, and the highest dose was "
        "associated with more falls. Conclusion: Monthly high-dose vitamin D is not recommended."
    ),
    "heapq",
]


class FakeClient:
    """Records the keyword arguments of ``encode``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        self.calls.append({"texts": list(texts), **kwargs})
        return np.ones((len(texts), 3), dtype=np.float32)

    def get_embedding_dimension(self) -> int:
        return 3


def with_client(client: Any, **kwargs: Any) -> SentenceTransformerEmbeddings:
    model = SentenceTransformerEmbeddings(**kwargs)
    model._client = client
    return model


def test_default_model_is_minilm_from_the_package(minilm: SentenceTransformerEmbeddings) -> None:
    assert minilm.model_name == DEFAULT_MODEL
    assert minilm.dimension == 384
    if emb_module.packaged_model_path() is not None:
        assert "HF_HUB_OFFLINE" not in os.environ or os.environ["HF_HUB_OFFLINE"] == "1"


def test_vectors_are_normalized_and_consistent(minilm: SentenceTransformerEmbeddings) -> None:
    texts = ["The cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply today."]
    vectors = np.array(minilm.embed_documents(texts))
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    query = np.array(minilm.embed_query(texts[0]))
    # A batch and a lone query agree; int8 activations are quantized per batch, so not exactly.
    assert float(query @ vectors[0]) > BATCH_COSINE[minilm.backend]
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrase beats an unrelated sentence
    assert minilm.encode(texts).dtype == np.float32


def test_empty_input(minilm: SentenceTransformerEmbeddings) -> None:
    assert minilm.embed_documents([]) == []
    assert minilm.encode([]).shape == (0, 384)


def test_bad_input(minilm: SentenceTransformerEmbeddings) -> None:
    with pytest.raises(InvalidInputError, match="single string"):
        minilm.embed_documents("one text")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"texts\[1\]"):
        minilm.embed_documents(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError):
        minilm.embed_query(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"batch_size": 0}, {"batch_size": True}, {"num_threads": 0}, {"query_prompt": 3}]
)
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        SentenceTransformerEmbeddings(**kwargs)


def test_prompts_and_batching_reach_the_model() -> None:
    client = FakeClient()
    model = with_client(
        client, batch_size=7, query_prompt="query: ", document_prompt="passage: ", normalize=False
    )
    model.embed_documents(["a", "b"])
    model.embed_query("q")
    doc_call, query_call = client.calls
    assert doc_call["prompt"] == "passage: "
    assert query_call["prompt"] == "query: "
    assert doc_call["batch_size"] == 7
    assert doc_call["normalize_embeddings"] is False


def test_real_query_prompt_changes_the_query_vector(minilm: SentenceTransformerEmbeddings) -> None:
    prompted = with_client(minilm.client, query_prompt="query: ")
    plain = np.array(minilm.embed_query("sorting a list"))
    assert not np.allclose(np.array(prompted.embed_query("sorting a list")), plain)
    np.testing.assert_allclose(prompted.embed_documents(["sorting a list"])[0], plain, atol=1e-5)


def test_progress_bar_only_on_long_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emb_module, "PROGRESS_THRESHOLD", 3)
    client = FakeClient()
    auto = with_client(client)
    auto.embed_documents(["a"] * 3)
    auto.embed_documents(["a"] * 4)
    assert [c["show_progress_bar"] for c in client.calls] == [False, True]
    with_client(client, show_progress=False).embed_documents(["a"] * 10)
    with_client(client, show_progress=True).embed_documents(["a"])
    assert [c["show_progress_bar"] for c in client.calls[2:]] == [False, True]


def test_missing_sentence_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "sentence_transformers" else real(name, *a),
    )
    with pytest.raises(ImportError, match=r'pip install "langchain-vq\[embeddings\]"'):
        SentenceTransformerEmbeddings(backend="torch")


def test_unknown_model_is_a_clear_error(tmp_path: Any) -> None:
    model = SentenceTransformerEmbeddings(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigurationError, match="Could not load embedding model"):
        model.embed_query("x")


def test_aliases_mean_the_default_model() -> None:
    assert SentenceTransformerEmbeddings("all-MiniLM-L6-v2").model_name == DEFAULT_MODEL


def test_store_records_the_model_name(minilm: SentenceTransformerEmbeddings, tmp_path: Any) -> None:
    store = VQVectorStore(minilm, tmp_path / "store")
    store.add_texts(["json.dumps serializes an object to a JSON string", "heapq implements a priority queue"])
    assert store.collection.snapshot.manifest.embedding_model == DEFAULT_MODEL
    (doc,) = store.similarity_search("priority queue", k=1)
    assert "heapq" in doc.page_content


async def test_async_embedding(minilm: SentenceTransformerEmbeddings) -> None:
    vector = await minilm.aembed_query("hello")
    assert len(vector) == 384


# -- backends --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def torch_reference() -> np.ndarray:
    """float32 torch embeddings of ``AGREEMENT_TEXTS``, the reference every backend is held to."""
    return SentenceTransformerEmbeddings(backend="torch").encode(AGREEMENT_TEXTS)


@pytest.fixture(scope="session")
def exported(embeddings_cache: Path) -> dict[str, SentenceTransformerEmbeddings]:
    """Both ONNX backends, exported once into the session cache with the network cut off."""
    models = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")

        def no_network(*args: Any, **kwargs: Any) -> None:
            msg = f"network access during the export: {args!r}"
            raise AssertionError(msg)

        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        for backend in ("onnx", "onnx-int8", "openvino", "openvino-int8"):
            model = SentenceTransformerEmbeddings(backend=backend, cache_dir=embeddings_cache)
            model.embed_query("warm up")  # exports (or reuses the minilm fixture's export)
            models[backend] = model
    return models


def export_folder(cache: Path, backend: str) -> Path:
    (folder,) = (cache / "onnx").glob(f"all-MiniLM-L6-v2-*/{backend}")
    return folder


def test_default_backend_and_names() -> None:
    assert DEFAULT_BACKEND in BACKENDS
    assert SentenceTransformerEmbeddings().backend == DEFAULT_BACKEND
    model = SentenceTransformerEmbeddings(backend="onnx")
    assert model.backend == "onnx"
    assert "backend='onnx'" in repr(model)


@pytest.mark.parametrize("backend", ["ONNX", "onnx-int4", "tensorrt", ""])
def test_unknown_backend_lists_the_valid_ones(backend: str) -> None:
    with pytest.raises(ConfigurationError, match="Unknown embeddings backend") as info:
        SentenceTransformerEmbeddings(backend=backend)
    for name in BACKENDS:
        assert name in str(info.value)


def test_onnx_backends_run_on_the_cpu() -> None:
    with pytest.raises(InvalidInputError, match="runs on the CPU"):
        SentenceTransformerEmbeddings(backend="onnx-int8", device="cuda")
    assert SentenceTransformerEmbeddings(backend="torch", device="cuda").device == "cuda"  # lazy load


def test_each_backend_has_its_runner(
    minilm: SentenceTransformerEmbeddings, exported: dict[str, SentenceTransformerEmbeddings]
) -> None:
    from sentence_transformers import SentenceTransformer

    assert isinstance(SentenceTransformerEmbeddings(backend="torch").client, SentenceTransformer)
    assert isinstance(exported["onnx"].client, onnx_backend.OnnxEncoder)
    assert exported["onnx"].client.info.backend == "onnx"
    assert exported["onnx-int8"].client.info.backend == "onnx-int8"
    assert isinstance(exported["openvino"].client, onnx_backend.OpenVinoEncoder)
    assert exported["openvino"].client.info.backend == "onnx"  # compiles the float32 export
    # ... and runs it in float32 even where the CPU plugin would pick bfloat16 (AVX-512 BF16).
    precision = exported["openvino"].client.session.get_property("INFERENCE_PRECISION_HINT")
    assert str(precision) in {"<Type: 'float32'>", "f32"}, precision
    int8 = exported["openvino-int8"].client
    assert isinstance(int8, onnx_backend.OpenVinoInt8Encoder)
    assert int8.info.backend == "openvino-int8"  # its own export, with int8 weights
    group = int8.session.get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE")
    assert group == onnx_backend.OPENVINO_INT8_GROUP == 128  # OpenVINO's default (32) is no faster than bf16
    assert minilm.client.__class__ is (
        SentenceTransformer if DEFAULT_BACKEND == "torch" else onnx_backend.encoder_class(DEFAULT_BACKEND)
    )


def test_export_is_offline_and_complete(
    exported: dict[str, SentenceTransformerEmbeddings], embeddings_cache: Path
) -> None:
    assert sorted(p.name for p in export_folder(embeddings_cache, "onnx").parent.iterdir()) == sorted(
        EXPORTED
    )  # openvino has no export of its own
    for backend in EXPORTED:
        folder = export_folder(embeddings_cache, backend)
        assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
        info = onnx_backend.read_export(folder)
        assert info is not None
        assert (info.backend, info.dimension, info.pooling) == (backend, 384, "mean")
        assert info.max_seq_length == 256
    fp32 = export_folder(embeddings_cache, "onnx") / "model.onnx"
    int8 = export_folder(embeddings_cache, "onnx-int8") / "model.onnx"
    assert int8.stat().st_size < fp32.stat().st_size / 3  # int8 weights: a quarter of the bytes


def test_openvino_int8_export_has_int8_weights(
    exported: dict[str, SentenceTransformerEmbeddings], embeddings_cache: Path
) -> None:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(export_folder(embeddings_cache, "openvino-int8") / "model.onnx")).graph
    weights = {t.name: t for t in graph.initializer}
    dequantize = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    by_weight = [n for n in matmuls if n.input[1] in dequantize]
    # 6 layers x (query, key, value, attention output, 2 feed-forward): every weight matrix is int8.
    assert len(by_weight) == len(dequantize) == 36
    assert not [n for n in matmuls if n.input[1] in weights]  # no float32 weight matrix is left
    for node in dequantize.values():
        q = numpy_helper.to_array(weights[node.input[0]])
        scale = numpy_helper.to_array(weights[node.input[1]])
        assert q.dtype == np.int8 and q.ndim == 2 and scale.shape == (q.shape[1],)  # per output column
        assert np.abs(q).max(axis=0).min() == 127  # symmetric, each column's range used fully
    assert not [n for n in graph.node if n.domain == "com.microsoft"]  # plain ops: OpenVINO fuses them


def test_quantize_weights_keeps_the_product(tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((64, 32)) * np.linspace(0.01, 3, 32)).astype(
        np.float32
    )  # columns of unlike scale
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "f.onnx"))
    onnx_backend._quantize_weights(tmp_path / "f.onnx", tmp_path / "q.onnx")
    x = rng.standard_normal((8, 64)).astype(np.float32)
    got = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    error = np.abs(got - x @ w).max(axis=0) / np.abs(x @ w).max(axis=0)  # per column, relative
    assert error.max() < 0.02  # per-column scales: the small columns keep their precision
    assert (tmp_path / "q.onnx").stat().st_size < (tmp_path / "f.onnx").stat().st_size / 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_backends_agree_with_float32_torch(
    backend: str,
    exported: dict[str, SentenceTransformerEmbeddings],
    torch_reference: np.ndarray,
) -> None:
    model = exported.get(backend) or SentenceTransformerEmbeddings(backend=backend)
    vectors = model.encode(AGREEMENT_TEXTS)
    assert vectors.shape == (len(AGREEMENT_TEXTS), 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = (vectors * torch_reference).sum(axis=1)
    assert cosine.mean() >= MEAN_COSINE[backend], cosine
    assert cosine.min() >= MIN_COSINE[backend], cosine
    alone = np.array([model.embed_query(t) for t in AGREEMENT_TEXTS[:3]])
    assert ((alone * vectors[:3]).sum(axis=1) >= BATCH_COSINE[backend]).all()
    # Retrieval order survives: each text is nearest to its own torch vector.
    assert (np.argmax(vectors @ torch_reference.T, axis=1) == np.arange(len(AGREEMENT_TEXTS))).all()


@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_cached_export_is_reused(
    backend: str,
    exported: dict[str, SentenceTransformerEmbeddings],
    embeddings_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = export_folder(embeddings_cache, backend)
    mtime = (folder / "model.onnx").stat().st_mtime_ns

    def no_export(*args: Any, **kwargs: Any) -> None:
        msg = "exported again although the cache is valid"
        raise AssertionError(msg)

    monkeypatch.setattr(onnx_backend, "_export_float", no_export)
    monkeypatch.setattr(onnx_backend, "_quantize", no_export)
    monkeypatch.setattr(onnx_backend, "_quantize_weights", no_export)
    monkeypatch.setattr(emb_module, "_load_model", no_export)  # not even torch is loaded
    caplog.set_level(logging.INFO)
    again = SentenceTransformerEmbeddings(backend=backend, cache_dir=embeddings_cache)
    vector = np.array(again.embed_query("heapq"))
    np.testing.assert_allclose(vector, exported[backend].embed_query("heapq"), atol=1e-6)
    assert (folder / "model.onnx").stat().st_mtime_ns == mtime
    assert not [r for r in caplog.records if "Export" in r.getMessage()]


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-manifest", "bad-manifest", "file-missing"])
def test_damaged_export_is_detected(
    exported: dict[str, SentenceTransformerEmbeddings], embeddings_cache: Path, tmp_path: Path, damage: str
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(export_folder(embeddings_cache, "onnx-int8"), folder)
    assert onnx_backend.read_export(folder) is not None
    model = folder / "model.onnx"
    if damage == "truncate":
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, one byte wrong
        model.write_bytes(bytes(data))
    elif damage == "no-manifest":
        (folder / "manifest.json").unlink()
    elif damage == "file-missing":
        model.unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    assert onnx_backend.read_export(folder) is None


@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_damaged_cache_is_rebuilt_with_one_message(
    backend: str,
    exported: dict[str, SentenceTransformerEmbeddings],
    embeddings_cache: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(embeddings_cache / "onnx", cache / "onnx")
    model_file = export_folder(cache, backend) / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # an interrupted copy
    caplog.set_level(logging.INFO)
    rebuilt = SentenceTransformerEmbeddings(backend=backend, cache_dir=cache)
    vector = np.array(rebuilt.embed_query("heapq"))
    np.testing.assert_allclose(vector, exported[backend].embed_query("heapq"), atol=1e-5)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 1, messages
    assert "Rebuilt the damaged ONNX export" in messages[0]
    assert str(model_file.parent) in messages[0]
    assert onnx_backend.read_export(model_file.parent) is not None


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(onnx_backend.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert onnx_backend.cache_root() == tmp_path / "xdg" / "langchain_vq"
    monkeypatch.setenv(onnx_backend.CACHE_ENV, str(tmp_path / "env"))
    assert onnx_backend.cache_root() == tmp_path / "env"
    assert onnx_backend.cache_root(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
@pytest.mark.parametrize("module", ["onnxruntime", "onnx"])
def test_missing_onnx_package_names_the_extra(
    backend: str, module: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes ``import module`` fail
    with pytest.raises(MissingDependencyError, match=r'pip install "langchain-vq\[onnx\]"') as info:
        SentenceTransformerEmbeddings(backend=backend)
    assert isinstance(info.value, ImportError)
    assert info.value.extra == "onnx"
    assert module in str(info.value)
    assert "backend='torch'" in str(info.value)


@pytest.mark.parametrize("backend", ["openvino", "openvino-int8"])
def test_missing_openvino_names_its_extra(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "langchain-vq\[openvino\]"') as info:
        SentenceTransformerEmbeddings(backend=backend)
    assert info.value.extra == "openvino"
    assert "needs openvino" in str(info.value)
    assert "backend='onnx-int8'" in str(info.value)  # the alternative that needs no OpenVINO
    SentenceTransformerEmbeddings(backend="onnx")  # the other backends do not need it


def test_package_missing_at_export_time_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    model = SentenceTransformerEmbeddings(backend="onnx", cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"langchain-vq\[onnx\]"):
        model.embed_query("x")
    assert not (tmp_path / "onnx").exists() or not any((tmp_path / "onnx").rglob("model.onnx"))


def test_threads_follow_cores_and_omp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = emb_module.available_cores()
    assert cores == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert emb_module.available_cores() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert emb_module.available_cores() == cores


def test_onnx_session_threads(exported: dict[str, SentenceTransformerEmbeddings]) -> None:
    # The test process runs with OMP_NUM_THREADS=1 (conftest), which the ONNX session honours.
    assert exported["onnx"].client.num_threads == emb_module.available_cores()
    assert exported["onnx"].client.session.get_session_options().intra_op_num_threads == (
        emb_module.available_cores()
    )


def test_onnx_progress_bar_and_prompts(
    exported: dict[str, SentenceTransformerEmbeddings], capsys: pytest.CaptureFixture[str]
) -> None:
    client = exported["onnx"].client
    client.encode(["a", "b", "c"], show_progress_bar=True, batch_size=2)
    assert "3/3" in capsys.readouterr().err
    plain = client.encode(["sorting a list"], normalize_embeddings=True)
    prompted = client.encode(["sorting a list"], prompt="query: ", normalize_embeddings=True)
    again = client.encode(["query: sorting a list"], normalize_embeddings=True)
    assert not np.allclose(plain, prompted)
    np.testing.assert_allclose(prompted, again, atol=1e-6)
    assert client.encode([]).shape == (0, 384)
