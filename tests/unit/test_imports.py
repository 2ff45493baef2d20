"""What importing the storage layer costs a process: no LangChain, which Ray workers do not need."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_storage_layer_imports_without_langchain() -> None:
    loaded = _modules_after("import langchain_vq.collection")
    assert "langchain_vq.collection" in loaded
    assert not {m for m in loaded if m.startswith("langchain_core")}


def test_package_names_still_resolve() -> None:
    import langchain_vq
    from langchain_vq import VQRetriever, VQTranslator, VQVectorStore

    assert VQVectorStore.__name__ == "VQVectorStore"
    assert {VQRetriever.__name__, VQTranslator.__name__} == {"VQRetriever", "VQTranslator"}
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = langchain_vq.Nope


def test_ray_build_module_imports_without_langchain() -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    loaded = _modules_after("import langchain_vq.ray.build")
    assert not {m for m in loaded if m.startswith("langchain_core")}
