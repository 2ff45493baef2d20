"""Copy the Markdown tables of the last benchmark runs into README.md, between their markers.

``bench_search.py`` and ``bench_peers.py`` call it at the end of a run that wrote to
``benchmarks/results/``; by hand: ``python benchmarks/update_readme.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SECTIONS = {"bench_search": "bench_search.md", "bench_peers": "peers.md"}


def update_if_results(out_dir: Path) -> None:
    """Update README.md when ``out_dir`` is the committed results folder (not a scratch run)."""
    if out_dir.resolve() == RESULTS.resolve():
        main()


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    for marker, name in SECTIONS.items():
        source = RESULTS / name
        if not source.exists():
            print(f"{name}: no results yet, section left as it is")
            continue
        body = source.read_text().strip()
        body = re.sub(r"^# (.*)$", r"#### \1", body, count=1, flags=re.MULTILINE)  # README sub-heading
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.DOTALL)
        replacement = body
        text, count = pattern.subn(lambda m, r=replacement: m.group(1) + r + "\n" + m.group(2), text)
        print(f"{name}: {'updated' if count else 'markers not found in README.md'}")
    readme.write_text(text)


if __name__ == "__main__":
    main()
