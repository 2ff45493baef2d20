"""A build driver run as a subprocess, so a test can kill it: ``python -m tests.ray._driver ARGS``.

Connects to the test session's cluster, builds ``--source`` (jsonl) into ``--store`` with the
fake embeddings and the given build id, and prints the result as JSON. ``--kill-marker`` makes
it SIGKILL itself just before it writes the manifest (see ``_faults.KillOnce``).
"""

from __future__ import annotations

import argparse
import json
import logging

import ray
from langchain_core.embeddings import DeterministicFakeEmbedding

from langchain_vq.ray import build_store
from tests.ray._faults import KillOnce


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--address", "--source", "--store", "--build-id"):
        parser.add_argument(name, required=True)
    parser.add_argument("--kill-marker")
    args = parser.parse_args()
    ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    fs = KillOnce("_versions", args.kill_marker, after_write=False) if args.kill_marker else None
    result = build_store(
        args.source, args.store, DeterministicFakeEmbedding(size=16), build_id=args.build_id, workers=1, fs=fs
    )
    print(json.dumps({"committed": result.committed, "rows": result.rows, "versions": list(result.versions)}))


if __name__ == "__main__":
    main()
