"""Copy the Markdown tables of the last benchmark runs into README.md, between their markers.

Run after ``bench_search.py`` / ``bench_peers.py``: ``python benchmarks/update_readme.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = {"bench_search": "bench_search.md", "bench_peers": "peers.md"}


def main() -> None:
    readme = REPO / "README.md"
    text = readme.read_text()
    for marker, name in SECTIONS.items():
        source = REPO / "benchmarks" / "results" / name
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
