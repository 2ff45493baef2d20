"""The ``langchain-vq`` command end to end on temporary stores, with the real model (offline).

Commands run in this process through ``cli.main`` so the model is loaded once (the ``minilm``
fixture); a few run as subprocesses to check the entry point and its exit codes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from langchain_vq import VQVectorStore
from langchain_vq.cli import main
from langchain_vq.loaders import chunk_id, source_name

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "examples" / "data"
SUBSET = ("heapq.md", "textwrap.md", "contextlib.md")  # 17 chunks: quick to embed

pytestmark = pytest.mark.usefixtures("minilm")


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def info(capsys: pytest.CaptureFixture[str], store: Path) -> dict[str, Any]:
    code, out, _ = run(capsys, "info", store, "--json")
    assert code == 0
    return json.loads(out)


def rows_by_id(store: Path, data: Path) -> dict[str, str]:
    """Every chunk of the files in ``data``, by id (ids probed up to 100 per file)."""
    vq = VQVectorStore(_NoEmbeddings(), store)
    ids = [chunk_id(source_name(f), i) for f in sorted(data.iterdir()) for i in range(100)]
    return {d.id: d.page_content for d in vq.get_by_ids(ids)}


def _NoEmbeddings() -> Any:
    from langchain_vq.cli import _NoEmbeddings as Stub

    return Stub("sentence-transformers/all-MiniLM-L6-v2")


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("langchain-vq: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in SUBSET:
        shutil.copy(DATA / name, folder / name)
    return folder


@pytest.fixture
def indexed(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path) -> Path:
    store = tmp_path / "store"
    code, out, _ = run(capsys, "index", store, data)
    assert code == 0, out
    return store


def test_index_records_the_rescore_precision_asked_for(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path
) -> None:
    store = tmp_path / "store"
    code, out, _ = run(capsys, "index", store, data, "--rescore-precision", "int8")
    assert code == 0, out
    assert info(capsys, store)["rescore_precision"] == "int8"
    code, out, _ = run(capsys, "search", store, "priority queue with a heap", "-k", 1)
    assert code == 0
    assert "heapq.md#" in out.splitlines()[0]
    code, _, err = run(capsys, "index", store, data, "--rescore-precision", "float32")
    assert code == 1
    assert "precision 'int8'" in err


def test_index_search_info_verify_compact(
    capsys: pytest.CaptureFixture[str], indexed: Path, data: Path
) -> None:
    described = info(capsys, indexed)
    assert described["rows"] == 17
    assert described["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert described["dimension"] == 384
    assert described["quantization"] == "binary"
    assert described["bytes"]["segments"] > 0
    assert described["bytes"]["total"] >= described["bytes"]["segments"]

    code, out, _ = run(capsys, "info", indexed)
    assert code == 0
    assert "rows             17 live" in out
    assert "quantization     binary" in out
    assert "rescore vectors  float16" in out
    assert described["rescore_precision"] == "float16"

    code, out, _ = run(capsys, "search", indexed, "priority queue with a heap", "-k", 3)
    assert code == 0
    assert out.startswith("1. ")
    assert "heapq.md#" in out.splitlines()[0]
    code, out, _ = run(capsys, "search", indexed, "wrap long lines of text", "-k", 2, "--json")
    results = json.loads(out)
    assert [r["rank"] for r in results] == [1, 2]
    assert "textwrap.md" in results[0]["source"]
    assert results[0]["score"] >= results[1]["score"]

    code, out, _ = run(capsys, "verify", indexed)
    assert code == 0
    assert out.startswith("OK:")

    code, out, _ = run(capsys, "compact", indexed)
    assert code == 0
    assert "17 rows" in out
    assert info(capsys, indexed)["segments"] == 1
    assert run(capsys, "verify", indexed)[0] == 0


def test_reindexing_twice_leaves_the_row_count_unchanged(
    capsys: pytest.CaptureFixture[str], indexed: Path, data: Path
) -> None:
    version = info(capsys, indexed)["version"]
    for _ in range(2):
        code, out, _ = run(capsys, "index", indexed, data)
        assert code == 0
        assert "0 added, 0 updated, 17 unchanged, 0 deleted" in out
    after = info(capsys, indexed)
    assert after["rows"] == 17
    assert after["version"] == version


def test_cleanup_full_removes_the_chunks_of_deleted_files(
    capsys: pytest.CaptureFixture[str], indexed: Path, data: Path
) -> None:
    gone = data / "heapq.md"
    gone_rows = [i for i in rows_by_id(indexed, data) if i.startswith(source_name(gone) + "#")]
    assert gone_rows
    gone.unlink()
    code, out, _ = run(capsys, "index", indexed, data)  # incremental: the deleted file is not seen
    assert code == 0
    assert "0 deleted" in out
    assert info(capsys, indexed)["rows"] == 17
    code, out, _ = run(capsys, "index", indexed, data, "--cleanup", "full")
    assert code == 0
    assert f"{len(gone_rows)} deleted" in out
    assert info(capsys, indexed)["rows"] == 17 - len(gone_rows)


def test_editing_one_file_changes_only_its_chunks(
    capsys: pytest.CaptureFixture[str], indexed: Path, data: Path
) -> None:
    before = rows_by_id(indexed, data)
    edited = data / "textwrap.md"
    edited.write_text(edited.read_text().replace("Wrap a single paragraph", "Wrap ONE paragraph"))
    code, out, _ = run(capsys, "index", indexed, data)
    assert code == 0
    assert "0 added, 1 updated" in out
    after = rows_by_id(indexed, data)
    changed = {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}
    assert changed
    assert all(i.startswith(source_name(edited) + "#") for i in changed)
    assert len(after) == len(before)

    # Shrinking a file deletes its chunks past the new end; other files keep theirs.
    shrunk = data / "heapq.md"
    shrunk.write_text("# heapq\n\nHeap queue algorithm (a.k.a. priority queue).\n")
    code, out, _ = run(capsys, "index", indexed, data)
    assert code == 0
    assert "4 deleted" in out
    final = rows_by_id(indexed, data)
    assert len(final) == 17 - 4
    assert {i for i in final if not i.startswith(source_name(shrunk))} == {
        i for i in after if not i.startswith(source_name(shrunk))
    }


def test_chat_one_question_offline(capsys: pytest.CaptureFixture[str], indexed: Path) -> None:
    code, out, _ = run(capsys, "chat", indexed, "--question", "How do I push an item onto a heap?")
    assert code == 0
    assert out.startswith("Extractive answer")
    assert "Sources:" in out
    assert "heapq.md#" in out


def test_chatbot_example(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: Path, minilm: Any) -> None:
    spec = importlib.util.spec_from_file_location("example_chatbot", REPO / "examples" / "chatbot.py")
    chatbot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chatbot)
    chatbot.SentenceTransformerEmbeddings = lambda **_: minilm  # reuse the loaded model
    argv = [
        "--question",
        "How do I indent every line of a text?",
        "--store",
        str(tmp_path / "demo"),
        "--data",
        str(data),
    ]
    assert chatbot.main(argv) == 0
    out, err = capsys.readouterr()
    assert "Extractive answer" in out
    assert "textwrap.md#" in out
    assert "17 chunks" in err


# -- errors ----------------------------------------------------------------------------------
def assert_nothing_committed(
    capsys: pytest.CaptureFixture[str], store: Path, before: dict[str, Any] | None
) -> None:
    if before is None:
        assert not store.exists()
    else:
        after = info(capsys, store)
        assert (after["version"], after["rows"]) == (before["version"], before["rows"])


@pytest.mark.parametrize("existing", [False, True], ids=["new-store", "existing-store"])
@pytest.mark.parametrize("problem", ["missing", "binary", "empty-folder", "unreadable"])
def test_index_errors_commit_nothing(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    problem: str,
    existing: bool,
) -> None:
    store = tmp_path / "store"
    before = None
    if existing:
        assert run(capsys, "index", store, data / "heapq.md")[0] == 0
        before = info(capsys, store)
    bad = tmp_path / "bad"
    expected = {
        "missing": "does not exist",
        "binary": "is binary",
        "empty-folder": "holds no .txt",
        "unreadable": "cannot be read",
    }[problem]
    if problem == "missing":
        target = tmp_path / "no_such_file.txt"
    elif problem == "binary":
        target = tmp_path / "image.txt"
        target.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    elif problem == "empty-folder":
        target = bad
        target.mkdir()
    else:
        target = tmp_path / "secret.md"
        target.write_text("# secret\n\nnot for you")
        if os.name == "posix" and os.geteuid() != 0:
            target.chmod(0)
        else:  # root reads any file whatever its mode: make the read itself fail
            original = Path.read_bytes

            def deny(self: Path) -> bytes:
                if self.name == "secret.md":
                    raise PermissionError(13, "Permission denied", str(self))
                return original(self)

            monkeypatch.setattr(Path, "read_bytes", deny)
    # The good folder comes first: it must not be written before the bad path is found.
    code, out, err = run(capsys, "index", store, data, target)
    if problem == "unreadable":
        target.chmod(0o600)
    assert code == 1
    assert out == ""
    line = one_error_line(err)
    assert expected in line
    assert_nothing_committed(capsys, store, before)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_by_permissions_in_a_subprocess(tmp_path: Path, data: Path) -> None:
    secret = data / "secret.txt"
    secret.write_text("hidden")
    secret.chmod(0)
    try:
        result = cli_subprocess("index", tmp_path / "store", data)
    finally:
        secret.chmod(0o600)
    assert result.returncode == 1
    assert "cannot be read" in result.stderr
    assert not (tmp_path / "store").exists()


def test_commands_on_a_missing_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for command in (["info"], ["verify"], ["compact"], ["search", "-k", "1"], ["chat", "--question", "q"]):
        argv = [
            command[0],
            tmp_path / "nowhere",
            *(["query"] if command[0] == "search" else []),
            *command[1:],
        ]
        code, _, err = run(capsys, *argv)
        assert code == 1
        assert "No store at" in one_error_line(err)
    assert not (tmp_path / "nowhere").exists()


def test_verify_reports_damage(capsys: pytest.CaptureFixture[str], indexed: Path) -> None:
    segment = next((indexed / "_segments").iterdir())
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", indexed)
    assert code == 1
    assert "Traceback" not in err
    assert str(segment.name) in err


def test_bad_options(capsys: pytest.CaptureFixture[str], indexed: Path, data: Path) -> None:
    code, _, err = run(capsys, "search", indexed, "q", "--filter", "{not json")
    assert code == 1
    assert "--filter is not valid JSON" in one_error_line(err)
    code, _, err = run(capsys, "index", indexed, data, "--model", "some/other-model")
    assert code == 1
    assert "was built with embedding model" in one_error_line(err)
    code, _, err = run(capsys, "index", indexed, data, "--chunk-size", "100", "--chunk-overlap", "100")
    assert code == 1
    assert "chunk_overlap must be an integer in [0, 99], got 100" in one_error_line(err)
    code, _, err = run(capsys, "chat", indexed, "--llm", "nonsense")
    assert code == 1
    assert "provider:model" in one_error_line(err)
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(indexed), "q", "-k", "0"])
    assert exit_info.value.code == 2
    capsys.readouterr()


def test_llm_needs_langchain(
    capsys: pytest.CaptureFixture[str], indexed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)
    code, _, err = run(capsys, "chat", indexed, "--llm", "openai:gpt-4o-mini", "--question", "q")
    assert code == 1
    assert "pip install langchain" in one_error_line(err)


# -- the installed entry point ---------------------------------------------------------------
def cli_subprocess(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "langchain_vq.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_on_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["index"], ["search"], ["info"], ["verify"], ["compact"], ["chat"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.startswith("usage: langchain-vq")
    result = cli_subprocess("--help")
    assert result.returncode == 0, result.stderr
    assert "index" in result.stdout


def test_entry_point_exit_codes(tmp_path: Path) -> None:
    exe = shutil.which("langchain-vq")
    argv = [exe] if exe else [sys.executable, "-m", "langchain_vq.cli"]
    result = subprocess.run(
        [*argv, "index", str(tmp_path / "s"), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr
    result = subprocess.run([*argv], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
