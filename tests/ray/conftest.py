"""One local Ray cluster for the Ray tests, started and stopped by the test session.

``ray.init(num_cpus=2)`` with the dashboard off, usage stats off and a short temporary directory
(Ray's socket paths must stay under 108 bytes). Workers inherit ``PYTHONPATH`` with this checkout
first, so they import the code under test (and the test doubles in ``tests.ray._faults``).
Every Ray test runs under a watchdog: no progress for ``TEST_TIMEOUT`` seconds dumps the stacks
and ends the run instead of hanging CI.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING

import pytest

from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Seconds one Ray test may run before the watchdog ends the session.
TEST_TIMEOUT = 150
#: Seconds any single ray.get in the tests may wait.
GET_TIMEOUT = 60


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """A 2-CPU local cluster for the whole session; yields its GCS address."""
    ray = pytest.importorskip("ray", reason="needs the ray extra (pip install 'langchain-vq[ray]')")
    pytest.importorskip("ray.data", reason="needs the ray extra (pip install 'langchain-vq[ray]')")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    temp_dir = tempfile.mkdtemp(prefix="rvq-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp_dir,
        _node_ip_address="127.0.0.1",  # every connection stays on loopback
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def shard_servers(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    """Three running ShardServer actors that tests reuse (each new actor imports the package anew)."""
    import ray

    from langchain_vq.ray import start_server

    root = tmp_path_factory.mktemp("servers")
    servers = [start_server(str(root / f"idle-{i}")) for i in range(3)]
    yield servers
    for server in servers:
        ray.kill(server)


@pytest.fixture(autouse=True)
def _watchdog(request: pytest.FixtureRequest) -> Iterator[None]:
    """No progress for TEST_TIMEOUT seconds: dump every thread's stack and exit, never hang."""
    faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
