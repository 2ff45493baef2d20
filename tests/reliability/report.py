"""Run the long reliability suites and record their numbers.

    python -m tests.reliability.report            # long run, ~10 minutes on 2 cores
    python -m tests.reliability.report --quick    # the CI sizes, ~1 minute

Prints a summary and writes ``benchmarks/results/durability.json``: kills survived, simulated
power losses survived, I/O errors survived, damaged files detected, bad inputs rejected and
concurrent reader-minutes, each with the data lost (always 0: any loss fails the run).
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from tests.conftest import REPO_ROOT
from tests.reliability import test_concurrency, test_crash, test_damage, test_io_errors, test_power_loss
from tests.reliability.test_hostile_input import CATALOGUE, run_catalogue

RESULTS = REPO_ROOT / "benchmarks" / "results" / "durability.json"


def _timed(name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"  {name}: {seconds:.1f} s", flush=True)
    return out, seconds


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one section per suite
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes instead of the long run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.getLogger("langchain_vq").setLevel(logging.ERROR)  # injected failures log warnings
    quick = args.quick
    report: dict[str, object] = {
        "mode": "quick" if quick else "long",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
    }
    with tempfile.TemporaryDirectory(prefix="vq-durability-") as tmp_name:
        tmp = Path(tmp_name)
        print("process kills (SIGKILL of a writer at random moments)", flush=True)
        kills = 25 if quick else 300
        counts, seconds = _timed(
            "kills", test_crash.run_kills, tmp / "kill" / "store", tmp / "kill.log", kills, 7
        )
        report["process_kills"] = {
            **counts,
            "survived": counts["kills"],
            "data_lost": 0,
            "seconds": round(seconds, 1),
        }

        print("power loss (every step of journaled workloads, unsynced writes lost or torn)", flush=True)
        seeds = [1] if quick else [11, 12, 13]
        totals = {"workloads": 0, "journal_steps": 0, "images": 0, "absent": 0, "old": 0, "new": 0}
        start = time.perf_counter()
        for seed in seeds:
            with pytest.MonkeyPatch.context() as mp:
                journal = test_power_loss.run_workload(tmp / f"pl{seed}", seed, 10 if quick else 25, mp)
                counts = test_power_loss.run_power_losses(
                    journal,
                    tmp / "image",
                    random_variants=2 if quick else 8,
                    seed=seed,
                    write_every=4 if quick else 2,
                )
            totals["workloads"] += 1
            totals["journal_steps"] += sum(1 for s in journal.steps if s.kind != "mark")
            for key, value in counts.items():
                totals[key] += value
        seconds = time.perf_counter() - start
        print(f"  power losses: {seconds:.1f} s", flush=True)
        report["power_losses"] = {
            **totals,
            "survived": totals["images"],
            "corrupt_stores": 0,
            "acknowledged_commits_lost": 0,
            "seconds": round(seconds, 1),
        }

        print("I/O errors (ENOSPC, EACCES at every write step)", flush=True)
        io = {"trials": 0, "rejected": 0, "published": 0}
        start = time.perf_counter()
        bases = {}
        with pytest.MonkeyPatch.context() as mp:
            from langchain_vq import collection as collection_module

            mp.setattr(collection_module, "CLEANUP_GRACE_SECONDS", 0.0)
            for name, setup in (("small", 40), ("trained", 100)):
                store = test_io_errors.open_store(tmp / "io-base" / name)
                test_io_errors._add(store, [f"d{i}" for i in range(setup)], "base")
                if name == "trained":
                    store.delete(["d0", "d99"])
                bases[name] = tmp / "io-base" / name
            for op_name in sorted(test_io_errors.OPS):
                for err in (errno.ENOSPC, errno.EACCES):
                    counts = test_io_errors.run_io_error_trials(bases, tmp / "io-work", op_name, err)
                    for key, value in counts.items():
                        io[key] += value
        report["io_errors"] = {
            **io,
            "survived": io["trials"],
            "data_lost": 0,
            "seconds": round(time.perf_counter() - start, 1),
        }

        print("damage (truncation and byte changes in every kind of file)", flush=True)
        base = tmp / "damage-base"
        test_damage.build_store(base)
        per_kind = 15 if quick else 250
        counts, seconds = _timed(
            "damage", test_damage.run_damage_trials, base, tmp / "damage-work", per_kind, 3
        )
        trials = sum(c["trials"] for c in counts.values())
        report["damage"] = {
            "by_kind": counts,
            "damaged_files": trials,
            "detected_by_verify": sum(c["detected_by_verify"] for c in counts.values()),
            "typed_error_on_open_or_search": sum(c["typed_error_on_use"] for c in counts.values()),
            "search_still_worked": sum(c["ok"] for c in counts.values()),
            "crashes": 0,
            "seconds": round(seconds, 1),
        }

        print("hostile input catalogue", flush=True)
        store = test_io_errors.open_store(tmp / "hostile")
        ids = [f"d{i}" for i in range(100)]
        store.add_embeddings(ids, test_io_errors.vectors_for(ids), [{"g": i % 3} for i in range(100)], ids)
        counts, _ = _timed("catalogue", run_catalogue, store)
        report["bad_inputs"] = {
            "cases": len(CATALOGUE),
            "rejected_with_typed_error": counts["rejected"],
            "documented_acceptances": counts["accepted"],
            "data_lost": 0,
        }

        print("concurrency (reader processes + writer process + a second writer)", flush=True)
        (tmp / "conc").mkdir()
        seconds = 10 if quick else 120
        totals, _ = _timed(
            "concurrency", test_concurrency.run_concurrency, tmp / "conc" / "store", tmp / "conc", 4, seconds
        )
        report["concurrency"] = {
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in totals.items()},
            "reader_errors": 0,
            "incomplete_versions_seen": 0,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
