"""The report of an offline evaluation: its text table and its plot, from a hand-made Evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from langchain_vq.evaluation.report import format_table, plot_evaluation
from langchain_vq.evaluation.settings import Evaluation, SettingResult

if TYPE_CHECKING:
    from pathlib import Path


def result(quantization: str, multiplier: int | None, recall: float, p50: float, *, rescore: bool = True):
    return SettingResult(
        quantization=quantization,
        rescore=rescore,
        rescore_multiplier=multiplier,
        recall=recall,
        p50_ms=p50,
        p95_ms=2 * p50,
        code_bytes=64 if quantization == "binary" else 0,
        rows=1000,
        measured_on="store",
    )


@pytest.fixture
def evaluation() -> Evaluation:
    results = [
        result("binary", None, 0.61, 0.5, rescore=False),
        result("binary", 4, 0.93, 1.25),
        result("binary", 16, 0.995, 2.5),
        result("none", None, 1.0, 40.0),
    ]
    return Evaluation(
        k=10,
        target=0.99,
        queries=100,
        query_source="stored",
        store_quantization="binary",
        store_rows=1000,
        results=results,
        smallest=results[2],
        fastest=results[2],
        recommendation="Use m=16.",
        notes=["a note"],
    )


def test_table_marks_the_settings_reaching_the_target_and_aligns_columns(evaluation) -> None:
    lines = format_table(evaluation).splitlines()
    assert lines[0].split()[:2] == ["setting", "recall@10"]
    rows = {line.split("  ")[0].strip(): line for line in lines[2:6]}
    assert set(rows) == {"binary codes only", "binary m=4", "binary m=16 *", "exact float *"}
    # Right-aligned numbers end in the same column on every row.
    ends = {line.index(f"{r.recall:.4f}") + 6 for line, r in zip(lines[2:6], evaluation.results, strict=True)}
    assert len(ends) == 1
    assert "* reaches recall@10 >= 0.99" in lines
    assert lines[-2:] == ["Use m=16.", "note: a note"]


def test_plot_writes_a_png(evaluation, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plotting needs the plot extra")
    path = tmp_path / "eval.png"
    plot_evaluation(evaluation, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
