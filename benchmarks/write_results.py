"""Write ``benchmarks/RESULTS.md`` and the README's benchmark summary from ``benchmarks/results/``.

Every benchmark number in the documentation comes from here: the full tables of the last runs
(``bench_search.md`` and ``peers.md``, which the benchmark scripts render from their JSON), plus
tables computed from the JSON results (summary, binary stage limits, ingest memory, quantizer
defaults, durability). The README gets only the summary, between its
``<!-- benchmark-summary:start -->`` / ``<!-- benchmark-summary:end -->`` markers.

The one hand-written part of RESULTS.md, the notes between ``<!-- notes:start -->`` and
``<!-- notes:end -->`` (what the numbers say, and why), is kept from the existing file.

``bench_search.py`` and ``bench_peers.py`` call it at the end of a run that wrote to
``benchmarks/results/``; by hand: ``python benchmarks/write_results.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RESULTS_MD = REPO / "benchmarks" / "RESULTS.md"
README = REPO / "README.md"
TARGET_RECALL = 0.99
SUMMARY_START = "<!-- benchmark-summary:start -->"
SUMMARY_END = "<!-- benchmark-summary:end -->"
NOTES_START = "<!-- notes:start -->"
NOTES_END = "<!-- notes:end -->"
_NOTES_PLACEHOLDER = "_No notes yet: write here what the numbers say, and why._"


def write_if_results(out_dir: Path) -> None:
    """Rewrite the documents when ``out_dir`` is the committed results folder (not a scratch run)."""
    if out_dir.resolve() == RESULTS.resolve():
        main()


# -- reading results ---------------------------------------------------------------------------
def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _runs(dataset: dict[str, Any], method: str) -> list[dict[str, Any]]:
    """The single-thread runs of ``method`` in a bench_peers dataset, with the process's numbers."""
    entry = dataset.get("methods", {}).get(method, {})
    t1 = entry.get("t1")
    if t1 is None:
        return []
    return [
        {
            "setting": run["setting"],
            "multiplier": run.get("rescore_multiplier"),
            "recall": run["recall_at_10"],
            "p50": run["single"]["p50_ms"],
            "ndcg": run.get("ndcg_at_10"),
            "bytes": t1.get("bytes_per_vector"),
            "anon_mb": t1["rss_after_queries"]["rss_anon_mb"],
        }
        for run in t1["runs"]
    ]


def shown_setting(row: dict[str, Any]) -> str:
    """A row's setting as the tables show it: the default with the multiplier it chose."""
    if row["setting"] == "default" and row.get("multiplier"):
        return f"default (m={row['multiplier']})"
    return row["setting"]


def _busy_methods(dataset: dict[str, Any]) -> str:
    """A sentence naming the methods whose run ended on a busy machine (load above 3)."""
    busy = []
    for method, entry in dataset.get("methods", {}).items():
        load = (entry.get("t1") or {}).get("load_end")
        if load and load[0] > 3:
            busy.append(f"{method} (load {load[0]:.1f} at its end)")
    if not busy:
        return ""
    return " Measured while other work started, so slower than on a quiet machine: " + ", ".join(busy) + "."


def _fastest_at(runs: list[dict[str, Any]], recall: float) -> dict[str, Any] | None:
    good = [r for r in runs if r["recall"] >= recall]
    return min(good, key=lambda r: r["p50"]) if good else None


def _ndcg(peers: dict[str, Any], method: str, setting: str) -> float | None:
    scifact = peers["datasets"].get("scifact", {})
    return next((r["ndcg"] for r in _runs(scifact, method) if r["setting"] == setting), None)


def _f(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


# -- the summary (README and RESULTS.md) ----------------------------------------------------------


def _updates_words(updates: list[dict[str, Any]]) -> str:
    """``; <methods> measured again on <date> (`--update`)``, once per methods and day (with a count)."""
    counts: dict[tuple[str, str], int] = {}
    for update in updates:
        key = (", ".join(update["methods"]), update["date"][:10])
        counts[key] = counts.get(key, 0) + 1
    times = {1: "", 2: ", twice", 3: ", three times"}
    return "".join(
        f"; {methods} measured again on {day} (`--update`{times.get(n, f', {n} times')})"
        for (methods, day), n in counts.items()
    )


def _load_words(run: dict[str, Any], cores: int) -> str:
    """The run's load averages in words, with a warning when the machine was busier than its cores."""
    highest = max(*run["load_start"], *run["load_end"])
    words = f"load average {run['load_start'][0]:.1f} at the start, up to {highest:.1f} by the end"
    if highest > cores:
        words += (
            "; the machine was busy with other work during the run, so these times are noisy and "
            "methods measured at different moments compare only roughly (disk, memory and recall are "
            "not affected)"
        )
    return words


def summary(peers: dict[str, Any], search: dict[str, Any] | None) -> list[str]:
    """About five rows at 1M vectors, one thread, plus the conditions they were measured in."""
    syn = peers["datasets"]["synthetic"]
    flat = next(iter(_runs(syn, "faiss-flat")), None)
    picks: list[tuple[str, dict[str, Any] | None, str]] = []
    binary = _runs(syn, "vq-binary")
    default = next((r for r in binary if "default" in r["setting"]), None)
    # The default, then the fastest setting of each method reaching TARGET_RECALL (LanceDB: its
    # best recall if none does), then exact search.
    picks.append(("langchain_vq binary", default, "vq-binary"))
    picks.append(("langchain_vq binary", _fastest_at(binary, TARGET_RECALL), "vq-binary"))
    fast = _fastest_at(_runs(syn, "vq-binary-fast-scan"), TARGET_RECALL)
    picks.append(("langchain_vq binary, `fast_scan`", fast, "vq-binary-fast-scan"))
    lance = _runs(syn, "lancedb")
    lance_pick = _fastest_at(lance, TARGET_RECALL) or max(lance, key=lambda r: r["recall"], default=None)
    picks.append(("LanceDB IVF_PQ", lance_pick, "lancedb"))
    picks.append(("FAISS IndexFlatIP (exact)", flat, "faiss-flat"))
    lines = [
        "| method | setting | bytes/vector in RAM | recall@10 | p50 ms | vs IndexFlatIP | private MB | SciFact nDCG@10 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    shown: list[dict[str, Any]] = []
    for label, row, method in picks:
        if row is None or any(row is seen for seen in shown):  # the default may be the fastest too
            continue
        shown.append(row)
        speedup = f"{flat['p50'] / row['p50']:.1f}x" if flat else ""
        lines.append(
            f"| {label} | {shown_setting(row)} | {_f(row['bytes'], '.0f')} | {row['recall']:.4f} | "
            f"{row['p50']:.2f} | {speedup} | {row['anon_mb']:,.0f} | "
            f"{_f(_ndcg(peers, method, row['setting']), '.4f')} |"
        )
    small = peers["datasets"].get("synthetic_small", {})
    inmem = next(iter(_runs(small, "inmemory")), None)
    if inmem and flat:
        scale = syn["rows"] / max(small["rows"], 1)
        lines.append(
            f"| LangChain InMemoryVectorStore | {small['rows']:,} rows, time x{scale:g} | | "
            f"{inmem['recall']:.4f} | {inmem['p50'] * scale:,.0f} | {flat['p50'] / (inmem['p50'] * scale):.3f}x | "
            f"| {_f(_ndcg(peers, 'inmemory', inmem['setting']), '.4f')} |"
        )
    hw, cfg = peers["hardware"], peers["config"]
    scifact = peers["datasets"].get("scifact", {})
    lines += [
        "",
        (
            f"{syn['rows']:,} x {cfg['dim']} synthetic vectors with the structure of all-MiniLM-L6-v2 "
            f"embeddings, {cfg['queries']:,} queries, k={cfg['k']}, single queries on one thread (process "
            f"pinned to one core). {hw['cpu_model']}, {hw['cores']} shared cores, {hw['ram_gb']} GB RAM; "
            f"Python {hw['python']}, FAISS {hw['faiss']}, pyarrow {hw['pyarrow']}, LanceDB {hw['lancedb']}; "
            f"run of {peers['date'][:10]} (`bench_peers.py`, {_load_words(peers, hw['cores'])})"
            + _updates_words(peers.get("updates", []))
            + ". "
            "m = `rescore_multiplier`; langchain_vq "
            f"and LanceDB rows: the fastest setting reaching recall@10 {TARGET_RECALL}, after the default. "
            "InMemoryVectorStore: measured on the first rows, its full-scan time scaled linearly. Private MB: "
            "anonymous resident memory after all queries of the process (the mapped float pages a query "
            "touches are page cache, not counted). Each method opens cold (its files evicted from the page "
            "cache), so langchain_vq's first queries read float rows from disk; the warm numbers are "
            "`bench_search.py`'s, below."
            + _busy_methods(syn)
            + (
                f" SciFact: {scifact['rows']:,} real abstracts, {scifact['queries']} queries, same setting."
                if "rows" in scifact
                else ""
            )
        ),
    ]
    if search is not None:
        older = max([peers["date"], *(u["date"] for u in peers.get("updates", []))]) < search["date"]
        lines += [
            "",
            (
                f"**The table above is from the peers run of {peers['date'][:10]}**, older than the "
                "store's latest changes. "
                if older
                else ""
            )
            + f"Warm, the default store of {search['date'][:10]} (`bench_search.py`, {search['config']['n']:,} "
            f"rows built by ten adds, not compacted, same kind of data, {search['hardware']['cpu_model']}): "
            + _default_sentence(search),
        ]
        lines += ["", _search_sentence(search)]
    embeddings = _load("bench_embeddings.json")
    if embeddings is not None:
        lines += ["", _embeddings_sentence(embeddings)]
    ray = _load("bench_ray.json")
    if ray is not None:
        lines += ["", _ray_sentence(ray)]
    return lines


def _ray_sentence(data: dict[str, Any]) -> str:
    """Distributed build scaling and sharded search overhead, from bench_ray."""
    one, two = data["build"][0], data["build"][1]
    search = data["search"]
    runs = data.get("build_runs", [one, two])  # per-run loads (older files: on each configuration)
    loads = [r[key][0] for r in runs for key in ("load_before", "load_after") if key in r]
    return (
        f"Scale-out on Ray (`bench_ray.py`, local 2-CPU cluster on 2 cores shared with other jobs, load average {min(loads):.1f}-"
        f"{max(loads):.1f}): building {one['rows']:,} chunks with the real model ran at "
        f"{one['rows_per_s']:.1f} rows/s with 1 worker and {two['rows_per_s']:.1f} with 2 "
        f"({data['estimate']['scaling_2_workers']:.2f}x"
        + (
            f"; per CPU second the workers got, {data['estimate']['cpu_efficiency_2_workers']:.2f}x as many "
            "rows with 2 as with 1"
            if "cpu_efficiency_2_workers" in data["estimate"]
            else ""
        )
        + (
            f"; each configuration's runs: {_rates(one)} and {_rates(two)} rows/s, their means compared"
            + (
                f", worst pairing {data['build_scaling']['scaling_2_workers_worst_pair']:.2f}x"
                if "build_scaling" in data
                else ""
            )
            if len(one.get("rows_per_s_all", [])) > 1
            else ""
        )
        + f"); a query over {search['shards']} shards of "
        f"{search['rows']:,} rows took {search['sharded']['p50_ms']:.2f} ms p50 against "
        f"{search['one_store']['p50_ms']:.2f} ms for one store ({search['fanout_overhead_p50_ms']:.2f} ms "
        "fan-out overhead"
        + (
            f", through a Ray compiled graph compiled in {search['graph_compile_s']:.2f} s; with normal actor "
            f"calls {search['fanout_overhead_calls_p50_ms']:.2f} ms"
            if search.get("sharded_compiled_graph") and "fanout_overhead_calls_p50_ms" in search
            else ""
        )
        + (
            f"; a no-op normal call to every shard actor alone took {search['noop_call_all_shards']['p50_ms']:.2f} ms"
            if "noop_call_all_shards" in search
            else ""
        )
        + ")."
    )


def _rates(run: dict[str, Any]) -> str:
    return " / ".join(f"{rate:.1f}" for rate in run["rows_per_s_all"])


def _embeddings_sentence(data: dict[str, Any]) -> str:
    """The default embedding backend against float32 torch, from bench_embeddings."""
    default = data["summary"]["default_backend"]
    new, old = data["backends"][default], data["backends"]["torch"]
    one, one_old = new["1_thread"], old["1_thread"]
    chatbot = data.get("chatbot_first_run_seconds") or {}
    warm = next((v for k, v in chatbot.items() if "warm" in k), None)
    cold = next((v for k, v in chatbot.items() if "cold" in k), None)
    torch_run = next((v for k, v in chatbot.items() if k.startswith("torch")), None)
    ndcg = data["ndcg"]
    return (
        f"Embedding with all-MiniLM-L6-v2 (`bench_embeddings.py`, {data['hardware']['cpu_model']}, one "
        f"thread): the default backend `{default}` embeds {one['chunks_per_s']:.1f} 1,000-character chunks/s "
        f"against {one_old['chunks_per_s']:.1f} for float32 torch "
        f"({one['chunks_per_s'] / one_old['chunks_per_s']:.2f}x; two threads: "
        f"{new['2_threads']['chunks_per_s']:.1f}), {one['sentences_per_s']:.0f} against "
        f"{one_old['sentences_per_s']:.0f} short sentences/s, and a query in {one['query_p50_ms']:.1f} against "
        f"{one_old['query_p50_ms']:.1f} ms (p50); SciFact nDCG@10 {ndcg[default]['ndcg_at_10']:.4f} against "
        f"{next(v for k, v in ndcg.items() if k.startswith('torch')):.4f}."
        + (
            f" The chatbot's first run on a new store: {warm:.0f} s with the export cached, {cold:.0f} s "
            f"including the one-time export, against {torch_run:.0f} s with torch."
            if warm and cold and torch_run
            else ""
        )
    )


def _first_stage(ingest: dict[str, Any]) -> str:
    """How the store's first stage scanned: ", nprobe X of N lists" when it had lists, else nothing."""
    if not ingest.get("partitions"):
        return ""
    return f", nprobe {ingest['nprobe']} of {ingest['partitions']} lists"


def _default_sentence(search: dict[str, Any]) -> str:
    """The default binary and PQ stores against IndexFlatIP, from bench_search."""
    v = search["verdicts"]
    flat = search["peers"]["flat_ip"]["p50_ms"]
    default = next(r for r in search["modes"]["binary"]["warm"]["runs"] if r["default"])
    out = (
        f"binary at the calibrated m={default['rescore_multiplier']}"
        f"{_first_stage(search['modes']['binary']['ingest'])}: recall@10 {default['recall_at_10']:.4f}, "
        f"p50 {default['p50_ms']:.1f} ms against {flat:.1f} ms for IndexFlatIP ({flat / default['p50_ms']:.1f}x)"
    )
    if "pq_speedup_vs_flat_ip" in v:
        pq = next(r for r in search["modes"]["pq"]["warm"]["runs"] if r["default"])
        out += (
            f"; PQ at m={pq['rescore_multiplier']}{_first_stage(search['modes']['pq']['ingest'])}: recall@10 {pq['recall_at_10']:.4f}, p50 {pq['p50_ms']:.1f} ms "
            f"({v['pq_speedup_vs_flat_ip']:.1f}x)"
        )
    return out + "."


def _search_sentence(search: dict[str, Any]) -> str:
    """Filters and open time at 1M rows, from bench_search."""
    warm = search["modes"]["binary"]["warm"]
    opens = search["verdicts"]["open_ms_by_mode"].values()
    parts = [
        f"{r['filter'].split(' ')[0]} of rows ({r['matching_rows']:,}): {r['p50_ms']:.1f} ms"
        for r in warm.get("filtered", [])
    ]
    unfiltered = next(r for r in warm["runs"] if r["default"])
    disk = [
        f"{label} {mode['ingest']['disk_ratio_vs_raw_float32']:.2f} (recall@10 "
        f"{next(r for r in mode['warm']['runs'] if r['default'])['recall_at_10']:.3f})"
        for label, name in (
            ("float16 vectors (the default)", "binary"),
            ("float32", "binary-float32"),
            ("int8", "binary-int8"),
            ("codes only", "binary-codes-only"),
        )
        if "disk_ratio_vs_raw_float32" in (mode := search["modes"].get(name, {})).get("ingest", {})
    ]
    return (
        f"Metadata filters at {search['config']['n']:,} rows (`bench_search.py`, binary, default m), p50: "
        f"unfiltered {unfiltered['p50_ms']:.1f} ms; a filter keeping " + ", ".join(parts) + ". Opening a "
        f"store of that size takes {min(opens):.0f}-{max(opens):.0f} ms with a warm page cache."
        + (
            " A binary store on disk, as a ratio to the raw float32 vectors, at default settings: "
            + ", ".join(disk)
            + "."
            if disk
            else ""
        )
    )


# -- sections of RESULTS.md computed from JSON ------------------------------------------------------
def binary_limits(limits: dict[str, Any]) -> list[str]:
    """Stage by stage: why a full scan of binary codes cannot be 30x faster than exact search here."""
    c = limits["conditions"]
    lines = [
        f"{c['rows']:,} x {c['dim']} synthetic vectors, {c['queries']} queries, {c['threads']} thread "
        "(`binary_limits.py`):",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| one core's read speed (XOR-reduce of 48 MB) | {limits['read_gb_per_s']:.1f} GB/s |",
        f"| FAISS Hamming scan of 1M 64-byte codes, k=10 | {limits['hamming_scan_1m_64b_k10_ms']:.1f} ms |",
    ]
    lines += [
        f"| true top 10 kept by the Hamming top {int(n):,} | {v:.4f} |"
        for n, v in limits["recall_of_hamming_top_n"].items()
    ]
    lines += [
        f"| true top 10 kept by the asymmetric top {int(n):,} of the Hamming top 10,240 | {v:.4f} |"
        for n, v in limits["recall_of_asymmetric_top_m_among_hamming_10240"].items()
    ]
    lines += [
        f"| inverted file, 1024 lists, nprobe {r['nprobe']}: true top 10 in the probed lists / rows scanned "
        f"| {r['true_top10_in_probed_lists']:.4f} / {r['rows_scanned']:.1%} |"
        for r in limits["ivf_1024_lists"]
    ]
    return lines


def ingest(data: dict[str, Any]) -> list[str]:
    c = data["conditions"]
    rise = data["anon_peak_mb"] - data["anon_before_add_mb"]
    return [
        (
            f"One `add_embeddings` of {c['rows']:,} x {c['dim']} vectors ({data['float_mb']:.0f} MB of floats) "
            f"into a new {c['quantization']} store, the first add training the quantizer "
            f"(`ingest_memory.py`, anonymous memory sampled every 2 ms): private memory rose by "
            f"{rise:.0f} MB at peak, {data['extra_peak_over_floats']:.2f}x the batch's float bytes; the add "
            f"took {data['add_seconds']:.1f} s."
        )
    ]


def ingest_limits(data: dict[str, Any]) -> list[str]:
    """The default's ingest at 1M against the uncalibrated build, and the kernels it cannot skip."""
    cfg, builds, kernels, ratios = data["config"], data["builds"], data["kernels_cpu_s"], data["ratios"]
    cpu, wall = builds["median_cpu_s"], builds["median_wall_s"]
    exact = kernels["c_exact_by_rows"]
    scans = kernels["d_scans_per_calibration"]
    lines = [
        f"{cfg['n']:,} x {cfg['dim']} synthetic vectors added by {cfg['batch']:,}, one thread, medians of "
        f"{cfg['repeat']} alternating builds per side (`ingest_limits.py`), load "
        f"{data['load_start'][0]:.1f}-{data['load_end'][0]:.1f}; CPU seconds.",
        "",
        "| build or kernel | CPU s |",
        "|---|---:|",
        f"| fixed `m=16`, no lists, no calibration | {cpu['fixed']:.2f} |",
        f"| default (calibrated, lists from 200k rows) | {cpu['default']:.2f} |",
        f"| a. every row's list ({kernels['a_multiply_adds'] / cfg['n'] / 1e3:.0f}k multiply-adds a row) "
        f"| {kernels['a_assign_all_rows']:.2f} |",
        f"| b. training 1024 lists, choosing `nprobe` | {kernels['b_train']:.2f} + {kernels['b_choose_nprobe']:.2f} |",
        f"| c. exact top 10 of {cfg['queries']} queries, float32, over {cfg['n']:,} rows once "
        f"| {exact[str(cfg['n'])]:.2f} |",
        f"| c. the same over the rows of today's calibrations "
        f"({', '.join(f'{r // 1000}k' for r in kernels['schedule_rows'])}) "
        f"| {sum(exact[str(r)] for r in kernels['schedule_rows']):.2f} |",
        f"| d. one calibration's ranked code scans at {cfg['n']:,} rows | {kernels['d_scan_at_n']['cpu_s']:.2f} |",
        f"| d. at every calibration of today's schedule | {sum(s['cpu_s'] for s in scans):.2f} |",
        "",
        f"Default / fixed: {cpu['ratio']:.2f}x CPU, {wall['ratio']:.2f}x wall. Floor (fixed plus a, b, c once "
        f"and d once): **{ratios['floor_ratio']:.2f}x**; today's schedule's kernels: {ratios['schedule_ratio']:.2f}x; "
        f"at 1.5x the kernels may spend {ratios['kernel_budget_at_target_cpu_s']:.2f} s. Cheaper variants, "
        "**costs only** (their recall and query speed are not measured):",
        "",
        "| variant | floor | today's schedule |",
        "|---|---:|---:|",
    ]
    variants = {k: v for k, v in data["variants_cost_only"].items() if isinstance(v, dict)}
    lines.extend(
        f"| {v['what']} | {v['floor_ratio']:.2f}x | {v['schedule_ratio']:.2f}x |" for v in variants.values()
    )
    return lines


def _recall_table(
    columns: list[str], multipliers: list[str], rows: list[tuple[list[str], dict]]
) -> list[str]:
    """A Markdown table: the given columns (numbers right-aligned), then recall@10 per multiplier."""
    aligns = "|".join("---:" if c in {"rows", "code bytes", "bytes/vector"} else "---" for c in columns)
    lines = [
        "| " + " | ".join(columns) + " | " + " | ".join(f"m={m}" for m in multipliers) + " |",
        f"|{aligns}|" + "---:|" * len(multipliers),
    ]
    for cells, recall in rows:
        lines.append("| " + " | ".join([*cells, *(f"{recall[m]:.4f}" for m in multipliers)]) + " |")
    return lines


def quantizer_defaults(data: dict[str, Any]) -> list[str]:
    """Recall@10 per quantizer configuration and multiplier on real sentence embeddings."""
    multipliers = list(data["results"][0]["recall_at_10"])
    rows = [([r["label"], str(r["code_size"])], r["recall_at_10"]) for r in data["results"]]
    return [
        f"{data['data']}; recall@{data['k']} against exact search, {data['threads']} thread "
        "(`measure_quantizer_defaults.py`; binary codes unpadded, 48 bytes). `hf`: the binary "
        "quantizer's `hamming_factor`. The defaults are the smallest multiplier reaching 0.99 with "
        "the default configuration (binary hf=8, pq m=96).",
        "",
        *_recall_table(["configuration", "code bytes"], multipliers, rows),
    ]


def rescore_precision(data: dict[str, Any]) -> list[str]:
    """Recall@10 per rescoring precision and multiplier, and SciFact nDCG@10."""
    multipliers = [str(m) for m in data["multipliers"]]
    sizes = data["bytes_per_vector_384"]
    corpora = [(f"real {name}", run) for name, run in data["real"].items()]
    if "synthetic" in data:
        corpora.append(("synthetic", data["synthetic"]))
    rows = [
        ([label, f"{run['rows']:,}", precision, str(sizes.get(precision.split("-")[0], ""))], recall)
        for label, run in corpora
        for precision, recall in run["recall@10"].items()
    ]
    ndcg = data["scifact_ndcg@10"]
    per = ", ".join(f"{p} {v[multipliers[0]]:.4f}" for p, v in ndcg.items() if p != "exact")
    return [
        "Binary candidates (default quantizer, `10 * m` per query) rescored with vectors stored at each "
        "precision and decoded to float32; recall@10 against exact float search "
        "(`measure_rescore_precision.py`). Real: MiniLM sentence embeddings, 1,000 held-out queries.",
        "",
        *_recall_table(["data", "rows", "precision", "bytes/vector"], multipliers, rows),
        "",
        f"SciFact nDCG@10 at m={multipliers[0]}: exact {ndcg['exact']:.4f}; {per}.",
    ]


def fast_scan(data: dict[str, Any]) -> list[str]:
    """Each fast path against the path it replaced, per data set, at recall@10 >= 0.99."""
    lines = [
        "Code search plus numpy float rescoring, one thread, each method at its smallest multiplier "
        "reaching recall@10 0.99 (`measure_fast_scan.py`); not through the store.",
        "",
        "| data | rows | method | code bytes | m | recall@10 | p50 ms | vs IndexFlatIP |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, d in data["datasets"].items():
        flat = d["flat_ip"]["p50_ms"]
        lines += [
            f"| {name} | {d['rows']:,} | {m['description']} | {m['code_bytes_per_vector']} | "
            f"{m['rescore_multiplier']} | {m['recall_at_10']:.4f} | {m['p50_ms']:.2f} | {flat / m['p50_ms']:.1f}x |"
            for m in d["methods"].values()
        ]
        lines.append(
            f"| {name} | {d['rows']:,} | FAISS IndexFlatIP | {4 * d['dim']} | | 1.0000 | {flat:.2f} | 1.0x |"
        )
    return lines


def store_overhead(data: dict[str, Any]) -> list[str]:
    """The store against the bare kernels at equal settings, and ten adds against compacted."""
    cfg, p50, cpu, ratios = data["config"], data["p50_ms"], data["cpu_p50_ms"], data["ratios"]
    recall = data["recall_at_10"]
    segments = data["segments"]["store_added"]
    return [
        f"{cfg['n']:,} x {cfg['dim']} {cfg.get('source', 'synthetic')} vectors, binary "
        f"({cfg.get('scan', 'two-stage')}), m={cfg['rescore_multiplier']}, one thread, "
        f"{cfg['queries']} queries interleaved (`measure_store_overhead.py`).",
        "",
        "| pipeline | segments | recall@10 | p50 ms | CPU p50 ms | vs bare (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| bare kernels + numpy | 1 | {recall['bare']:.4f} | {p50['bare']:.2f} | {cpu['bare']:.2f} | 1.00x |",
        f"| store, compacted | 1 | {recall['store_compacted']:.4f} | {p50['store_compacted']:.2f} | "
        f"{cpu['store_compacted']:.2f} | {ratios['store_compacted_vs_bare']:.2f}x "
        f"({ratios['cpu_store_compacted_vs_bare']:.2f}x) |",
        f"| store, {cfg.get('adds', 10)} adds | {len(segments)} | {recall['store_added']:.4f} | "
        f"{p50['store_added']:.2f} | {cpu['store_added']:.2f} | {ratios['store_added_vs_bare']:.2f}x "
        f"({ratios['cpu_store_added_vs_bare']:.2f}x) |",
        "",
        f"Ten adds against compacted: {ratios['store_added_vs_compacted']:.2f}x "
        f"(CPU {ratios['cpu_store_added_vs_compacted']:.2f}x); segment rows after the adds: "
        + ", ".join(f"{r:,}" for r in segments)
        + ".",
    ]


def filters(data: dict[str, Any]) -> list[str]:
    """Filtered queries on a format-1 store against format 2, each filter in a new process."""
    cfg = data["config"]
    lines = [
        f"{cfg['n']:,} x {cfg['dim']} synthetic vectors, binary, built by batched adds and one compact; "
        f"each row of the table in a new process: its first query, then {cfg['queries']} single queries "
        f"(`measure_filters.py`; format 1 = commit {data['baseline_commit'][:7]}).",
        "",
        "| filter | format 1 first query ms | format 2 first query ms | format 1 p50 ms | format 2 p50 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    old = data["stores"]["format 1 (baseline)"]["queries"]
    new = data["stores"]["format 2 (this checkout)"]["queries"]
    lines.extend(
        f"| {label} | {old[label]['first_query_ms']:.1f} | {new[label]['first_query_ms']:.1f} | "
        f"{old[label]['p50_ms']:.2f} | {new[label]['p50_ms']:.2f} |"
        for label in new
    )
    return lines


def subset_scan(data: dict[str, Any]) -> list[str]:
    """Binary codes searched once (a selective filter's rows): two stages against the kernel."""
    cfg = data["config"]
    lines = [
        f"Subsets of {cfg['n']:,} x {cfg['dim']} synthetic vectors, binary codes, one thread, "
        f"{cfg['queries']} single queries with both methods interleaved (`measure_subset_scan.py`). "
        "The store takes the kernel at 2 rows per Hamming candidate or fewer.",
        "",
        "| rows | candidates | rows per Hamming candidate | two stages p50 ms | kernel on a packed copy p50 ms "
        "| recall@10 two stages / kernel |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {c['subset_rows']:,} | {c['candidates']:,} | {c['rows_per_hamming_candidate']:.1f} | "
        f"{c['p50_ms']['two_stages']:.2f} | {c['p50_ms']['fast_scan']:.2f} | "
        f"{c['recall_at_10']['two_stages']:.3f} / {c['recall_at_10']['fast_scan']:.3f} |"
        for c in data["cases"]
    )
    return lines


def default_recall(data: dict[str, Any]) -> list[str]:
    """The calibrating default against a fixed multiplier: ingest time and recall after every add."""
    cfg, runs = data["config"], data["runs"]
    lines = [
        f"{cfg['n']:,} x {cfg['dim']} synthetic vectors added by {cfg['batch']:,}, "
        f"{cfg.get('quantization', 'binary')}, one thread, {cfg['queries']} held-out queries "
        f"(`measure_default_recall.py`), load {data['load_start'][0]:.1f}-{data['load_end'][0]:.1f}.",
        "",
        "| build | ingest s | multiplier at the end | recall@10 at the end |",
        "|---|---:|---:|---:|",
    ]
    lines.extend(
        f"| {name} | {run['ingest_s']:.1f} | {run['multiplier']} | {run['recall_at_10']:.4f} |"
        for name, run in runs.items()
    )
    repeated = data.get("ingest") or {}
    if "ratio_median_ingest_cpu_s" in repeated:
        lines += [
            "",
            f"Ingest with calibration, medians of {repeated['repeat']} alternating builds per side: "
            f"{repeated['ratio_median_ingest_s']:.2f}x the fixed multiplier's wall seconds, "
            f"{repeated['ratio_median_ingest_cpu_s']:.2f}x its CPU seconds.",
        ]
    else:
        lines += ["", f"Ingest with calibration: {data['ingest_ratio']:.2f}x the fixed multiplier's."]
    after = next((run["after_each_add"] for run in runs.values() if "after_each_add" in run), None)
    if after:
        lines += [
            "",
            "Recall@10 of the calibrated store after every add:",
            "",
            "| rows | multiplier | recall@10 |",
            "|---:|---:|---:|",
        ]
        lines.extend(f"| {a['rows']:,} | {a['multiplier']} | {a['recall_at_10']:.4f} |" for a in after)
    return lines


def ivf(data: dict[str, Any]) -> list[str]:
    """The opt-in partitioned first stage against the full fast scan and IndexFlatIP."""
    cfg, build = data["config"], data["build"]
    kind = "real sentence" if cfg.get("data") in ("real", "sentences") else "synthetic"  # two names, one data
    adds = cfg.get("adds", 1)
    built = "one add" if adds == 1 else f"{adds} adds"
    first = ", ".join(f"{name} {s:.3f} s" for name, s in build["first_query_s"].items())
    lines = [
        f"{cfg['n']:,} x {cfg['dim']} {kind} vectors, {cfg.get('quantization', 'binary')}, {cfg['partitions']} lists, {built}, one "
        f"thread, {cfg['queries']} queries (`measure_ivf.py`), load {data['load_start'][0]:.1f}-"
        f"{data['load_end'][0]:.1f}; the smallest multiplier reaching recall@10 0.99 per setting. Add: "
        f"{build['add_partitioned_s']:.1f} s partitioned against {build['add_full_s']:.1f} s "
        f"({build['add_ratio']:.2f}x); nprobe chosen at training: {data['chosen_nprobe']}; first query: {first}.",
        "",
        "| setting | segments | rows scanned | multiplier | recall@10 | p50 ms | vs IndexFlatIP |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in data["smallest_multiplier_reaching_target"].items():
        share = r.get("scanned_fraction", "")  # absent: measured before it was recorded
        scanned = "all" if share is None else share if share == "" else f"{share:.1%}"
        lines.append(
            f"| {name} | {r.get('segments', '')} | {scanned} | "
            f"{r['rescore_multiplier']} | {r['recall_at_10']:.4f} | {r['p50_ms']:.2f} | {r['speedup_vs_flat']:.1f}x |"
        )
    quality = data.get("list_quality") or []
    if quality:
        lines += [
            "",
            "Lists against their cost (k-means on the training sample, every row assigned; rows a held-out "
            "query scans for its lists to hold 99% / 99.5% / 99.7% of its exact top 10):",
            "",
            "| lists | k-means s | assign us/row | 99% | 99.5% | 99.7% |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        lines.extend(
            f"| {q['partitions']} | {q['kmeans_s']:.2f} | {q['assign_us_per_row']:.1f} | "
            + " | ".join(f"{q[f'coverage_{c}']['scanned_fraction']:.1%}" for c in (0.99, 0.995, 0.997))
            + " |"
            for q in quality
        )
    return lines


def hot_paths(data: dict[str, Any]) -> list[str]:
    """Small search and ingest costs, side by side (CPU)."""
    decode, scan, meta = (
        data["float16_decode_cpu"],
        data["exact_scan_cpu_s"],
        data["metadata_100k_rows_cpu_s"],
    )
    return [
        "One thread, CPU time, side by side in one run (`measure_hot_paths.py`).",
        "",
        "| cost | before | now |",
        "|---|---:|---:|",
        *(
            f"| float16 decode, {label.replace('_', ' ')} rows | {d['numpy_cast_ms']:.2f} ms (numpy) | "
            f"{d['faiss_f16c_ms']:.2f} ms (FAISS F16C) |"
            for label, d in decode.items()
        ),
        f"| exact scan, 150 queries x {data['config']['n']:,} float16 rows | {scan['65536']:.2f} s (64k-row blocks) "
        f"| {scan['16384']:.2f} s (16k-row blocks) |",
        f"| metadata typing, 100k rows (check + encode) | | {meta['check_metadatas'] + meta['encode_metadata']:.2f} s |",
    ]


def disk(data: dict[str, Any]) -> list[str]:
    """Disk per rescoring precision and row shape, as a ratio to the raw float32 vectors."""
    shapes = list(data["shapes"])
    names = list(data["shapes"][shapes[0]])
    lines = [
        f"{data['config']['n']:,} x {data['config']['dim']} synthetic vectors, binary codes, built by ten "
        "adds (`measure_disk.py`): the newest version's files and manifests, as a ratio to the raw "
        "float32 vectors. `ids only` is the rows of `bench_peers.py`; the other shape adds short texts "
        "and two metadata keys, as `bench_search.py` stores.",
        "",
        "| rescoring vectors | " + " | ".join(shapes) + " |",
        "|---|" + "---:|" * len(shapes),
    ]
    lines.extend(
        f"| {name} | "
        + " | ".join(f"{data['shapes'][s][name]['ratio_to_raw_float32']:.3f}" for s in shapes)
        + " |"
        for name in names
    )
    return lines


def durability(d: dict[str, Any]) -> list[str]:
    """The long reliability runs (``python -m tests.reliability.report``)."""
    kills, power, io, damage = d["process_kills"], d["power_losses"], d["io_errors"], d["damage"]
    bad, conc = d["bad_inputs"], d["concurrency"]
    still_working = ", ".join(kind for kind, v in damage.get("by_kind", {}).items() if v.get("ok")) or "no"
    return [
        f"Mode `{d['mode']}` on {d['machine']}, Python {d['python']} (`python -m tests.reliability.report`, "
        "`results/durability.json`).",
        "",
        "| test | result | acknowledged data lost |",
        "|---|---|---:|",
        f"| writer process SIGKILLed at random moments ({kills['acked_commits']:,} commits acknowledged) | "
        f"{kills['survived']} of {kills['kills']} kills survived: store opens, `verify()` clean | {kills['data_lost']} |",
        f"| simulated power loss at every step of {power['workloads']} journaled workloads "
        f"({power['journal_steps']:,} file operations) | {power['survived']:,} of {power['images']:,} crash images "
        f"open, pass `verify()` and accept the next write; {power['corrupt_stores']} corrupt | "
        f"{power['acknowledged_commits_lost']} |",
        f"| ENOSPC / EACCES injected at each write step | {io['survived']} of {io['trials']}: typed error, "
        f"previous version intact, next write works | {io['data_lost']} |",
        f"| truncation and byte changes in store files ({damage['damaged_files']:,} files) | "
        f"{damage['detected_by_verify']:,} detected by `verify()`; {damage['typed_error_on_open_or_search']} raised "
        f"`CorruptStoreError` on use, {damage['search_still_worked']} ({still_working} damage) searched "
        f"normally; {damage['crashes']} crashes | - |",
        f"| hostile inputs ({bad['cases']} cases) | {bad['rejected_with_typed_error']} rejected with a typed "
        f"error, {bad['documented_acceptances']} documented acceptances | {bad['data_lost']} |",
        f"| reader processes during commits and compactions, plus a second writer | "
        f"{conc['reader_minutes']:.0f} reader-minutes, {conc['searches']:,} searches, {conc['reader_errors']} "
        f"errors, {conc['incomplete_versions_seen']} incomplete versions seen; second writer: "
        f"{conc['second_writer_locked_errors']} `StoreLockedError` (timeout 0), "
        f"{conc['second_writer_commits']:,} commits after waiting | - |",
    ]


def _demoted(markdown: str) -> list[str]:
    """A benchmark's own Markdown report, its headings one level down (# -> ###)."""
    return [re.sub(r"^(#+) ", r"##\1 ", line) for line in markdown.strip().splitlines()]


def _kept_notes() -> str:
    if RESULTS_MD.exists():
        found = re.search(
            rf"{re.escape(NOTES_START)}\n(.*?){re.escape(NOTES_END)}", RESULTS_MD.read_text(), re.DOTALL
        )
        if found:
            return found.group(1).rstrip("\n")
    return _NOTES_PLACEHOLDER


def results_page() -> str:
    peers, search = _load("peers.json"), _load("bench_search.json")
    lines = [
        "# Benchmark results",
        "",
        "<!-- Generated by benchmarks/write_results.py from benchmarks/results/. Edit the scripts, not "
        "this file: only the notes between the notes markers are hand-written (and kept). -->",
        "",
        "Every number here comes from a script in `benchmarks/` (how to rerun them: "
        "[benchmarks/README.md](README.md)); the raw results of the last runs are in "
        "[`benchmarks/results/`](results/). The machine was shared with other work during the runs, "
        "so compare ratios measured side by side in one run rather than absolute times across runs.",
        "",
        "## Summary",
        "",
    ]
    lines += summary(peers, search) if peers else ["No `results/peers.json` yet."]
    lines += ["", "## What the numbers say", "", NOTES_START, _kept_notes(), NOTES_END, ""]
    sections: list[tuple[str, list[str]]] = []
    search_md = RESULTS / "bench_search.md"
    if search_md.exists():
        sections.append(("The store per mode (`bench_search.py`)", _demoted(search_md.read_text())))
    peers_md = RESULTS / "peers.md"
    if peers_md.exists():
        body = _demoted(peers_md.read_text())
        if (RESULTS / "peers.png").exists():
            body += [
                "",
                "![recall@10 against p50 latency at 1M rows; bubble area is private memory](results/peers.png)",
            ]
        sections.append(("Against the stores users would pick instead (`bench_peers.py`)", body))
    for title, name, render in (
        ("Binary search stage by stage (`binary_limits.py`)", "binary_limits.json", binary_limits),
        ("Memory of a large add (`ingest_memory.py`)", "ingest_memory.json", ingest),
        ("How the default multipliers were chosen (`measure_quantizer_defaults.py`)", "quantizer_defaults.json",
         quantizer_defaults),
        ("Rescoring precision (`measure_rescore_precision.py`)", "rescore_precision.json", rescore_precision),
        ("Fast-scan kernels side by side (`measure_fast_scan.py`)", "fast_scan.json", fast_scan),
        ("The store against the bare kernels (`measure_store_overhead.py`)", "store_overhead.json", store_overhead),
        ("The same, two-stage binary", "store_overhead_two_stage.json", store_overhead),
        ("Filters, format 1 against format 2 (`measure_filters.py`)", "filters.json", filters),
        ("A filter's rows: two stages or the kernel (`measure_subset_scan.py`)", "subset_scan.json", subset_scan),
        ("Default recall and ingest with calibration (`measure_default_recall.py`)", "default_recall.json",
         default_recall),
        ("The same, PQ (`--quantization pq`)", "default_recall_pq.json", default_recall),
        ("What ingest at 1M cannot skip (`ingest_limits.py`)", "ingest_limits.json", ingest_limits),
        ("Partitioned first stage, opt-in (`measure_ivf.py`)", "ivf.json", ivf),
        ("Partitioned 4-bit PQ, opt-in (`measure_ivf.py --quantization pq`)", "ivf_pq.json", ivf),
        ("The same on real sentences (`--data sentences`)", "ivf_pq_sentences.json", ivf),
        ("Partitioned first stage at 200k synthetic rows, ten adds", "ivf_200k_synthetic.json", ivf),
        ("Partitioned first stage at 200k real rows, ten adds", "ivf_200k_real.json", ivf),
        ("Small costs on the hot paths (`measure_hot_paths.py`)", "hot_paths.json", hot_paths),
        ("Disk per rescoring precision (`measure_disk.py`)", "disk.json", disk),
        ("Durability", "durability.json", durability),
    ):  # fmt: skip
        data = _load(name)
        if data is not None:
            sections.append((title, render(data)))
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def readme_with_summary(text: str, table: list[str]) -> tuple[str, bool]:
    """``text`` with the summary between its markers replaced; False if the markers are missing."""
    pattern = re.compile(rf"({re.escape(SUMMARY_START)}\n).*?({re.escape(SUMMARY_END)})", re.DOTALL)
    body = "\n".join(table) + "\n"
    new, count = pattern.subn(lambda m: m.group(1) + body + m.group(2), text)
    return new, bool(count)


def main() -> None:
    RESULTS_MD.write_text(results_page())
    print(f"wrote {RESULTS_MD.relative_to(REPO)}")
    peers = _load("peers.json")
    if peers is None:
        print("results/peers.json missing: README summary left as it is")
        return
    text, found = readme_with_summary(README.read_text(), summary(peers, _load("bench_search.json")))
    if found:
        README.write_text(text)
        print("README.md: benchmark summary updated")
    else:
        print(f"README.md: markers {SUMMARY_START} / {SUMMARY_END} not found, summary not written")


if __name__ == "__main__":
    main()
