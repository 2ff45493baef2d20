"""``langchain-vq eval`` end to end on a small temporary store (no embedding model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq import VQVectorStore
from langchain_vq.calibration import DEFAULT_K, DEFAULT_MULTIPLIERS
from langchain_vq.cli import main
from langchain_vq.evaluation import settings as settings_module
from tests.conftest import clustered_vectors

if TYPE_CHECKING:
    from pathlib import Path

DIM = 48


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("langchain-vq: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("eval") / "store"
    vq = VQVectorStore(DeterministicFakeEmbedding(size=DIM), path=path, quantization="binary")
    x = clustered_vectors(2000, DIM, seed=0)
    vq.add_embeddings([f"t{i}" for i in range(len(x))], x, ids=[str(i) for i in range(len(x))])
    return path


def test_eval_sampled_queries_prints_table_and_recommendation(
    capsys: pytest.CaptureFixture[str], store: Path
) -> None:
    code, out, err = run(capsys, "eval", store, "--sample", 100, "--timed", 5, "--multipliers", "1,4,16")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["setting", "recall@10"]
    assert any(line.startswith("binary m=16") for line in lines)
    assert "binary codes only" in out
    assert "rescore_multiplier=" in out or "No setting measured reached" in out


def test_eval_json_with_query_file_modes_and_plot(
    capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    queries = tmp_path / "q.npy"
    np.save(queries, clustered_vectors(40, DIM, seed=5))
    plot = tmp_path / "eval.png"
    code, out, err = run(
        capsys,
        "eval", store, "--queries", queries, "-k", 5, "--target", 0.9, "--modes", "binary,int8,none",
        "--multipliers", "2,8", "--timed", 5, "--plot", plot, "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["k"] == 5
    assert data["query_source"] == "given"
    assert data["queries"] == 40
    labels = [r["label"] for r in data["results"]]
    assert labels == [
        "binary codes only", "binary m=2", "binary m=8",
        "int8 codes only", "int8 m=2", "exact float",
    ]  # fmt: skip
    # int8 m=2 already finds everything, so the sweep of int8 stops there (m=8 could not gain).
    assert data["results"][labels.index("int8 m=2")]["recall"] == 1.0
    assert data["results"][labels.index("binary m=2")]["recall"] < 1.0
    assert data["results"][-1]["recall"] == 1.0
    assert data["fastest"]["recall"] >= 0.9
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_default_multipliers_are_the_librarys(
    capsys: pytest.CaptureFixture[str], store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --multipliers the command sweeps the calibration's range (up to 1024), not its own."""
    seen: dict[str, object] = {}
    real = settings_module.evaluate_settings

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(settings_module, "evaluate_settings", spy)
    code, out, err = run(capsys, "eval", store, "--sample", 20, "--timed", 2, "--target", 0.5, "--json")
    assert code == 0, err
    assert tuple(seen["multipliers"]) == DEFAULT_MULTIPLIERS
    assert DEFAULT_MULTIPLIERS[-1] == 1024
    assert json.loads(out)["k"] == DEFAULT_K


def test_eval_jsonl_vectors(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    rows = clustered_vectors(10, DIM, seed=6).tolist()
    lines = [json.dumps(rows[0]), *(json.dumps({"vector": r}) for r in rows[1:]), ""]
    queries.write_text("\n".join(lines))
    code, out, err = run(capsys, "eval", store, "--queries", queries, "--timed", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["queries"] == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modes", "binary,float9"], "Unknown mode 'float9'"),
        (["--multipliers", "2,x"], "--multipliers expects a comma-separated list"),
        (["--target", "2"], "target must be a number in (0, 1]"),
        (["--queries", "missing.npy"], "not found"),
    ],
)
def test_eval_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], store: Path, args: list[str], message: str
) -> None:
    code, _, err = run(capsys, "eval", store, *args)
    assert code == 1
    assert message in one_error_line(err)


def test_eval_bad_query_files(capsys: pytest.CaptureFixture[str], store: Path, tmp_path: Path) -> None:
    wrong_dim = tmp_path / "wrong.npy"
    np.save(wrong_dim, np.ones((3, DIM + 2), np.float32))
    code, _, err = run(capsys, "eval", store, "--queries", wrong_dim)
    assert code == 1
    assert f"{DIM}-dimensional" in one_error_line(err)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[0.1, 0.2]\nnot json\n")
    code, _, err = run(capsys, "eval", store, "--queries", bad)
    assert code == 1
    assert "line 2 is not JSON" in one_error_line(err)
    text = tmp_path / "q.txt"
    text.write_text("hello")
    code, _, err = run(capsys, "eval", store, "--queries", text)
    assert code == 1
    assert "expected a .npy array" in one_error_line(err)


def test_eval_entry_point_exit_status(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "langchain_vq.cli", "eval", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert one_error_line(proc.stderr).endswith(
        f"No store at {tmp_path / 'nowhere'}; build one with: langchain-vq index {tmp_path / 'nowhere'} "
        "FILES_OR_FOLDERS"
    )
