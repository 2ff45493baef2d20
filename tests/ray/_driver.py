"""A build driver run as a subprocess, so a test can kill it: ``python -m tests.ray._driver ARGS``.

Connects to the test session's cluster and builds ``--source`` (jsonl) into ``--store`` with the
fake embeddings and the given build id. ``--kill-marker`` makes it SIGKILL itself just before it
writes the manifest (see ``_faults.KillOnce``); the test reads only how it ended and the store.
"""

from __future__ import annotations

import argparse
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
    build_store(
        args.source, args.store, DeterministicFakeEmbedding(size=16), build_id=args.build_id, workers=1, fs=fs
    )


if __name__ == "__main__":
    main()
