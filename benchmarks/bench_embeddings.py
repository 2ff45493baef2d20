"""Embedding backends side by side: speed, latency, memory and quality against float32 torch.

For each backend of ``SentenceTransformerEmbeddings`` (torch, onnx, onnx-int8, openvino,
openvino-int8), in one run on the same texts:

- documents per second on ~1,000-character chunks (SciFact abstracts cut at a word boundary) and
  on short sentences, with 1 thread and with every core;
- query-embedding latency (p50, p90) of SciFact queries, one ``embed_query`` call each;
- peak RSS of the process (each backend runs in its own child process, so torch's import does
  not count against ONNX Runtime);
- cosine to the float32 torch embeddings of the same texts;
- SciFact nDCG@10 with the whole corpus (5,183 abstracts) re-embedded by the backend
  (``--ndcg-backends``; float32 torch's is the shared precomputed embeddings, 0.6451);
- optionally (``--chatbot``) the first run of ``examples/chatbot.py`` on a fresh store for the old
  default (torch) and the new one, with a cold and a warm export cache.

The machine is shared: the load average is recorded before and after every child, backends are
interleaved, each measurement is repeated ``--rounds`` times and the best is kept; compare
backends only as ratios within one run.

Run: ``python benchmarks/bench_embeddings.py`` (about 10-15 min on 2 cores) ->
``results/bench_embeddings.{json,md}``. Options: ``--docs 512 --sentences 2048 --rounds 3``
for more, ``--ndcg-backends all`` to re-embed SciFact with every backend, ``--chatbot``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._common import hardware  # noqa: E402

DATA = Path(os.environ.get("LANGCHAIN_VQ_DATA", REPO.parent / "shared" / "data"))
SCIFACT = DATA / "scifact"
OUT = REPO / "benchmarks" / "results"
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
CHUNK_CHARS = 1000
QUESTION = "How do I copy a directory tree?"


# -- data ----------------------------------------------------------------------------------------
def scifact_corpus() -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            ids.append(doc["_id"])
            texts.append(f"{doc['title']} {doc['text']}")
    return ids, texts


def chunks(n: int) -> list[str]:
    """``n`` ~1,000-character chunks: the first abstracts of that length, cut at a word boundary."""
    _, texts = scifact_corpus()
    out = []
    for text in texts:
        if len(text) >= CHUNK_CHARS:
            out.append(text[: text.rfind(" ", 0, CHUNK_CHARS)])
        if len(out) == n:
            break
    return out


def sentences(n: int) -> list[str]:
    out = []
    with (DATA / "sentences" / "sentences.jsonl").open() as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if len(out) == n:
                break
    return out


def scifact_queries() -> tuple[list[str], list[str]]:
    from langchain_vq.evaluation import load_embedded_beir

    wanted = load_embedded_beir(SCIFACT)["query_ids"]
    text = {}
    with (SCIFACT / "queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            text[q["_id"]] = q["text"]
    return wanted, [text[q] for q in wanted]


# -- child: one backend, one thread setting ------------------------------------------------------
def worker(ns: argparse.Namespace) -> None:
    from langchain_vq.embeddings import SentenceTransformerEmbeddings

    load0 = os.getloadavg()[0]
    out = Path(ns.out_dir)
    started = time.perf_counter()
    model = SentenceTransformerEmbeddings(
        backend=ns.worker, num_threads=ns.threads, batch_size=ns.batch_size, show_progress=False
    )
    model.embed_query("warm up")
    result: dict = {
        "backend": ns.worker,
        "threads": ns.threads,
        "load_seconds": time.perf_counter() - started,
    }
    if ns.task == "speed":
        docs, sents = chunks(ns.docs), sentences(ns.sentences)
        for name, texts in (("chunks", docs), ("sentences", sents)):
            model.encode(texts[: ns.batch_size])  # warm the shapes
            best = float("inf")
            for _ in range(ns.repeats):
                t0 = time.perf_counter()
                vectors = model.encode(texts)
                best = min(best, time.perf_counter() - t0)
            result[f"{name}_per_s"] = len(texts) / best
            np.save(out / f"{ns.worker}-{ns.threads}-{name}.npy", vectors)
        _, queries = scifact_queries()
        queries = queries[: ns.queries]
        for q in queries[:5]:
            model.embed_query(q)
        times = []
        for q in queries:
            t0 = time.perf_counter()
            model.embed_query(q)
            times.append(time.perf_counter() - t0)
        result["query_p50_ms"] = 1000 * float(np.percentile(times, 50))
        result["query_p90_ms"] = 1000 * float(np.percentile(times, 90))
    elif ns.task == "gemm":
        result.update(gemm_ceiling())
    else:  # ndcg: re-embed the SciFact corpus and the test queries
        from langchain_vq.evaluation import exact_top_k, load_embedded_beir, ndcg_at_k

        data = load_embedded_beir(SCIFACT)
        ids, texts = scifact_corpus()
        by_id = dict(zip(ids, texts, strict=True))
        t0 = time.perf_counter()
        corpus = model.encode([by_id[i] for i in data["corpus_ids"]])
        result["corpus_seconds"] = time.perf_counter() - t0
        _, qtexts = scifact_queries()
        queries = np.array([model.embed_query(q) for q in qtexts], dtype=np.float32)
        top = exact_top_k(queries, corpus, 10)
        ranked = {
            q: [data["corpus_ids"][j] for j in row] for q, row in zip(data["query_ids"], top, strict=True)
        }
        result["ndcg_at_10"] = ndcg_at_k(ranked, data["qrels"], 10)
        cos = (corpus * data["corpus"]).sum(axis=1)
        result["corpus_cosine_to_float32"] = {"mean": float(cos.mean()), "min": float(cos.min())}
        qcos = (queries * data["queries"]).sum(axis=1)
        result["query_cosine_to_float32"] = {"mean": float(qcos.mean()), "min": float(qcos.min())}
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["loadavg_before"] = load0
    result["loadavg_after"] = os.getloadavg()[0]
    print("RESULT " + json.dumps(result), flush=True)


def gemm_ceiling() -> dict:
    """One-thread GEMM speed of the model's matrix shapes: float32 (torch, onnxruntime) vs int8.

    The transformer's time on long chunks is almost all matrix products, so the int8/float32
    ratio of a bare GEMM bounds what dynamic int8 quantization can gain end to end.
    """
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    m = 4096  # rows = tokens in a batch (64 chunks x ~64 tokens; longer batches scale alike)
    out: dict = {"rows": m, "shapes": {}}
    for k, n in ((384, 384), (384, 1536), (1536, 384)):
        b = rng.standard_normal((k, n)).astype(np.float32)
        b8 = rng.integers(-127, 128, (k, n), dtype=np.int8)
        fp = helper.make_model(
            helper.make_graph(
                [helper.make_node("MatMul", ["A", "B"], ["C"])],
                "fp32",
                [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                [helper.make_tensor_value_info("C", TensorProto.FLOAT, [m, n])],
                [onnx.numpy_helper.from_array(b, "B")],
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        )
        q = helper.make_model(
            helper.make_graph(
                [helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["C"])],
                "int8",
                [helper.make_tensor_value_info("A", TensorProto.UINT8, [m, k])],
                [helper.make_tensor_value_info("C", TensorProto.INT32, [m, n])],
                [
                    onnx.numpy_helper.from_array(b8, "B"),
                    onnx.numpy_helper.from_array(np.array(128, np.uint8), "az"),
                    onnx.numpy_helper.from_array(np.array(0, np.int8), "bz"),
                ],
            ),
            opset_imports=[helper.make_opsetid("", 17)],
        )
        a = rng.standard_normal((m, k)).astype(np.float32)
        a8 = rng.integers(0, 256, (m, k), dtype=np.uint8)
        s_fp = ort.InferenceSession(fp.SerializeToString(), options, providers=["CPUExecutionProvider"])
        s_q = ort.InferenceSession(q.SerializeToString(), options, providers=["CPUExecutionProvider"])
        torch.set_num_threads(1)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)

        def best(fn) -> float:
            fn()
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        flops = 2 * m * k * n
        out["shapes"][f"{k}x{n}"] = {
            "torch_fp32_gflops": flops / best(lambda ta=ta, tb=tb: ta @ tb) / 1e9,
            "ort_fp32_gflops": flops / best(lambda s=s_fp, a=a: s.run(None, {"A": a})) / 1e9,
            "ort_int8_gops": flops / best(lambda s=s_q, a=a8: s.run(None, {"A": a})) / 1e9,
        }
    shapes = out["shapes"].values()
    out["int8_over_torch_fp32"] = float(
        np.mean([v["ort_int8_gops"] / v["torch_fp32_gflops"] for v in shapes])
    )
    out["int8_over_ort_fp32"] = float(np.mean([v["ort_int8_gops"] / v["ort_fp32_gflops"] for v in shapes]))
    return out


def run_child(backend: str, threads: int, task: str, ns: argparse.Namespace, env: dict) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        backend,
        "--threads",
        str(threads),
        "--task",
        task,
        "--out-dir",
        ns.out_dir,
        "--docs",
        str(ns.docs),
        "--sentences",
        str(ns.sentences),
        "--queries",
        str(ns.queries),
        "--batch-size",
        str(ns.batch_size),
        "--repeats",
        str(ns.repeats),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stderr[-3000:], file=sys.stderr)
        msg = f"{backend} ({task}, {threads} threads) failed with code {proc.returncode}"
        raise RuntimeError(msg)
    return json.loads(lines[-1][len("RESULT ") :])


def prepare_cache(backends: list[str], env: dict) -> dict:
    """Export every ONNX backend into the benchmark's cache once, timing each export."""
    code = (
        "import sys, time; from langchain_vq.embeddings import SentenceTransformerEmbeddings as S; "
        "t = time.perf_counter(); S(backend=sys.argv[1]).embed_query('x'); "
        "print(time.perf_counter() - t)"
    )
    seconds = {}
    for backend in backends:
        if backend == "torch":
            continue
        proc = subprocess.run(
            [sys.executable, "-c", code, backend], capture_output=True, text=True, env=env, check=True
        )
        seconds[backend] = float(proc.stdout.strip().splitlines()[-1])
        print(f"  first load of {backend} (export included): {seconds[backend]:.1f} s", flush=True)
    return seconds


def chatbot_first_run(backend: str, cache: Path, env: dict) -> float:
    """Wall time of the README's main-job command on a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            str(REPO / "examples" / "chatbot.py"),
            "--question",
            QUESTION,
            "--store",
            str(Path(tmp) / "store"),
            "--backend",
            backend,
        ]
        t0 = time.perf_counter()
        subprocess.run(
            cmd, capture_output=True, text=True, env={**env, "LANGCHAIN_VQ_CACHE": str(cache)}, check=True
        )
        return time.perf_counter() - t0


# -- parent --------------------------------------------------------------------------------------
def main(ns: argparse.Namespace) -> None:
    backends = [b for b in ns.backends.split(",") if b]
    cores = len(os.sched_getaffinity(0))
    thread_settings = sorted({1, cores})
    tmp_root = Path(tempfile.mkdtemp(prefix="bench_embeddings-"))
    ns.out_dir = str(tmp_root / "vectors")
    Path(ns.out_dir).mkdir()
    cache = tmp_root / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANGCHAIN_VQ_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)
    started = time.time()
    report: dict = {
        "hardware": hardware(),
        "loadavg_at_start": os.getloadavg(),
        "settings": {
            "docs": ns.docs,
            "chunk_chars": CHUNK_CHARS,
            "sentences": ns.sentences,
            "queries": ns.queries,
            "batch_size": ns.batch_size,
            "rounds": ns.rounds,
            "repeats": ns.repeats,
            "thread_settings": thread_settings,
        },
        "versions": versions(),
    }
    print(f"load average {os.getloadavg()}; preparing the export cache in {cache}", flush=True)
    report["first_load_seconds_with_export"] = prepare_cache(backends, env)

    runs: dict[str, dict[int, list[dict]]] = {b: {t: [] for t in thread_settings} for b in backends}
    for round_no in range(ns.rounds):
        for threads in thread_settings:
            for backend in backends:  # interleaved, so slow drifts in load hit every backend
                r = run_child(backend, threads, "speed", ns, env)
                runs[backend][threads].append(r)
                print(
                    f"  round {round_no} {backend:9s} {threads} thr: {r['chunks_per_s']:6.1f} chunks/s "
                    f"{r['sentences_per_s']:7.1f} sentences/s  query p50 {r['query_p50_ms']:5.1f} ms  "
                    f"rss {r['peak_rss_mb']:5.0f} MB  load {r['loadavg_before']:.1f}",
                    flush=True,
                )
    results: dict = {}
    for backend in backends:
        entry: dict = {}
        for threads in thread_settings:
            rs = runs[backend][threads]
            key = "1_thread" if threads == 1 else f"{threads}_threads"
            entry[key] = {
                "chunks_per_s": max(r["chunks_per_s"] for r in rs),
                "sentences_per_s": max(r["sentences_per_s"] for r in rs),
                "query_p50_ms": min(r["query_p50_ms"] for r in rs),
                "query_p90_ms": min(r["query_p90_ms"] for r in rs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "load_seconds": min(r["load_seconds"] for r in rs),
                "loadavg": [r["loadavg_before"] for r in rs],
            }
        entry["cosine_to_float32"] = cosines(backend, thread_settings[0], Path(ns.out_dir))
        results[backend] = entry
    report["backends"] = results

    if "onnx-int8" in backends:
        report["gemm_ceiling_1_thread"] = run_child("onnx-int8", 1, "gemm", ns, env)
        print(f"  GEMM ceiling (1 thread): {json.dumps(report['gemm_ceiling_1_thread'])}", flush=True)

    ndcg_backends = backends if ns.ndcg_backends == "all" else [b for b in ns.ndcg_backends.split(",") if b]
    report["ndcg"] = {"torch (shared precomputed float32 embeddings)": reference_ndcg()}
    for backend in ndcg_backends:
        print(f"  SciFact nDCG@10: re-embedding 5,183 abstracts with {backend} ({cores} threads)", flush=True)
        r = run_child(backend, cores, "ndcg", ns, env)
        report["ndcg"][backend] = r
        print(f"    nDCG@10 {r['ndcg_at_10']:.4f} in {r['corpus_seconds']:.0f} s", flush=True)

    if ns.chatbot:
        chat: dict = {}
        for label, backend, cold in (
            ("torch (old default)", "torch", True),
            (f"{ns.default} cold cache (export included)", ns.default, True),
            (f"{ns.default} warm cache", ns.default, False),
        ):
            chat_cache = tmp_root / f"chat-cache-{backend}"
            if cold:
                shutil.rmtree(chat_cache, ignore_errors=True)
            chat[label] = chatbot_first_run(backend, chat_cache, env)
            print(f"  chatbot first run, {label}: {chat[label]:.1f} s", flush=True)
        report["chatbot_first_run_seconds"] = chat

    report["summary"] = summary(report, ns.default, thread_settings)
    report["loadavg_at_end"] = os.getloadavg()
    report["wall_seconds"] = time.time() - started
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_embeddings.json").write_text(json.dumps(report, indent=2) + "\n")
    (OUT / "bench_embeddings.md").write_text(markdown(report, thread_settings))
    print((OUT / "bench_embeddings.md").read_text())
    shutil.rmtree(tmp_root, ignore_errors=True)


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "openvino"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def cosines(backend: str, threads: int, folder: Path) -> dict:
    out = {}
    for name in ("chunks", "sentences"):
        ref = np.load(folder / f"torch-{threads}-{name}.npy")
        got = np.load(folder / f"{backend}-{threads}-{name}.npy")
        cos = (ref * got).sum(axis=1)
        out[name] = {"mean": float(cos.mean()), "min": float(cos.min())}
    return out


def reference_ndcg() -> float:
    from langchain_vq.evaluation import exact_top_k, load_embedded_beir, ndcg_at_k

    data = load_embedded_beir(SCIFACT)
    top = exact_top_k(data["queries"], data["corpus"], 10)
    ranked = {q: [data["corpus_ids"][j] for j in row] for q, row in zip(data["query_ids"], top, strict=True)}
    return ndcg_at_k(ranked, data["qrels"], 10)


def summary(report: dict, default: str, thread_settings: list[int]) -> dict:
    """The issue's three targets for ``default``, as ratios to float32 torch in this run."""
    res = report["backends"]
    if "torch" not in res or default not in res:
        return {}
    one = "1_thread"
    out = {
        "default_backend": default,
        "chunks_speedup_1_thread": res[default][one]["chunks_per_s"] / res["torch"][one]["chunks_per_s"],
        "sentences_speedup_1_thread": res[default][one]["sentences_per_s"]
        / res["torch"][one]["sentences_per_s"],
        "query_p50_ratio_1_thread": res[default][one]["query_p50_ms"] / res["torch"][one]["query_p50_ms"],
    }
    many = f"{thread_settings[-1]}_threads"
    if many in res[default]:
        out[f"chunks_speedup_{many}"] = (
            res[default][many]["chunks_per_s"] / res["torch"][many]["chunks_per_s"]
        )
        out[f"query_p50_ratio_{many}"] = (
            res[default][many]["query_p50_ms"] / res["torch"][many]["query_p50_ms"]
        )
        out[f"{default}_chunks_scaling_{many}_vs_1"] = (
            res[default][many]["chunks_per_s"] / res[default][one]["chunks_per_s"]
        )
        out[f"{default}_sentences_scaling_{many}_vs_1"] = (
            res[default][many]["sentences_per_s"] / res[default][one]["sentences_per_s"]
        )
    ref = report["ndcg"]["torch (shared precomputed float32 embeddings)"]
    if default in report["ndcg"]:
        out["ndcg_kept"] = report["ndcg"][default]["ndcg_at_10"] / ref
    out["targets"] = {
        "chunks_speedup_1_thread >= 2.5": out["chunks_speedup_1_thread"] >= 2.5,
        "query_p50_ratio_1_thread <= 0.5": out["query_p50_ratio_1_thread"] <= 0.5,
        "ndcg_kept >= 0.995": out.get("ndcg_kept", 0) >= 0.995,
    }
    return out


def markdown(report: dict, thread_settings: list[int]) -> str:
    res = report["backends"]
    many = f"{thread_settings[-1]}_threads"
    lines = [
        f"Embedding backends, all-MiniLM-L6-v2, {report['hardware']['cpu_model']} "
        f"({report['hardware']['cores']} cores, shared; load average {report['loadavg_at_start'][0]:.1f} "
        f"at start). Best of {report['settings']['rounds']} interleaved rounds.",
        "",
        f"| backend | chunks/s 1 thr | chunks/s {thread_settings[-1]} thr | sentences/s 1 thr | "
        f"sentences/s {thread_settings[-1]} thr | query p50 ms (1 thr) | peak RSS MB | cosine to fp32 "
        "(chunks mean / min) | SciFact nDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ndcg = report["ndcg"]
    for backend, r in res.items():
        one = r["1_thread"]
        top = r.get(many, one)
        cos = r["cosine_to_float32"]["chunks"]
        score = ndcg.get(backend, {}).get("ndcg_at_10")
        if backend == "torch":
            score = ndcg["torch (shared precomputed float32 embeddings)"]
        lines.append(
            f"| {backend} | {one['chunks_per_s']:.1f} | {top['chunks_per_s']:.1f} | {one['sentences_per_s']:.0f} | "
            f"{top['sentences_per_s']:.0f} | {one['query_p50_ms']:.1f} | {max(one['peak_rss_mb'], top['peak_rss_mb']):.0f} | "
            f"{cos['mean']:.4f} / {cos['min']:.4f} | {'-' if score is None else f'{score:.4f}'} |"
        )
    if report.get("chatbot_first_run_seconds"):
        lines += ["", "First run of `examples/chatbot.py --question ...` on a fresh store (226 chunks):", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in report["chatbot_first_run_seconds"].items()]
    if report.get("gemm_ceiling_1_thread"):
        g = report["gemm_ceiling_1_thread"]
        lines += [
            "",
            f"GEMM ceiling, one thread, the model's matrix shapes: int8 (onnxruntime MatMulInteger) runs "
            f"{g['int8_over_torch_fp32']:.2f}x torch float32 and {g['int8_over_ort_fp32']:.2f}x onnxruntime float32.",
        ]
    if report.get("summary"):
        lines += ["", "Summary: " + json.dumps(report["summary"], indent=None)]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument(
        "--default", default="openvino-int8", help="the backend the summary checks the targets for"
    )
    p.add_argument("--docs", type=int, default=96, help="~1,000-character chunks per speed run")
    p.add_argument("--sentences", type=int, default=384, help="short sentences per speed run")
    p.add_argument("--queries", type=int, default=100, help="queries timed one by one")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept")
    p.add_argument("--repeats", type=int, default=1, help="encodes per text set within a child")
    p.add_argument("--ndcg-backends", default="openvino-int8", help="comma list, or 'all'")
    p.add_argument("--chatbot", action="store_true", help="also time the chatbot's first run")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--task", default="speed", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse()
    if args.worker:
        worker(args)
    else:
        main(args)
