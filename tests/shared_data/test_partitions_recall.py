"""The partitioned first stage on real sentence embeddings: recall@10 against exact float search.

Data: ``sentences/emb`` chunks 00 and 01 (100,000 real all-MiniLM-L6-v2 rows: chunk 00 holds
50,000 float32 rows, chunk 01 50,000 float16 rows, cast to float32); 1,000 rows drawn at random
(seeded) are held-out queries, the other 99,000 the corpus. For each quantizer with a
``partitions`` option (binary and 4-bit PQ), a store with ``quantizer_options={"partitions":
256}`` is built with no search settings: its quantizer chooses ``nprobe`` at training (the
fewest lists holding 99.7% of sampled rows' exact top 10) and the store calibrates its
multiplier with the partitioned scan in the add's commit, as a user's store would. Before
``nprobe`` was chosen so, a fixed eighth of the lists held too few neighbours on these sentences
and the calibration walked to ``m = 768``, past the probed lists' rows (a scan of every list).
Skipped, with the reason, when the shared data folder is absent (set LANGCHAIN_VQ_DATA).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq.evaluation import exact_top_k, recall_at_k
from langchain_vq.quantization import QUANTIZERS
from langchain_vq.quantization._partitions import PartitionedQuantizer
from tests.conftest import require_shared

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.shared_data

QUERIES = 1_000
PARTITIONS = 256


@pytest.fixture(scope="module")
def real_100k() -> tuple[np.ndarray, np.ndarray]:
    """``(corpus [99_000, 384], queries [1_000, 384])`` float32, split by a seeded permutation."""
    chunks = [np.load(require_shared("sentences", "emb", f"chunk_0{i}.npy")) for i in (0, 1)]
    data = np.concatenate([c.astype(np.float32) for c in chunks])  # [100_000, 384]
    order = np.random.default_rng(0).permutation(len(data))
    return np.ascontiguousarray(data[order[QUERIES:]]), np.ascontiguousarray(data[order[:QUERIES]])


def test_partitioned_store_reaches_recall_099_on_real_sentences(
    partitioned_kind: str, real_100k: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    corpus, queries = real_100k
    assert len(corpus) == 99_000  # both chunks: 50,000 rows each
    store = VQVectorStore(
        DeterministicFakeEmbedding(size=corpus.shape[1]),
        path=tmp_path / "s",
        quantization=partitioned_kind,
        quantizer_options={"partitions": PARTITIONS},
    )
    store.add_embeddings([""] * len(corpus), corpus, ids=[str(i) for i in range(len(corpus))])
    quantizer = store.collection.snapshot.quantizer
    assert isinstance(quantizer, QUANTIZERS[partitioned_kind]) and isinstance(quantizer, PartitionedQuantizer)
    assert quantizer.partitions == PARTITIONS
    assert all(v.segment.lists is not None for v in store.collection.snapshot.views)
    calibration = store.calibration
    assert calibration is not None and calibration.met
    chosen = quantizer.nprobe
    assert chosen is not None and chosen < PARTITIONS  # fewer lists than a full scan
    truth = exact_top_k(queries, corpus, 10).tolist()
    found = [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)]
    recall = recall_at_k(found, truth, 10)
    quantizer.nprobe = 1  # one list per query: what is scanned is the lists
    one_list = [[int(d.id) for d, _ in r] for r in store.batch_similarity_search_by_vector(queries, k=10)]
    recall_one = recall_at_k(one_list, truth, 10)
    summary = {
        "quantization": partitioned_kind,
        "rows": len(corpus),
        "nprobe": chosen,
        "multiplier": store.rescore_multiplier,
        "recall@10": recall,
        "nprobe=1": recall_one,
    }
    print(json.dumps(summary))
    assert recall >= 0.99, f"recall@10 {recall:.4f} at m={store.rescore_multiplier}, nprobe={chosen}"
    assert store.rescore_multiplier <= 64  # the lists hold the neighbours: no runaway multiplier
    assert recall_one < recall - 0.05
