# ruff: noqa: INP001  (examples are scripts, not a package)
"""Build the demo corpus in ``examples/data/`` from the Python standard library's docstrings.

The docstrings ship with every CPython installation and are covered by the PSF License
Agreement for Python (a permissive licence; see ``examples/data/LICENSE``), so the corpus is
built offline and may be redistributed. Each module becomes one Markdown file with one section
per documented function, class or method::

    python examples/make_corpus.py            # writes examples/data/*.md
    python examples/make_corpus.py --out DIR  # somewhere else

The committed files were generated with CPython 3.11; other versions give slightly other text.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import platform
import re
from pathlib import Path

#: Modules of the corpus, and for each the classes whose public methods are included too.
MODULES: dict[str, tuple[str, ...]] = {
    "json": ("JSONDecoder", "JSONEncoder"),
    "pathlib": ("PurePath", "Path"),
    "datetime": ("date", "datetime", "timedelta", "timezone"),
    "re": ("Pattern", "Match"),
    "collections": ("Counter", "OrderedDict", "deque", "defaultdict", "ChainMap"),
    "itertools": (),
    "functools": (),
    "os.path": (),
    "subprocess": ("Popen", "CompletedProcess"),
    "sqlite3": ("Connection", "Cursor"),
    "csv": ("DictReader", "DictWriter"),
    "shutil": (),
    "logging": ("Logger", "Handler", "Formatter"),
    "tempfile": (),
    "textwrap": (),
    "statistics": (),
    "heapq": (),
    "contextlib": (),
    "random": ("Random",),
    "dataclasses": (),
    "zipfile": ("ZipFile",),
    "base64": (),
    "time": (),
    "string": ("Formatter", "Template"),
}
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
#: Docstrings shorter than this say too little to be a useful passage.
MIN_DOC_CHARS = 60


def _signature(obj: object) -> str:
    try:
        text = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", text)  # reprs like <function copy2 at 0x7f...> differ per run


def _public_members(owner: object, module_name: str) -> list[tuple[str, object]]:
    names = getattr(owner, "__all__", None) if inspect.ismodule(owner) else None
    if names is None:
        names = sorted(n for n in vars(owner) if not n.startswith("_"))
    out = []
    for name in names:
        obj = getattr(owner, name, None)
        if obj is None or inspect.ismodule(obj):
            continue
        home = getattr(obj, "__module__", None)
        if inspect.ismodule(owner) and home not in (None, module_name, "_" + module_name, "posixpath"):
            continue  # re-exported from another module
        out.append((name, obj))
    return out


def module_markdown(module_name: str, classes: tuple[str, ...]) -> tuple[str, int]:
    """One module as Markdown: the module docstring, then one section per documented object."""
    module = importlib.import_module(module_name)
    lines = [f"# {module_name}", ""]
    doc = inspect.getdoc(module)
    if doc:
        lines += [doc, ""]
    sections = 0
    for name, obj in _public_members(module, module_name):
        doc = inspect.getdoc(obj)
        if not callable(obj) or not doc or len(doc) < MIN_DOC_CHARS:
            continue
        kind = "class" if inspect.isclass(obj) else "function"
        lines += [f"## {kind} {module_name}.{name}{_signature(obj)}", "", doc, ""]
        sections += 1
        if name in classes:
            for method, member in _public_members(obj, module_name):
                mdoc = inspect.getdoc(member)
                own = mdoc and mdoc != inspect.getdoc(getattr(object, method, None))
                if callable(member) and own and len(mdoc) >= MIN_DOC_CHARS:
                    lines += [f"## method {module_name}.{name}.{method}{_signature(member)}", "", mdoc, ""]
                    sections += 1
    return "\n".join(lines).rstrip() + "\n", sections


def main() -> None:
    """Write one Markdown file per module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for module_name, classes in MODULES.items():
        text, sections = module_markdown(module_name, classes)
        (args.out / f"{module_name.replace('.', '_')}.md").write_text(text, encoding="utf-8")
        total += sections
    print(f"wrote {len(MODULES)} files, {total} sections, to {args.out} (Python {platform.python_version()})")  # noqa: T201


if __name__ == "__main__":
    main()
